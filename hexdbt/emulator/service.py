"""What the emulator answers, without sockets: its state, its journal and its admin API.

The server hands each request to ``HexService`` and writes back the ``Response`` it gets; faults
that act on the connection itself (a drop, a delay) are carried out by the server. The service
holds the scenario, the runs, the rate windows, the faults and the journal under one lock, hands
Hex API calls to ``HexApi`` and answers the admin API (``/_emulator/...``) and the app's run pages
itself.
"""

from __future__ import annotations

import copy
import html
import re
import threading
import uuid
from typing import Any

from hexdbt.clock import Clock, ManualClock, SystemClock, to_iso
from hexdbt.emulator.dbt_cloud import OPERATIONS as DBT_CLOUD_OPERATIONS
from hexdbt.emulator.dbt_cloud import DbtCloudEmulation, dbt_cloud_operation_for
from hexdbt.emulator.exchange import (
    ApiError,
    Exchange,
    JsonObject,
    Request,
    Response,
    admin_error,
    bearer_fingerprint,
    error_code,
    json_bytes,
    parse_json_or_none,
    query_value,
    reason_phrase,
)
from hexdbt.emulator.faults import Fault, FaultBook, FaultError, FaultRule
from hexdbt.emulator.hex_api import HexApi, operation_for
from hexdbt.emulator.rate_limits import RateWindows
from hexdbt.emulator.runs import RunRecord, RunStore
from hexdbt.emulator.scenario import Scenario, ScenarioError, TokenSpec

# The clock stays a date Python can print: 1e308 seconds on would fail every answer after.
_MAX_ADVANCE_S = 10 * 365 * 86_400.0
_APP_PAGE = re.compile(r"^/app/([^/]+)/runs/([^/]+)/?$")


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
        self._windows = RateWindows()
        self._runs = RunStore()
        self.dbt_cloud = DbtCloudEmulation(clock, self._journal_clock)
        self.scenario = scenario
        self._load(scenario)

    # ----------------------------------------------------------------- state
    def _load(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self._tokens: dict[str, TokenSpec] = {t.token: t for t in scenario.tokens}
        self._windows.clear()
        self._runs.load(scenario, self.clock.now())

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
            chosen = self._runs.in_order(project_id, include_history=include_history)
            return [run.record(now) for run in chosen]

    def advance(self, seconds: float) -> None:
        if not isinstance(self.clock, ManualClock):
            raise ScenarioError("the emulator's clock is not manual: start it with --manual-clock")
        self.clock.advance(seconds)

    # ------------------------------------------------------------ exchanges
    def begin(self, request: Request) -> Exchange:
        """Route a request, journal its arrival and draw its fault (if any)."""
        # To the microsecond, before any work on the request: benchmarks time watchers by it.
        received = to_iso(self._journal_clock.now(), digits=6)
        operation = operation_for(request) or dbt_cloud_operation_for(request)
        trace_id = uuid.uuid4().hex
        entry: JsonObject = {
            "method": request.method,
            "path": request.target,
            "status": None,
            "body": parse_json_or_none(request.body),
            "time": received,
            "operation": operation,
            "tokenFingerprint": bearer_fingerprint(request.authorization),
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
        if fault.status == 429 and fault.delay_s:
            return Response(
                429,
                json_bytes({"code": error_code(429), "message": "Too Many Requests"}),
                headers=(("Retry-After", str(round(fault.delay_s))),),
            )
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
            "code": error_code(fault.status),
            "message": f"{reason_phrase(fault.status)} (injected fault)",
            "traceId": exchange.trace_id,
        }
        return Response(fault.status, json_bytes(body))

    def answer(self, exchange: Exchange) -> Response:
        request = exchange.request
        path = request.path
        if path.startswith("/_emulator"):
            return self._admin(request)
        if exchange.operation in DBT_CLOUD_OPERATIONS:
            return self.dbt_cloud.answer(request, exchange.operation)
        page = _APP_PAGE.match(path)
        if page:
            return self._app_page(page.group(1), page.group(2))
        with self._lock:
            api = HexApi(
                scenario=self.scenario,
                tokens=self._tokens,
                runs=self._runs,
                rate_windows=self._windows,
                clock=self.clock,
                base_url=self.base_url,
            )
            return api.answer(exchange)

    # -------------------------------------------------------------- admin
    def _admin(self, request: Request) -> Response:
        route = (request.method, request.path.rstrip("/"))
        try:
            if route == ("GET", "/_emulator/requests"):
                return Response(200, json_bytes(self.journal()))
            if route == ("POST", "/_emulator/reset"):
                self.reset()
                return Response(200, json_bytes({"reset": True}))
            if route == ("POST", "/_emulator/scenario"):
                document = _admin_document(request.body)
                self.load_scenario(Scenario.from_dict(document, source="POST /_emulator/scenario"))
                return Response(200, json_bytes({"projects": len(self.scenario.projects)}))
            if route == ("POST", "/_emulator/advance"):
                document = _admin_document(request.body)
                seconds = document.get("seconds") if isinstance(document, dict) else None
                if (
                    isinstance(seconds, bool)
                    or not isinstance(seconds, int | float)
                    or not 0 <= seconds <= _MAX_ADVANCE_S  # NaN too
                ):
                    return admin_error(
                        400,
                        'expected a JSON body {"seconds": N} with N from 0 to'
                        f" {_MAX_ADVANCE_S:.0f} (ten years)",
                    )
                if not isinstance(self.clock, ManualClock):
                    return admin_error(
                        409, "the clock is not manual: start the emulator with --manual-clock"
                    )
                self.advance(float(seconds))
                return Response(200, json_bytes({"now": to_iso(self.clock.now())}))
            if route == ("GET", "/_emulator/faults"):
                return Response(200, json_bytes(self.faults.describe()))
            if route == ("POST", "/_emulator/faults"):
                document = _admin_document(request.body)
                rules = document if isinstance(document, list) else [document]
                parsed = [FaultRule.from_document(rule) for rule in rules]
                for rule in parsed:
                    self.faults.add(rule)
                return Response(200, json_bytes(self.faults.describe()))
            if route == ("DELETE", "/_emulator/faults"):
                self.faults.clear()
                return Response(200, json_bytes([]))
            if route == ("GET", "/_emulator/runs"):
                project_id = query_value(request.query, "projectId")
                return Response(200, json_bytes([r.to_json() for r in self.runs(project_id)]))
            if request.path.startswith("/_emulator/dbt-cloud/"):
                return self.dbt_cloud.admin(request.method, request.path.rstrip("/"),
                                            _admin_document(request.body))  # fmt: skip
            if route == ("GET", "/_emulator/status"):
                return Response(
                    200,
                    json_bytes(
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
            return admin_error(400, str(exc))
        except ApiError as exc:
            return admin_error(exc.status, exc.message)
        return admin_error(404, f"no admin endpoint {request.method} {request.path}")

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
        title = html.escape(project.title)
        page = (
            f"<!doctype html><html><head><title>{title}: run {run_id}</title></head><body>"
            f"<h1>{title}</h1><p>Run <code>{run_id}</code>: <strong>{status}</strong></p>"
            "<p>Served by the hexdbt Hex emulator.</p></body></html>"
        )
        return Response(200, page.encode(), content_type="text/html; charset=utf-8")


def _admin_document(body: bytes) -> Any:
    """An admin request's JSON body (None when empty); one that is not JSON is refused with 400,
    as one nested past what the parser follows."""
    document = parse_json_or_none(body)
    if document is None and body.strip() not in (b"", b"null"):
        raise ApiError(400, "the request body is not valid JSON (or is nested too deeply)")
    return document
