"""Typed records of Hex's API: what the client sends (RunRequest) and reads (Run, RunStatus, ...).

Readers are lenient on purpose: unknown fields are ignored, optional ones may be missing or null,
``projectVersion`` may be an integer or a string. A field the record cannot live without (a run's
id) missing is a ``HexApiError``: Hex answered something hexdbt cannot use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hexdbt.clock import from_iso, to_iso
from hexdbt.errors import ConfigError, HexApiError

JSONValue = Any  # JSON's recursive type is not expressible in a way mypy checks usefully


class Status(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    ERRORED = "ERRORED"
    KILLED = "KILLED"
    UNABLE_TO_ALLOCATE_KERNEL = "UNABLE_TO_ALLOCATE_KERNEL"


LIVE_STATUSES = frozenset({Status.PENDING, Status.RUNNING})
FAILED_STATUSES = frozenset({Status.ERRORED, Status.KILLED, Status.UNABLE_TO_ALLOCATE_KERNEL})


def is_terminal(status: str) -> bool:
    """Whether a run in ``status`` has ended.

    A status hexdbt does not know counts as ended (and never as success): waiting on it until the
    timeout would turn a new terminal status of Hex's into an hour-long hang.
    """
    return status not in LIVE_STATUSES


def is_success(status: str) -> bool:
    return status == Status.COMPLETED


class RunTrigger(StrEnum):
    API = "API"
    SCHEDULED = "SCHEDULED"
    APP_REFRESH = "APP_REFRESH"
    ALL = "ALL"


def _text(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    return str(value)


def _required(data: Mapping[str, Any], key: str, what: str) -> str:
    value = data.get(key)
    if value is None or value == "":
        raise HexApiError(f"Hex's {what} answer has no {key!r}", trace_id=_text(data, "traceId"))
    return str(value)


def _time(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if not value:
        return None
    try:
        return from_iso(str(value))
    except ValueError:
        # A time hexdbt cannot read is as good as absent: it is informative, never decisive.
        return None


def _version(value: Any) -> int | str | None:
    if value is None or isinstance(value, int):
        return value
    return str(value)


def _int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _mapping(payload: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise HexApiError(f"Hex's {what} answer is not a JSON object")
    return payload


@dataclass(frozen=True, slots=True)
class Notification:
    """One entry of RunProject's ``notifications``."""

    type: str = "ALL"  # SUCCESS | FAILURE | ALL
    include_success_screenshot: bool = False
    slack_channel_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    group_ids: tuple[str, ...] = ()
    screenshot_format: str | None = None
    subject: str | None = None
    body: str | None = None

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> Notification:
        """From Hex's camelCase shape (the mapping file and stored requests use it too)."""
        return cls(
            type=str(item.get("type", "ALL")),
            include_success_screenshot=bool(item.get("includeSuccessScreenshot", False)),
            slack_channel_ids=tuple(item.get("slackChannelIds") or ()),
            user_ids=tuple(item.get("userIds") or ()),
            group_ids=tuple(item.get("groupIds") or ()),
            screenshot_format=item.get("screenshotFormat"),
            subject=item.get("subject"),
            body=item.get("body"),
        )

    def to_api(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "type": self.type,
            "includeSuccessScreenshot": self.include_success_screenshot,
        }
        if self.slack_channel_ids:
            payload["slackChannelIds"] = list(self.slack_channel_ids)
        if self.user_ids:
            payload["userIds"] = list(self.user_ids)
        if self.group_ids:
            payload["groupIds"] = list(self.group_ids)
        for key, value in (
            ("screenshotFormat", self.screenshot_format),
            ("subject", self.subject),
            ("body", self.body),
        ):
            if value is not None:
                payload[key] = value
        return payload


def update_published_results_for(
    requested: bool | None, input_params: Mapping[str, Any], *, where: str
) -> bool:
    """The ``updatePublishedResults`` to send. Hex ignores input params when it writes published
    results, so unset means true without input params and false with them, and true together with
    input params is refused. ``where`` names the setting in the message, as the user wrote it
    (``update_published_results``, ``--update-published``)."""
    if requested is None:
        return not input_params
    if requested and input_params:
        raise ConfigError(
            f"{where} is true and input params are given, but Hex ignores input params when it"
            " writes published results",
            hint=f"leave {where} unset (false is then sent for runs with params), or drop the"
            " input params",
        )
    return requested


