"""The daemons' one HTTP stack: a Starlette app served by uvicorn on a thread of its own.

``hexdbt serve``, and ``hexdbt watch`` and ``relay`` with ``--metrics-port``, serve::

    app = build_app(metrics, routes=[...])          # /metrics, /healthz, and what a feeder adds
    with HttpServer(app, "127.0.0.1", 9464) as server:  # ConfigError when the port is taken
        server.url                                  # http://127.0.0.1:9464, with the real port

``routes``: the Starlette routes a feeder or a page adds (the dbt Cloud webhook, the status
page); the app is built in this one place, so each is mounted the same way.

``GET /metrics``: the daemon's metrics in Prometheus' text format (``hexdbt.metrics``).
``GET /healthz``: 200 ``ok`` while the daemon's engine runs, else 503 ``not running``.

The engine and the feeders are synchronous and run on threads of their own; the server's event
loop only answers. A route that must touch the state (a webhook) does so in Starlette's thread
pool (``run_in_threadpool``), never on the loop. Only daemons import this module (and Starlette
and uvicorn with it): ``hexdbt --help`` stays fast.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from hexdbt.errors import ConfigError

if TYPE_CHECKING:
    from hexdbt.metrics import DaemonMetrics

# How long a stopping server lets an answer being written finish (a webhook's is milliseconds).
SHUTDOWN_GRACE_S = 5.0


def build_app(
    metrics: DaemonMetrics | None,
    *,
    routes: Sequence[BaseRoute] = (),
    middleware: Sequence[Middleware] = (),
) -> Starlette:
    """The daemon's app: ``/metrics`` and ``/healthz`` of ``metrics`` (none without), then
    ``routes``, behind ``middleware`` (the status page's guard); any other path is a 404 that
    names the ones there are."""
    served: list[BaseRoute] = list(routes)
    if metrics is not None:
        served = [*_metrics_routes(metrics), *served]
    paths = sorted(route.path for route in served if isinstance(route, Route))

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"not found: try {' or '.join(paths)}\n", status_code=404)

    return Starlette(
        routes=served, middleware=list(middleware), exception_handlers={404: not_found}
    )


def _metrics_routes(metrics: DaemonMetrics) -> list[BaseRoute]:
    def exposition(request: Request) -> Response:
        # A plain function: Starlette calls it in its thread pool, where the state collector's
        # reads of the ledger may block without holding up a webhook's answer.
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def health(request: Request) -> Response:
        if metrics.healthy:
            return PlainTextResponse("ok\n")
        return PlainTextResponse("not running\n", status_code=503)

    return [Route("/metrics", exposition), Route("/healthz", health)]


class HttpServer:
    """``app`` served on ``host:port`` from a thread of its own until closed; ``url``: where,
    with the real port (0: any free one)."""

    def __init__(self, app: Starlette, host: str, port: int, *, what: str = "metrics") -> None:
        # The socket is bound here, on the caller's thread: a port that cannot be had is a
        # ConfigError now, not a line from uvicorn's thread after the daemon has started.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
            self._socket.listen(128)
        except OSError as exc:
            self._socket.close()
            raise ConfigError(
                f"cannot serve {what} on {host}:{port}: {exc.strerror or exc}",
                hint="choose another port (0: any free one) or host",
            ) from exc
        bound_host, bound_port = self._socket.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in str(bound_host) else str(bound_host)
        self.url = f"http://{shown}:{bound_port}"
        config = uvicorn.Config(
            app,
            log_level="warning",
            # Uvicorn's access log would put a line per scrape and per delivery on stderr, where
            # the daemon's own events are; the feeders log what matters.
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, args=([self._socket],), name="hexdbt-http", daemon=True
        )
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            threading.Event().wait(0.005)  # real time: uvicorn's own start, milliseconds

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=SHUTDOWN_GRACE_S + 5)
        self._socket.close()

    def __enter__(self) -> HttpServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
