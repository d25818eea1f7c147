"""A local dbt Cloud beside the emulated Hex: the Admin API's runs, steps and artifacts, and
signed webhooks, for tests and for a user's own trial of ``hexdbt serve``.

    cloud = emulator.dbt_cloud                          # account 1, token DBT_CLOUD_TOKEN below
    cloud.add_environment(7, "deployment")
    cloud.add_job(12, environment_id=7)
    cloud.subscribe("http://127.0.0.1:8080/webhooks/dbt-cloud", secret="s3cret")
    run = cloud.add_run(12, [("Clone git repository", None),
                             ("Invoke dbt with `dbt run`", Path("target-run")),
                             ("Invoke dbt with `dbt test`", Path("target-test"))])

A run is added complete: its steps' artifacts are the files of each step's folder (real dbt
builds), and every subscription whose events and jobs match gets ``job.run.started`` and then
``job.run.completed`` (and ``job.run.errored`` for a failed run), each signed and retried on a
thread of its own. ``deliveries()`` says what each attempt was answered. docs/emulator.md says
which behaviours follow dbt Cloud's documents and which are guesses.

Standard library only, as the rest of the emulator; it knows nothing of hexdbt's client.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hexdbt.clock import Clock
from hexdbt.emulator.exchange import Request, Response, admin_error, json_bytes, query_value

ACCOUNT_ID = 1
DBT_CLOUD_TOKEN = "dbtc_emulator_service_token"
RUNNING, SUCCESS, ERROR, CANCELLED = 3, 10, 20, 30
_HUMANIZED = {1: "Queued", 2: "Starting", 3: "Running", 10: "Success", 20: "Error", 30: "Cancelled"}
# dbt Cloud: "retries sending each event five times" and "a timeout of 10 seconds". Read here as
# five attempts in all; the waits between them are not documented (a guess, kept short).
WEBHOOK_ATTEMPTS = 5
WEBHOOK_TIMEOUT_S = 10.0
WEBHOOK_RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0)
EVENT_TYPES = ("job.run.started", "job.run.completed", "job.run.errored")

_ROUTES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^/api/v2/accounts/(\d+)/runs/?$"), "DbtCloudListRuns"),
    (re.compile(r"^/api/v2/accounts/(\d+)/runs/(\d+)/?$"), "DbtCloudGetRun"),
    (re.compile(r"^/api/v2/accounts/(\d+)/runs/(\d+)/artifacts/(.+)$"), "DbtCloudGetArtifact"),
    (re.compile(r"^/api/v2/accounts/(\d+)/jobs/(\d+)/?$"), "DbtCloudGetJob"),
    (re.compile(r"^/api/v3/accounts/(\d+)/environments/(\d+)/?$"), "DbtCloudGetEnvironment"),
)
OPERATIONS = tuple(operation for _, operation in _ROUTES)
_PATTERNS = {operation: pattern for pattern, operation in _ROUTES}


def dbt_cloud_operation_for(request: Request) -> str | None:
    """The dbt Cloud operation a request calls, None when it calls none."""
    if request.method != "GET":
        return None
    for pattern, operation in _ROUTES:
        if pattern.match(request.path):
            return operation
    return None


def sign(body: bytes, secret: str) -> str:
    """What dbt Cloud puts in a webhook's Authorization header: the hex HMAC-SHA256 of the body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class EmulatedStep:
    index: int
    name: str
    status: int
    artifacts: Path | None  # the folder of its run_results.json and manifest.json; None: none


