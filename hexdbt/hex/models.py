"""Hex's API described once: the wire objects, and the records hexdbt's client makes of them.

The wire objects (``msgspec`` structs, camelCase on the wire) are Hex's objects field for field,
required and nullable as HEX_API.md and Hex's OpenAPI document say. The emulator answers by
encoding them and the client reads Hex's answers by converting into them, so the two cannot
drift; ``wire_schemas()`` gives their JSON Schemas, which the conformance test checks every
emulator answer against. Open enumerations (statuses, cadences, access levels) are plain strings:
a value Hex adds later must not break a reader.

The client's records (``Run``, ``RunStatus``, ``Project``, ...) are what hexdbt works with:
times as epoch seconds, a project's status as its label. Unknown fields are ignored; a required
field missing or of the wrong type is a ``HexApiError`` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from hexdbt.clock import from_iso, to_iso
from hexdbt.errors import ConfigError, HexApiError

JSONValue = Any  # JSON's recursive type is not expressible in a way mypy checks usefully


class WireObject(msgspec.Struct, rename="camel", frozen=True, kw_only=True):
    """One of Hex's JSON objects; fields are snake_case here and camelCase on the wire."""


# -- projects: GetProject, ListProjects ---------------------------------------------------------


class EmailRef(WireObject, frozen=True):
    email: str


class StatusLabel(WireObject, frozen=True):
    name: str


class Category(WireObject, frozen=True):
    name: str
    description: str | None


class Reviews(WireObject, frozen=True):
    required: bool


class AppViews(WireObject, frozen=True):
    all_time: int
    last_seven_days: int
    last_fourteen_days: int
    last_thirty_days: int


class Analytics(WireObject, frozen=True):
    app_views: AppViews
    last_viewed_at: str | None
    published_results_updated_at: str | None


class HourlySchedule(WireObject, frozen=True):
    minute: int
    timezone: str


class DailySchedule(WireObject, frozen=True):
    hour: int
    minute: int
    timezone: str


class WeeklySchedule(WireObject, frozen=True):
    day_of_week: str
    hour: int
    minute: int
    timezone: str


class MonthlySchedule(WireObject, frozen=True):
    day: int
    hour: int
    minute: int
    timezone: str


class CustomSchedule(WireObject, frozen=True):
    cron: str
    timezone: str


class Schedule(WireObject, frozen=True):
    """One schedule; the field named after its ``cadence`` is set, the others are null."""

    cadence: str  # HOURLY | DAILY | WEEKLY | MONTHLY | CUSTOM
    enabled: bool
    hourly: HourlySchedule | None
    daily: DailySchedule | None
    weekly: WeeklySchedule | None
    monthly: MonthlySchedule | None
    custom: CustomSchedule | None


class NameRef(WireObject, frozen=True):
    name: str


class UserAccess(WireObject, frozen=True):
    user: EmailRef
    access: str  # NONE | APP_ONLY | CAN_VIEW | CAN_EDIT | FULL_ACCESS


class CollectionAccess(WireObject, frozen=True):
    collection: NameRef
    access: str


class GroupAccess(WireObject, frozen=True):
    group: NameRef
    access: str


class Access(WireObject, frozen=True):
    access: str


class Sharing(WireObject, frozen=True):
    users: list[UserAccess]
    collections: list[CollectionAccess]
    groups: list[GroupAccess]
    workspace: Access
    public_web: Access
    support: Access


class ProjectObject(WireObject, frozen=True):
    """A project as GetProject and each item of ListProjects describe it."""

    id: str
    title: str
    description: str | None
    type: str  # PROJECT | COMPONENT
    creator: EmailRef
    owner: EmailRef
    status: StatusLabel | None  # the workspace's status label, not publishing
    categories: list[Category]
    reviews: Reviews
    analytics: Analytics
    last_edited_at: str
    last_published_at: str | None
    created_at: str
    archived_at: str | None
    trashed_at: str | None
    schedules: list[Schedule]
    sharing: Sharing | UnsetType = UNSET  # only with includeSharing=true


