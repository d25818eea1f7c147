"""dbt Cloud's Administrative API v2, the few calls ``hexdbt serve`` makes: a job's runs, a run
with its steps, a step's artifacts, and whether a job runs in a deployment environment.

    client = DbtCloudClient(settings, clock=clock)   # settings: hexdbt.settings.resolve_dbt_cloud
    client.runs(job_id="12", limit=20)               # newest first; offset= pages back
    client.run("4242")                               # with its steps
    client.artifact("4242", "run_results.json", step=4)   # bytes, or None: that step has none

Every failure leaves as a ``DbtCloudError`` (status, and the cool-down a 429 asks for), built at
one boundary (``_get``); the token is sent as ``Authorization: Token ...`` and appears in no
message. A 429 starts a cool-down (its Retry-After, else ``DEFAULT_COOL_DOWN_S``): until it ends,
every call fails at once without asking, so one busy account is not asked again and again.
"""

from __future__ import annotations

import email.utils
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

from hexdbt._version import __version__
from hexdbt.clock import Clock, SystemClock
from hexdbt.errors import DbtCloudError, redact
from hexdbt.settings import DbtCloudSettings

# dbt Cloud's run statuses (the ``status`` of a run and of a step).
QUEUED, STARTING, RUNNING, SUCCESS, ERROR, CANCELLED = 1, 2, 3, 10, 20, 30
ENDED_STATUSES = frozenset({SUCCESS, ERROR, CANCELLED})
STATUS_NAMES = {
    QUEUED: "queued",
    STARTING: "starting",
    RUNNING: "running",
    SUCCESS: "success",
    ERROR: "error",
    CANCELLED: "cancelled",
}
# A 429 without Retry-After: dbt Cloud documents no figure; a minute is what Airflow's provider
# waits between polls by default.
DEFAULT_COOL_DOWN_S = 60.0
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
# dbt Cloud lists at most 100 runs a request (``limit``); older ones are read with ``offset``.
RUNS_PAGE = 100


@dataclass(frozen=True, slots=True)
class CloudStep:
    index: int
    name: str
    status: int


@dataclass(frozen=True, slots=True)
class CloudRun:
    run_id: str
    job_id: str
    environment_id: str
    project_id: str
    status: int
    created_at: str
    finished_at: str | None
    steps: tuple[CloudStep, ...] = ()
    # Started for a pull request (a CI job): it builds into a temporary schema.
    for_pull_request: bool = False

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, str(self.status))


@dataclass(frozen=True, slots=True)
class CloudJob:
    job_id: str
    environment_id: str
    job_type: str  # scheduled, ci, merge, other ... ("" when dbt Cloud does not say)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _status(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _run_of(data: Mapping[str, Any]) -> CloudRun:
    trigger = data.get("trigger") if isinstance(data.get("trigger"), Mapping) else {}
    assert isinstance(trigger, Mapping)
    pull_request = any(
        trigger.get(key)
        for key in (
            "github_pull_request_id",
            "gitlab_merge_request_id",
            "azure_pull_request_id",
            "non_native_pull_request_id",
        )
    )
    raw_steps = data.get("run_steps")
    steps = tuple(
        CloudStep(int(step.get("index") or 0), _text(step.get("name")), _status(step.get("status")))
        for step in (raw_steps if isinstance(raw_steps, list) else [])
        if isinstance(step, Mapping)
    )
    return CloudRun(
        run_id=_text(data.get("id")),
        job_id=_text(data.get("job_definition_id") or data.get("job_id")),
        environment_id=_text(data.get("environment_id")),
        project_id=_text(data.get("project_id")),
        status=_status(data.get("status")),
        created_at=_text(data.get("created_at")),
        finished_at=_text(data.get("finished_at")) or None,
        steps=tuple(sorted(steps, key=lambda step: step.index)),
        for_pull_request=pull_request,
    )


