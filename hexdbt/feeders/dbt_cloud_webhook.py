"""``POST /webhooks/dbt-cloud``: dbt Cloud's signed job events, recorded in the ledger before the
answer, acted on after it.

What a delivery is answered:

- 401: no ``Authorization`` header, or not the hex HMAC-SHA256 of the raw body keyed with
  ``HEXDBT_DBT_CLOUD_WEBHOOK_SECRET`` (compared in constant time); logged once per cause,
  never with the body or the secret;
- 413: a body past ``MAX_BODY_BYTES`` (dbt Cloud's are about 1 kB); 400: not a JSON event;
  403: another account's event;
- 200 ``ignored``: a job not in ``--dbt-cloud-jobs``, or an event type hexdbt does not act on;
- 200: recorded (synced to disk, or committed on PostgreSQL) *before* the answer, deliveries
  that arrive together in one commit (``EventRecorder``); a repeated
  ``eventId`` is answered 200 and does nothing; ``job.run.completed`` wakes the feeder's worker
  after the answer has gone; ``started`` and ``errored`` are recorded and logged;
- 503: the state cannot be reached: nothing was recorded, and dbt Cloud will deliver again (or
  polling will find the run).

Only ``hexdbt serve`` imports this module (and Starlette with it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import queue
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hexdbt.dbt.cloud import STATUS_NAMES
from hexdbt.errors import StateError
from hexdbt.feeders.dbt_cloud import WEBHOOK_PATH, DbtCloudFeeder
from hexdbt.ledger import DbtCloudEvent, DbtCloudRunRecord, Ledger
from hexdbt.logs import EventLog, error_fields
from hexdbt.metrics import DaemonMetrics

PATH = WEBHOOK_PATH
MAX_BODY_BYTES = 256 * 1024
COMPLETED = "job.run.completed"
RECORDED_TYPES = frozenset({"job.run.started", COMPLETED, "job.run.errored"})
# At most this many deliveries share one commit.
BATCH_MAX = 100


class _Refused(Exception):
    def __init__(self, status: int, result: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.result = result
        self.reason = reason


class EventRecorder:
    """Group commit: the deliveries that arrive while a commit is being made are recorded
    together in the next one, by one thread, so that 50 deliveries at once cost a few synced
    commits, not 50 in a row (benchmarks/webhook.py)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._queue: queue.SimpleQueue[tuple[DbtCloudEvent, Future[bool]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="hexdbt-webhooks", daemon=True)
        self._thread.start()

    def record(self, event: DbtCloudEvent) -> Future[bool]:
        """Whether the event is new, once it is recorded (a StateError when it cannot be)."""
        future: Future[bool] = Future()
        self._queue.put((event, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            while len(batch) < BATCH_MAX:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)  # close after this batch
                    break
                batch.append(item)
            try:
                answers = self._ledger.record_dbt_cloud_events([event for event, _ in batch])
            except BaseException as exc:  # each delivery gets the failure (503 for a StateError)
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for (_, future), new in zip(batch, answers, strict=True):
                    future.set_result(new)


class WebhookEndpoint:
    """``POST /webhooks/dbt-cloud`` for ``feeder``, checked against ``secret``: ``routes`` to
    mount, ``close`` once the server has stopped."""

    def __init__(
        self, feeder: DbtCloudFeeder, secret: str, log: EventLog, metrics: DaemonMetrics | None
    ) -> None:
        self.recorder = EventRecorder(feeder.ledger)
        self.routes = _routes(feeder, self.recorder, secret, log, metrics)

    def close(self) -> None:
        self.recorder.close()


def _routes(
    feeder: DbtCloudFeeder,
    recorder: EventRecorder,
    secret: str,
    log: EventLog,
    metrics: DaemonMetrics | None,
) -> list[BaseRoute]:
    key = secret.encode()
    said: set[str] = set()  # the causes of refusals logged already

    def refused(status: int, result: str, reason: str) -> Response:
        if result not in said:
            said.add(result)
            log.emit(
                "webhook_refused", "warning", status=status, reason=reason, said="once per cause"
            )
        _count(metrics, "refused")
        return JSONResponse({"error": reason}, status_code=status)

    async def receive(request: Request) -> Response:
        try:
            body = await _capped_body(request)
            _check_signature(request.headers.get("authorization"), body, key)
            event = _event_of(body, feeder.options.account_id)
        except _Refused as exc:
            return refused(exc.status, exc.result, exc.reason)
        except ClientDisconnect:
            return Response(status_code=400)
        data = event["data"]
        fields = {
            "event_id": event["eventId"],
            "event_type": event["eventType"],
            "run_id": data["runId"],
            "job_id": data["jobId"],
        }
        if event["eventType"] not in RECORDED_TYPES or not feeder.job_listed(data["jobId"]):
            _count(metrics, "ignored")
            return JSONResponse({"received": True, "ignored": True})
        run = None
        if event["eventType"] == COMPLETED:
            run = DbtCloudRunRecord(
                data["runId"], data["jobId"], data["environmentId"], data["runStatusCode"],
                "webhook", 0.0, None, None,
            )  # fmt: skip
        recorded = DbtCloudEvent(
            event["eventId"], event["eventType"], data["runId"], data["jobId"], run
        )
        try:
            new = await asyncio.wrap_future(recorder.record(recorded))
        except StateError as exc:
            _count(metrics, "unavailable")
            log.emit("webhook_unrecorded", "error", **fields, **error_fields(exc))
            return JSONResponse({"error": "the state cannot be reached"}, status_code=503)
        if not new:
            _count(metrics, "duplicate")
            return JSONResponse({"received": True, "duplicate": True})
        _count(metrics, "accepted")
        log.emit(
            "webhook_received",
            **fields,
            status=STATUS_NAMES.get(data["runStatusCode"], str(data["runStatusCode"])),
        )
        # After the answer has gone: the plan takes seconds of downloads.
        wake = BackgroundTask(feeder.wake) if run is not None else None
        return JSONResponse({"received": True}, background=wake)

    return [Route(PATH, receive, methods=["POST"])]


def _count(metrics: DaemonMetrics | None, result: str) -> None:
    if metrics is not None:
        metrics.webhook_answered(result)


async def _capped_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _Refused(413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _Refused(413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _check_signature(header: str | None, body: bytes, key: bytes) -> None:
    if not header or not header.strip():
        raise _Refused(401, "unsigned", "no Authorization header: not signed by dbt Cloud")
    expected = hmac.new(key, body, hashlib.sha256).hexdigest()
    given = header.strip().lower().encode("ascii", "replace")
    if not hmac.compare_digest(expected.encode(), given):
        raise _Refused(
            401,
            "bad_signature",
            "the signature is not the body's HMAC-SHA256 with HEXDBT_DBT_CLOUD_WEBHOOK_SECRET",
        )


def _event_of(body: bytes, account_id: str) -> dict[str, Any]:
    """The event, its ids as strings; ``_Refused`` when it is not one of dbt Cloud's."""
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        raise _Refused(400, "not_json", "the body is not JSON") from None
    data = event.get("data") if isinstance(event, Mapping) else None
    if not isinstance(event, Mapping) or not isinstance(data, Mapping):
        raise _Refused(400, "not_an_event", "not a dbt Cloud event: no data object")
    ids = {"eventId": event.get("eventId"), "eventType": event.get("eventType")}
    ids |= {name: data.get(name) for name in ("runId", "jobId", "environmentId")}
    for name, value in ids.items():
        if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
            raise _Refused(400, "not_an_event", f"not a dbt Cloud event: no {name}")
    if str(event.get("accountId")) != account_id:
        raise _Refused(403, "other_account", "an event of another dbt Cloud account")
    code = data.get("runStatusCode")
    if event["eventType"] == COMPLETED and (isinstance(code, bool) or not isinstance(code, int)):
        raise _Refused(400, "not_an_event", "not a dbt Cloud event: no runStatusCode")
    return {
        "eventId": str(ids["eventId"])[:200],
        "eventType": str(ids["eventType"])[:100],
        "data": {
            "runId": str(ids["runId"]),
            "jobId": str(ids["jobId"]),
            "environmentId": str(ids["environmentId"]),
            "runStatusCode": code if isinstance(code, int) else 0,
        },
    }
