"""What the daemons (``hexdbt serve``, and its presets ``watch`` and ``relay``) share: their engine,
the one way they run (``run_service``: feeders on threads of their own, the engine's loop on the
caller's), and what they say and count of each invocation they hand to it (one event per outcome
on the log, one count in the metrics when served)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from hexdbt.errors import HexdbtError
from hexdbt.logs import EventLog, error_fields

if TYPE_CHECKING:
    from hexdbt.engine import Engine, EngineSettings
    from hexdbt.hex.client import HexClient
    from hexdbt.hex.polls import Progress
    from hexdbt.ledger import Ledger, TriggerRecord
    from hexdbt.metrics import DaemonMetrics, InvocationResult, StateFigures
    from hexdbt.planner.rules import Plan


class Feeder(Protocol):
    """A way in of a daemon: it hands plans to the engine from threads of its own."""

    def start(self) -> None:
        """Begin, on threads of its own."""

    def stop(self) -> None:
        """End, and let go of what it holds (its threads joined)."""


@dataclass(frozen=True, slots=True)
class FeederCalls:
    """A feeder made of two calls (a daemon whose feeding is part of a larger object)."""

    start: Callable[[], None]
    stop: Callable[[], None]


def run_service(
    engine: Engine,
    feeders: Sequence[Feeder],
    log: EventLog,
    *,
    metrics: DaemonMetrics | None = None,
    events: InvocationEvents | None = None,
) -> None:
    """Run a daemon until its engine stops (a signal, ``request_stop``): the feeders start, the
    engine takes up what earlier processes left and runs its loop on this thread (which must be
    the one that sends and polls Hex); then the feeders stop. Healthy (``/healthz``) while the
    engine runs."""
    for feeder in feeders:
        feeder.start()
    try:
        resumed = engine.resume()
        if events is not None:
            resumed.add_done_callback(events.resumed)
        if metrics is not None:
            metrics.set_healthy(True)
        engine.run()
    finally:
        if metrics is not None:
            metrics.set_healthy(False)
        log.emit("stopping")
        engine.stopping.set()
        for feeder in feeders:
            feeder.stop()
        log.emit("stopped")


def daemon_engine(
    client: HexClient,
    ledger: Ledger,
    log: EventLog,
    settings: EngineSettings,
    *,
    progress: Progress | None = None,
    metrics: DaemonMetrics | None = None,
) -> Engine:
    """A daemon's engine: its runs shown by ``progress`` (one event per change on ``log`` by
    default, a heartbeat an hour) and counted by ``metrics``; its notes are ``dispatch`` events."""
    from hexdbt.engine import Engine
    from hexdbt.hex.polls import Polls
    from hexdbt.hex.progress import EventProgress

    progress = progress or EventProgress(log, heartbeat_s=3600.0)
    if metrics is not None:
        progress = metrics.observe(progress)
        metrics.track_state(partial(_state_figures, ledger, client))
    return Engine(
        client,
        ledger,
        settings=settings,
        polls=Polls(client, progress=progress),
        log=lambda message: log.emit("dispatch", message=message),
    )


def _state_figures(ledger: Ledger, client: HexClient) -> StateFigures | None:
    """The apps' lags and the supersedes, as the state has them now (None: it cannot be read;
    Prometheus then gets the daemon's other series and tries again at its next scrape)."""
    from hexdbt.freshness import apps_of_state
    from hexdbt.ledger import TriggerState
    from hexdbt.metrics import AppLag, StateFigures

    try:
        apps = apps_of_state(ledger, client.clock.now())
        superseded = ledger.count_in_state(TriggerState.SUPERSEDED)
    except HexdbtError:
        return None
    lags = [AppLag(app.name, app.project_id, app.lag_s, app.breached) for app in apps]
    return StateFigures(lags, superseded)


class InvocationEvents:
    def __init__(self, log: EventLog, metrics: DaemonMetrics | None) -> None:
        self.log = log
        self.metrics = metrics

    def resumed(self, future: Future[list[TriggerRecord]]) -> None:
        """The engine took up what an earlier process left (live runs, queued triggers)."""
        records = future.result()
        if records:
            names = sorted({record.name for record in records})
            self.log.emit("resumed", triggers=len(records), names=names)

    def submitted(
        self,
        plan: Plan,
        future: Future[list[TriggerRecord] | None],
        fields: Mapping[str, Any],
        **details: Any,
    ) -> None:
        """On the engine's thread, once the invocation is recorded (or could not be)."""
        failure = future.exception()
        if failure is not None:
            self.failed(fields, failure)
        elif future.result() is None:
            self._count("skipped")
            self.log.emit(
                "invocation_skipped",
                **fields,
                reason="already in the ledger: another hexdbt process handled it",
            )
        else:
            self._count("submitted")
            self.log.emit(
                "invocation_submitted",
                **fields,
                **details,
                triggers=[trigger.name for trigger in plan.triggers],
                skipped=[{"name": s.name, "reason": s.reason} for s in plan.skipped],
            )

    def failed(self, fields: Mapping[str, Any], failure: BaseException) -> None:
        self._count("failed")
        self.log.emit("invocation_failed", "error", **fields, **error_fields(failure))

    def _count(self, result: InvocationResult) -> None:
        if self.metrics is not None:
            self.metrics.invocation_seen(result)
