"""Who may read the status page (and ``/metrics``): an optional bearer token or basic-auth
password, as ASGI middleware around the whole server.

A server bound to 127.0.0.1 needs none. Bound elsewhere, ``AccessGuard`` asks every request but
those under ``open_paths`` (``/healthz`` for probes; the webhooks, which carry their own
signature) for ``Authorization: Bearer <token>`` or basic auth with the password (any user
name). The token also works as the basic-auth password, so a person can open a page guarded by
a token alone in a browser. Secrets are compared in constant time and never logged or echoed;
a refusal is 401 with one line saying what to send.

It is plain ASGI (no starlette import): ``Middleware(AccessGuard, secrets=...)`` in a starlette
app, or ``AccessGuard(app, ...)`` around any ASGI app.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from hexdbt.errors import ConfigError
from hexdbt.settings import PAGE_PASSWORD_ENV, PAGE_TOKEN_ENV

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS = ("/healthz", "/webhooks/")
REFUSAL = (
    "hexdbt: this page needs the page's token or password"
    f" (Authorization: Bearer <{PAGE_TOKEN_ENV}>, or basic auth with {PAGE_PASSWORD_ENV})\n"
)
# Shorter than this, a secret is guessed in hours by a script.
MIN_SECRET_CHARS = 12


def page_secrets(token: str | None, password: str | None) -> tuple[str, ...]:
    """The secrets that open the page; a ConfigError for one too short to guard anything."""
    found = []
    for what, value in ((PAGE_TOKEN_ENV, token), (PAGE_PASSWORD_ENV, password)):
        if value is None or value == "":
            continue
        if len(value) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"{what} is shorter than {MIN_SECRET_CHARS} characters",
                hint="use a long random value, e.g. `python -c 'import secrets;"
                " print(secrets.token_urlsafe(24))'`",
            )
        found.append(value)
    return tuple(found)


def _offered(header: str) -> str | None:
    """The secret an Authorization header offers: a bearer token, or a basic-auth password."""
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


def allows(secrets: Iterable[str], authorization: str | None) -> bool:
    """Whether an Authorization header opens a page guarded by ``secrets`` (none: open)."""
    secrets = tuple(secrets)
    if not secrets:
        return True
    offered = _offered(authorization) if authorization else None
    if offered is None:
        return False
    given = offered.encode("utf-8")
    # Every secret is compared, so the time taken says nothing of which one came close.
    matches = [hmac.compare_digest(given, secret.encode("utf-8")) for secret in secrets]
    return any(matches)


class AccessGuard:
    """ASGI middleware: a request outside ``open_paths`` needs one of ``secrets``."""

    def __init__(
        self,
        app: AsgiApp,
        *,
        secrets: Iterable[str],
        open_paths: Iterable[str] = OPEN_PATHS,
    ) -> None:
        self.app = app
        self.secrets = tuple(secrets)
        self.open_paths = tuple(open_paths)

    def _is_open(self, path: str) -> bool:
        return any(
            path == open_path.rstrip("/")
            or (open_path.endswith("/") and path.startswith(open_path))
            for open_path in self.open_paths
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.secrets or self._is_open(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        authorization = None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                authorization = value.decode("latin-1")
        if allows(self.secrets, authorization):
            await self.app(scope, receive, send)
            return
        body = REFUSAL.encode("utf-8")
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode("ascii")),
                    (b"www-authenticate", b'Basic realm="hexdbt", charset="UTF-8"'),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
