"""Scenarios: the projects, tokens, run behaviours and settings an emulator serves.

A scenario is plain data (a YAML or JSON file, or a dict) checked here once, so the server never
meets a malformed value. Every problem is reported as one line naming the source and the key,
e.g. ``scenario.yml: projects[2].runs[0].outcome: 'DONE' is not one of COMPLETED, ...``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hexdbt.clock import from_iso
from hexdbt.errors import ConfigError
from hexdbt.hex.models import (
    Category,
    CustomSchedule,
    DailySchedule,
    HourlySchedule,
    MonthlySchedule,
    Schedule,
    WeeklySchedule,
)

RUN_OUTCOMES = ("COMPLETED", "ERRORED", "KILLED", "UNABLE_TO_ALLOCATE_KERNEL")
RUN_STATUSES = ("PENDING", "RUNNING", *RUN_OUTCOMES)
TERMINAL_STATUSES = frozenset(RUN_OUTCOMES)
RUN_TRIGGERS = ("API", "SCHEDULED", "APP_REFRESH")
SCOPES = ("read", "run")
PROJECT_TYPES = ("PROJECT", "COMPONENT")
ACCESS_LEVELS = ("NONE", "APP_ONLY", "CAN_VIEW", "CAN_EDIT", "FULL_ACCESS")
CADENCES = ("HOURLY", "DAILY", "WEEKLY", "MONTHLY", "CUSTOM")
DAYS_OF_WEEK = ("MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY")

# Fixed so that project timestamps (createdAt, lastEditedAt, ...) and therefore ListProjects
# ordering are the same on every machine, independent of the emulator's clock.
_CATALOGUE_EPOCH = 1_748_736_000.0  # 2025-06-01T00:00:00Z
_DAY_S = 86_400.0


class ScenarioError(ConfigError):
    """A scenario file or document is malformed; the message names the source and the key."""


@dataclass(frozen=True, slots=True)
class RunBehaviour:
    """How one run of a project unfolds on the emulator's clock."""

    pending_s: float = 3.0
    running_s: float = 20.0
    outcome: str = "COMPLETED"


@dataclass(frozen=True, slots=True)
class HistoryRun:
    """A run that already exists when the scenario is loaded (e.g. last night's schedule)."""

    status: str
    run_trigger: str
    started_ago_s: float
    duration_s: float


@dataclass(frozen=True, slots=True)
class Recipient:
    """A user, group or Slack channel that notifications can name, and collections' entries."""

    id: str
    name: str
    private: bool = False  # Slack channels only


@dataclass(frozen=True, slots=True)
class Grant:
    """One entry of a project's sharing: who (an email, or a group or collection id), how much."""

    who: str
    access: str


@dataclass(frozen=True, slots=True)
class SharingSpec:
    users: tuple[Grant, ...] = ()
    groups: tuple[Grant, ...] = ()
    collections: tuple[Grant, ...] = ()
    workspace: str = "CAN_VIEW"
    public_web: str = "NONE"
    support: str = "NONE"


# The data connection a scenario's queried tables go through unless they name another.
DEFAULT_CONNECTION_ID = "d1a7c0de-5eed-4c0a-9b1e-000000000001"
DEFAULT_CONNECTION_NAME = "Warehouse"


@dataclass(frozen=True, slots=True)
class QueriedTableSpec:
    """A warehouse table a published project reads (GetQueriedTables), written as the warehouse
    writes it."""

    table_name: str
    connection_id: str = DEFAULT_CONNECTION_ID
    connection_name: str = DEFAULT_CONNECTION_NAME


