"""``hexdbt watch``: the watch loop (``artifact_watch``) feeding the engine, for as long as it lives.

The main thread runs the engine's one loop (``Engine.run``), which records, sends and polls; the
watch loop runs on a thread of its own and hands each new invocation to the engine's inbox, which
wakes the loop at once, so every ledger write happens on one thread and reaction time is not the
loop's turn time.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from hexdbt.clock import Clock
from hexdbt.feeders.artifact_watch import ArtifactWatcher, ReadyInvocation, WatchOptions
from hexdbt.feeders.daemon import InvocationEvents, daemon_engine, run_service
from hexdbt.logs import EventLog

if TYPE_CHECKING:
    from hexdbt.engine import Engine, EngineSettings
    from hexdbt.hex.client import HexClient
    from hexdbt.hex.polls import Progress
    from hexdbt.ledger import Ledger
    from hexdbt.metrics import DaemonMetrics


class WatchFeeder:
    """The watch loop as a feeder of an engine (``run_service``): each new invocation found in
    the target folders goes to the engine's inbox. ``hexdbt watch`` runs one on an engine of its
    own (``WatchDaemon``); ``hexdbt serve --project-dir`` beside its other feeders."""

    def __init__(
        self,
        engine: Engine,
        ledger: Ledger,
        options: WatchOptions,
        log: EventLog,
        events: InvocationEvents,
        *,
        watch_clock: Clock | None = None,
        start_observer: bool = True,
    ) -> None:
        self.engine = engine
        self.events = events
        self.watcher = ArtifactWatcher(
            options, self._deliver, log, clock=watch_clock, ledger=ledger
        )
        self._start_observer = start_observer
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """The watch loop, on a thread of its own."""
        self.watcher.start(start_observer=self._start_observer)
        self._thread = threading.Thread(target=self.watcher.run, name="hexdbt-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The watch loop ends and lets go of the folders."""
        self.watcher.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.watcher.close()

    def _deliver(self, ready: ReadyInvocation) -> None:
        """On the watch loop's thread: hand the invocation to the engine's inbox."""
        plan = ready.plan
        project_dir = ready.target.project_dir
        submitted = self.engine.submit(
            plan,
            source=ready.target.ledger_source,
            only_new=True,
            project_dir=str(project_dir.resolve()) if project_dir else None,
        )
        fields = {
            "target": str(ready.target.target_dir),
            "invocation_id": plan.invocation_id,
            "command": plan.command,
        }
        submitted.add_done_callback(
            lambda future: self.events.submitted(plan, future, fields, results=ready.results)
        )


class WatchDaemon:
    """``hexdbt watch``: the watcher feeding the engine, until ``stop`` is called (or the client's
    stop event is set, as a signal handler does): ``run_service`` with one ``WatchFeeder``.

    ``run`` must be called on the thread that should send and poll (the CLI's main thread); the
    watch loop gets a thread of its own and hands each new invocation to the engine's inbox. Live
    Hex runs are left running when it stops (``cancel_on_interrupt`` False) and followed again by
    the next daemon, which takes them up from the ledger.

    ``progress``: what is shown of the runs and triggers (the CLI gives a live view on a
    terminal); by default one event per change on ``log``, a heartbeat every hour.
    ``metrics``: counted as it goes (``hexdbt.metrics``), healthy while its engine runs.
    """

    def __init__(
        self,
        client: HexClient,
        ledger: Ledger,
        options: WatchOptions,
        log: EventLog,
        *,
        settings: EngineSettings | None = None,
        progress: Progress | None = None,
        metrics: DaemonMetrics | None = None,
        watch_clock: Clock | None = None,
        start_observer: bool = True,
    ) -> None:
        from hexdbt.engine import EngineSettings

        self.client = client
        self.ledger = ledger
        self.log = log
        self.metrics = metrics
        self.events = InvocationEvents(log, metrics)
        settings = settings or EngineSettings(cancel_on_interrupt=False)
        self.engine = daemon_engine(
            client,
            ledger,
            log,
            replace(settings, daemon=True),
            progress=progress,
            metrics=metrics,
        )
        self.feeder = WatchFeeder(
            self.engine,
            ledger,
            options,
            log,
            self.events,
            watch_clock=watch_clock,
            start_observer=start_observer,
        )
        self.watcher = self.feeder.watcher

    def stop(self) -> None:
        self.engine.request_stop()

    def run(self) -> None:
        run_service(self.engine, [self.feeder], self.log, metrics=self.metrics, events=self.events)
