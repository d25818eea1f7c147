"""One request's way through the emulator: what arrived, what is answered, and the error between.

Plain records shared by the server (which reads and writes sockets) and the service (which
decides the answers), plus HTTP's reason phrases and Hex's error codes for a status.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from hexdbt.emulator.faults import Fault
from hexdbt.hex.models import WireObject

JsonObject = dict[str, Any]
_REASON_BY_STATUS = {
    200: "OK",
    201: "Created",
    204: "No Content",
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


def error_code(status: int) -> str:
    """The ``code`` Hex puts in an error body of this status."""
    return _CODE_BY_STATUS.get(status, "INTERNAL_SERVER_ERROR")


def token_fingerprint(token: str) -> str:
    """What the journal shows instead of a token: enough to tell tokens apart, nothing more."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def bearer_fingerprint(authorization: str | None) -> str | None:
    """The fingerprint of the token in an Authorization header, if it holds one."""
    if not authorization:
        return None
    _, _, value = authorization.partition(" ")
    return token_fingerprint(value.strip()) if value.strip() else None


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


def query_value(query: dict[str, list[str]], name: str) -> str | None:
    """The last value given for a query parameter, None when it is not given."""
    values = query.get(name)
    return values[-1] if values else None


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


class ApiError(Exception):
    """An error answer, raised inside a handler and rendered in the operation's error shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        issues: list[str] | None = None,
        headers: tuple[tuple[str, str], ...] = (),
        body: WireObject | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.issues = issues
        self.headers = headers
        self.body = body  # a complete body that replaces the usual shape (old input 422)


@dataclass(slots=True)
class Exchange:
    """One request on its way through the emulator, and its journal entry."""

    request: Request
    operation: str | None
    trace_id: str
    entry: JsonObject
    fault: Fault | None = None


def json_bytes(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def admin_error(status: int, message: str) -> Response:
    """An error of the emulator's own admin API (not in any Hex shape)."""
    return Response(status, json_bytes({"error": message}))


# No request of Hex's API nests deeper than a few levels. A deeper body is refused as not JSON:
# the journal copies each body, and a copy of one nested a thousand deep overflows the stack.
MAX_JSON_DEPTH = 64


def loads_json(body: bytes) -> Any:
    """The body as JSON; ValueError when it is not JSON or is nested deeper than MAX_JSON_DEPTH."""
    try:
        document = json.loads(body)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    pending: list[tuple[Any, int]] = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError("nested too deeply")
            items = value.values() if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
    return document


def parse_json_or_none(body: bytes) -> Any:
    """The body as JSON; None when there is none or it is not JSON (or nested too deeply)."""
    if not body:
        return None
    try:
        return loads_json(body)
    except ValueError:
        return None