@dataclass(frozen=True, slots=True)
class ProjectSpec:
    id: str
    title: str
    published: bool = True
    archived: bool = False
    trashed: bool = False
    type: str = "PROJECT"
    description: str | None = None
    owner_email: str = "analytics@example.com"
    creator_email: str = "analytics@example.com"
    # The workspace's status label ("Approved"); nothing to do with publishing.
    status: str | None = None
    categories: tuple[Category, ...] = ()
    reviews_required: bool = False
    schedules: tuple[Schedule, ...] = ()
    sharing: SharingSpec = SharingSpec()
    # An integer, or "draft": the version a run's status answers name.
    version: int | str = 1
    inputs: tuple[str, ...] = ()
    # Successive runs take successive behaviours; the last one repeats.
    runs: tuple[RunBehaviour, ...] = (RunBehaviour(),)
    history: tuple[HistoryRun, ...] = ()
    queried_tables: tuple[QueriedTableSpec, ...] = ()
    created_at: float = _CATALOGUE_EPOCH
    last_edited_at: float = _CATALOGUE_EPOCH
    last_published_at: float | None = _CATALOGUE_EPOCH
    # The app's views in the last seven days (analytics.appViews.lastSevenDays); the longer
    # windows are made from it.
    app_views: int = 0

    def behaviour_for(self, run_number: int) -> RunBehaviour:
        """The behaviour of this project's ``run_number``-th run (0-based)."""
        return self.runs[min(run_number, len(self.runs) - 1)]


@dataclass(frozen=True, slots=True)
class TokenSpec:
    token: str
    scopes: frozenset[str] = frozenset(SCOPES)
    # None: every project is visible; otherwise only these ids (others answer 404).
    projects: frozenset[str] | None = None
    expired: bool = False
    # Limits are per user; tokens naming the same user share one budget and one kernel cap.
    user: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    limits_enabled: bool = True
    run_project_per_minute: int = 20
    run_project_per_hour: int = 60
    other_per_minute: int = 30
    other_per_hour: int = 1800
    minute_window_s: float = 60.0
    hour_window_s: float = 3600.0
    max_live_runs: int = 25
    unknown_inputs: str = "ignore"  # ignore | reject (422)
    inputs_with_update_published_results: str = "ignore"  # ignore | reject (400)
    input_error_shape: str = "current"  # current {code,message,issues} | legacy {invalid,notFound}
    cancel_ended_run: str = "reject"  # reject (422) | accept (204)
    # Hex names no rate-limit headers; X-RateLimit-* is a guess, sent only when asked for.
    rate_limit_headers: bool = False
    # GetQueriedTables is an Enterprise feature: without it every call answers 403; with it an
    # unpublished project answers 422.
    queried_tables_feature: bool = True


_SETTING_CHOICES: dict[str, tuple[str, ...]] = {
    "unknown_inputs": ("ignore", "reject"),
    "inputs_with_update_published_results": ("ignore", "reject"),
    "input_error_shape": ("current", "legacy"),
    "cancel_ended_run": ("reject", "accept"),
}


@dataclass(frozen=True, slots=True)
class Scenario:
    projects: tuple[ProjectSpec, ...]
    tokens: tuple[TokenSpec, ...] = ()
    settings: Settings = field(default_factory=Settings)
    users: tuple[Recipient, ...] = ()
    groups: tuple[Recipient, ...] = ()
    slack_channels: tuple[Recipient, ...] = ()
    collections: tuple[Recipient, ...] = ()
    source: str = "<scenario>"

    def project(self, project_id: str) -> ProjectSpec | None:
        for project in self.projects:
            if project.id == project_id:
                return project
        return None

    def with_settings(self, **changes: Any) -> Scenario:
        """This scenario with some settings changed, checked like a file's settings."""
        merged = {**dataclasses.asdict(self.settings), **changes}
        settings = _parse_settings(merged, f"{self.source}: settings")
        return dataclasses.replace(self, settings=settings)

    @classmethod
    def from_dict(cls, document: Any, *, source: str = "<scenario>") -> Scenario:
        return _parse_scenario(document, source)

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ScenarioError(f"scenario {path}: cannot read: {exc.strerror}") from exc
        return cls.from_dict(_parse_text(text, str(path), json_only=False), source=str(path))

    @classmethod
    def coerce(cls, value: Scenario | Mapping[str, Any] | str | Path | None) -> Scenario:
        """Accept what ``HexEmulator(scenario=...)`` accepts: None means the default scenario."""
        if value is None:
            return default_scenario()
        if isinstance(value, Scenario):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        return cls.from_file(value)


def find_named(items: Sequence[Recipient], item_id: str) -> Recipient | None:
    """The user, group, Slack channel or collection with this id, among ``items``."""
    for item in items:
        if item.id == item_id:
            return item
    return None


