"""Ask Hex what each published project reads: ListProjects, then GetQueriedTables per project."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hexdbt.errors import HexPermissionError, HexRejectedError
from hexdbt.hex.models import QueriedTable

if TYPE_CHECKING:
    from hexdbt.hex.client import HexClient

# Hex's budget for every call but RunProject (HEX_API.md: plan for 30 a minute).
CALLS_PER_MINUTE = 30
ENTERPRISE_ONLY = (
    "discovery needs Hex Enterprise: this workspace does not offer GetQueriedTables"
    " (Hex answered 403); the hand-written mapping keeps working"
)


@dataclass(frozen=True, slots=True)
class DiscoveredApp:
    """A Hex project and the warehouse tables its published version reads."""

    project_id: str
    title: str
    published: bool
    tables: tuple[QueriedTable, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "projectId": self.project_id,
            "title": self.title,
            "published": self.published,
            "tables": [table.to_json() for table in self.tables],
        }

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> DiscoveredApp:
        return cls(
            project_id=str(item["projectId"]),
            title=str(item["title"]),
            published=bool(item["published"]),
            tables=tuple(
                QueriedTable(
                    table_name=str(table["tableName"]),
                    data_connection_id=str(table["dataConnectionId"]),
                    data_connection_name=str(table["dataConnectionName"]),
                )
                for table in item["tables"]
            ),
        )


@dataclass(frozen=True, slots=True)
class Discovery:
    """What Hex said, when, and which Hex (its address) said it."""

    hex_url: str
    fetched_at: float
    apps: tuple[DiscoveredApp, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "hexUrl": self.hex_url,
            "fetchedAt": self.fetched_at,
            "apps": [app.to_json() for app in self.apps],
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Discovery:
        return cls(
            hex_url=str(document["hexUrl"]),
            fetched_at=float(document["fetchedAt"]),
            apps=tuple(DiscoveredApp.from_json(item) for item in document["apps"]),
        )


def duration_text(calls: int) -> str:
    """How long ``calls`` take at Hex's 30 calls a minute, in words."""
    minutes = calls / CALLS_PER_MINUTE
    if minutes <= 1:
        return "under a minute"
    return f"about {math.ceil(minutes)} minutes"


def fetch_discovery(client: HexClient, *, log: Callable[[str], None]) -> Discovery:
    """Every published project of the workspace and the tables it reads.

    A 403 from GetQueriedTables, once ListProjects has answered (so the token reads projects),
    means the workspace lacks the feature. A 422 means the project is not published (any more).
    """
    projects = list(client.iter_projects(limit=None))
    published = [project for project in projects if project.published]
    log(
        f"{len(projects)} projects, {len(published)} published: reading what each reads takes"
        f" {len(published)} calls, {duration_text(len(published))} at {CALLS_PER_MINUTE} calls"
        " a minute"
    )
    apps = [
        DiscoveredApp(project.id, project.title, published=False)
        for project in projects
        if not project.published
    ]
    for number, project in enumerate(published, 1):
        try:
            tables = tuple(client.iter_queried_tables(project.id))
        except HexPermissionError as exc:
            raise HexPermissionError(
                ENTERPRISE_ONLY,
                status=exc.status,
                trace_id=exc.trace_id,
                hint="map projects by hand in hex_mappings.yml (docs/mapping.md)",
            ) from exc
        except HexRejectedError as exc:
            if exc.status != 422:
                raise
            log(f"[{number}/{len(published)}] {project.title}: not published, skipped")
            apps.append(DiscoveredApp(project.id, project.title, published=False))
            continue
        count = f"{len(tables)} table{'' if len(tables) == 1 else 's'}"
        log(f"[{number}/{len(published)}] {project.title}: {count}")
        apps.append(DiscoveredApp(project.id, project.title, published=True, tables=tables))
    return Discovery(hex_url=client.base_url, fetched_at=client.clock.now(), apps=tuple(apps))
