"""The status page's starlette routes, for the one server of ``hexdbt serve``.

``page_routes(ledger, ...)`` answers:

    GET /                        the page (``?project=DIR`` keeps one dbt project, ``?hours=N``
                                 sets the timeline's window, 1 to 336, default 24)
    GET /invocations/{id}        a dbt invocation: what ran, its plan, its runs
    GET /page/fragment           the page's live part, for refreshing in place; an ETag, so an
                                 unchanged part costs a 304 and no body
    GET /page/page.js, page.css  the page's script and style (so the page's policy allows no
                                 inline script at all)

Many open tabs must not load the state: a read is kept ``cache_s`` seconds (on the server's
clock) for every tab asking the same question, and a tab asks again only every ``refresh_s``
(15 s by default, and not while it is hidden). The handlers are plain functions, which starlette
runs on its thread pool, so a slow state never blocks the server's loop.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from hexdbt.clock import Clock, SystemClock
from hexdbt.errors import HexdbtError
from hexdbt.hex.budget import SharedBudget
from hexdbt.page.read_model import (
    DEFAULT_WINDOW_H,
    MAX_WINDOW_H,
    PageView,
    read_invocation,
    read_page,
)
from hexdbt.page.render import asset, render_fragment, render_invocation, render_page

if TYPE_CHECKING:
    from pathlib import Path

    from starlette.middleware import Middleware

    from hexdbt.hex.budget import Budget
    from hexdbt.ledger import Ledger
    from hexdbt.mapping.model import ProjectMapping

# Nothing from elsewhere, no inline script, no framing; styles from the page's own sheet.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self';"
    " img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none';"
    " frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


_MAX_CACHED_READS = 32


@dataclass(frozen=True, slots=True)
class _Read:
    at: float
    view: PageView
    fragment: str
    etag: str


class PageReader:
    """The page's reads, shared by every tab for ``cache_s`` seconds."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        mappings: Iterable[ProjectMapping],
        budget: SharedBudget | None,
        clock: Clock,
        cache_s: float,
    ) -> None:
        self.ledger = ledger
        self.mappings = tuple(mappings)
        self.budget = budget
        self.clock = clock
        self.cache_s = cache_s
        self._lock = threading.Lock()
        self._reads: dict[tuple[str | None, int], _Read] = {}

    def read(self, project_dir: str | None, window_h: int) -> _Read:
        key = (project_dir, window_h)
        now = self.clock.now()
        with self._lock:
            cached = self._reads.get(key)
            if cached is not None and now - cached.at < self.clock.from_real_s(self.cache_s):
                return cached
            view = read_page(
                self.ledger,
                now=now,
                mappings=self.mappings,
                budget=self.budget,
                project_dir=project_dir,
                window_h=window_h,
            )
            fragment = render_fragment(view)
            etag = '"' + hashlib.sha256(fragment.encode("utf-8")).hexdigest()[:32] + '"'
            read = _Read(now, view, fragment, etag)
            # One entry per filter in use: a handful, unless someone makes up filters.
            if len(self._reads) >= _MAX_CACHED_READS:
                self._reads.clear()
            self._reads[key] = read
            return read


def _filters(request: Request) -> tuple[str | None, int]:
    project_dir = request.query_params.get("project") or None
    try:
        window_h = int(request.query_params.get("hours") or DEFAULT_WINDOW_H)
    except ValueError:
        window_h = DEFAULT_WINDOW_H
    return project_dir, max(1, min(window_h, MAX_WINDOW_H))


def _unavailable(exc: HexdbtError) -> Response:
    return PlainTextResponse(
        f"hexdbt: cannot read the state: {exc}\n", status_code=503, headers=SECURITY_HEADERS
    )


def page_routes(
    ledger: Ledger,
    *,
    mappings: Iterable[ProjectMapping] = (),
    budget: SharedBudget | None = None,
    clock: Clock | None = None,
    refresh_s: float = 15.0,
    cache_s: float = 2.0,
) -> list[BaseRoute]:
    """The page's routes over ``ledger`` (shared with the engine: reads are short transactions).
    ``mappings``: apps of the mapping that the state has not seen yet get a row too;
    ``budget``: the token's budget, for the budget section and the queue's estimated starts."""
    reader = PageReader(
        ledger, mappings=mappings, budget=budget, clock=clock or SystemClock(), cache_s=cache_s
    )

    def page(request: Request) -> Response:
        try:
            read = reader.read(*_filters(request))
        except HexdbtError as exc:
            return _unavailable(exc)
        html = render_page(read.view, refresh_s=refresh_s, fragment=read.fragment)
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    def fragment(request: Request) -> Response:
        try:
            read = reader.read(*_filters(request))
        except HexdbtError as exc:
            return _unavailable(exc)
        headers = {**SECURITY_HEADERS, "ETag": read.etag}
        if request.headers.get("if-none-match") == read.etag:
            return Response(status_code=304, headers=headers)
        return HTMLResponse(read.fragment, headers=headers)

    def invocation(request: Request) -> Response:
        invocation_id = request.path_params["invocation_id"]
        try:
            found = read_invocation(ledger, invocation_id)
        except HexdbtError as exc:
            return _unavailable(exc)
        if found is None:
            return PlainTextResponse(
                "hexdbt: the ledger has no dbt invocation with this id\n",
                status_code=404,
                headers=SECURITY_HEADERS,
            )
        return HTMLResponse(
            render_invocation(found, now=reader.clock.now()), headers=SECURITY_HEADERS
        )

    def static(name: str, media_type: str) -> Route:
        body = asset(name)
        headers = {**SECURITY_HEADERS, "Cache-Control": "max-age=300"}

        def serve(_request: Request) -> Response:
            return Response(body, media_type=media_type, headers=headers)

        return Route(f"/page/{name}", serve, methods=["GET"])

    return [
        Route("/", page, methods=["GET"]),
        Route("/invocations/{invocation_id:path}", invocation, methods=["GET"]),
        Route("/page/fragment", fragment, methods=["GET"]),
        static("page.js", "text/javascript"),
        static("page.css", "text/css"),
    ]


def daemon_page(
    ledger: Ledger, budget: Budget | None, clock: Clock, mappings_file: Path | None
) -> tuple[list[BaseRoute], list[Middleware]]:
    """What a daemon's HTTP server adds for the page: its routes over ``ledger``, with the apps of
    ``mappings_file``, and, when ``HEXDBT_PAGE_TOKEN`` or ``HEXDBT_PAGE_PASSWORD`` is set, the
    guard over everything but ``/healthz`` and the webhooks (``/metrics`` included)."""
    from starlette.middleware import Middleware

    from hexdbt.mapping import load_mappings
    from hexdbt.page.access import AccessGuard, page_secrets
    from hexdbt.settings import resolve_page_access

    secrets = page_secrets(*resolve_page_access())
    mappings = load_mappings(mappings_file, None).projects if mappings_file else ()
    shared = budget if isinstance(budget, SharedBudget) else None
    routes = page_routes(ledger, mappings=mappings, budget=shared, clock=clock)
    return routes, [Middleware(AccessGuard, secrets=secrets)] if secrets else []