@dataclass(frozen=True, slots=True)
class RunRequest:
    """The body of RunProject. Defaults follow the seed: publish results, use cached SQL."""

    input_params: Mapping[str, JSONValue] = field(default_factory=dict)
    update_published_results: bool = True
    use_cached_sql_results: bool = True
    dry_run: bool = False
    view_id: str | None = None
    notifications: tuple[Notification, ...] = ()

    def __post_init__(self) -> None:
        if self.view_id and self.input_params:
            raise ConfigError(
                "a saved view (--view-id) and input params cannot be sent together",
                hint="Hex runs a view with the view's own inputs; drop one of the two",
            )

    @classmethod
    def from_api(cls, body: Mapping[str, Any]) -> RunRequest:
        """From the body ``to_api`` made (the ledger keeps it, to send a queued trigger later)."""
        return cls(
            input_params=dict(body.get("inputParams") or {}),
            update_published_results=bool(body.get("updatePublishedResults", True)),
            use_cached_sql_results=bool(body.get("useCachedSqlResults", True)),
            dry_run=bool(body.get("dryRun", False)),
            view_id=body.get("viewId"),
            notifications=tuple(Notification.from_api(n) for n in body.get("notifications", [])),
        )

    def to_api(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "dryRun": bool(self.dry_run),
            "updatePublishedResults": bool(self.update_published_results),
            "useCachedSqlResults": bool(self.use_cached_sql_results),
        }
        # Hex rejects or misreads null inputs; an input left null means "use the app's default".
        inputs = {name: value for name, value in self.input_params.items() if value is not None}
        if inputs:
            payload["inputParams"] = inputs
        if self.view_id:
            payload["viewId"] = self.view_id
        if self.notifications:
            payload["notifications"] = [item.to_api() for item in self.notifications]
        return payload


@dataclass(frozen=True, slots=True)
class Run:
    """RunProject's 201 answer: a run was accepted."""

    project_id: str
    run_id: str
    run_url: str | None
    run_status_url: str | None
    trace_id: str | None
    project_version: int | str | None

    @classmethod
    def from_api(cls, payload: Any) -> Run:
        data = _mapping(payload, "RunProject")
        return cls(
            project_id=_required(data, "projectId", "RunProject"),
            run_id=_required(data, "runId", "RunProject"),
            run_url=_text(data, "runUrl"),
            run_status_url=_text(data, "runStatusUrl"),
            trace_id=_text(data, "traceId"),
            project_version=_version(data.get("projectVersion")),
        )


@dataclass(frozen=True, slots=True)
class RunStatus:
    """A run as GetRunStatus and GetProjectRuns describe it."""

    project_id: str
    run_id: str
    status: str
    run_url: str | None = None
    run_trigger: str | None = None
    start_time: float | None = None
    end_time: float | None = None
    elapsed_time_ms: int | None = None
    trace_id: str | None = None
    project_version: int | str | None = None

    @property
    def is_terminal(self) -> bool:
        return is_terminal(self.status)

    @property
    def is_success(self) -> bool:
        return is_success(self.status)

    @classmethod
    def from_api(cls, payload: Any, *, trace_id: str | None = None) -> RunStatus:
        data = _mapping(payload, "run status")
        return cls(
            project_id=_required(data, "projectId", "run status"),
            run_id=_required(data, "runId", "run status"),
            status=_required(data, "status", "run status"),
            run_url=_text(data, "runUrl"),
            run_trigger=_text(data, "runTrigger"),
            start_time=_time(data, "startTime"),
            end_time=_time(data, "endTime"),
            elapsed_time_ms=_int(data.get("elapsedTime")),
            trace_id=_text(data, "traceId") or trace_id,
            project_version=_version(data.get("projectVersion")),
        )

    def to_json(self) -> dict[str, Any]:
        """camelCase, as Hex names it, for ``--json`` output and the Python API."""
        return {
            "projectId": self.project_id,
            "runId": self.run_id,
            "runUrl": self.run_url,
            "status": self.status,
            "runTrigger": self.run_trigger,
            "startTime": None if self.start_time is None else to_iso(self.start_time),
            "endTime": None if self.end_time is None else to_iso(self.end_time),
            "elapsedTime": self.elapsed_time_ms,
            "traceId": self.trace_id,
            "projectVersion": self.project_version,
        }