@dataclass(frozen=True, slots=True)
class EmulatedRun:
    run_id: int
    job_id: int
    environment_id: int
    project_id: int
    status: int
    created_at: float
    finished_at: float | None  # None: running still (``end_run`` ends it)
    steps: tuple[EmulatedStep, ...]
    pull_request_id: int | None = None

    def to_api(self, *, with_steps: bool) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": self.run_id,
            "account_id": ACCOUNT_ID,
            "job_definition_id": self.job_id,
            "environment_id": self.environment_id,
            "project_id": self.project_id,
            "status": self.status,
            "status_humanized": _HUMANIZED[self.status],
            "created_at": _api_time(self.created_at),
            "started_at": _api_time(self.created_at),
            "finished_at": None if self.finished_at is None else _api_time(self.finished_at),
            "is_complete": self.status != RUNNING,
            "is_success": self.status == SUCCESS,
            "is_error": self.status == ERROR,
            "is_cancelled": self.status == CANCELLED,
            "in_progress": self.status == RUNNING,
            "trigger": {
                "cause": "Kicked off by the emulator",
                "github_pull_request_id": self.pull_request_id,
            },
        }
        if with_steps:
            document["run_steps"] = [
                {
                    "id": self.run_id * 100 + step.index,
                    "run_id": self.run_id,
                    "index": step.index,
                    "name": step.name,
                    "status": step.status,
                    "status_humanized": _HUMANIZED[step.status],
                }
                for step in self.steps
            ]
        return document


