"""HexClient: one method per endpoint of Hex's API. The only module that imports requests.

The client owns policy (base URL, auth, timeouts, retries, the rate budget); the session that
moves bytes and the clock are injected. Every failure leaves as a ``hexdbt.errors`` class, built
at one boundary (``_call``) with ``raise ... from exc``.

Time limits (documented in the README): a connect timeout and a read timeout per attempt
(``HEXDBT_CONNECT_TIMEOUT_S``, 10 s, and ``HEXDBT_READ_TIMEOUT_S``, 30 s), and at most
``GET_ATTEMPTS`` attempts of a GET or DELETE (on 429, 5xx and transport errors, with
``backoff_delay_s``; Retry-After wins). Every wait (a backoff, a budget slot) ends early when the
client's ``stop`` event is set, with ``Interrupted``; a signal also cuts a request in flight short.

RunProject (POST) is sent once per call and never retried here: the engine decides what a failure
means (nothing sent: requeue; answer lost: reconcile through GetProjectRuns before sending again).
A call made on a budget slot the engine took (``slot=``) never waits for the budget either: a 429
is recorded in the shared budget and raised, and the engine schedules the call again.
"""

from __future__ import annotations

import email.utils
import html
import json
import os
import random
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import requests
import urllib3.exceptions

from hexdbt._version import __version__
from hexdbt.clock import Clock, SystemClock
from hexdbt.errors import (
    ConfigError,
    HexApiError,
    HexAuthError,
    HexNotFoundError,
    HexPermissionError,
    HexRateLimitedError,
    HexRejectedError,
    HexTransportError,
    HexUnavailableError,
    Interrupted,
    redact,
)
from hexdbt.hex.budget import Budget, CallKind, Slot
from hexdbt.hex.models import (
    Project,
    ProjectsPage,
    QueriedTable,
    QueriedTablesPage,
    Run,
    RunRequest,
    RunsPage,
    RunStatus,
    RunTrigger,
)
from hexdbt.settings import refuse_plain_http
from hexdbt.signals import interruptible

USER_AGENT = f"hexdbt/{__version__}"
MAX_PAGE_SIZE = 100
GET_ATTEMPTS = 3
CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
# The longest a call waits for a budget slot before giving up with HexRateLimitedError.
BUDGET_WAIT_S = 300.0


class HexRunOutcomeUnknownError(HexUnavailableError):
    """RunProject got a 5xx other than 503: Hex may or may not have started the run."""

    request_may_have_been_sent = True


def run_may_have_started(exc: BaseException) -> bool:
    """Whether a failed RunProject may still have started a run (reconcile before re-sending)."""
    return bool(getattr(exc, "request_may_have_been_sent", False))


