"""What the emulator answers: Hex's endpoints, auth, limits and run lifecycles, without sockets.

The server hands each request to ``HexService`` and writes back the ``Response`` it gets; faults
that act on the connection itself (a drop, a delay) are carried out by the server. Every run's
status is computed from its creation time and behaviour on the emulator's clock, so a manual
clock moves runs exactly and a scaled clock makes an hour of Hex pass in a minute.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode

from hexdbt.clock import Clock, ManualClock, SystemClock, to_iso
from hexdbt.emulator.faults import Fault, FaultBook, FaultError, FaultRule
from hexdbt.emulator.scenario import (
    RUN_STATUSES,
    TERMINAL_STATUSES,
    HistoryRun,
    ProjectSpec,
    RunBehaviour,
    Scenario,
    ScenarioError,
    TokenSpec,
)

JsonObject = dict[str, Any]
API_PREFIX = "/api/v1"
# Older endpoints answer errors as {reason, traceId, details}; newer ones as {code, message, issues}.
_OLDER_SHAPE_OPERATIONS = frozenset({"CancelRun", "ListProjects"})
_RUN_SCOPE_OPERATIONS = frozenset({"RunProject", "CancelRun"})
_ID = r"([^/]+)"
_ROUTES: tuple[tuple[re.Pattern[str], dict[str, str]], ...] = (
    (re.compile(r"^/projects$"), {"GET": "ListProjects"}),
    (re.compile(rf"^/projects/{_ID}$"), {"GET": "GetProject"}),
    (re.compile(rf"^/projects/{_ID}/runs$"), {"GET": "GetProjectRuns", "POST": "RunProject"}),
    (re.compile(rf"^/projects/{_ID}/runs/{_ID}$"), {"GET": "GetRunStatus", "DELETE": "CancelRun"}),
    # The singular paths Hex's own Airflow, Dagster and Prefect packages still call.
    (re.compile(rf"^/project/{_ID}/run$"), {"POST": "RunProject"}),
    (re.compile(rf"^/project/{_ID}/runs$"), {"GET": "GetProjectRuns"}),
    (re.compile(rf"^/project/{_ID}/run/{_ID}$"), {"GET": "GetRunStatus", "DELETE": "CancelRun"}),
)
_APP_PAGE = re.compile(rf"^/app/{_ID}/runs/{_ID}/?$")
DRY_RUN_ID = "00000000-0000-0000-0000-000000000000"
_REASON_BY_STATUS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_CODE_BY_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    422: "UNPROCESSABLE_CONTENT",
    429: "TOO_MANY_REQUESTS",
    500: "INTERNAL_SERVER_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
}


def reason_phrase(status: int) -> str:
    return _REASON_BY_STATUS.get(status, "OK" if status < 300 else "Error")


def token_fingerprint(token: str) -> str:
    """What the journal shows instead of a token: enough to tell tokens apart, nothing more."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # path with its query string, as received
    authorization: str | None
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> dict[str, list[str]]:
        return (
            parse_qs(self.target.split("?", 1)[1], keep_blank_values=True)
            if "?" in self.target
            else {}
        )


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as the emulator knows it, for tests ("started exactly once") and the admin API."""

    run_id: str
    project_id: str
    status: str
    run_trigger: str
    created_at: str
    start_time: str | None
    end_time: str | None
    input_params: Mapping[str, Any]
    update_published_results: bool
    use_cached_sql_results: bool
    view_id: str | None
    token_fingerprint: str | None

    def to_json(self) -> JsonObject:
        return {
            "runId": self.run_id,
            "projectId": self.project_id,
            "status": self.status,
            "runTrigger": self.run_trigger,
            "createdAt": self.created_at,
            "startTime": self.start_time,
            "endTime": self.end_time,
            "inputParams": dict(self.input_params),
            "updatePublishedResults": self.update_published_results,
            "useCachedSqlResults": self.use_cached_sql_results,
            "viewId": self.view_id,
            "tokenFingerprint": self.token_fingerprint,
        }


@dataclass(slots=True)
class _Run:
    run_id: str
    project_id: str
    project_version: int
    user: str
    run_trigger: str
    created_at: float
    behaviour: RunBehaviour
    sequence: int
    input_params: JsonObject = field(default_factory=dict)
    update_published_results: bool = False
    use_cached_sql_results: bool = True
    view_id: str | None = None
    notifications: list[Any] | None = None
    token_fingerprint: str | None = None
    from_history: bool = False
    killed_at: float | None = None

    def timeline(self, now: float) -> tuple[str, float | None, float | None]:
        """(status, start time, end time) at ``now``."""
        pending_end = self.created_at + self.behaviour.pending_s
        if self.killed_at is not None:
            started = pending_end if self.killed_at >= pending_end else None
            return "KILLED", started, self.killed_at
        if now < pending_end:
            return "PENDING", None, None
        if self.behaviour.outcome == "UNABLE_TO_ALLOCATE_KERNEL":
            return "UNABLE_TO_ALLOCATE_KERNEL", None, pending_end
        running_end = pending_end + self.behaviour.running_s
        if now < running_end:
            return "RUNNING", pending_end, None
        return self.behaviour.outcome, pending_end, running_end

    def is_live(self, now: float) -> bool:
        return self.timeline(now)[0] not in TERMINAL_STATUSES


class ApiError(Exception):
    """An error answer, raised inside a handler and rendered in the operation's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        issues: list[str] | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        body: JsonObject | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.issues = issues
        self.headers = headers
        self.body = body  # a complete body that replaces the usual shape (legacy 422)


