"""For the status page's tests: the daemons' own HTTP server on 127.0.0.1 serving the page's
routes, and a ledger filled through the ledger's own moves."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from hexdbt.clock import ManualClock
from hexdbt.ledger import Ledger, NewTrigger, PlanSkip, TriggerOptions
from hexdbt.page.access import AccessGuard
from hexdbt.web import HttpServer, build_app

BASE_URL = "http://127.0.0.1:1"


@contextmanager
def serving(routes: Sequence[BaseRoute], *, secrets: Sequence[str] = ()) -> Iterator[str]:
    """The daemons' own HTTP server (``hexdbt.web``) on a free port of 127.0.0.1 with ``routes``
    (guarded by ``secrets``, as ``daemon_page`` guards them); yields its URL (ending in /) and
    stops it afterwards."""
    middleware = [Middleware(AccessGuard, secrets=secrets)] if secrets else []
    app = build_app(None, routes=routes, middleware=middleware)
    with HttpServer(app, "127.0.0.1", 0, what="the status page") as server:
        yield f"{server.url}/"


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