@dataclass(frozen=True, slots=True)
class RunsPage:
    """One page of GetProjectRuns, newest run first."""

    runs: tuple[RunStatus, ...]
    next_page: str | None
    previous_page: str | None
    trace_id: str | None

    @classmethod
    def from_api(cls, payload: Any) -> RunsPage:
        data = _mapping(payload, "GetProjectRuns")
        trace_id = _text(data, "traceId")
        raw_runs = data.get("runs") or []
        if not isinstance(raw_runs, list):
            raise HexApiError("Hex's GetProjectRuns answer has a 'runs' that is not a list")
        return cls(
            runs=tuple(RunStatus.from_api(item, trace_id=trace_id) for item in raw_runs),
            next_page=_text(data, "nextPage"),
            previous_page=_text(data, "previousPage"),
            trace_id=trace_id,
        )


def _email(value: Any) -> str | None:
    if isinstance(value, Mapping):
        return _text(value, "email")
    return None


@dataclass(frozen=True, slots=True)
class Project:
    """A project as ListProjects and GetProject describe it."""

    id: str
    title: str
    description: str | None = None
    type: str | None = None
    status: str | None = None
    creator_email: str | None = None
    owner_email: str | None = None
    categories: tuple[str, ...] = ()
    created_at: float | None = None
    last_edited_at: float | None = None
    last_published_at: float | None = None
    archived_at: float | None = None
    trashed_at: float | None = None

    @property
    def published(self) -> bool:
        return self.last_published_at is not None

    @property
    def archived(self) -> bool:
        return self.archived_at is not None

    @property
    def trashed(self) -> bool:
        return self.trashed_at is not None

    @classmethod
    def from_api(cls, payload: Any) -> Project:
        data = _mapping(payload, "project")
        status = data.get("status")
        categories = data.get("categories") or []
        return cls(
            id=_required(data, "id", "project"),
            title=_text(data, "title") or "",
            description=_text(data, "description"),
            type=_text(data, "type"),
            status=_text(status, "name") if isinstance(status, Mapping) else None,
            creator_email=_email(data.get("creator")),
            owner_email=_email(data.get("owner")),
            categories=tuple(
                str(item["name"])
                for item in categories
                if isinstance(item, Mapping) and item.get("name") is not None
            ),
            created_at=_time(data, "createdAt"),
            last_edited_at=_time(data, "lastEditedAt"),
            last_published_at=_time(data, "lastPublishedAt"),
            archived_at=_time(data, "archivedAt"),
            trashed_at=_time(data, "trashedAt"),
        )

    def to_json(self) -> dict[str, Any]:
        """The item of ``list-projects --json``: ``projectId`` first, as the seed's jq expects."""

        def iso(value: float | None) -> str | None:
            return None if value is None else to_iso(value)

        return {
            "projectId": self.id,
            "title": self.title,
            "status": self.status,
            "lastPublishedAt": iso(self.last_published_at),
            "published": self.published,
            "archived": self.archived,
            "trashed": self.trashed,
            "type": self.type,
            "description": self.description,
            "owner": self.owner_email,
            "creator": self.creator_email,
            "categories": list(self.categories),
            "createdAt": iso(self.created_at),
            "lastEditedAt": iso(self.last_edited_at),
            "archivedAt": iso(self.archived_at),
            "trashedAt": iso(self.trashed_at),
        }


@dataclass(frozen=True, slots=True)
class ProjectsPage:
    values: tuple[Project, ...]
    after: str | None
    before: str | None

    @classmethod
    def from_api(cls, payload: Any) -> ProjectsPage:
        data = _mapping(payload, "ListProjects")
        values = data.get("values") or []
        if not isinstance(values, list):
            raise HexApiError("Hex's ListProjects answer has a 'values' that is not a list")
        pagination = data.get("pagination")
        cursors: Mapping[str, Any] = pagination if isinstance(pagination, Mapping) else {}
        return cls(
            values=tuple(Project.from_api(item) for item in values),
            after=_text(cursors, "after") or None,
            before=_text(cursors, "before") or None,
        )