@dataclass(slots=True)
class Exchange:
    """One request on its way through the emulator, and its journal entry."""

    request: Request
    operation: str | None
    trace_id: str
    entry: JsonObject
    fault: Fault | None = None


class _RateWindows:
    """Fixed windows per (user, bucket): a window opens at its first request and lasts its length."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str, float], list[float]] = {}

    def clear(self) -> None:
        self._windows.clear()

    def admit(
        self, user: str, bucket: str, limits: list[tuple[float, int]], now: float
    ) -> tuple[bool, tuple[tuple[str, str], ...]]:
        windows: list[tuple[float, int, list[float]]] = []
        for length, limit in limits:
            key = (user, bucket, length)
            window = self._windows.get(key)
            if window is None or now >= window[0] + length:
                window = [now, 0.0]
                self._windows[key] = window
            windows.append((length, limit, window))
        full = [w for w in windows if w[2][1] >= w[1]]
        if full:
            length, limit, window = max(full, key=lambda w: w[2][0] + w[0])
            wait_s = max(1, math.ceil(window[0] + length - now))
            return False, (
                ("Retry-After", str(wait_s)),
                ("X-RateLimit-Limit", str(limit)),
                ("X-RateLimit-Remaining", "0"),
                ("X-RateLimit-Reset", str(wait_s)),
            )
        for _, _, window in windows:
            window[1] += 1
        length, limit, window = min(windows, key=lambda w: (w[1] - w[2][1], w[0]))
        return True, (
            ("X-RateLimit-Limit", str(limit)),
            ("X-RateLimit-Remaining", str(int(limit - window[1]))),
            ("X-RateLimit-Reset", str(max(0, math.ceil(window[0] + length - now)))),
        )


def _json_bytes(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix != "offset":
            raise ValueError(cursor)
        return max(0, int(number))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"invalid pagination cursor {cursor!r}") from exc


class HexService:
    """Hex's API over a scenario, on a clock. Thread-safe: one lock guards all state."""

    def __init__(
        self,
        scenario: Scenario,
        clock: Clock,
        *,
        base_url: str = "http://127.0.0.1",
        journal_clock: Clock | None = None,
    ) -> None:
        self.clock = clock
        self.base_url = base_url
        self.faults = FaultBook()
        # The journal records real arrival times whatever clock drives the runs.
        self._journal_clock = journal_clock or SystemClock()
        self._lock = threading.RLock()
        self._journal: list[JsonObject] = []
        self._windows = _RateWindows()
        self._runs: dict[str, _Run] = {}
        self._run_counts: dict[str, int] = {}
        self._sequence = 0
        self.scenario = scenario
        self._load(scenario)

    # ----------------------------------------------------------------- state
    def _load(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._tokens: dict[str, TokenSpec] = {t.token: t for t in scenario.tokens}
        self._runs.clear()
        self._run_counts.clear()
        self._windows.clear()
        now = self.clock.now()
        for project in scenario.projects:
            for past in sorted(project.history, key=lambda h: -h.started_ago_s):
                self._add_history_run(project, past, now)

    def _add_history_run(self, project: ProjectSpec, past: HistoryRun, now: float) -> None:
        self._sequence += 1
        run = _Run(
            run_id=str(uuid.uuid4()),
            project_id=project.id,
            project_version=project.version,
            user="",
            run_trigger=past.run_trigger,
            created_at=now - past.started_ago_s,
            behaviour=RunBehaviour(pending_s=0.0, running_s=past.duration_s, outcome=past.status),
            sequence=self._sequence,
            from_history=True,
        )
        self._runs[run.run_id] = run

    def reset(self) -> None:
        """Forget runs, the journal, rate windows and faults; keep the scenario and the clock."""
        with self._lock:
            self._journal.clear()
            self.faults.clear()
            self._load(self.scenario)

    def load_scenario(self, scenario: Scenario) -> None:
        """Serve another scenario: runs, rate windows and faults start afresh; the journal stays."""
        with self._lock:
            self.faults.clear()
            self._load(scenario)

    def journal(self) -> list[JsonObject]:
        with self._lock:
            return copy.deepcopy(self._journal)

    def runs(
        self, project_id: str | None = None, *, include_history: bool = False
    ) -> list[RunRecord]:
        """Runs in creation order (oldest first); scenario history only when asked for."""
        with self._lock:
            now = self.clock.now()
            chosen = sorted(
                (
                    run
                    for run in self._runs.values()
                    if (project_id is None or run.project_id == project_id)
                    and (include_history or not run.from_history)
                ),
                key=lambda run: run.sequence,
            )
            return [self._record(run, now) for run in chosen]

    def _record(self, run: _Run, now: float) -> RunRecord:
        status, started, ended = run.timeline(now)
        return RunRecord(
            run_id=run.run_id,
            project_id=run.project_id,
            status=status,
            run_trigger=run.run_trigger,
            created_at=to_iso(run.created_at),
            start_time=None if started is None else to_iso(started),
            end_time=None if ended is None else to_iso(ended),
            input_params=copy.deepcopy(run.input_params),
            update_published_results=run.update_published_results,
            use_cached_sql_results=run.use_cached_sql_results,
            view_id=run.view_id,
            token_fingerprint=run.token_fingerprint,
        )

    def advance(self, seconds: float) -> None:
        if not isinstance(self.clock, ManualClock):
            raise ScenarioError("the emulator's clock is not manual: start it with --manual-clock")
        self.clock.advance(seconds)

    # ------------------------------------------------------------ exchanges
    def begin(self, request: Request) -> Exchange:
        """Route a request, journal its arrival and draw its fault (if any)."""
        # To the microsecond, before any work on the request: benchmarks time watchers by it.
        received = to_iso(self._journal_clock.now(), digits=6)
        operation = self._operation(request)
        trace_id = uuid.uuid4().hex
        entry: JsonObject = {
            "method": request.method,
            "path": request.target,
            "status": None,
            "body": _parse_json_or_none(request.body),
            "time": received,
            "operation": operation,
            "tokenFingerprint": _bearer_fingerprint(request.authorization),
            "traceId": trace_id,
            "fault": None,
        }
        fault = self.faults.draw(operation) if operation is not None else None
        if fault is not None:
            entry["fault"] = fault.describe()
        # Admin calls stay out of the journal: it records what a Hex client sent, nothing else.
        if not request.path.startswith("/_emulator"):
            with self._lock:
                self._journal.append(entry)
        return Exchange(
            request=request, operation=operation, trace_id=trace_id, entry=entry, fault=fault
        )

    def finish(self, exchange: Exchange, status: int | None) -> None:
        """Record what was answered (None: nothing, the connection was dropped)."""
        with self._lock:
            exchange.entry["status"] = status

    def fault_response(self, exchange: Exchange, fault: Fault) -> Response:
        """The answer of an ``error`` fault, as a failing proxy or backend would give it."""
        if fault.body == "empty":
            return Response(fault.status, b"", content_type="text/plain")
        if fault.body == "html":
            page = (
                f"<html><head><title>{fault.status} {reason_phrase(fault.status)}</title></head>"
                f"<body><center><h1>{fault.status} {reason_phrase(fault.status)}</h1></center>"
                "<hr><center>nginx</center></body></html>"
            )
            return Response(fault.status, page.encode(), content_type="text/html")
        body = {
            "code": _CODE_BY_STATUS.get(fault.status, "INTERNAL_SERVER_ERROR"),
            "message": f"{reason_phrase(fault.status)} (injected fault)",
            "traceId": exchange.trace_id,
        }
        return Response(fault.status, _json_bytes(body))

    def answer(self, exchange: Exchange) -> Response:
        request = exchange.request
        path = request.path
        if path.startswith("/_emulator"):
            return self._admin(request)
        page = _APP_PAGE.match(path)
        if page:
            return self._app_page(page.group(1), page.group(2))
        if exchange.operation is None:
            return self._unrouted(exchange)
        try:
            with self._lock:
                return self._api(exchange)
        except ApiError as error:
            return self._error_response(exchange, error)

    # ------------------------------------------------------------------ API
    def _operation(self, request: Request) -> str | None:
        path = request.path
        if not path.startswith(API_PREFIX + "/"):
            return None
        relative = path[len(API_PREFIX) :].rstrip("/") or "/"
        for pattern, methods in _ROUTES:
            if pattern.match(relative):
                return methods.get(request.method)
        return None

    def _unrouted(self, exchange: Exchange) -> Response:
        path = exchange.request.path
        if path.startswith(API_PREFIX + "/"):
            relative = path[len(API_PREFIX) :].rstrip("/")
            for pattern, methods in _ROUTES:
                if pattern.match(relative):
                    error = ApiError(
                        405,
                        f"{exchange.request.method} is not allowed on {path}",
                        headers=(("Allow", ", ".join(sorted(methods))),),
                    )
                    return self._error_response(exchange, error)
        return self._error_response(exchange, ApiError(404, f"no Hex endpoint at {path}"))

    def _error_response(self, exchange: Exchange, error: ApiError) -> Response:
        if error.body is not None:
            body = {**error.body, "traceId": exchange.trace_id}
        elif exchange.operation in _OLDER_SHAPE_OPERATIONS:
            body = {"reason": error.message, "traceId": exchange.trace_id}
            if error.issues:
                body["details"] = "; ".join(error.issues)
        else:
            body = {
                "code": _CODE_BY_STATUS.get(error.status, "INTERNAL_SERVER_ERROR"),
                "message": error.message,
                "traceId": exchange.trace_id,
            }
            if error.issues:
                body["issues"] = [{"message": issue} for issue in error.issues]
        return Response(error.status, _json_bytes(body), headers=error.headers)

    def _api(self, exchange: Exchange) -> Response:
        request = exchange.request
        operation = exchange.operation
        assert operation is not None
        token = self._authenticate(request.authorization)
        if operation in _RUN_SCOPE_OPERATIONS and "run" not in token.scopes:
            raise ApiError(403, "this token lacks the 'run projects' scope")
        if operation not in _RUN_SCOPE_OPERATIONS and "read" not in token.scopes:
            raise ApiError(403, "this token lacks the 'read projects' scope")
        user = token.user or token_fingerprint(token.token)
        rate_headers = self._admit(user, operation)
        relative = request.path[len(API_PREFIX) :].rstrip("/")
        parts = relative.split("/")
        project_id = parts[2] if len(parts) > 2 else None
        run_id = parts[4] if len(parts) > 4 else None
        try:
            status, body = self._operate(
                operation, token, user, request, exchange, project_id, run_id
            )
        except ApiError as error:
            error.headers = (*error.headers, *rate_headers)
            raise
        if body is None:
            return Response(status, b"", headers=rate_headers)
        body["traceId"] = exchange.trace_id
        return Response(status, _json_bytes(body), headers=rate_headers)

    def _operate(
        self,
        operation: str,
        token: TokenSpec,
        user: str,
        request: Request,
        exchange: Exchange,
        project_id: str | None,
        run_id: str | None,
    ) -> tuple[int, JsonObject | None]:
        if operation == "ListProjects":
            return self._list_projects(token, request)
        project = self._visible_project(token, project_id or "")
        if operation == "GetProject":
            return 200, self._project_json(project)
        if operation == "RunProject":
            return self._run_project(token, user, project, request, exchange)
        if operation == "GetProjectRuns":
            return self._project_runs(project, request)
        run = self._find_run(project, run_id)
        if operation == "GetRunStatus":
            return 200, self._run_json(run)
        return self._cancel_run(run)

    def _authenticate(self, authorization: str | None) -> TokenSpec:
        if not authorization:
            raise ApiError(
                401, "missing Authorization header: send 'Authorization: Bearer <token>'"
            )
        scheme, _, value = authorization.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise ApiError(401, "the Authorization header must be 'Bearer <token>'")
        if not self._tokens:
            return TokenSpec(token=value)
        token = self._tokens.get(value)
        if token is None:
            raise ApiError(401, "invalid token")
        if token.expired:
            raise ApiError(401, "this token has expired")
        return token

    def _admit(self, user: str, operation: str) -> tuple[tuple[str, str], ...]:
        settings = self.scenario.settings
        if not settings.limits_enabled:
            return ()
        if operation == "RunProject":
            bucket = "run"
            limits = [
                (settings.minute_window_s, settings.run_project_per_minute),
                (settings.hour_window_s, settings.run_project_per_hour),
            ]
        else:
            bucket = "other"
            limits = [
                (settings.minute_window_s, settings.other_per_minute),
                (settings.hour_window_s, settings.other_per_hour),
            ]
        admitted, headers = self._windows.admit(user, bucket, limits, self.clock.now())
        if not admitted:
            raise ApiError(
                429, "rate limit exceeded: retry after the window resets", headers=headers
            )
        return headers

    def _visible_project(self, token: TokenSpec, project_id: str) -> ProjectSpec:
        project = self.scenario.project(project_id)
        if project is None or (token.projects is not None and project_id not in token.projects):
            raise ApiError(404, f"project {project_id} not found")
        return project

    def _find_run(self, project: ProjectSpec, run_id: str | None) -> _Run:
        run = self._runs.get(run_id or "")
        if run is None or run.project_id != project.id:
            raise ApiError(404, f"run {run_id} not found in project {project.id}")
        return run

    # ------------------------------------------------------------- bodies
    def _project_json(self, project: ProjectSpec) -> JsonObject:
        one_day = 86_400.0
        return {
            "id": project.id,
            "title": project.title,
            "description": project.description,
            "type": project.type,
            "creator": {"email": project.owner_email},
            "owner": {"email": project.owner_email},
            "status": {"name": "Published"} if project.last_published_at is not None else None,
            "categories": [],
            "lastEditedAt": to_iso(project.last_edited_at),
            "lastPublishedAt": None
            if project.last_published_at is None
            else to_iso(project.last_published_at),
            "createdAt": to_iso(project.created_at),
            "archivedAt": to_iso(project.last_edited_at + one_day) if project.archived else None,
            "trashedAt": to_iso(project.last_edited_at + 2 * one_day) if project.trashed else None,
            "schedules": [],
            "analytics": {
                "appViews": {"allTime": 0, "lastThirtyDays": 0, "lastSevenDays": 0},
                "lastViewedAt": None,
                "publishedResultsUpdatedAt": None,
            },
        }

    def _run_url(self, project_id: str, run_id: str) -> str:
        return f"{self.base_url}/app/{project_id}/runs/{run_id}"

    def _run_status_url(self, project_id: str, run_id: str) -> str:
        return f"{self.base_url}{API_PREFIX}/projects/{project_id}/runs/{run_id}"

    def _run_json(self, run: _Run) -> JsonObject:
        now = self.clock.now()
        status, started, ended = run.timeline(now)
        if started is None:
            elapsed = None
        else:
            elapsed = round(((ended if ended is not None else now) - started) * 1000)
        body: JsonObject = {
            "projectId": run.project_id,
            # Status answers carry the version as a string, the trigger answer as an integer:
            # Hex's own sources show both, and clients must accept either.
            "projectVersion": str(run.project_version),
            "runId": run.run_id,
            "runUrl": self._run_url(run.project_id, run.run_id),
            "status": status,
            "runTrigger": run.run_trigger,
            "startTime": None if started is None else to_iso(started),
            "endTime": None if ended is None else to_iso(ended),
            "elapsedTime": elapsed,
        }
        if run.notifications is not None:
            body["notifications"] = run.notifications
        return body

    # ---------------------------------------------------------- operations
    def _list_projects(self, token: TokenSpec, request: Request) -> tuple[int, JsonObject]:
        query = request.query
        limit = _int_param(query, "limit", 25, 1, 100)
        include_archived = _bool_param(query, "includeArchived")
        include_trashed = _bool_param(query, "includeTrashed")
        include_components = _bool_param(query, "includeComponents")
        sort_by = _choice_param(
            query, "sortBy", ("CREATED_AT", "LAST_EDITED_AT", "LAST_PUBLISHED_AT"), "CREATED_AT"
        )
        direction = _choice_param(query, "sortDirection", ("DESC", "ASC"), "DESC")
        after = _one(query, "after")
        before = _one(query, "before")
        if after and before:
            raise ApiError(400, "give either 'after' or 'before', not both")
        chosen = [
            p
            for p in self.scenario.projects
            if (token.projects is None or p.id in token.projects)
            and (include_archived or not p.archived)
            and (include_trashed or not p.trashed)
            and (include_components or p.type != "COMPONENT")
        ]

        def sort_field(project: ProjectSpec) -> float | None:
            if sort_by == "CREATED_AT":
                return project.created_at
            if sort_by == "LAST_EDITED_AT":
                return project.last_edited_at
            return project.last_published_at

        # Projects never published sort last in either direction, then by id for stability.
        sign = -1.0 if direction == "DESC" else 1.0
        chosen.sort(
            key=lambda p: (
                sort_field(p) is None,
                sign * (sort_field(p) or 0.0),
                p.id,
            )
        )
        if before:
            end = min(_decode_cursor(before), len(chosen))
            start = max(0, end - limit)
        else:
            start = min(_decode_cursor(after), len(chosen)) if after else 0
            end = min(start + limit, len(chosen))
        page = chosen[start:end]
        return 200, {
            "values": [self._project_json(p) for p in page],
            "pagination": {
                "after": _encode_cursor(end) if end < len(chosen) else None,
                "before": _encode_cursor(start) if start > 0 else None,
            },
        }

    def _runnable(self, project: ProjectSpec) -> None:
        if project.trashed:
            raise ApiError(422, f"project {project.id} is in the trash and cannot run")
        if project.last_published_at is None:
            raise ApiError(
                422,
                f"project {project.id} has no published version: publish the app before running it via the API",
            )

    def _run_project(
        self,
        token: TokenSpec,
        user: str,
        project: ProjectSpec,
        request: Request,
        exchange: Exchange,
    ) -> tuple[int, JsonObject]:
        body = _json_body(request.body)
        input_params = body.get("inputParams")
        if input_params is not None and not isinstance(input_params, dict):
            raise ApiError(
                400, "inputParams must be an object", issues=["inputParams: expected an object"]
            )
        input_params = dict(input_params or {})
        null_inputs = [name for name, value in input_params.items() if value is None]
        if null_inputs:
            raise ApiError(
                400,
                "input values must not be null",
                issues=[f"inputParams.{name}: null is not a value" for name in null_inputs],
            )
        flags: dict[str, bool] = {}
        for name, default in (
            ("dryRun", False),
            ("updatePublishedResults", False),
            ("useCachedSqlResults", True),
            ("updateCache", False),
        ):
            value = body.get(name, default)
            if not isinstance(value, bool):
                raise ApiError(
                    400,
                    f"{name} must be a boolean",
                    issues=[f"{name}: expected true or false, got {value!r}"],
                )
            flags[name] = value
        if flags["updateCache"]:
            flags["updatePublishedResults"] = True
            flags["useCachedSqlResults"] = False
        view_id = body.get("viewId")
        if view_id is not None and not isinstance(view_id, str):
            raise ApiError(400, "viewId must be a string")
        if view_id is not None and input_params:
            raise ApiError(
                400,
                "viewId and inputParams cannot be used together",
                issues=["give either a saved view (viewId) or inputParams, not both"],
            )
        notifications = body.get("notifications")
        if notifications is not None:
            _check_notifications(notifications)
        self._runnable(project)
        settings = self.scenario.settings
        if input_params and flags["updatePublishedResults"]:
            if settings.inputs_with_update_published_results == "reject":
                raise ApiError(
                    400,
                    "inputParams cannot be combined with updatePublishedResults",
                    issues=[
                        "published results can only be updated by a run with the app's own inputs"
                    ],
                )
            input_params = {}
        unknown = [name for name in input_params if name not in project.inputs]
        if unknown:
            if settings.unknown_inputs == "reject":
                if settings.input_error_shape == "legacy":
                    raise ApiError(422, "unknown inputs", body={"invalid": [], "notFound": unknown})
                raise ApiError(
                    422,
                    f"the published app has no input named {', '.join(unknown)}",
                    issues=[
                        f"inputParams.{name}: no such input in the published app"
                        for name in unknown
                    ],
                )
            input_params = {k: v for k, v in input_params.items() if k in project.inputs}
        if flags["dryRun"]:
            answer: JsonObject = {
                "projectId": project.id,
                "runId": DRY_RUN_ID,
                "runUrl": self._run_url(project.id, DRY_RUN_ID),
                "runStatusUrl": self._run_status_url(project.id, DRY_RUN_ID),
                "projectVersion": project.version,
            }
            if notifications is not None:
                answer["notifications"] = notifications
            return 201, answer
        now = self.clock.now()
        if settings.limits_enabled:
            live = sum(1 for run in self._runs.values() if run.user == user and run.is_live(now))
            if live >= settings.max_live_runs:
                raise ApiError(
                    503,
                    f"{live} kernels are already running for this user (limit {settings.max_live_runs}); no run was started",
                )
        number = self._run_counts.get(project.id, 0)
        self._run_counts[project.id] = number + 1
        self._sequence += 1
        run = _Run(
            run_id=str(uuid.uuid4()),
            project_id=project.id,
            project_version=project.version,
            user=user,
            run_trigger="API",
            created_at=now,
            behaviour=project.behaviour_for(number),
            sequence=self._sequence,
            input_params=input_params,
            update_published_results=flags["updatePublishedResults"],
            use_cached_sql_results=flags["useCachedSqlResults"],
            view_id=view_id,
            notifications=notifications,
            token_fingerprint=token_fingerprint(token.token),
        )
        self._runs[run.run_id] = run
        exchange.entry["runId"] = run.run_id
        answer = {
            "projectId": project.id,
            "runId": run.run_id,
            "runUrl": self._run_url(project.id, run.run_id),
            "runStatusUrl": self._run_status_url(project.id, run.run_id),
            "projectVersion": project.version,
        }
        if notifications is not None:
            answer["notifications"] = notifications
        return 201, answer

    def _project_runs(self, project: ProjectSpec, request: Request) -> tuple[int, JsonObject]:
        query = request.query
        limit = _int_param(query, "limit", 25, 1, 100)
        offset = _int_param(query, "offset", 0, 0, None)
        status_filter = _one(query, "statusFilter")
        if status_filter is not None and status_filter not in RUN_STATUSES:
            raise ApiError(
                400,
                f"statusFilter {status_filter!r} is not one of {', '.join(RUN_STATUSES)}",
            )
        trigger_filter = _choice_param(
            query, "runTriggerFilter", ("SCHEDULED", "API", "APP_REFRESH", "ALL"), "ALL"
        )
        if project.last_published_at is None:
            raise ApiError(422, f"project {project.id} has no published version")
        now = self.clock.now()
        runs = [
            run
            for run in sorted(self._runs.values(), key=lambda r: (-r.created_at, -r.sequence))
            if run.project_id == project.id
            and (trigger_filter == "ALL" or run.run_trigger == trigger_filter)
            and (status_filter is None or run.timeline(now)[0] == status_filter)
        ]
        page = runs[offset : offset + limit]

        def page_url(page_offset: int) -> str:
            params = {k: v[-1] for k, v in query.items()}
            params["offset"] = str(page_offset)
            params["limit"] = str(limit)
            return f"{self.base_url}{request.path}?{urlencode(params)}"

        return 200, {
            "runs": [self._run_json(run) for run in page],
            "nextPage": page_url(offset + limit) if offset + limit < len(runs) else None,
            "previousPage": page_url(max(0, offset - limit)) if offset > 0 else None,
        }

    def _cancel_run(self, run: _Run) -> tuple[int, None]:
        now = self.clock.now()
        if run.is_live(now):
            run.killed_at = now
            return 204, None
        if self.scenario.settings.cancel_ended_run == "accept":
            return 204, None
        raise ApiError(422, f"run {run.run_id} has already ended ({run.timeline(now)[0]})")

    # -------------------------------------------------------------- admin
    def _admin(self, request: Request) -> Response:
        route = (request.method, request.path.rstrip("/"))
        try:
            if route == ("GET", "/_emulator/requests"):
                return Response(200, _json_bytes(self.journal()))
            if route == ("POST", "/_emulator/reset"):
                self.reset()
                return Response(200, _json_bytes({"reset": True}))
            if route == ("POST", "/_emulator/scenario"):
                document = _parse_json_or_none(request.body)
                self.load_scenario(Scenario.from_dict(document, source="POST /_emulator/scenario"))
                return Response(200, _json_bytes({"projects": len(self.scenario.projects)}))
            if route == ("POST", "/_emulator/advance"):
                document = _parse_json_or_none(request.body)
                seconds = document.get("seconds") if isinstance(document, dict) else None
                if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                    return _admin_error(400, 'expected a JSON body {"seconds": N} with N >= 0')
                if not isinstance(self.clock, ManualClock):
                    return _admin_error(
                        409, "the clock is not manual: start the emulator with --manual-clock"
                    )
                self.advance(float(seconds))
                return Response(200, _json_bytes({"now": to_iso(self.clock.now())}))
            if route == ("GET", "/_emulator/faults"):
                return Response(200, _json_bytes(self.faults.describe()))
            if route == ("POST", "/_emulator/faults"):
                document = _parse_json_or_none(request.body)
                rules = document if isinstance(document, list) else [document]
                parsed = [FaultRule.from_document(rule) for rule in rules]
                for rule in parsed:
                    self.faults.add(rule)
                return Response(200, _json_bytes(self.faults.describe()))
            if route == ("DELETE", "/_emulator/faults"):
                self.faults.clear()
                return Response(200, _json_bytes([]))
            if route == ("GET", "/_emulator/runs"):
                project_id = _one(request.query, "projectId")
                return Response(200, _json_bytes([r.to_json() for r in self.runs(project_id)]))
            if route == ("GET", "/_emulator/status"):
                return Response(
                    200,
                    _json_bytes(
                        {
                            "now": to_iso(self.clock.now()),
                            "manualClock": isinstance(self.clock, ManualClock),
                            "projects": len(self.scenario.projects),
                            "runs": len(self.runs()),
                            "scenario": self.scenario.source,
                        }
                    ),
                )
        except (ScenarioError, FaultError) as exc:
            return _admin_error(400, str(exc))
        except ApiError as exc:
            return _admin_error(exc.status, exc.message)
        return _admin_error(404, f"no admin endpoint {request.method} {request.path}")

    def _app_page(self, project_id: str, run_id: str) -> Response:
        with self._lock:
            project = self.scenario.project(project_id)
            run = self._runs.get(run_id)
            if project is None or run is None or run.project_id != project_id:
                return Response(
                    404,
                    b"<html><body><h1>Run not found</h1></body></html>",
                    content_type="text/html",
                )
            status = run.timeline(self.clock.now())[0]
        title = _html_escape(project.title)
        page = (
            f"<!doctype html><html><head><title>{title}: run {run_id}</title></head><body>"
            f"<h1>{title}</h1><p>Run <code>{run_id}</code>: <strong>{status}</strong></p>"
            "<p>Served by the hexdbt Hex emulator.</p></body></html>"
        )
        return Response(200, page.encode(), content_type="text/html; charset=utf-8")


def _admin_error(status: int, message: str) -> Response:
    return Response(status, _json_bytes({"error": message}))


def _html_escape(text: str) -> str:
    import html

    return html.escape(text)


def _parse_json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _bearer_fingerprint(authorization: str | None) -> str | None:
    if not authorization:
        return None
    _, _, value = authorization.partition(" ")
    return token_fingerprint(value.strip()) if value.strip() else None


def _json_body(raw: bytes) -> JsonObject:
    if not raw.strip():
        return {}
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "the request body is not valid JSON") from exc
    if not isinstance(document, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return document


def _check_notifications(notifications: Any) -> None:
    if not isinstance(notifications, list):
        raise ApiError(400, "notifications must be a list")
    for i, item in enumerate(notifications):
        if not isinstance(item, dict) or item.get("type") not in ("SUCCESS", "FAILURE", "ALL"):
            raise ApiError(
                400,
                "invalid notification",
                issues=[f"notifications[{i}].type: expected SUCCESS, FAILURE or ALL"],
            )


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _int_param(
    query: dict[str, list[str]], name: str, default: int, low: int, high: int | None
) -> int:
    text = _one(query, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise ApiError(400, f"{name} must be a whole number, got {text!r}") from exc
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ApiError(400, f"{name} must be {bounds}, got {value}")
    return value


def _bool_param(query: dict[str, list[str]], name: str) -> bool:
    text = _one(query, name)
    if text is None:
        return False
    if text.lower() in ("true", "1"):
        return True
    if text.lower() in ("false", "0"):
        return False
    raise ApiError(400, f"{name} must be true or false, got {text!r}")


def _choice_param(
    query: dict[str, list[str]], name: str, choices: tuple[str, ...], default: str
) -> str:
    text = _one(query, name)
    if text is None:
        return default
    if text not in choices:
        raise ApiError(400, f"{name} {text!r} is not one of {', '.join(choices)}")
    return text