@dataclass(frozen=True, slots=True)
class Subscription:
    url: str
    secret: str
    event_types: tuple[str, ...] = EVENT_TYPES
    job_ids: tuple[int, ...] = ()  # empty: every job
    attempts: int = WEBHOOK_ATTEMPTS
    timeout_s: float = WEBHOOK_TIMEOUT_S
    retry_delays_s: tuple[float, ...] = WEBHOOK_RETRY_DELAYS_S


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt to deliver an event: what the endpoint answered (None: no answer in time)."""

    event_id: str
    event_type: str
    run_id: int
    attempt: int
    status: int | None
    elapsed_s: float


@dataclass
class _Account:
    environments: dict[int, str] = field(default_factory=dict)  # id -> deployment/development
    jobs: dict[int, tuple[int, str]] = field(default_factory=dict)  # id -> (environment, type)
    runs: dict[int, EmulatedRun] = field(default_factory=dict)


class DbtCloudEmulation:
    """dbt Cloud's Admin API over an account of runs, and its webhooks. Thread-safe."""

    def __init__(self, clock: Clock, real_clock: Clock) -> None:
        self.clock = clock
        self.token = DBT_CLOUD_TOKEN
        self._real = real_clock
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._account = _Account()
        self._subscriptions: list[Subscription] = []
        self._deliveries: list[Delivery] = []
        self._senders: list[threading.Thread] = []
        self._run_ids = itertools.count(70_001)

    def stop(self) -> None:
        """No more deliveries: the webhooks waiting for a retry give up."""
        self._stopping.set()

    # -- setting it up ------------------------------------------------------------------------

    def add_environment(self, environment_id: int, kind: str = "deployment") -> None:
        with self._lock:
            self._account.environments[environment_id] = kind

    def add_job(self, job_id: int, *, environment_id: int, job_type: str = "scheduled") -> None:
        with self._lock:
            self._account.environments.setdefault(environment_id, "deployment")
            self._account.jobs[job_id] = (environment_id, job_type)

    def subscribe(
        self,
        url: str,
        *,
        secret: str,
        event_types: Sequence[str] = EVENT_TYPES,
        job_ids: Sequence[int] = (),
        attempts: int = WEBHOOK_ATTEMPTS,
        timeout_s: float = WEBHOOK_TIMEOUT_S,
        retry_delays_s: Sequence[float] = WEBHOOK_RETRY_DELAYS_S,
    ) -> Subscription:
        subscription = Subscription(
            url, secret, tuple(event_types), tuple(job_ids), attempts, timeout_s,
            tuple(retry_delays_s),
        )  # fmt: skip
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe_all(self) -> None:
        with self._lock:
            self._subscriptions.clear()

    def add_run(
        self,
        job_id: int,
        steps: Sequence[tuple[str, Path | None] | tuple[str, Path | None, int]],
        *,
        status: int = SUCCESS,
        pull_request_id: int | None = None,
        duration_s: float = 60.0,
        notify: bool = True,
    ) -> EmulatedRun:
        """A run of ``job_id`` that has ended with ``status`` (or runs still: ``RUNNING``, until
        ``end_run``), of ``steps``: (name, artifacts folder or None[, status]); a step without a
        status has the run's. Its webhooks go out unless ``notify`` is False (a run whose
        deliveries never happened)."""
        with self._lock:
            environment_id, _ = self._account.jobs[job_id]
            now = self.clock.now()
            made = tuple(
                EmulatedStep(
                    index,
                    step[0],
                    step[2] if len(step) == 3 else status,
                    step[1],
                )
                for index, step in enumerate(steps, start=1)
            )
            run = EmulatedRun(
                run_id=next(self._run_ids),
                job_id=job_id,
                environment_id=environment_id,
                project_id=environment_id * 10,
                status=status,
                created_at=now if status == RUNNING else now - duration_s,
                finished_at=None if status == RUNNING else now,
                steps=made,
                pull_request_id=pull_request_id,
            )
            self._account.runs[run.run_id] = run
            subscriptions = list(self._subscriptions)
        if notify:
            self._notify(run, ["job.run.started", *_ending_events(status)], subscriptions)
        return run

    def end_run(
        self, run: EmulatedRun, *, status: int = SUCCESS, notify: bool = True
    ) -> EmulatedRun:
        """A ``RUNNING`` run ends now with ``status``, its running steps with it."""
        with self._lock:
            ended = replace(
                run,
                status=status,
                finished_at=self.clock.now(),
                steps=tuple(
                    replace(step, status=status) if step.status == RUNNING else step
                    for step in run.steps
                ),
            )
            self._account.runs[run.run_id] = ended
            subscriptions = list(self._subscriptions)
        if notify:
            self._notify(ended, _ending_events(status), subscriptions)
        return ended

    def runs(self) -> list[EmulatedRun]:
        with self._lock:
            return sorted(self._account.runs.values(), key=lambda run: run.run_id)

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def wait_for_deliveries(self, timeout_s: float = 60.0) -> None:
        """Until every webhook sent so far has been delivered or given up (real time)."""
        with self._lock:
            senders = list(self._senders)
        for sender in senders:
            sender.join(timeout_s)

    def event_body(self, run: EmulatedRun, event_type: str, event_id: str | None = None) -> bytes:
        """The body dbt Cloud posts for ``run``'s ``event_type`` (for a test's own deliveries)."""
        document = {
            "accountId": ACCOUNT_ID,
            "webhooksID": "wsu_emulator",
            "eventId": event_id or f"wev_{secrets.token_hex(12)}",
            "timestamp": _event_time(self.clock.now()),
            "eventType": event_type,
            "webhookName": "hexdbt",
            "data": {
                "jobId": str(run.job_id),
                "jobName": f"job {run.job_id}",
                "runId": str(run.run_id),
                "environmentId": str(run.environment_id),
                "environmentName": "Production",
                "dbtVersion": "1.11.0",
                "projectName": "sample",
                "projectId": str(run.project_id),
                "runStatus": _HUMANIZED[run.status]
                if event_type != "job.run.started"
                else "Running",
                "runStatusCode": run.status if event_type != "job.run.started" else 3,
                "runStatusMessage": "None",
                "runReason": "Kicked off by the emulator",
                "runStartedAt": _event_time(run.created_at),
                **(
                    {"runFinishedAt": _event_time(run.finished_at)}
                    if event_type != "job.run.started" and run.finished_at is not None
                    else {}
                ),
            },
        }
        return json.dumps(document).encode()

    # -- the admin API (``hexdbt emulator`` users' own trial) -----------------------------------

    def admin(self, method: str, path: str, document: Any) -> Response:
        """``/_emulator/dbt-cloud/...``: jobs, webhook subscriptions, runs, deliveries."""
        route = (method, path.removeprefix("/_emulator/dbt-cloud"))
        body = document if isinstance(document, dict) else {}
        try:
            if route == ("POST", "/jobs"):
                self.add_environment(
                    int(body["environment_id"]), str(body.get("environment_type", "deployment"))
                )
                self.add_job(
                    int(body["job_id"]),
                    environment_id=int(body["environment_id"]),
                    job_type=str(body.get("job_type", "scheduled")),
                )
                return Response(200, json_bytes({"job_id": int(body["job_id"])}))
            if route == ("POST", "/webhooks"):
                self.subscribe(
                    str(body["url"]),
                    secret=str(body["secret"]),
                    job_ids=[int(job) for job in body.get("job_ids", [])],
                )
                return Response(200, json_bytes({"subscribed": str(body["url"])}))
            if route == ("POST", "/runs"):
                steps = [
                    (
                        str(step["name"]),
                        Path(step["artifacts"]) if step.get("artifacts") else None,
                        int(step.get("status", body.get("status", SUCCESS))),
                    )
                    for step in body["steps"]
                ]
                with self._lock:
                    if int(body["job_id"]) not in self._account.jobs:
                        return admin_error(404, f"no job {body['job_id']}: POST /jobs first")
                run = self.add_run(
                    int(body["job_id"]),
                    steps,
                    status=int(body.get("status", SUCCESS)),
                    notify=bool(body.get("notify", True)),
                )
                return Response(200, json_bytes(run.to_api(with_steps=True)))
            if route == ("GET", "/deliveries"):
                return Response(
                    200,
                    json_bytes(
                        [
                            {
                                "eventId": item.event_id,
                                "eventType": item.event_type,
                                "runId": item.run_id,
                                "attempt": item.attempt,
                                "status": item.status,
                                "elapsedS": round(item.elapsed_s, 4),
                            }
                            for item in self.deliveries()
                        ]
                    ),
                )
        except (KeyError, TypeError, ValueError) as exc:
            return admin_error(400, f"{route[1]}: missing or bad field {exc}")
        return admin_error(404, f"no admin endpoint {method} {path}")

    # -- webhooks -------------------------------------------------------------------------------

    def _notify(
        self, run: EmulatedRun, kinds: Sequence[str], subscriptions: list[Subscription]
    ) -> None:
        """Each subscription gets the run's events in order, from a thread of its own."""
        for subscription in subscriptions:
            if subscription.job_ids and run.job_id not in subscription.job_ids:
                continue
            events = [
                (kind, self.event_body(run, kind))
                for kind in kinds
                if kind in subscription.event_types
            ]
            sender = threading.Thread(
                target=self._deliver_in_order,
                args=(subscription, events, run.run_id),
                name="dbt-cloud-webhook",
                daemon=True,
            )
            with self._lock:
                self._senders.append(sender)
            sender.start()

    def _deliver_in_order(
        self, subscription: Subscription, events: list[tuple[str, bytes]], run_id: int
    ) -> None:
        for kind, body in events:
            self._deliver(subscription, body, run_id, kind)

    def _deliver(self, subscription: Subscription, body: bytes, run_id: int, kind: str) -> None:
        event_id = json.loads(body)["eventId"]
        for attempt in range(1, subscription.attempts + 1):
            if self._stopping.is_set():
                return
            started = self._real.now()
            status = _post(subscription.url, body, sign(body, subscription.secret), subscription)
            elapsed = self._real.now() - started
            with self._lock:
                self._deliveries.append(Delivery(event_id, kind, run_id, attempt, status, elapsed))
            if status is not None and 200 <= status < 300:
                return
            delays = subscription.retry_delays_s
            delay = delays[min(attempt - 1, len(delays) - 1)] if delays else 0.0
            if attempt < subscription.attempts and self._stopping.wait(delay):
                return

    # -- the Admin API ------------------------------------------------------------------------

    def answer(self, request: Request, operation: str) -> Response:
        if not self._authorized(request.authorization):
            return _error(401, "Invalid token.")
        matched = _PATTERNS[operation].match(request.path)
        if matched is None:
            return _error(404, "Not found.")
        if int(matched.group(1)) != ACCOUNT_ID:
            return _error(404, "Account not found.")
        with self._lock:
            account = self._account
            if operation == "DbtCloudListRuns":
                return self._list_runs(request, account)
            if operation in ("DbtCloudGetRun", "DbtCloudGetArtifact"):
                run = account.runs.get(int(matched.group(2)))
                if run is None:
                    return _error(404, "Run not found.")
                if operation == "DbtCloudGetRun":
                    steps = "run_steps" in (query_value(request.query, "include_related") or "")
                    return _ok(run.to_api(with_steps=steps))
                return _artifact(run, matched.group(3), query_value(request.query, "step"))
            if operation == "DbtCloudGetJob":
                job_id = int(matched.group(2))
                if job_id not in account.jobs:
                    return _error(404, "Job not found.")
                environment_id, job_type = account.jobs[job_id]
                return _ok(
                    {
                        "id": job_id,
                        "account_id": ACCOUNT_ID,
                        "environment_id": environment_id,
                        "job_type": job_type,
                        "name": f"job {job_id}",
                    }
                )
            environment_id = int(matched.group(2))
            if environment_id not in account.environments:
                return _error(404, "Environment not found.")
            kind = account.environments[environment_id]
            return _ok(
                {
                    "id": environment_id,
                    "account_id": ACCOUNT_ID,
                    "type": kind,
                    "deployment_type": "production" if kind == "deployment" else None,
                    "name": f"environment {environment_id}",
                }
            )

    def _authorized(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").partition(" ")
        return scheme.lower() in ("token", "bearer") and hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        )

    def _list_runs(self, request: Request, account: _Account) -> Response:
        query = request.query
        runs = list(account.runs.values())
        job = query_value(query, "job_definition_id")
        if job is not None:
            if not job.isdigit():
                return _error(400, "job_definition_id must be a number.")
            runs = [run for run in runs if run.job_id == int(job)]
        order = query_value(query, "order_by") or "id"
        runs.sort(key=lambda run: run.run_id, reverse=order == "-id")
        try:
            limit = min(100, int(query_value(query, "limit") or 100))
            offset = int(query_value(query, "offset") or 0)
        except ValueError:
            return _error(400, "limit and offset must be numbers.")
        page = runs[offset : offset + limit]
        document = _envelope([run.to_api(with_steps=False) for run in page])
        document["extra"] = {
            "filters": {"job_definition_id": job},
            "order_by": order,
            "pagination": {"count": len(page), "total_count": len(runs)},
        }
        return Response(200, json_bytes(document))