class Pagination(WireObject, frozen=True):
    after: str | None
    before: str | None


class ProjectsAnswer(WireObject, frozen=True):
    """ListProjects' 200 body: exactly these two fields."""

    values: list[ProjectObject]
    pagination: Pagination


# -- queried tables: GetQueriedTables (Enterprise workspaces) ----------------------------------


class QueriedTableObject(WireObject, frozen=True):
    """One warehouse table a published project's queries read. ``table_name`` is written as the
    warehouse writes it: one to three parts, quoted or not, in the warehouse's case."""

    data_connection_id: str
    data_connection_name: str
    table_name: str


class QueriedTablesAnswer(WireObject, frozen=True):
    """GetQueriedTables' 200 body, cursor-paginated like ListProjects."""

    values: list[QueriedTableObject]
    pagination: Pagination


# -- runs: RunProject, GetRunStatus, GetProjectRuns --------------------------------------------


class NotificationRecipient(WireObject, frozen=True):
    id: str
    name: str
    is_private: bool | UnsetType = UNSET  # Slack channels only


class RunNotification(WireObject, frozen=True):
    """One recipient of a run's notification, as run answers describe it."""

    type: str  # SUCCESS | FAILURE | ALL
    recipient_type: str  # USER | GROUP | SLACK_CHANNEL
    include_success_screenshot: bool
    recipient: NotificationRecipient
    screenshot_format: list[str] | UnsetType = UNSET  # png | pdf


class RunStarted(WireObject, frozen=True):
    """RunProject's 201 body."""

    project_id: str
    run_id: str
    run_url: str
    run_status_url: str
    trace_id: str
    project_version: int | str
    notifications: list[RunNotification] | UnsetType = UNSET


class RunObject(WireObject, frozen=True):
    """A run as GetRunStatus and each item of GetProjectRuns describe it."""

    project_id: str
    project_version: int | str  # an integer, or a string such as "3" or "draft"
    run_id: str
    run_url: str
    status: str
    run_trigger: str  # API | SCHEDULED | APP_REFRESH
    start_time: str | None
    end_time: str | None
    elapsed_time: int | None  # milliseconds
    trace_id: str
    notifications: list[RunNotification] | UnsetType = UNSET


class RunsAnswer(WireObject, frozen=True):
    """GetProjectRuns' 200 body, newest run first."""

    runs: list[RunObject]
    next_page: str | None
    previous_page: str | None
    trace_id: str


# -- errors ------------------------------------------------------------------------------------


class ErrorIssue(WireObject, frozen=True):
    message: str


class ErrorAnswer(WireObject, frozen=True):
    """The error body of the newer endpoints (plural run paths, GetProject)."""

    code: str
    message: str
    issues: list[ErrorIssue] | UnsetType = UNSET
    trace_id: str | UnsetType = UNSET


class ReasonAnswer(WireObject, frozen=True):
    """The error body of the older endpoints (CancelRun, ListProjects) and the singular paths."""

    reason: str
    trace_id: str
    details: str | UnsetType = UNSET


class InvalidInput(WireObject, frozen=True):
    param_name: str
    param_value: JSONValue
    data_type: str
    input_cell_type: str


class InputErrorAnswer(WireObject, frozen=True):
    """Old RunProject input errors (422)."""

    invalid: list[InvalidInput]
    not_found: list[str]
    trace_id: str


WIRE_ANSWERS: tuple[type[WireObject], ...] = (
    ProjectObject,
    ProjectsAnswer,
    QueriedTablesAnswer,
    RunStarted,
    RunObject,
    RunsAnswer,
    ErrorAnswer,
    ReasonAnswer,
    InputErrorAnswer,
)


def wire_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each answer body, by its struct's name."""
    return {kind.__name__: msgspec.json.schema(kind) for kind in WIRE_ANSWERS}


def encode(answer: WireObject) -> bytes:
    """An answer as JSON bytes, unset optional fields left out."""
    return msgspec.json.encode(answer)


_Wire = TypeVar("_Wire", bound=WireObject)