def _parse_text(text: str, source: str, *, json_only: bool) -> Any:
    if json_only or source.endswith(".json"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScenarioError(f"{source}: not valid JSON: {exc.msg} (line {exc.lineno})") from exc
        except RecursionError as exc:
            raise ScenarioError(f"{source}: not valid JSON: nested too deeply") from exc
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "cannot parse"
        raise ScenarioError(f"{source}: not valid YAML: {problem}{where}") from exc
    except RecursionError as exc:
        raise ScenarioError(f"{source}: not valid YAML: nested too deeply") from exc


def _fail(where: str, problem: str) -> ScenarioError:
    return ScenarioError(f"{where}: {problem}")


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(where, f"expected a mapping, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _no_unknown_keys(document: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in document:
        if key not in allowed:
            raise _fail(f"{where}.{key}", f"unknown key (known: {', '.join(allowed)})")


def _string(document: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = document.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise _fail(f"{where}.{key}", f"expected a non-empty string, got {_kind(value)}")
    return value


def _bool(document: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = document.get(key, default)
    if not isinstance(value, bool):
        raise _fail(f"{where}.{key}", f"expected true or false, got {value!r}")
    return value


def _number(
    document: Mapping[str, Any], key: str, where: str, default: float, *, positive: bool = False
) -> float:
    value = document.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(f"{where}.{key}", f"expected a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise _fail(
            f"{where}.{key}", f"must be {'above' if positive else 'at least'} 0, got {value}"
        )
    return float(value)


def _integer(document: Mapping[str, Any], key: str, where: str, default: int) -> int:
    value = document.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _fail(f"{where}.{key}", f"expected a whole number >= 0, got {value!r}")
    return int(value)


def _choice(value: Any, choices: Sequence[str], where: str) -> str:
    if value not in choices:
        raise _fail(where, f"{value!r} is not one of {', '.join(choices)}")
    return str(value)


def _time(document: Mapping[str, Any], key: str, where: str, default: float | None) -> float | None:
    if key not in document:
        return default
    value = document[key]
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return from_iso(value)
        except ValueError:
            pass
    else:
        # YAML turns an unquoted timestamp into a datetime.
        timestamp = getattr(value, "timestamp", None)
        if callable(timestamp):
            moment = value if getattr(value, "tzinfo", None) else value.replace(tzinfo=_utc())
            return float(moment.timestamp())
    raise _fail(f"{where}.{key}", f"expected an ISO-8601 time, got {value!r}")


def _utc() -> Any:
    from datetime import UTC

    return UTC


def _parse_settings(document: Any, where: str) -> Settings:
    document = _mapping(document if document is not None else {}, where)
    defaults = Settings()
    names = [f.name for f in dataclasses.fields(Settings)]
    _no_unknown_keys(document, names, where)
    values: dict[str, Any] = {}
    for name in names:
        default = getattr(defaults, name)
        if name in _SETTING_CHOICES:
            values[name] = _choice(
                document.get(name, default), _SETTING_CHOICES[name], f"{where}.{name}"
            )
        elif isinstance(default, bool):
            values[name] = _bool(document, name, where, default)
        elif isinstance(default, int):
            values[name] = _integer(document, name, where, default)
        else:
            values[name] = _number(document, name, where, default, positive=True)
    return Settings(**values)


def _parse_behaviour(document: Any, where: str) -> RunBehaviour:
    if isinstance(document, str):
        document = {"outcome": document}
    document = _mapping(document, where)
    _no_unknown_keys(document, ("pending_s", "running_s", "outcome"), where)
    default = RunBehaviour()
    return RunBehaviour(
        pending_s=_number(document, "pending_s", where, default.pending_s),
        running_s=_number(document, "running_s", where, default.running_s),
        outcome=_choice(document.get("outcome", default.outcome), RUN_OUTCOMES, f"{where}.outcome"),
    )


def _parse_history(document: Any, where: str) -> HistoryRun:
    document = _mapping(document, where)
    _no_unknown_keys(document, ("status", "run_trigger", "started_ago_s", "duration_s"), where)
    return HistoryRun(
        # Only ended runs: a live run from the past would need a behaviour of its own.
        status=_choice(document.get("status", "COMPLETED"), RUN_OUTCOMES, f"{where}.status"),
        run_trigger=_choice(
            document.get("run_trigger", "SCHEDULED"), RUN_TRIGGERS, f"{where}.run_trigger"
        ),
        started_ago_s=_number(document, "started_ago_s", where, _DAY_S),
        duration_s=_number(document, "duration_s", where, 30.0),
    )


_PROJECT_KEYS = (
    "id",
    "title",
    "description",
    "published",
    "archived",
    "trashed",
    "type",
    "owner_email",
    "creator_email",
    "status",
    "categories",
    "reviews_required",
    "schedules",
    "sharing",
    "version",
    "inputs",
    "runs",
    "history",
    "queried_tables",
    "created_at",
    "last_edited_at",
    "last_published_at",
    "app_views",
)


def _parse_category(document: Any, where: str) -> Category:
    if isinstance(document, str):
        document = {"name": document}
    document = _mapping(document, where)
    _no_unknown_keys(document, ("name", "description"), where)
    description = document.get("description")
    if description is not None and not isinstance(description, str):
        raise _fail(f"{where}.description", f"expected a string, got {_kind(description)}")
    return Category(name=_string(document, "name", where), description=description)


def _bounded(document: Mapping[str, Any], key: str, where: str, low: int, high: int) -> int:
    value = document.get(key, low)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(
            f"{where}.{key}", f"expected a whole number from {low} to {high}, got {value!r}"
        )
    return int(value)


def _parse_schedule(document: Any, where: str) -> Schedule:
    """One schedule: ``cadence`` and the fields of that cadence (hour, minute, ...)."""
    document = _mapping(document, where)
    cadence = _choice(document.get("cadence"), CADENCES, f"{where}.cadence")
    fields_by_cadence = {
        "HOURLY": ("minute",),
        "DAILY": ("hour", "minute"),
        "WEEKLY": ("day_of_week", "hour", "minute"),
        "MONTHLY": ("day", "hour", "minute"),
        "CUSTOM": ("cron",),
    }
    _no_unknown_keys(
        document, ("cadence", "enabled", "timezone", *fields_by_cadence[cadence]), where
    )
    timezone = _string(document, "timezone", where, "UTC")
    minute = _bounded(document, "minute", where, 0, 59)
    hour = _bounded(document, "hour", where, 0, 23)
    return Schedule(
        cadence=cadence,
        enabled=_bool(document, "enabled", where, True),
        hourly=HourlySchedule(minute=minute, timezone=timezone) if cadence == "HOURLY" else None,
        daily=DailySchedule(hour=hour, minute=minute, timezone=timezone)
        if cadence == "DAILY"
        else None,
        weekly=WeeklySchedule(
            day_of_week=_choice(document.get("day_of_week"), DAYS_OF_WEEK, f"{where}.day_of_week"),
            hour=hour,
            minute=minute,
            timezone=timezone,
        )
        if cadence == "WEEKLY"
        else None,
        monthly=MonthlySchedule(
            day=_bounded(document, "day", where, 1, 31), hour=hour, minute=minute, timezone=timezone
        )
        if cadence == "MONTHLY"
        else None,
        custom=CustomSchedule(cron=_string(document, "cron", where), timezone=timezone)
        if cadence == "CUSTOM"
        else None,
    )


def _parse_grants(document: Mapping[str, Any], key: str, who: str, where: str) -> tuple[Grant, ...]:
    items = document.get(key, [])
    if not isinstance(items, list):
        raise _fail(f"{where}.{key}", f"expected a list, got {_kind(items)}")
    grants = []
    for i, item in enumerate(items):
        item_where = f"{where}.{key}[{i}]"
        item = _mapping(item, item_where)
        _no_unknown_keys(item, (who, "access"), item_where)
        grants.append(
            Grant(
                who=_string(item, who, item_where),
                access=_choice(item.get("access"), ACCESS_LEVELS, f"{item_where}.access"),
            )
        )
    return tuple(grants)


def _parse_sharing(document: Any, where: str) -> SharingSpec:
    """Who may see a project: users by email, groups and collections by their scenario ids."""
    document = _mapping(document, where)
    keys = ("users", "groups", "collections", "workspace", "public_web", "support")
    _no_unknown_keys(document, keys, where)
    default = SharingSpec()
    return SharingSpec(
        users=_parse_grants(document, "users", "email", where),
        groups=_parse_grants(document, "groups", "id", where),
        collections=_parse_grants(document, "collections", "id", where),
        workspace=_choice(
            document.get("workspace", default.workspace), ACCESS_LEVELS, f"{where}.workspace"
        ),
        public_web=_choice(
            document.get("public_web", default.public_web), ACCESS_LEVELS, f"{where}.public_web"
        ),
        support=_choice(
            document.get("support", default.support), ACCESS_LEVELS, f"{where}.support"
        ),
    )


def _parse_named(document: Any, key: str, where: str) -> tuple[Recipient, ...]:
    """``users``, ``groups``, ``slack_channels`` or ``collections``: ``[{id, name}]``."""
    items = document.get(key, [])
    if not isinstance(items, list):
        raise _fail(f"{where}: {key}", f"expected a list, got {_kind(items)}")
    allowed = ("id", "name", "private") if key == "slack_channels" else ("id", "name")
    named = []
    for i, item in enumerate(items):
        item_where = f"{where}: {key}[{i}]"
        item = _mapping(item, item_where)
        _no_unknown_keys(item, allowed, item_where)
        named.append(
            Recipient(
                id=_string(item, "id", item_where),
                name=_string(item, "name", item_where),
                private=_bool(item, "private", item_where, False),
            )
        )
    return tuple(named)


def _parse_queried_table(document: Any, where: str) -> QueriedTableSpec:
    """A table name, or ``{table_name, connection_id?, connection_name?}``."""
    if isinstance(document, str):
        document = {"table_name": document}
    document = _mapping(document, where)
    _no_unknown_keys(document, ("table_name", "connection_id", "connection_name"), where)
    return QueriedTableSpec(
        table_name=_string(document, "table_name", where),
        connection_id=_string(document, "connection_id", where, DEFAULT_CONNECTION_ID),
        connection_name=_string(document, "connection_name", where, DEFAULT_CONNECTION_NAME),
    )


def _parse_project(document: Any, where: str, position: int) -> ProjectSpec:
    document = _mapping(document, where)
    _no_unknown_keys(document, _PROJECT_KEYS, where)
    project_id = _string(document, "id", where)
    published = _bool(document, "published", where, True)
    # Later entries are newer, so a file without timestamps still sorts in a stable order.
    created = _CATALOGUE_EPOCH + position * _DAY_S
    created_at = _time(document, "created_at", where, created) or created
    edited_at = _time(document, "last_edited_at", where, created_at + _DAY_S / 2) or created_at
    published_at = _time(document, "last_published_at", where, edited_at if published else None)
    if not published:
        published_at = None
    description = document.get("description")
    if description is not None and not isinstance(description, str):
        raise _fail(f"{where}.description", f"expected a string, got {_kind(description)}")
    inputs = document.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(i, str) and i for i in inputs):
        raise _fail(f"{where}.inputs", "expected a list of input names")
    runs_document = document.get("runs", {})
    if isinstance(runs_document, list):
        if not runs_document:
            raise _fail(f"{where}.runs", "expected at least one run behaviour")
        runs = tuple(
            _parse_behaviour(item, f"{where}.runs[{i}]") for i, item in enumerate(runs_document)
        )
    else:
        runs = (_parse_behaviour(runs_document, f"{where}.runs"),)
    history_document = document.get("history", [])
    if not isinstance(history_document, list):
        raise _fail(f"{where}.history", f"expected a list, got {_kind(history_document)}")
    version = document.get("version", 1)
    if version != "draft" and (
        isinstance(version, bool) or not isinstance(version, int) or version < 1
    ):
        raise _fail(f"{where}.version", f"expected a whole number >= 1 or draft, got {version!r}")
    status = document.get("status")
    if status is not None and (not isinstance(status, str) or not status.strip()):
        raise _fail(f"{where}.status", f"expected a status label or null, got {status!r}")
    categories_document = document.get("categories", [])
    if not isinstance(categories_document, list):
        raise _fail(f"{where}.categories", f"expected a list, got {_kind(categories_document)}")
    schedules_document = document.get("schedules", [])
    if not isinstance(schedules_document, list):
        raise _fail(f"{where}.schedules", f"expected a list, got {_kind(schedules_document)}")
    owner_email = _string(document, "owner_email", where, "analytics@example.com")
    tables_document = document.get("queried_tables", [])
    if not isinstance(tables_document, list):
        raise _fail(f"{where}.queried_tables", f"expected a list, got {_kind(tables_document)}")
    return ProjectSpec(
        id=project_id,
        title=_string(document, "title", where),
        published=published,
        archived=_bool(document, "archived", where, False),
        trashed=_bool(document, "trashed", where, False),
        type=_choice(document.get("type", "PROJECT"), PROJECT_TYPES, f"{where}.type"),
        description=description,
        owner_email=owner_email,
        creator_email=_string(document, "creator_email", where, owner_email),
        status=status,
        categories=tuple(
            _parse_category(item, f"{where}.categories[{i}]")
            for i, item in enumerate(categories_document)
        ),
        reviews_required=_bool(document, "reviews_required", where, False),
        schedules=tuple(
            _parse_schedule(item, f"{where}.schedules[{i}]")
            for i, item in enumerate(schedules_document)
        ),
        sharing=_parse_sharing(document.get("sharing", {}), f"{where}.sharing"),
        version=version,
        inputs=tuple(inputs),
        runs=runs,
        history=tuple(
            _parse_history(item, f"{where}.history[{i}]") for i, item in enumerate(history_document)
        ),
        queried_tables=tuple(
            _parse_queried_table(item, f"{where}.queried_tables[{i}]")
            for i, item in enumerate(tables_document)
        ),
        created_at=created_at,
        last_edited_at=edited_at,
        last_published_at=published_at,
        app_views=_integer(document, "app_views", where, 0),
    )


def _parse_token(document: Any, where: str) -> TokenSpec:
    if isinstance(document, str):
        document = {"token": document}
    document = _mapping(document, where)
    _no_unknown_keys(document, ("token", "scopes", "projects", "expired", "user"), where)
    scopes = document.get("scopes", list(SCOPES))
    if not isinstance(scopes, list):
        raise _fail(f"{where}.scopes", f"expected a list, got {_kind(scopes)}")
    for i, scope in enumerate(scopes):
        _choice(scope, SCOPES, f"{where}.scopes[{i}]")
    projects = document.get("projects")
    if projects is not None and (
        not isinstance(projects, list) or not all(isinstance(p, str) for p in projects)
    ):
        raise _fail(f"{where}.projects", "expected a list of project ids")
    user = document.get("user")
    if user is not None and not isinstance(user, str):
        raise _fail(f"{where}.user", f"expected a string, got {_kind(user)}")
    return TokenSpec(
        token=_string(document, "token", where),
        scopes=frozenset(scopes),
        projects=None if projects is None else frozenset(projects),
        expired=_bool(document, "expired", where, False),
        user=user,
    )


def _parse_scenario(document: Any, source: str) -> Scenario:
    document = _mapping(document, source)
    named_keys = ("users", "groups", "slack_channels", "collections")
    _no_unknown_keys(document, ("projects", "tokens", "settings", *named_keys), source)
    projects_document = document.get("projects")
    if not isinstance(projects_document, list) or not projects_document:
        raise _fail(f"{source}: projects", "expected a non-empty list of projects")
    projects = tuple(
        _parse_project(item, f"{source}: projects[{i}]", i)
        for i, item in enumerate(projects_document)
    )
    seen: set[str] = set()
    for i, project in enumerate(projects):
        if project.id in seen:
            raise _fail(f"{source}: projects[{i}].id", f"duplicate project id {project.id!r}")
        seen.add(project.id)
    tokens_document = document.get("tokens", [])
    if not isinstance(tokens_document, list):
        raise _fail(f"{source}: tokens", f"expected a list, got {_kind(tokens_document)}")
    tokens = tuple(
        _parse_token(item, f"{source}: tokens[{i}]") for i, item in enumerate(tokens_document)
    )
    settings = _parse_settings(document.get("settings"), f"{source}: settings")
    users, groups, slack_channels, collections = (
        _parse_named(document, key, source) for key in named_keys
    )
    for i, project in enumerate(projects):
        where = f"{source}: projects[{i}].sharing"
        for kind, grants, known in (
            ("groups", project.sharing.groups, groups),
            ("collections", project.sharing.collections, collections),
        ):
            for j, grant in enumerate(grants):
                if find_named(known, grant.who) is None:
                    raise _fail(f"{where}.{kind}[{j}].id", f"no {kind} entry with id {grant.who!r}")
    return Scenario(
        projects=projects,
        tokens=tokens,
        settings=settings,
        users=users,
        groups=groups,
        slack_channels=slack_channels,
        collections=collections,
        source=source,
    )


# The projects that the sample dbt project's hex_mappings.yml names, plus one of each other kind.
# Ids of the mapped projects are fixed by that file; the others are arbitrary but stable.
CUSTOMER_HEALTH_ID = "5a8591dd-4039-49df-9202-96385ba3eff8"
FINANCE_OVERVIEW_ID = "7c2e4b10-9d8a-4f3e-b6a1-2f0c3d9e8a11"
MARKETING_ATTRIBUTION_ID = "b3d9f6a2-1e47-4c85-9a30-6e2f7d1c5b42"
EXECUTIVE_KPIS_ID = "e8a41c7d-3b52-4f96-8d07-9c1a2b3e4f53"
UNPUBLISHED_ID = "1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
ARCHIVED_ID = "2a1b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
TRASHED_ID = "3b2c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e"
ERRORS_ID = "4c3d5e6f-7a8b-4c9d-8e0f-2a3b4c5d6e7f"
KILLED_ID = "5d4e6f7a-8b9c-4dae-9f1a-3b4c5d6e7f80"
NO_KERNEL_ID = "6e5f7a8b-9cad-4ebf-8a2b-4c5d6e7f8091"
FLAKY_ID = "7f6a8b9c-adbe-4fc0-9b3c-5d6e7f8091a2"
COMPONENT_ID = "8a7b9cad-becf-4ad1-8c4d-6e7f8091a2b3"
SCHEDULED_ID = "9b8cadbe-cfd0-4be2-9d5e-7f8091a2b3c4"
FILLER_COUNT = 24
ANALYST_USER_ID = "11111111-2222-4333-8444-555555555555"
DATA_TEAM_GROUP_ID = "22222222-3333-4444-8555-666666666666"
ALERTS_CHANNEL_ID = "C0123ALERTS"
FINANCE_COLLECTION_ID = "33333333-4444-4555-8666-777777777777"


def filler_project_id(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


def default_scenario_document() -> dict[str, Any]:
    """The built-in scenario as a plain document (what ``--print-default-scenario`` shows)."""
    projects: list[dict[str, Any]] = [
        {
            "id": CUSTOMER_HEALTH_ID,
            "title": "Customer health",
            "description": "Churn risk and account health by region.",
            "inputs": ["as_of", "region"],
            "version": 7,
            # The sample dbt project's relations, written the ways SQL cells write them.
            "queried_tables": ["hexdbt_sample.main.customers"],
            "runs": {"pending_s": 3, "running_s": 25, "outcome": "COMPLETED"},
            "creator_email": "ana@example.com",
            "status": "Approved",
            "categories": [{"name": "Customers", "description": "Accounts and churn"}],
            "schedules": [
                {"cadence": "DAILY", "hour": 6, "minute": 30, "timezone": "Europe/Berlin"},
                {"cadence": "CUSTOM", "cron": "0 */4 * * 1-5", "enabled": False},
            ],
            "sharing": {
                "users": [{"email": "ana@example.com", "access": "FULL_ACCESS"}],
                "groups": [{"id": DATA_TEAM_GROUP_ID, "access": "CAN_EDIT"}],
                "collections": [{"id": FINANCE_COLLECTION_ID, "access": "APP_ONLY"}],
            },
        },
        {
            "id": FINANCE_OVERVIEW_ID,
            "title": "Finance overview",
            "description": "Revenue, margin and cash, converted to a reporting currency.",
            "inputs": ["as_of", "currency"],
            "version": 12,
            "queried_tables": [
                '"hexdbt_sample"."main"."orders"',
                "MAIN.REVENUE_DAILY",
                {"table_name": "finance.fx_rates", "connection_name": "Finance Postgres"},
            ],
            "runs": {"pending_s": 2, "running_s": 40, "outcome": "COMPLETED"},
            "owner_email": "finance@example.com",
            "categories": ["Finance"],
            "reviews_required": True,
            "sharing": {"collections": [{"id": FINANCE_COLLECTION_ID, "access": "CAN_VIEW"}]},
        },
        {
            "id": MARKETING_ATTRIBUTION_ID,
            "title": "Marketing attribution",
            "description": "Multi-touch attribution over a trailing window.",
            "inputs": ["as_of", "window_days"],
            "version": 4,
            "queried_tables": ["marketing_attribution", "main.marketing_touchpoints"],
            "runs": {"pending_s": 4, "running_s": 30, "outcome": "COMPLETED"},
        },
        {
            "id": EXECUTIVE_KPIS_ID,
            "title": "Executive KPIs",
            "description": "The board's weekly numbers.",
            "inputs": ["dbt_invocation_id"],
            "version": 3,
            "queried_tables": [
                "hexdbt_sample.main.customers",
                "hexdbt_sample.main.orders",
                "hexdbt_sample.main.revenue_daily",
            ],
            "runs": {"pending_s": 3, "running_s": 20, "outcome": "COMPLETED"},
        },
        {
            "id": UNPUBLISHED_ID,
            "title": "Churn deep dive (draft)",
            "published": False,
            "queried_tables": ["hexdbt_sample.main.customers"],
        },
        {"id": ARCHIVED_ID, "title": "2024 board deck", "archived": True},
        {"id": TRASHED_ID, "title": "Old scratchpad", "trashed": True},
        {
            "id": ERRORS_ID,
            "title": "Broken pipeline monitor",
            "runs": {"pending_s": 2, "running_s": 10, "outcome": "ERRORED"},
        },
        {
            "id": KILLED_ID,
            "title": "Runaway notebook",
            "runs": {"pending_s": 2, "running_s": 15, "outcome": "KILLED"},
        },
        {
            "id": NO_KERNEL_ID,
            "title": "Heavy simulation",
            "runs": {"pending_s": 5, "running_s": 0, "outcome": "UNABLE_TO_ALLOCATE_KERNEL"},
        },
        {
            "id": FLAKY_ID,
            "title": "Flaky forecast",
            "inputs": ["horizon_days"],
            "runs": [
                {"pending_s": 2, "running_s": 10, "outcome": "ERRORED"},
                {"pending_s": 2, "running_s": 20, "outcome": "COMPLETED"},
            ],
        },
        {"id": COMPONENT_ID, "title": "Shared KPI definitions", "type": "COMPONENT"},
        {
            "id": SCHEDULED_ID,
            "title": "Nightly cohort rebuild",
            "runs": {"pending_s": 30, "running_s": 600, "outcome": "COMPLETED"},
            "history": [
                {
                    "status": "COMPLETED",
                    "run_trigger": "SCHEDULED",
                    "started_ago_s": 86_400,
                    "duration_s": 540,
                },
                {
                    "status": "ERRORED",
                    "run_trigger": "SCHEDULED",
                    "started_ago_s": 172_800,
                    "duration_s": 120,
                },
                {
                    "status": "COMPLETED",
                    "run_trigger": "APP_REFRESH",
                    "started_ago_s": 7_200,
                    "duration_s": 60,
                },
            ],
        },
    ]
    for number in range(1, FILLER_COUNT + 1):
        projects.append(
            {
                "id": filler_project_id(number),
                "title": f"Team report {number:02d}",
                "runs": {"pending_s": 2, "running_s": 15, "outcome": "COMPLETED"},
            }
        )
    return {
        "users": [{"id": ANALYST_USER_ID, "name": "Ana Lyst"}],
        "groups": [{"id": DATA_TEAM_GROUP_ID, "name": "Data team"}],
        "slack_channels": [{"id": ALERTS_CHANNEL_ID, "name": "data-alerts", "private": False}],
        "collections": [{"id": FINANCE_COLLECTION_ID, "name": "Finance"}],
        "projects": projects,
    }


def default_scenario() -> Scenario:
    """The built-in scenario: the sample project's four apps, one of each other kind, 37 in all."""
    return Scenario.from_dict(default_scenario_document(), source="<default scenario>")
