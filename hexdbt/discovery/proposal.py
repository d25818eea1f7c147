"""The tables Hex reported, matched to dbt's relations: the mapping they propose, and its drift
from the mapping in use."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hexdbt.dbt.artifacts import versioned_name
from hexdbt.dbt.relations import Relation, RelationIndex, Relations
from hexdbt.discovery.fetch import Discovery
from hexdbt.mapping.model import ProjectMapping
from hexdbt.mapping.selectors import SelectorIndex


@dataclass(frozen=True, slots=True)
class AppReads:
    """What one published app reads: dbt models (seeds and snapshots too), sources, and tables
    that are no relation of the dbt project."""

    project_id: str
    title: str
    models: tuple[Relation, ...]
    sources: tuple[Relation, ...]
    unmatched: tuple[str, ...]

    @property
    def model_ids(self) -> frozenset[str]:
        return frozenset(relation.unique_id for relation in self.models)

    def to_json(self) -> dict[str, Any]:
        return {
            "projectId": self.project_id,
            "title": self.title,
            "models": [relation.label for relation in self.models],
            "sources": [relation.label for relation in self.sources],
            "unmatchedTables": list(self.unmatched),
        }


@dataclass(frozen=True, slots=True)
class Proposal:
    """Per published app, what it reads; the names new mapping entries would take."""

    apps: tuple[AppReads, ...]
    unpublished: tuple[str, ...]  # titles
    # Model names that more than one relation has (a selector must then be a unique id).
    ambiguous_names: frozenset[str]

    def selector_of(self, relation: Relation) -> str:
        return relation.unique_id if relation.name in self.ambiguous_names else relation.name


def propose(discovery: Discovery, relations: Relations) -> Proposal:
    index = RelationIndex.of(relations.relations, relations.adapter_type)
    names = Counter(relation.name for relation in relations.relations if relation.triggers)
    apps: list[AppReads] = []
    for app in discovery.apps:
        if not app.published:
            continue
        models: dict[str, Relation] = {}
        sources: dict[str, Relation] = {}
        unmatched: list[str] = []
        for table in app.tables:
            matched = index.match(table.table_name)
            if not matched:
                unmatched.append(table.table_name)
            for relation in matched:
                (models if relation.triggers else sources)[relation.unique_id] = relation
        apps.append(
            AppReads(
                project_id=app.project_id,
                title=app.title,
                models=tuple(sorted(models.values(), key=lambda r: r.unique_id)),
                sources=tuple(sorted(sources.values(), key=lambda r: r.unique_id)),
                unmatched=tuple(dict.fromkeys(unmatched)),
            )
        )
    return Proposal(
        apps=tuple(apps),
        unpublished=tuple(app.title for app in discovery.apps if not app.published),
        ambiguous_names=frozenset(name for name, count in names.items() if count > 1),
    )


def entry_name(title: str, taken: Iterable[str]) -> str:
    """A mapping name from a Hex title (``Customer health`` -> ``customer_health``), unique
    among ``taken``."""
    base = re.sub(r"[^0-9a-z]+", "_", title.lower()).strip("_") or "hex_app"
    used = set(taken)
    name, number = base, 2
    while name in used:
        name, number = f"{base}_{number}", number + 1
    return name


class DriftKind(StrEnum):
    UNMAPPED_MODEL = "unmapped-model"  # the app reads a model its mapping lacks
    # The mapping names a model Hex does not list among what the app reads: Hex lists only what
    # the published app's SQL queries, so the app may never have read it, or read it otherwise.
    STALE_MODEL = "stale-model"
    UNMAPPED_APP = "unmapped-app"  # the app reads dbt models and nothing maps it


@dataclass(frozen=True, slots=True)
class Drift:
    kind: DriftKind
    project_id: str
    app: str  # the mapping's name, else the Hex title
    models: tuple[str, ...]  # names, with a model's version (dim_accounts.v2)
    source: str  # where the mapping is declared ("" for an unmapped app)
    hint: str  # what mends it

    @property
    def message(self) -> str:
        models = ", ".join(self.models)
        if self.kind is DriftKind.UNMAPPED_MODEL:
            return f"{self.app} reads {models} in Hex, but its mapping lacks them"
        if self.kind is DriftKind.STALE_MODEL:
            return (
                f"{self.app} is mapped to {models}, which Hex does not list among the tables"
                " the app reads"
            )
        return f"Hex app {self.app!r} ({self.project_id}) reads {models} but has no mapping"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "projectId": self.project_id,
            "app": self.app,
            "models": list(self.models),
            "source": self.source,
            "message": self.message,
            "hint": self.hint,
        }


def find_drift(
    proposal: Proposal, mappings: Iterable[ProjectMapping], selectors: SelectorIndex
) -> tuple[Drift, ...]:
    """Where the mapping and what Hex says each app reads disagree. Discovered entries of a
    ``discover: auto`` plan are not the mapping: leave them out of ``mappings``."""
    by_project: dict[str, list[ProjectMapping]] = {}
    for mapping in mappings:
        by_project.setdefault(mapping.project_id, []).append(mapping)
    drift: list[Drift] = []
    for app in proposal.apps:
        if not (app.models or app.sources or app.unmatched):
            continue  # Hex knows no table of it (no SQL cell on a connection): nothing to judge
        read = app.model_ids
        mapped_here = by_project.get(app.project_id)
        names = {relation.unique_id: relation.label for relation in app.models}
        if not mapped_here:
            if read:
                drift.append(
                    Drift(
                        DriftKind.UNMAPPED_APP,
                        app.project_id,
                        app.title,
                        _sorted(names),
                        "",
                        "`hexdbt discover --write` adds it as a `discovered: true` entry",
                    )
                )
            continue
        first = mapped_here[0]
        mapped: set[str] = set()
        for mapping in mapped_here:
            mapped |= selectors.resolve_all(mapping.models)
        lacking = read - mapped
        if lacking:
            drift.append(
                Drift(
                    DriftKind.UNMAPPED_MODEL,
                    app.project_id,
                    first.name,
                    _sorted({uid: names[uid] for uid in lacking}),
                    first.source,
                    "add them to the exposure's depends_on"
                    if first.from_exposure
                    else "`hexdbt discover --write` adds them to its models",
                )
            )
        stale = mapped - read
        if stale:
            drift.append(
                Drift(
                    DriftKind.STALE_MODEL,
                    app.project_id,
                    first.name,
                    _sorted({uid: versioned_name(uid) for uid in stale}),
                    first.source,
                    _stale_hint(mapped_here, stale, read, selectors),
                )
            )
    return tuple(drift)


def _stale_hint(
    mapped_here: list[ProjectMapping],
    stale: set[str],
    read: frozenset[str],
    selectors: SelectorIndex,
) -> str:
    """What removes mapped models the app does not read. ``discover --write`` drops a selector
    of a discovered entry only when none of what it matches is read (as ``write_proposal``
    does); anything else (a hand-written entry, an exposure, a selector that also matches a
    model the app reads) is edited by hand."""
    (mapping, *others) = mapped_here
    if mapping.discovered and not others:
        kept = selectors.resolve_all(
            selector for selector in mapping.models if selectors.resolve(selector) & read
        )
        if not kept & stale:
            return "`hexdbt discover --write` removes them from this discovered entry"
    where = "the exposure's depends_on" if mapping.from_exposure else "the entry's models"
    return (
        f"if the app does not need them, remove them from {where} by hand (`hexdbt discover"
        " --write` removes models from `discovered: true` entries only, and only a selector"
        " that matches nothing the app reads)"
    )


def _sorted(names: dict[str, str]) -> tuple[str, ...]:
    return tuple(sorted(names.values()))