def _read(payload: Any, kind: type[_Wire], what: str) -> _Wire:
    """``payload`` (parsed JSON) as ``kind``, or a ``HexApiError`` naming the field at fault."""
    if not isinstance(payload, Mapping):
        raise HexApiError(f"Hex's {what} answer is not a JSON object")
    try:
        return msgspec.convert(payload, kind)
    except msgspec.ValidationError as exc:
        trace_id = payload.get("traceId")
        raise HexApiError(
            f"Hex's {what} answer does not follow Hex's API: {exc}",
            trace_id=str(trace_id) if trace_id else None,
        ) from None


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


def _time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return from_iso(value)
    except ValueError:
        # A time hexdbt cannot read is as good as absent: it is informative, never decisive.
        return None


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
        """From the body ``to_api`` made (as the ledger keeps it)."""
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
        started = _read(payload, RunStarted, "RunProject")
        return cls(
            project_id=started.project_id,
            run_id=started.run_id,
            run_url=started.run_url,
            run_status_url=started.run_status_url,
            trace_id=started.trace_id,
            project_version=started.project_version,
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
    def from_api(cls, payload: Any) -> RunStatus:
        return cls.from_wire(_read(payload, RunObject, "run status"))

    @classmethod
    def from_wire(cls, run: RunObject) -> RunStatus:
        return cls(
            project_id=run.project_id,
            run_id=run.run_id,
            status=run.status,
            run_url=run.run_url,
            run_trigger=run.run_trigger,
            start_time=_time(run.start_time),
            end_time=_time(run.end_time),
            elapsed_time_ms=run.elapsed_time,
            trace_id=run.trace_id,
            project_version=run.project_version,
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
        page = _read(payload, RunsAnswer, "GetProjectRuns")
        return cls(
            runs=tuple(RunStatus.from_wire(run) for run in page.runs),
            next_page=page.next_page,
            previous_page=page.previous_page,
            trace_id=page.trace_id,
        )


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
    # How often the app was viewed in the last seven days (analytics.appViews.lastSevenDays).
    app_views_7d: int = 0

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
        return cls.from_wire(_read(payload, ProjectObject, "project"))

    @classmethod
    def from_wire(cls, project: ProjectObject) -> Project:
        return cls(
            id=project.id,
            title=project.title,
            description=project.description,
            type=project.type,
            status=None if project.status is None else project.status.name,
            creator_email=project.creator.email,
            owner_email=project.owner.email,
            categories=tuple(category.name for category in project.categories),
            created_at=_time(project.created_at),
            last_edited_at=_time(project.last_edited_at),
            last_published_at=_time(project.last_published_at),
            archived_at=_time(project.archived_at),
            trashed_at=_time(project.trashed_at),
            app_views_7d=project.analytics.app_views.last_seven_days,
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
        page = _read(payload, ProjectsAnswer, "ListProjects")
        return cls(
            values=tuple(Project.from_wire(project) for project in page.values),
            after=page.pagination.after or None,
            before=page.pagination.before or None,
        )


@dataclass(frozen=True, slots=True)
class QueriedTable:
    """A warehouse table a published project reads, and the data connection it reads it through."""

    table_name: str
    data_connection_id: str
    data_connection_name: str

    def to_json(self) -> dict[str, str]:
        return {
            "tableName": self.table_name,
            "dataConnectionId": self.data_connection_id,
            "dataConnectionName": self.data_connection_name,
        }


@dataclass(frozen=True, slots=True)
class QueriedTablesPage:
    values: tuple[QueriedTable, ...]
    after: str | None
    before: str | None

    @classmethod
    def from_api(cls, payload: Any) -> QueriedTablesPage:
        page = _read(payload, QueriedTablesAnswer, "GetQueriedTables")
        return cls(
            values=tuple(
                QueriedTable(
                    table_name=table.table_name,
                    data_connection_id=table.data_connection_id,
                    data_connection_name=table.data_connection_name,
                )
                for table in page.values
            ),
            after=page.pagination.after or None,
            before=page.pagination.before or None,
        )