class DbtCloudClient:
    """Typed access to the calls of dbt Cloud's Admin API that ``serve`` needs."""

    def __init__(
        self,
        settings: DbtCloudSettings,
        *,
        session: requests.Session | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not settings.token:
            raise DbtCloudError(
                "no dbt Cloud token: set DBT_CLOUD_API_TOKEN",
                hint="create a service token with the read-only permission set (docs/dbt-cloud.md)",
            )
        self.settings = settings
        self.account_url = f"{settings.api_url}/v2/accounts/{settings.account_id}"
        self._token = settings.token
        self._session = session or requests.Session()
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._cool_down_until = 0.0

    def close(self) -> None:
        self._session.close()

    @property
    def cool_down_until(self) -> float:
        """When the cool-down of the last 429 ends (on the client's clock; past: none)."""
        return self._cool_down_until

    def runs(
        self, job_id: str | None = None, *, limit: int = RUNS_PAGE, offset: int = 0
    ) -> list[CloudRun]:
        """The newest runs (of ``job_id``, else of the account), newest first, skipping the
        ``offset`` newest: one page of at most ``RUNS_PAGE``, the most dbt Cloud serves."""
        params: dict[str, str] = {"order_by": "-id", "limit": str(limit)}
        if offset:
            params["offset"] = str(offset)
        if job_id is not None:
            params["job_definition_id"] = job_id
        data = self._json("runs/", params)
        if not isinstance(data, list):
            raise self._bad_shape("runs/")
        return [_run_of(item) for item in data if isinstance(item, Mapping)]

    def run(self, run_id: str) -> CloudRun:
        """The run, with its steps."""
        data = self._json(f"runs/{quote(run_id)}/", {"include_related": '["run_steps"]'})
        if not isinstance(data, Mapping):
            raise self._bad_shape(f"runs/{run_id}/")
        return _run_of(data)

    def job(self, job_id: str) -> CloudJob:
        data = self._json(f"jobs/{quote(job_id)}/", {})
        if not isinstance(data, Mapping):
            raise self._bad_shape(f"jobs/{job_id}/")
        return CloudJob(job_id, _text(data.get("environment_id")), _text(data.get("job_type")))

    def environment_type(self, environment_id: str) -> str:
        """``deployment`` or ``development``: environments are read through API v3, the
        version that has them."""
        url = (
            f"{self.settings.api_url}/v3/accounts/{self.settings.account_id}"
            f"/environments/{quote(environment_id)}/"
        )
        data = self._data(self._get(url, {}), url)
        if not isinstance(data, Mapping):
            raise self._bad_shape(f"environments/{environment_id}/")
        return _text(data.get("type"))

    def artifact(self, run_id: str, path: str, *, step: int) -> bytes | None:
        """A step's artifact (``run_results.json``, ``manifest.json``); None on 404: the step
        wrote none (a clone, profile or ``dbt deps`` step), or not yet."""
        url = f"{self.account_url}/runs/{quote(run_id)}/artifacts/{quote(path)}"
        try:
            return self._get(url, {"step": str(step)}).content
        except DbtCloudError as exc:
            if exc.status == 404:
                return None
            raise

    # -- the one boundary -------------------------------------------------------------------

    def _json(self, relative: str, params: Mapping[str, str]) -> Any:
        url = f"{self.account_url}/{relative}"
        return self._data(self._get(url, params), url)

    def _data(self, response: requests.Response, url: str) -> Any:
        try:
            document = response.json()
        except ValueError:
            raise DbtCloudError(
                f"dbt Cloud answered {self._where(url)} with something that is not JSON",
                status=response.status_code,
            ) from None
        if not isinstance(document, Mapping) or "data" not in document:
            raise self._bad_shape(url)
        return document["data"]

    def _bad_shape(self, url: str) -> DbtCloudError:
        return DbtCloudError(f"dbt Cloud answered {self._where(url)} without the expected data")

    def _where(self, url: str) -> str:
        return url.removeprefix(self.settings.api_url)

    def _get(self, url: str, params: Mapping[str, str]) -> requests.Response:
        now = self._clock.now()
        with self._lock:
            waiting = self._cool_down_until - now
        if waiting > 0:
            raise DbtCloudError(
                f"dbt Cloud asked for a cool-down: {waiting:.0f} s left",
                status=429,
                retry_after_s=waiting,
            )
        headers = {
            "Authorization": f"Token {self._token}",
            "Accept": "application/json",
            "User-Agent": f"hexdbt/{__version__}",
        }
        try:
            response = self._session.get(
                url, params=params, headers=headers, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S)
            )
        except requests.RequestException as exc:
            raise DbtCloudError(
                f"dbt Cloud did not answer {self._where(url)}: "
                + redact(f"{type(exc).__name__}: {exc}", self._token),
                hint="check DBT_CLOUD_HOST and the network",
            ) from None
        if response.status_code < 400:
            return response
        status = response.status_code
        retry_after = None
        if status == 429:
            retry_after = _retry_after_s(response.headers.get("Retry-After"), now)
            with self._lock:
                self._cool_down_until = max(self._cool_down_until, now + retry_after)
        raise DbtCloudError(
            f"dbt Cloud answered {self._where(url)} with HTTP {status}"
            + _message_of(response, self._token),
            status=status,
            retry_after_s=retry_after,
            hint=_HINTS.get(status),
        )


_HINTS = {
    401: "check DBT_CLOUD_API_TOKEN: it may be invalid or revoked",
    403: "the token may not read this account's runs: give it the read-only permission set",
    429: "dbt Cloud's rate limit: hexdbt waits for the cool-down",
}


def _retry_after_s(value: str | None, now: float) -> float:
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                pass  # neither seconds nor a date: the default
    return DEFAULT_COOL_DOWN_S


def _message_of(response: requests.Response, token: str) -> str:
    """dbt Cloud's own words (``status.user_message``), when its error body has them."""
    try:
        document = json.loads(response.text)
    except ValueError:
        return ""
    status = document.get("status") if isinstance(document, Mapping) else None
    message = status.get("user_message") if isinstance(status, Mapping) else None
    return f": {redact(' '.join(str(message).split())[:200], token)}" if message else ""