def _ending_events(status: int) -> list[str]:
    return ["job.run.completed", *(["job.run.errored"] if status == ERROR else [])]


def _post(url: str, body: bytes, signature: str, subscription: Subscription) -> int | None:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": signature,
            "User-Agent": "dbt-cloud-webhooks (hexdbt emulator)",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=subscription.timeout_s) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        error.close()
        return int(error.code)
    except (OSError, ValueError):  # refused, reset, timed out: no answer
        return None


def _artifact(run: EmulatedRun, path: str, step_text: str | None) -> Response:
    if step_text is not None and not step_text.isdigit():
        return _error(400, "step must be a number.")
    # Without ``step``, dbt Cloud serves the last step's artifacts.
    index = int(step_text) if step_text is not None else len(run.steps)
    step = next((step for step in run.steps if step.index == index), None)
    if step is None or step.artifacts is None or ".." in path.split("/"):
        return _error(404, f"No artifact {path} for step {index}.")
    file = step.artifacts / path
    if not file.is_file():
        return _error(404, f"No artifact {path} for step {index}.")
    return Response(200, file.read_bytes(), content_type="application/json")


def _envelope(data: Any, status: int = 200, message: str | None = None) -> dict[str, Any]:
    return {
        "status": {
            "code": status,
            "is_success": status < 400,
            "user_message": message or "Success!",
            "developer_message": "",
        },
        "data": data,
    }


def _ok(data: Any) -> Response:
    return Response(200, json_bytes(_envelope(data)))


def _error(status: int, message: str) -> Response:
    return Response(status, json_bytes(_envelope(None, status, message)))


def _api_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")


def _event_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
