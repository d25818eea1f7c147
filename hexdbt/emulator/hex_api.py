"""Hex's public API as the emulator answers it: routes, auth, scopes, validation and error shapes.

Each of the six operations follows HEX_API.md: what it accepts, what it refuses and with which
status and message, and the body it answers. Errors take the shape of the operation's
generation: older endpoints answer {reason, traceId, details}, newer ones {code, message, issues}.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from hexdbt.clock import Clock, to_iso
from hexdbt.emulator.exchange import (
    ApiError,
    Exchange,
    JsonObject,
    Request,
    Response,
    error_code,
    json_bytes,
    query_value,
    token_fingerprint,
)
from hexdbt.emulator.rate_limits import RateWindows
from hexdbt.emulator.runs import Run, RunStore
from hexdbt.emulator.scenario import RUN_STATUSES, ProjectSpec, Scenario, TokenSpec

API_PREFIX = "/api/v1"
DRY_RUN_ID = "00000000-0000-0000-0000-000000000000"
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


def operation_for(request: Request) -> str | None:
    """The Hex operation a request calls (``RunProject``, ...), None when it calls none."""
    path = request.path
    if not path.startswith(API_PREFIX + "/"):
        return None
    relative = path[len(API_PREFIX) :].rstrip("/") or "/"
    for pattern, methods in _ROUTES:
        if pattern.match(relative):
            return methods.get(request.method)
    return None


@dataclass(frozen=True, slots=True)
class HexApi:
    """The six endpoints over the emulator's state, made for one request under the service's lock."""

    scenario: Scenario
    tokens: Mapping[str, TokenSpec]
    runs: RunStore
    rate_windows: RateWindows
    clock: Clock
    base_url: str

    def answer(self, exchange: Exchange) -> Response:
        if exchange.operation is None:
            return self._unrouted(exchange)
        try:
            return self._api(exchange)
        except ApiError as error:
            return self._error_response(exchange, error)

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
                "code": error_code(error.status),
                "message": error.message,
                "traceId": exchange.trace_id,
            }
            if error.issues:
                body["issues"] = [{"message": issue} for issue in error.issues]
        return Response(error.status, json_bytes(body), headers=error.headers)

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
        rate_headers = self.rate_windows.admit_operation(
            self.scenario.settings, user, operation, self.clock.now()
        )
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
        return Response(status, json_bytes(body), headers=rate_headers)

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
        if not self.tokens:
            return TokenSpec(token=value)
        token = self.tokens.get(value)
        if token is None:
            raise ApiError(401, "invalid token")
        if token.expired:
            raise ApiError(401, "this token has expired")
        return token

    def _visible_project(self, token: TokenSpec, project_id: str) -> ProjectSpec:
        project = self.scenario.project(project_id)
        if project is None or (token.projects is not None and project_id not in token.projects):
            raise ApiError(404, f"project {project_id} not found")
        return project

    def _find_run(self, project: ProjectSpec, run_id: str | None) -> Run:
        run = self.runs.get(run_id or "")
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

    def _run_json(self, run: Run) -> JsonObject:
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
        after = query_value(query, "after")
        before = query_value(query, "before")
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
            live = self.runs.live_count(user, now)
            if live >= settings.max_live_runs:
                raise ApiError(
                    503,
                    f"{live} kernels are already running for this user (limit {settings.max_live_runs}); no run was started",
                )
        run = self.runs.start(
            project,
            user=user,
            now=now,
            input_params=input_params,
            update_published_results=flags["updatePublishedResults"],
            use_cached_sql_results=flags["useCachedSqlResults"],
            view_id=view_id,
            notifications=notifications,
            token_fingerprint=token_fingerprint(token.token),
        )
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
        status_filter = query_value(query, "statusFilter")
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
            for run in sorted(
                self.runs.in_order(project.id, include_history=True),
                key=lambda r: (-r.created_at, -r.sequence),
            )
            if (trigger_filter == "ALL" or run.run_trigger == trigger_filter)
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

    def _cancel_run(self, run: Run) -> tuple[int, None]:
        now = self.clock.now()
        if run.is_live(now):
            run.killed_at = now
            return 204, None
        if self.scenario.settings.cancel_ended_run == "accept":
            return 204, None
        raise ApiError(422, f"run {run.run_id} has already ended ({run.timeline(now)[0]})")


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


def _int_param(
    query: dict[str, list[str]], name: str, default: int, low: int, high: int | None
) -> int:
    text = query_value(query, name)
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
    text = query_value(query, name)
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
    text = query_value(query, name)
    if text is None:
        return default
    if text not in choices:
        raise ApiError(400, f"{name} {text!r} is not one of {', '.join(choices)}")
    return text
