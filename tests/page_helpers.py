"""For the status page's tests: a real uvicorn server on 127.0.0.1 serving the page's routes, and
a ledger filled through the ledger's own moves.

(When ``hexdbt serve`` lands, the page is served by its app; ``serving`` stands in for it.)
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from hexdbt.clock import ManualClock
from hexdbt.ledger import Ledger, NewTrigger, PlanSkip, TriggerOptions
from hexdbt.page.access import AccessGuard

BASE_URL = "http://127.0.0.1:1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving(routes: Sequence[BaseRoute], *, secrets: Sequence[str] = ()) -> Iterator[str]:
    """A uvicorn server on a free port of 127.0.0.1 with ``routes`` (guarded by ``secrets``);
    yields its URL (ending in /) and stops it afterwards."""
    middleware = [Middleware(AccessGuard, secrets=secrets)] if secrets else []
    app = Starlette(routes=list(routes), middleware=middleware)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="page-server", daemon=True)
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def new_trigger(
    name: str,
    invocation_id: str,
    *,
    project_id: str | None = None,
    models: Sequence[str] = ("orders",),
    freshness_s: float | None = None,
    priority: int = 0,
    coalesce: bool = True,
    base_url: str = BASE_URL,
) -> NewTrigger:
    project_id = project_id or f"p-{name}"
    return NewTrigger(
        trigger_key=f"{invocation_id}/{project_id}",
        name=name,
        project_id=project_id,
        base_url=base_url,
        request={},
        options=TriggerOptions(priority=priority, freshness_s=freshness_s),
        entry_key=f"{project_id}/{name}",
        coalesce=coalesce,
        models=tuple(models),
        plan_reason=f"{', '.join(models)} refreshed",
    )


def plan(
    ledger: Ledger,
    invocation_id: str,
    triggers: Sequence[NewTrigger],
    *,
    skipped: Sequence[PlanSkip] = (),
    project_dir: str | None = "/work/shop",
    source: str = "run",
) -> None:
    ledger.plan_and_claim(
        invocation_id, "build", source, triggers, (), project_dir=project_dir, skipped=skipped
    )


def run(
    ledger: Ledger,
    clock: ManualClock,
    trigger: NewTrigger,
    *,
    length_s: float | None,
    status: str = "COMPLETED",
    **more: Any,
) -> None:
    """Send ``trigger`` now and end its run after ``length_s`` (None: it stays running)."""
    armed = ledger.claim_for_sending(trigger.trigger_key)
    assert armed is not None
    run_id = f"run-{trigger.trigger_key.replace('/', '-')}"
    ledger.mark_started(
        trigger.trigger_key,
        fence=armed.fence,
        run_id=run_id,
        run_url=f"https://app.hex.tech/acme/app/{trigger.project_id}/runs/{run_id}",
        trace_id=None,
    )
    if length_s is None:
        ledger.mark_status(trigger.trigger_key, "RUNNING")
        return
    clock.advance(length_s)
    ledger.mark_ended(trigger.trigger_key, hex_status=status, **more)