def backoff_delay_s(
    attempt: int,
    retry_after_s: float | None = None,
    *,
    jitter: float = 0.0,
    base_s: float = 1.0,
    cap_s: float = 60.0,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    Exponential from ``base_s``, capped at ``cap_s``, with "equal jitter": ``jitter`` in [0, 1)
    spreads the wait over its upper half, so processes that failed together do not retry together.
    A server's Retry-After replaces the formula (never below zero, never above the cap times 10:
    a broken header must not park a process for a day).
    """
    if retry_after_s is not None:
        return min(max(0.0, retry_after_s), cap_s * 10)
    ceiling = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + ceiling / 2 * min(max(jitter, 0.0), 1.0)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Retry-After as seconds from ``now``: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


def check_token(token: str) -> str:
    """The token, stripped; one that cannot be sent in an HTTP header is a usage error (never
    shown: it may be most of a real token)."""
    text = (token or "").strip()
    if not text:
        raise ConfigError(
            "no Hex API token: set HEX_API_TOKEN",
            hint="create a token in Hex under Settings > API keys, then export HEX_API_TOKEN=...",
        )
    if not text.isascii() or not text.isprintable() or any(char.isspace() for char in text):
        raise ConfigError(
            "HEX_API_TOKEN holds a character that cannot be sent in an HTTP header"
            " (a space, a line break, a control or non-ASCII character)",
            hint="copy the token again from Hex: Settings > API keys",
        )
    return text


def normalize_base_url(base_url: str, *, allow_insecure_http: bool = False) -> str:
    """``https://app.hex.tech``, ``.../api`` and ``.../api/v1`` all become ``.../api/v1``."""
    text = base_url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"HEX_BASE_URL {base_url!r} is not an http(s) URL",
            hint="use e.g. https://app.hex.tech or https://eu.hex.tech",
        )
    try:
        parts.port  # noqa: B018  # raises ValueError for a port out of range
    except ValueError:
        raise ConfigError(
            f"HEX_BASE_URL {base_url!r} has a port that is not a number from 1 to 65535",
            hint="use e.g. https://app.hex.tech or http://127.0.0.1:8080",
        ) from None
    if any(char.isspace() for char in parts.netloc):
        raise ConfigError(
            f"HEX_BASE_URL {base_url!r} has a space in its address",
            hint="use e.g. https://app.hex.tech or https://eu.hex.tech",
        )
    refuse_plain_http(parts.scheme, parts.hostname, "the Hex token", allow_insecure_http)
    for suffix in ("/api/v1", "/api"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    return text + "/api/v1"


def _never_sent(exc: requests.RequestException) -> bool:
    """True only when the connection was never made, so the server cannot have seen the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        item = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(
            item, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError
        ):
            return True
        if isinstance(item, urllib3.exceptions.MaxRetryError):
            pending.append(item.reason)
        pending.extend(arg for arg in item.args if isinstance(arg, BaseException))
        pending.append(item.__cause__)
        pending.append(item.__context__)
    return False


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)

_ERROR_CLASSES: dict[int, type[HexApiError]] = {
    400: HexRejectedError,
    401: HexAuthError,
    403: HexPermissionError,
    404: HexNotFoundError,
    422: HexRejectedError,
    429: HexRateLimitedError,
}

_HINTS = {
    401: "check HEX_API_TOKEN: it may be invalid or expired (personal tokens always expire)",
    403: "the token lacks a scope: reading needs 'read projects', triggering 'run projects'",
    404: "check the id; Hex also answers 404 for projects the token's user cannot see",
    429: "Hex's rate limit was hit; hexdbt waits for it, so another client may share the token",
}


def _describe_body(status: int, text: str, content_type: str) -> tuple[str, str | None]:
    """Hex's message and traceId from whichever error body shape it used (or a proxy's)."""
    stripped = text.strip()
    if not stripped:
        return f"Hex answered HTTP {status} with an empty body", None
    try:
        data = json.loads(stripped)
    except ValueError:
        data = None
    if isinstance(data, Mapping):
        trace_id = data.get("traceId")
        parts: list[str] = []
        for key in ("message", "reason"):
            if isinstance(data.get(key), str) and data[key].strip():
                parts.append(data[key].strip())
        issues = data.get("issues")
        if isinstance(issues, list):
            parts.extend(
                str(item["message"])
                for item in issues
                if isinstance(item, Mapping) and item.get("message")
            )
        details = data.get("details")
        if isinstance(details, str) and details.strip():
            parts.append(details.strip())
        invalid = data.get("invalid")
        if isinstance(invalid, list) and invalid:
            names = [
                str(item.get("paramName"))
                for item in invalid
                if isinstance(item, Mapping) and item.get("paramName")
            ]
            parts.append("invalid input params: " + ", ".join(names))
        not_found = data.get("notFound")
        if isinstance(not_found, list) and not_found:
            parts.append("unknown input params: " + ", ".join(str(name) for name in not_found))
        if not parts and isinstance(data.get("code"), str):
            parts.append(data["code"])
        message = "; ".join(dict.fromkeys(parts)) or f"Hex answered HTTP {status}"
        return message, str(trace_id) if trace_id else None
    if "html" in content_type.lower() or stripped.startswith("<"):
        title = _TITLE.search(stripped)
        name = html.unescape(title.group(1)).strip() if title else ""
        return (
            f"Hex answered HTTP {status} with an HTML page"
            + (f" ({' '.join(name.split())[:120]})" if name else ""),
            None,
        )
    return f"Hex answered HTTP {status}: {' '.join(stripped.split())[:200]}", None


def session_for(api_url: str) -> requests.Session:
    """The session a client makes for itself: the proxy (``HTTPS_PROXY``, ``NO_PROXY``, ...) and
    CA bundle (``REQUESTS_CA_BUNDLE``) settings read from the environment once, here.

    Left to trust the environment, requests reads it again for every request (two scans of every
    variable: a third of a millisecond before each call leaves) and takes Basic auth from
    ~/.netrc for Hex's host, which would replace the token's Authorization header.
    """
    session = requests.Session()
    session.proxies.update(requests.utils.get_environ_proxies(api_url))
    ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if ca_bundle:
        session.verify = ca_bundle
    session.trust_env = False
    return session


# How far off a reading of Hex's clock may be for the engine to compare run start times with it
# (``MEASURED_SKEW_S`` of ``hexdbt.engine.reconcile`` covers it): the Date header's half second
# and half an exchange of up to 2 s. A slower exchange tells Hex's clock too loosely to be used.
OFFSET_MAX_ERROR_S = 1.5


class HexClient:
    """Typed access to Hex's API. Raises ``hexdbt.errors`` classes; the Python API wraps it."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        session: requests.Session | None = None,
        clock: Clock | None = None,
        budget: Budget | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        allow_insecure_http: bool = False,
        get_attempts: int = GET_ATTEMPTS,
        stop: threading.Event | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._token = check_token(token)
        self.api_url = normalize_base_url(base_url, allow_insecure_http=allow_insecure_http)
        self.base_url = self.api_url[: -len("/api/v1")]
        self._owns_session = session is None
        self._session = session or session_for(self.api_url)
        self.clock: Clock = clock or SystemClock()
        self.budget = budget
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.get_attempts = max(1, get_attempts)
        # Set on SIGINT/SIGTERM (or by the engine's stop): every wait in here ends at once.
        self.stop = stop or threading.Event()
        # Hex's clock minus ours, from the Date header of the answer that told it most closely
        # (None: none yet, or none within OFFSET_MAX_ERROR_S), and how closely it did.
        self.hex_clock_offset_s: float | None = None
        self._offset_error_s = OFFSET_MAX_ERROR_S
        self._rng = rng or random.Random()

    @property
    def longest_request_s(self) -> float:
        """The longest one attempt can take before it has an answer or gives up, on the
        client's clock (the timeouts themselves are real seconds)."""
        return self.clock.from_real_s(self.timeout[0] + self.timeout[1])

    def __repr__(self) -> str:
        return f"HexClient(base_url={self.base_url!r})"

    def close(self) -> None:
        if self._owns_session:
            self._session.close()
        if self.budget is not None:
            self.budget.close()

    def __enter__(self) -> HexClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- endpoints ------------------------------------------------------------------------------

    def run_project(
        self, project_id: str, request: RunRequest | None = None, *, slot: Slot | None = None
    ) -> Run:
        """RunProject: start the published app. 201 -> Run. ``slot``: a RunProject slot the
        caller took from the budget already (``take_now``); the first attempt is made on it
        instead of waiting for one."""
        return self.run_project_body(project_id, (request or RunRequest()).to_api(), slot=slot)

    def run_project_body(
        self, project_id: str, body: Mapping[str, Any], *, slot: Slot | None = None
    ) -> Run:
        """RunProject with its body built already (``RunRequest.to_api``, once, when the trigger
        was made; the ledger keeps it): sent as it is. ``slot`` as for ``run_project``."""
        payload = self._call(
            "POST",
            f"/projects/{_segment(project_id, 'project id')}/runs",
            json_body=body,
            slot=slot,
        )
        return Run.from_api(payload)

    def get_run_status(
        self, project_id: str, run_id: str, *, slot: Slot | None = None
    ) -> RunStatus:
        """GetRunStatus. ``slot``: a budget slot the caller took (``take_now``); one attempt."""
        path = f"/projects/{_segment(project_id, 'project id')}/runs/{_segment(run_id, 'run id')}"
        return RunStatus.from_api(self._call("GET", path, slot=slot))

    def get_project_runs(
        self,
        project_id: str,
        *,
        limit: int = 25,
        offset: int = 0,
        status_filter: str | None = None,
        run_trigger_filter: RunTrigger | str | None = None,
        slot: Slot | None = None,
    ) -> RunsPage:
        params: dict[str, str | int] = {"limit": _page_size(limit), "offset": max(0, offset)}
        if status_filter:
            params["statusFilter"] = str(status_filter)
        if run_trigger_filter:
            params["runTriggerFilter"] = str(run_trigger_filter)
        path = f"/projects/{_segment(project_id, 'project id')}/runs"
        return RunsPage.from_api(self._call("GET", path, params=params, slot=slot))

    def cancel_run(
        self,
        project_id: str,
        run_id: str,
        *,
        slot: Slot | None = None,
        read_timeout_s: float | None = None,
    ) -> None:
        """CancelRun. ``slot``: a budget slot the caller took; ``read_timeout_s``: one attempt,
        answered within this (a bounded wind-down)."""
        path = f"/projects/{_segment(project_id, 'project id')}/runs/{_segment(run_id, 'run id')}"
        self._call("DELETE", path, slot=slot, once_within_s=read_timeout_s)

    def list_projects(
        self,
        *,
        limit: int = 25,
        after: str | None = None,
        include_archived: bool = False,
        include_trashed: bool = False,
        include_components: bool = False,
        sort_by: str | None = None,
        sort_direction: str | None = None,
        slot: Slot | None = None,
    ) -> ProjectsPage:
        """ListProjects: one page. ``slot``: a budget slot the caller took; one attempt."""
        params: dict[str, str | int] = {
            "limit": _page_size(limit),
            "includeArchived": _flag(include_archived),
            "includeTrashed": _flag(include_trashed),
            "includeComponents": _flag(include_components),
        }
        if after:
            params["after"] = after
        if sort_by:
            params["sortBy"] = sort_by
        if sort_direction:
            params["sortDirection"] = sort_direction
        return ProjectsPage.from_api(self._call("GET", "/projects", params=params, slot=slot))

    def iter_projects(
        self,
        *,
        limit: int | None = 100,
        include_archived: bool = False,
        include_trashed: bool = False,
        include_components: bool = False,
        page_size: int = MAX_PAGE_SIZE,
    ) -> Iterator[Project]:
        """Follow ListProjects' pages until ``limit`` projects (None: all) or the last page."""
        after: str | None = None
        given = 0
        page_size = _page_size(page_size)
        while limit is None or given < limit:
            want = page_size if limit is None else min(page_size, limit - given)
            page = self.list_projects(
                limit=want,
                after=after,
                include_archived=include_archived,
                include_trashed=include_trashed,
                include_components=include_components,
            )
            for project in page.values:
                if limit is not None and given >= limit:
                    return
                given += 1
                yield project
            if not page.after or not page.values or page.after == after:
                return
            after = page.after

    def get_project(self, project_id: str) -> Project:
        return Project.from_api(
            self._call("GET", f"/projects/{_segment(project_id, 'project id')}")
        )

    def get_queried_tables(
        self,
        project_id: str,
        *,
        limit: int = MAX_PAGE_SIZE,
        after: str | None = None,
        before: str | None = None,
    ) -> QueriedTablesPage:
        """GetQueriedTables (Enterprise workspaces): one page of the warehouse tables the
        published project reads. 422 for an unpublished project; 403 where the workspace lacks
        the feature (or the token the scope)."""
        params: dict[str, str | int] = {"limit": _page_size(limit)}
        if after:
            params["after"] = after
        if before:
            params["before"] = before
        path = f"/projects/{_segment(project_id, 'project id')}/queriedTables"
        return QueriedTablesPage.from_api(self._call("GET", path, params=params))

    def iter_queried_tables(
        self, project_id: str, *, page_size: int = MAX_PAGE_SIZE
    ) -> Iterator[QueriedTable]:
        """Every table a published project reads, following GetQueriedTables' pages."""
        after: str | None = None
        while True:
            page = self.get_queried_tables(project_id, limit=page_size, after=after)
            yield from page.values
            if not page.after or not page.values or page.after == after:
                return
            after = page.after

    def find_api_runs_since(
        self,
        project_id: str,
        since: float | Callable[[], float],
        *,
        max_pages: int = 10,
        slot_for_page: Callable[[], Slot | None] | None = None,
    ) -> tuple[RunStatus, ...]:
        """API-triggered runs of a project that started at or after ``since`` (epoch s on Hex's
        clock), or have not started yet: the candidates for a RunProject whose answer was lost.
        ``since`` may be a function, asked once the first page has answered: its Date header has
        told Hex's clock by then. ``slot_for_page``: the caller's budget slot for each page (it
        raises when it has none, and the look-up is made again later), instead of waiting here.

        Pages newest first and stops at the first run that started before ``since``.
        """
        found: list[RunStatus] = []
        for page_number in range(max_pages):
            page = self.get_project_runs(
                project_id,
                limit=MAX_PAGE_SIZE,
                offset=page_number * MAX_PAGE_SIZE,
                run_trigger_filter=RunTrigger.API,
                slot=slot_for_page() if slot_for_page is not None else None,
            )
            if callable(since):
                since = since()
            for run in page.runs:
                if run.start_time is not None and run.start_time < since:
                    return tuple(found)
                found.append(run)
            if not page.next_page or len(page.runs) < MAX_PAGE_SIZE:
                break
        return tuple(found)

    # -- the one boundary with requests --------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json_body: Any = None,
        slot: Slot | None = None,
        once_within_s: float | None = None,
    ) -> Any:
        """One call to Hex, with the retries its method allows (see the module docstring)."""
        kind = CallKind.RUN_PROJECT if method == "POST" else CallKind.OTHER
        url = self.api_url + path
        # A POST, a call on the caller's slot, or a bounded one: one attempt; the caller decides.
        attempts = 1 if method == "POST" or slot is not None or once_within_s else self.get_attempts
        timeout = self.timeout if once_within_s is None else (self.timeout[0], once_within_s)
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            if self.budget is not None:
                if slot is not None:
                    self.budget.use(slot)
                else:
                    self.budget.acquire(
                        kind, deadline=self.clock.now() + BUDGET_WAIT_S, stop=self.stop
                    )
            try:
                with interruptible():
                    # A signal that landed just before (not yet inside) this block only set stop:
                    # a RunProject is never sent after it, nor left to wait out its read timeout.
                    if method == "POST" and self.stop.is_set():
                        raise Interrupted("stopped before RunProject was sent", sent=False)
                    sent_at = self.clock.now()
                    response = self._session.request(
                        method,
                        url,
                        params=params,
                        json=json_body,
                        headers={
                            "Authorization": f"Bearer {self._token}",
                            "User-Agent": USER_AGENT,
                            "Accept": "application/json",
                        },
                        timeout=timeout,
                        allow_redirects=False,
                    )
            except requests.RequestException as exc:
                never_sent = _never_sent(exc)
                transport_error = HexTransportError(
                    redact(f"{method} {path}: no answer from Hex ({_reason(exc)})", self._token),
                    request_may_have_been_sent=not never_sent,
                    hint="check HEX_BASE_URL and the network"
                    if never_sent
                    else "Hex may have received the request; nothing was re-sent",
                )
                if last:
                    raise transport_error from exc
                self._pause(self._backoff(attempt, None))
                continue

            self._note_hex_time(response.headers.get("Date"), sent_at)
            status = response.status_code
            if 200 <= status < 300:
                return self._body(response, method, path)
            error = self._error(response, method, path)
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock.now())
            if status == 429 and self.budget is not None:
                # Every process sharing the budget now waits for Hex's window: acquiring at the
                # top of the loop waits (bounded); a caller with its own slot reschedules.
                self.budget.note_rate_limited(kind, retry_after)
            retryable = status == 429 or (status >= 500 and status != 501)
            if last or not retryable:
                raise error
            if status != 429 or self.budget is None:
                self._pause(self._backoff(attempt, retry_after))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _note_hex_time(self, date_header: str | None, sent_at: float) -> None:
        """Hex's clock minus ours, from an answer's Date header (whole seconds, so its middle)
        against the middle of the exchange: what tells Hex's run start times from our own. The
        reading is off by at most half a second plus half the exchange, so a slow answer tells
        little: the closest reading stands, and none off by more than ``OFFSET_MAX_ERROR_S``."""
        if not date_header:
            return
        try:
            hex_now = email.utils.parsedate_to_datetime(date_header).timestamp() + 0.5
        except (TypeError, ValueError):
            return
        received_at = self.clock.now()
        error_s = 0.5 + (received_at - sent_at) / 2
        if error_s > self._offset_error_s:
            return
        self._offset_error_s = error_s
        self.hex_clock_offset_s = hex_now - (sent_at + received_at) / 2

    def _pause(self, seconds: float) -> None:
        """Wait between attempts; ``stop`` ends the wait, and the call, at once."""
        if self.clock.wait(self.stop, seconds):
            raise Interrupted("stopped while waiting to retry a call to Hex")

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        return backoff_delay_s(attempt, retry_after_s, jitter=self._rng.random())

    def _body(self, response: requests.Response, method: str, path: str) -> Any:
        if response.status_code == 204 or not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise HexApiError(
                f"{method} {path}: Hex answered HTTP {response.status_code} with a body that is"
                " not JSON",
                status=response.status_code,
            ) from None

    def _error(self, response: requests.Response, method: str, path: str) -> HexApiError:
        status = response.status_code
        message, trace_id = _describe_body(
            status, response.text, response.headers.get("Content-Type", "")
        )
        message = redact(f"{method} {path}: {message}", self._token)
        trace_id = redact(trace_id, self._token) if trace_id else None
        hint = _HINTS.get(status)
        if status == 422 and method == "POST":
            hint = (
                "only published projects run, with inputs the published app has; publish it in Hex"
            )
        if status == 429:
            retry = parse_retry_after(response.headers.get("Retry-After"), self.clock.now())
            return HexRateLimitedError(
                message, status=status, trace_id=trace_id, retry_after_s=retry, hint=hint
            )
        if status >= 500:
            if method == "POST" and status != 503:
                return HexRunOutcomeUnknownError(
                    message,
                    status=status,
                    trace_id=trace_id,
                    hint="Hex may have started the run; check the project's runs before retrying",
                )
            hint = (
                "all 25 kernels of this user are busy; try again when runs finish"
                if status == 503 and method == "POST"
                else "Hex is failing; try again later"
            )
            return HexUnavailableError(message, status=status, trace_id=trace_id, hint=hint)
        error_class = _ERROR_CLASSES.get(status, HexApiError)
        return error_class(message, status=status, trace_id=trace_id, hint=hint)


def _reason(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.ReadTimeout):
        return "read timeout after sending"
    if _never_sent(exc):
        return "connection refused or host unreachable"
    if isinstance(exc, requests.ConnectionError):
        return "connection broken after sending"
    return type(exc).__name__


def _segment(value: str, what: str) -> str:
    text = str(value).strip()
    if not text:
        raise ConfigError(f"the {what} is empty")
    return quote(text, safe="")


def _page_size(limit: int) -> int:
    return min(MAX_PAGE_SIZE, max(1, int(limit)))


def _flag(value: bool) -> str:
    return "true" if value else "false"
