"""Hex's public API as the emulator answers it: routes, auth, scopes, validation and error shapes.

Each of the seven operations follows HEX_API.md: what it accepts, what it refuses and with which
status and message, and the body it answers. Every body is one of the wire objects of
``hexdbt.hex.models``, the description hexdbt's client reads with. Errors take the shape of the
endpoint's generation: older endpoints and every singular (legacy) path answer
{reason, traceId, details}, newer ones {code, message, issues, traceId}.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from msgspec import UNSET, UnsetType

from hexdbt.clock import Clock, to_iso
from hexdbt.emulator.exchange import (
    ApiError,
    Exchange,
    JsonObject,
    Request,
    Response,
    error_code,
    loads_json,
    query_value,
    token_fingerprint,
)
from hexdbt.emulator.rate_limits import RateWindows
from hexdbt.emulator.runs import Run, RunStore
from hexdbt.emulator.scenario import (
    RUN_STATUSES,
    ProjectSpec,
    Recipient,
    Scenario,
    TokenSpec,
    find_named,
)
from hexdbt.hex.models import (
    Access,
    Analytics,
    AppViews,
    CollectionAccess,
    EmailRef,
    ErrorAnswer,
    ErrorIssue,
    GroupAccess,
    InputErrorAnswer,
    NameRef,
    NotificationRecipient,
    Pagination,
    ProjectObject,
    ProjectsAnswer,
    QueriedTableObject,
    QueriedTablesAnswer,
    ReasonAnswer,
    Reviews,
    RunNotification,
    RunObject,
    RunsAnswer,
    RunStarted,
    Sharing,
    StatusLabel,
    UserAccess,
    WireObject,
    encode,
)

API_PREFIX = "/api/v1"
DRY_RUN_ID = "00000000-0000-0000-0000-000000000000"
# Older endpoints answer errors as {reason, traceId, details}; newer ones as {code, message, issues}.
_OLDER_SHAPE_OPERATIONS = frozenset({"CancelRun", "ListProjects"})
_RUN_SCOPE_OPERATIONS = frozenset({"RunProject", "CancelRun"})
_LEGACY_PREFIX = API_PREFIX + "/project/"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)
_SLACK_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{6,}$")
_NOTIFICATION_TYPES = ("SUCCESS", "FAILURE", "ALL")
_SCREENSHOT_FORMATS = ("png", "pdf")
_NOTIFICATION_KEYS = frozenset(
    {
        "type",
        "includeSuccessScreenshot",
        "screenshotFormat",
        "slackChannelIds",
        "userIds",
        "groupIds",
        "subject",
        "body",
    }
)
_ID = r"([^/]+)"
_ROUTES: tuple[tuple[re.Pattern[str], dict[str, str]], ...] = (
    (re.compile(r"^/projects$"), {"GET": "ListProjects"}),
    (re.compile(rf"^/projects/{_ID}$"), {"GET": "GetProject"}),
    (re.compile(rf"^/projects/{_ID}/queriedTables$"), {"GET": "GetQueriedTables"}),
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
    """The seven endpoints over the emulator's state, made for one request under the service's lock."""

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
        body: WireObject
        if error.body is not None:
            body = error.body
        elif exchange.operation in _OLDER_SHAPE_OPERATIONS or exchange.request.path.startswith(
            _LEGACY_PREFIX
        ):
            body = ReasonAnswer(reason=error.message, trace_id=exchange.trace_id)
            if error.issues:
                body = ReasonAnswer(
                    reason=error.message,
                    trace_id=exchange.trace_id,
                    details="; ".join(error.issues),
                )
        else:
            body = ErrorAnswer(
                code=error_code(error.status), message=error.message, trace_id=exchange.trace_id
            )
            if error.issues:
                body = ErrorAnswer(
                    code=error_code(error.status),
                    message=error.message,
                    issues=[ErrorIssue(message=issue) for issue in error.issues],
                    trace_id=exchange.trace_id,
                )
        return Response(error.status, encode(body), headers=error.headers)

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
            self._check_ids(project_id, run_id)
            status, body = self._operate(
                operation, token, user, request, exchange, project_id, run_id
            )
        except ApiError as error:
            error.headers = (*error.headers, *rate_headers)
            raise
        if body is None:
            return Response(status, b"", headers=rate_headers)
        return Response(status, encode(body), headers=rate_headers)

    def _check_ids(self, project_id: str | None, run_id: str | None) -> None:
        """Path ids are UUIDs, as Hex checks them: anything else is a 400, not a 404.

        A project id the scenario declares is taken as it is, so small scenarios may use short
        ids; run ids are always the emulator's own UUIDs.
        """
        for name, value in (("projectId", project_id), ("runId", run_id)):
            if value is None or _UUID.match(value):
                continue
            if name == "projectId" and self.scenario.project(value) is not None:
                continue
            raise ApiError(
                400, f"{name} {value!r} is not a UUID", issues=[f"{name}: expected a UUID"]
            )

    def _operate(
        self,
        operation: str,
        token: TokenSpec,
        user: str,
        request: Request,
        exchange: Exchange,
        project_id: str | None,
        run_id: str | None,
    ) -> tuple[int, WireObject | None]:
        if operation == "ListProjects":
            return self._list_projects(token, request)
        if operation == "GetQueriedTables" and not self.scenario.settings.queried_tables_feature:
            raise ApiError(403, "GetQueriedTables is not available in this workspace")
        project = self._visible_project(token, project_id or "")
        if operation == "GetProject":
            include_sharing = _bool_param(request.query, "includeSharing")
            return 200, self._project_object(project, include_sharing=include_sharing)
        if operation == "GetQueriedTables":
            return self._queried_tables(project, request)
        if operation == "RunProject":
            return self._run_project(token, user, project, request, exchange)
        if operation == "GetProjectRuns":
            return self._project_runs(project, request, exchange)
        run = self._find_run(project, run_id)
        if operation == "GetRunStatus":
            return 200, self._run_object(run, exchange.trace_id)
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
    def _project_object(self, project: ProjectSpec, *, include_sharing: bool) -> ProjectObject:
        one_day = 86_400.0
        return ProjectObject(
            id=project.id,
            title=project.title,
            description=project.description,
            type=project.type,
            creator=EmailRef(email=project.creator_email),
            owner=EmailRef(email=project.owner_email),
            status=None if project.status is None else StatusLabel(name=project.status),
            categories=list(project.categories),
            reviews=Reviews(required=project.reviews_required),
            analytics=Analytics(
                app_views=AppViews(
                    all_time=project.app_views * 10,
                    last_seven_days=project.app_views,
                    last_fourteen_days=project.app_views * 2,
                    last_thirty_days=project.app_views * 4,
                ),
                last_viewed_at=None,
                published_results_updated_at=None,
            ),
            last_edited_at=to_iso(project.last_edited_at),
            last_published_at=None
            if project.last_published_at is None
            else to_iso(project.last_published_at),
            created_at=to_iso(project.created_at),
            archived_at=to_iso(project.last_edited_at + one_day) if project.archived else None,
            trashed_at=to_iso(project.last_edited_at + 2 * one_day) if project.trashed else None,
            schedules=list(project.schedules),
            sharing=self._sharing(project) if include_sharing else UNSET,
        )

    def _sharing(self, project: ProjectSpec) -> Sharing:
        sharing = project.sharing

        def name_of(items: tuple[Recipient, ...], item_id: str) -> str:
            found = find_named(items, item_id)
            assert found is not None, "the scenario checks sharing's ids when it loads"
            return found.name

        return Sharing(
            users=[UserAccess(user=EmailRef(email=g.who), access=g.access) for g in sharing.users],
            collections=[
                CollectionAccess(
                    collection=NameRef(name=name_of(self.scenario.collections, g.who)),
                    access=g.access,
                )
                for g in sharing.collections
            ],
            groups=[
                GroupAccess(
                    group=NameRef(name=name_of(self.scenario.groups, g.who)), access=g.access
                )
                for g in sharing.groups
            ],
            workspace=Access(access=sharing.workspace),
            public_web=Access(access=sharing.public_web),
            support=Access(access=sharing.support),
        )

    def _run_url(self, project_id: str, run_id: str) -> str:
        return f"{self.base_url}/app/{project_id}/runs/{run_id}"

    def _run_status_url(self, project_id: str, run_id: str) -> str:
        return f"{self.base_url}{API_PREFIX}/projects/{project_id}/runs/{run_id}"

    def _run_object(self, run: Run, trace_id: str) -> RunObject:
        now = self.clock.now()
        status, started, ended = run.timeline(now)
        if started is None:
            elapsed = None
        else:
            elapsed = round(((ended if ended is not None else now) - started) * 1000)
        return RunObject(
            project_id=run.project_id,
            # Status answers carry the version as a string, the trigger answer as an integer:
            # Hex's own sources show both, and clients must accept either.
            project_version=str(run.project_version),
            run_id=run.run_id,
            run_url=self._run_url(run.project_id, run.run_id),
            status=status,
            run_trigger=run.run_trigger,
            start_time=None if started is None else to_iso(started),
            end_time=None if ended is None else to_iso(ended),
            elapsed_time=elapsed,
            trace_id=trace_id,
            notifications=UNSET if run.notifications is None else run.notifications,
        )

    # ---------------------------------------------------------- operations
    def _list_projects(self, token: TokenSpec, request: Request) -> tuple[int, ProjectsAnswer]:
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
        statuses = set(query.get("statuses", []))
        categories = set(query.get("categories", []))
        creator_email = query_value(query, "creatorEmail")
        owner_email = query_value(query, "ownerEmail")
        collection_id = query_value(query, "collectionId")
        chosen = [
            p
            for p in self.scenario.projects
            if (token.projects is None or p.id in token.projects)
            and (include_archived or not p.archived)
            and (include_trashed or not p.trashed)
            and (include_components or p.type != "COMPONENT")
            and (not statuses or p.status in statuses)
            and (not categories or any(c.name in categories for c in p.categories))
            and (creator_email is None or p.creator_email == creator_email)
            and (owner_email is None or p.owner_email == owner_email)
            and (
                collection_id is None
                or any(grant.who == collection_id for grant in p.sharing.collections)
            )
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
        start, end = _page_bounds(len(chosen), limit, after, before)
        page = chosen[start:end]
        return 200, ProjectsAnswer(
            values=[self._project_object(p, include_sharing=False) for p in page],
            pagination=Pagination(
                after=_encode_cursor(end) if end < len(chosen) else None,
                before=_encode_cursor(start) if start > 0 else None,
            ),
        )

    def _queried_tables(
        self, project: ProjectSpec, request: Request
    ) -> tuple[int, QueriedTablesAnswer]:
        query = request.query
        limit = _int_param(query, "limit", 25, 1, 100)
        after = query_value(query, "after")
        before = query_value(query, "before")
        if after and before:
            raise ApiError(400, "give either 'after' or 'before', not both")
        if project.last_published_at is None:
            raise ApiError(
                422, f"project {project.id} has no published version: its queries are not known"
            )
        tables = project.queried_tables
        start, end = _page_bounds(len(tables), limit, after, before)
        return 200, QueriedTablesAnswer(
            values=[
                QueriedTableObject(
                    data_connection_id=table.connection_id,
                    data_connection_name=table.connection_name,
                    table_name=table.table_name,
                )
                for table in tables[start:end]
            ],
            pagination=Pagination(
                after=_encode_cursor(end) if end < len(tables) else None,
                before=_encode_cursor(start) if start > 0 else None,
            ),
        )

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
    ) -> tuple[int, RunStarted]:
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
        notifications = (
            None if body.get("notifications") is None else self._recipients(body["notifications"])
        )
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
                    legacy = InputErrorAnswer(
                        invalid=[], not_found=unknown, trace_id=exchange.trace_id
                    )
                    raise ApiError(422, "unknown inputs", body=legacy)
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
            return 201, self._run_started(project, DRY_RUN_ID, notifications, exchange)
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
            trace_id=exchange.trace_id,
        )
        exchange.entry["runId"] = run.run_id
        return 201, self._run_started(project, run.run_id, notifications, exchange)

    def _run_started(
        self,
        project: ProjectSpec,
        run_id: str,
        notifications: list[RunNotification] | None,
        exchange: Exchange,
    ) -> RunStarted:
        return RunStarted(
            project_id=project.id,
            run_id=run_id,
            run_url=self._run_url(project.id, run_id),
            run_status_url=self._run_status_url(project.id, run_id),
            trace_id=exchange.trace_id,
            project_version=project.version,
            notifications=UNSET if notifications is None else notifications,
        )

    def _recipients(self, notifications: Any) -> list[RunNotification]:
        """The request's notifications, checked as Hex checks them, one entry per recipient."""
        if not isinstance(notifications, list):
            raise ApiError(400, "notifications must be a list")
        expanded: list[RunNotification] = []
        for i, item in enumerate(notifications):
            where = f"notifications[{i}]"
            if not isinstance(item, dict):
                raise ApiError(400, "invalid notification", issues=[f"{where}: expected an object"])
            unknown = sorted(set(item) - _NOTIFICATION_KEYS)
            if unknown:
                raise ApiError(
                    400, "invalid notification", issues=[f"{where}.{unknown[0]}: unknown field"]
                )
            if item.get("type") not in _NOTIFICATION_TYPES:
                raise ApiError(
                    400,
                    "invalid notification",
                    issues=[f"{where}.type: expected SUCCESS, FAILURE or ALL"],
                )
            screenshot = item.get("includeSuccessScreenshot")
            if not isinstance(screenshot, bool):
                raise ApiError(
                    400,
                    "invalid notification",
                    issues=[f"{where}.includeSuccessScreenshot: required, true or false"],
                )
            formats = _screenshot_formats(item.get("screenshotFormat"), where)
            for key in ("subject", "body"):
                if key in item and not isinstance(item[key], str):
                    raise ApiError(
                        400, "invalid notification", issues=[f"{where}.{key}: expected a string"]
                    )
            for key, recipient_type, known, pattern in (
                ("userIds", "USER", self.scenario.users, _UUID),
                ("groupIds", "GROUP", self.scenario.groups, _UUID),
                ("slackChannelIds", "SLACK_CHANNEL", self.scenario.slack_channels, _SLACK_CHANNEL),
            ):
                ids = item.get(key, [])
                if not isinstance(ids, list):
                    raise ApiError(
                        400, "invalid notification", issues=[f"{where}.{key}: expected a list"]
                    )
                for item_id in ids:
                    if not isinstance(item_id, str) or not pattern.match(item_id):
                        raise ApiError(
                            400,
                            "invalid notification",
                            issues=[f"{where}.{key}: {item_id!r} is not a valid id"],
                        )
                    found = find_named(known, item_id)
                    if found is None:
                        raise ApiError(
                            400,
                            "invalid notification",
                            issues=[f"{where}.{key}: no recipient with id {item_id}"],
                        )
                    expanded.append(
                        RunNotification(
                            type=item["type"],
                            recipient_type=recipient_type,
                            include_success_screenshot=screenshot,
                            recipient=NotificationRecipient(
                                id=found.id,
                                name=found.name,
                                is_private=found.private
                                if recipient_type == "SLACK_CHANNEL"
                                else UNSET,
                            ),
                            screenshot_format=formats,
                        )
                    )
        return expanded

    def _project_runs(
        self, project: ProjectSpec, request: Request, exchange: Exchange
    ) -> tuple[int, RunsAnswer]:
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
        if request.path.startswith(_LEGACY_PREFIX):
            # The singular path lists the runs the API started, and no others.
            trigger_filter = "API"
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

        return 200, RunsAnswer(
            runs=[self._run_object(run, run.trace_id) for run in page],
            next_page=page_url(offset + limit) if offset + limit < len(runs) else None,
            previous_page=page_url(max(0, offset - limit)) if offset > 0 else None,
            trace_id=exchange.trace_id,
        )

    def _cancel_run(self, run: Run) -> tuple[int, None]:
        now = self.clock.now()
        if run.is_live(now):
            run.killed_at = now
            return 204, None
        if self.scenario.settings.cancel_ended_run == "accept":
            return 204, None
        raise ApiError(422, f"run {run.run_id} has already ended ({run.timeline(now)[0]})")


def _page_bounds(count: int, limit: int, after: str | None, before: str | None) -> tuple[int, int]:
    """[start, end) of the page of ``count`` items that an ``after`` or ``before`` cursor asks for."""
    if before:
        end = min(_decode_cursor(before), count)
        return max(0, end - limit), end
    start = min(_decode_cursor(after), count) if after else 0
    return start, min(start + limit, count)


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
        document = loads_json(raw)
    except ValueError as exc:
        raise ApiError(400, "the request body is not valid JSON") from exc
    if not isinstance(document, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return document


def _screenshot_formats(value: Any, where: str) -> list[str] | UnsetType:
    """``screenshotFormat``: png or pdf, given alone or as a list; a list in run answers."""
    if value is None:
        return UNSET
    formats = value if isinstance(value, list) else [value]
    for item in formats:
        if item not in _SCREENSHOT_FORMATS:
            raise ApiError(
                400,
                "invalid notification",
                issues=[f"{where}.screenshotFormat: {item!r} is not png or pdf"],
            )
    return list(formats)


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
