"""What a mapping is once loaded: one ProjectMapping per Hex project, in a MappingSet."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hexdbt.mapping.selectors import Selector

# The start of ``ProjectMapping.source`` for a mapping a dbt exposure declares.
EXPOSURE_SOURCE_PREFIX = "exposure "


class TriggerRule(StrEnum):
    ANY = "any"  # at least one mapped model refreshed
    ALL = "all"  # every mapped model refreshed in this invocation


@dataclass(frozen=True, slots=True)
class ProjectMapping:
    """One Hex project and the dbt models it reads, with how and when to run it."""

    name: str
    project_id: str
    models: tuple[Selector, ...]
    trigger: TriggerRule = TriggerRule.ANY
    require_tests: bool = False
    input_params: Mapping[str, Any] | None = None
    update_published_results: bool = True
    use_cached_sql_results: bool = False
    view_id: str | None = None
    notifications: tuple[Mapping[str, Any], ...] = ()
    wait: bool = True
    timeout_minutes: float = 60
    cancel_on_timeout: bool = True
    enabled: bool = True
    # None: coalesce when the runs update the published app (see ``coalesces``).
    coalesce: bool | None = None
    priority: int = 0
    min_interval_minutes: float | None = None
    freshness_minutes: float | None = None
    # Written by `hexdbt discover --write`, or made from its cache by `discover: auto`.
    discovered: bool = False
    # Where it was declared, for messages: "hex_mappings.yml:12" or "exposure executive_kpis".
    source: str = ""

    @property
    def params(self) -> Mapping[str, Any]:
        return self.input_params or {}

    @property
    def coalesces(self) -> bool:
        """Whether a later build's trigger supersedes one of this entry not yet sent: by default
        when its runs update the published app, where only the newest data matters; an entry
        whose runs are jobs of their own (input params: a report for a date) opts in."""
        return self.update_published_results if self.coalesce is None else self.coalesce

    @property
    def from_exposure(self) -> bool:
        """Declared by a dbt exposure (whose ``source`` is ``exposure NAME``), not the file."""
        return self.source.startswith(EXPOSURE_SOURCE_PREFIX)


@dataclass(frozen=True, slots=True)
class MappingSet:
    projects: tuple[ProjectMapping, ...]
    path: str | None = None
    # Exposures that named a project the YAML file also maps: the file won.
    overridden_exposures: tuple[str, ...] = ()
    # `discover: auto` in the file's defaults: also trigger the apps discovery found unmapped.
    discover_auto: bool = False
    discover_max_age_hours: float = 24.0
    # The file's defaults as given, for entries made from discovery.
    defaults: Mapping[str, Any] | None = None
    # What a person should know about how the set was made (a stale discovery cache, ...).
    notes: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[ProjectMapping]:
        return iter(self.projects)

    def __len__(self) -> int:
        return len(self.projects)

    def by_name(self, name: str) -> ProjectMapping:
        for project in self.projects:
            if project.name == name:
                return project
        raise KeyError(name)
