"""The error tree. Every expected failure is one of these, and each class carries its exit code.

    HexdbtError                      1  base; never raised itself
    ├── ConfigError                  2  bad flag, setting, environment or mapping file
    ├── ArtifactError                3  run_results.json / manifest.json missing or unreadable
    │   └── DbtCloudError            3    dbt Cloud's Admin API refused or failed (status, cool-down)
    ├── HexApiError                  4  Hex answered with an error (status, message, trace id)
    │   ├── HexAuthError             4    401: token missing, invalid or expired
    │   ├── HexPermissionError       4    403: the token lacks a scope
    │   ├── HexNotFoundError         4    404: unknown project or run, or not visible to the token
    │   ├── HexRejectedError         4    400 / 422: bad request, unpublished project, bad inputs
    │   ├── HexRateLimitedError      4    429 that outlasted the caller's deadline
    │   ├── HexUnavailableError      4    5xx, or 503 when the 25 kernels are busy
    │   └── HexTransportError        4    no HTTP answer: connect error, reset, timeout
    │       └── HexAmbiguousRunError 4      answer lost, and several runs could be the one it started
    ├── RunFailedError               5  a run ended ERRORED, KILLED, UNABLE_TO_ALLOCATE_KERNEL
    ├── RunTimeoutError              6  a run did not end within its timeout
    ├── StateError                   7  the ledger or the budget store cannot be used
    │   └── MoveRefusedError         7    a trigger is not in a state the move starts from
    └── Interrupted            130 / 143  SIGINT / SIGTERM cut a wait or a request short

The CLI turns any of these into one ``Error: ...`` line on stderr and the class's exit code.
Messages never contain the Hex token: ``redact`` is applied where foreign text is wrapped.
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

# Hex tokens start with hxtp_ (personal) or hxtw_ (workspace); bearer values of any shape are
# scrubbed too, since a proxy may echo the Authorization header in an error page.
_TOKEN_PATTERNS = (
    re.compile(r"hxt[pw]_[A-Za-z0-9_\-]+"),
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
)


def redact(text: str, *secrets: str | None) -> str:
    """Return ``text`` with the given secrets and anything shaped like a Hex token masked."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _TOKEN_PATTERNS[0].sub("***", text)
    return _TOKEN_PATTERNS[1].sub(r"\1***", text)


class HexdbtError(Exception):
    """Base of every error hexdbt raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(HexdbtError):
    """A flag, setting, environment variable or mapping file is wrong."""

    exit_code = 2


class ArtifactError(HexdbtError):
    """A dbt artifact is missing, empty, truncated, not JSON, or of an unknown schema."""

    exit_code = 3


class DbtCloudError(ArtifactError):
    """dbt Cloud's Admin API answered with an error, or not at all: a run's artifacts cannot be
    had now. ``status``: the HTTP status (None: no answer); ``retry_after_s``: the cool-down a
    429 asked for."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.retry_after_s = retry_after_s


class HexApiError(HexdbtError):
    """Hex (or something in front of it) answered with an error."""

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        trace_id: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.trace_id = trace_id

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.trace_id:
            parts.append(f"traceId {self.trace_id}")
        return parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"


class HexAuthError(HexApiError):
    """401: the token is missing, invalid or expired."""


class HexPermissionError(HexApiError):
    """403: the token is valid but lacks the scope the call needs."""


class HexNotFoundError(HexApiError):
    """404: the project or run does not exist or the token may not see it."""


class HexRejectedError(HexApiError):
    """400 or 422: Hex refused the request as it stands (e.g. unpublished project, bad inputs)."""


class HexRateLimitedError(HexApiError):
    """429 that could not be waited out within the caller's deadline."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 429,
        trace_id: str | None = None,
        retry_after_s: float | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, status=status, trace_id=trace_id, hint=hint)
        self.retry_after_s = retry_after_s


class HexUnavailableError(HexApiError):
    """5xx: Hex is failing, or (503 on RunProject) all 25 kernels are busy."""


class HexTransportError(HexApiError):
    """No HTTP answer at all: connection refused or reset, DNS, TLS, or a timeout."""

    def __init__(
        self,
        message: str,
        *,
        request_may_have_been_sent: bool,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        # False only when the request provably never left (connect failed): a POST is then safe
        # to retry. True means a run may exist that we never heard of.
        self.request_may_have_been_sent = request_may_have_been_sent


class HexAmbiguousRunError(HexTransportError):
    """A RunProject answer was lost and Hex lists several new API runs that could be its run."""

    def __init__(self, message: str, *, run_urls: tuple[str, ...], hint: str | None = None) -> None:
        super().__init__(message, request_may_have_been_sent=True, hint=hint)
        self.run_urls = run_urls


class RunFailedError(HexdbtError):
    """A Hex run ended in a terminal status other than COMPLETED."""

    exit_code = 5


class RunTimeoutError(HexdbtError):
    """A Hex run did not end within its timeout."""

    exit_code = 6


class StateError(HexdbtError):
    """hexdbt's own state (the ledger or the budget store) cannot be read or written."""

    exit_code = 7


class StateUnavailable(StateError):
    """The state's PostgreSQL server cannot be reached just now. The write was not made, or made
    with its answer lost: the caller may go on without the state for a while and make it again
    later (the ledger's moves are guarded, so a second try of a committed one is refused, not
    doubled); a later call reconnects."""


class MoveRefusedError(StateError):
    """The ledger refused a move of a trigger: its row is in a state the move does not start
    from (another process moved it first, or a bug asked for a forbidden move)."""


class Interrupted(HexdbtError):
    """SIGINT or SIGTERM cut a wait or an HTTP request short: the command winds down."""

    def __init__(
        self, message: str = "interrupted", *, exit_code: int = EXIT_SIGINT, sent: bool = True
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        # False only when the request was provably not sent (stopped before it left).
        self.sent = sent
