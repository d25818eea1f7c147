"""For teams that drive dbt from Python: a dbtRunner callback, and a context that dispatches.

    from dbt.cli.main import dbtRunner
    from hexdbt.feeders.runner_callback import HexDispatchContext

    with HexDispatchContext(mappings="hex_mappings.yml") as hexdbt_events:
        dbtRunner(callbacks=[hexdbt_events.callback]).invoke(["build", "--select", "marts"])
    print(hexdbt_events.exit_code, hexdbt_events.outcomes)

dbt calls callbacks on its worker threads, and turns a callback that raises into an error of the
model being run. So ``callback`` only puts the event on a queue (``SimpleQueue.put`` neither
blocks nor raises); a thread of the context reads the queue and plans with the same streaming
planner as ``hexdbt dbt``, while another runs the engine's loop. Leaving the ``with`` block
settles the rest from run_results.json and waits for the Hex runs (unless ``wait=False``).
A KeyboardInterrupt inside the block counts as an interruption: nothing new starts and the Hex
runs started are cancelled (unless ``cancel_on_interrupt=False``).

One dbt invocation per context (dbt allows one per process at a time anyway). dbt 2.0's engine
refuses callbacks; use ``hexdbt dbt`` there.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from hexdbt.dbt.events import event_from_message
from hexdbt.dbt.locate import ArtifactPaths, locate_artifacts
from hexdbt.errors import ConfigError
from hexdbt.feeders.dbt_wrapper import StreamDispatch
from hexdbt.planner.stream import Settlement, StreamPlanner

if TYPE_CHECKING:
    from hexdbt.hex.client import HexClient
    from hexdbt.ledger import Ledger
    from hexdbt.outcomes import Outcome

_END = object()


def _invocation_flags() -> tuple[str, dict[str, Any]]:
    """The running dbt command and its vars, from dbt's global flags (set before any event)."""
    try:
        from dbt.flags import get_flags

        flags = get_flags()  # type: ignore[no-untyped-call]  # dbt ships no hints for it
        command = getattr(flags, "WHICH", None)
        dbt_vars = getattr(flags, "VARS", None)
    except Exception:  # a dbt without these flags: the final plan still decides everything
        return "unknown", {}
    return (
        command if isinstance(command, str) and command else "unknown",
        dict(dbt_vars) if isinstance(dbt_vars, dict) else {},
    )


class HexDispatchContext:
    """Dispatch Hex projects from a dbtRunner invocation's events, as ``hexdbt dbt`` does.

    ``client`` and ``ledger`` default to ``HEX_API_TOKEN``/``HEX_BASE_URL`` and the state
    (``HEXDBT_STATE_URL``, else the folder ``HEXDBT_STATE_DIR``); ``project_dir``/``target_path`` locate the artifacts when dbt does
    not announce them (dbt before 1.9).
    """

    def __init__(
        self,
        *,
        mappings: str | Path | None = None,
        project_dir: str | Path | None = None,
        target_path: str | Path | None = None,
        wait: bool = True,
        cancel_on_interrupt: bool = True,
        client: HexClient | None = None,
        ledger: Ledger | None = None,
        log: Any = None,
    ) -> None:
        self.mappings_file = Path(mappings) if mappings is not None else None
        self.project_dir = project_dir
        self.target_path = target_path
        self.wait = wait
        self.cancel_on_interrupt = cancel_on_interrupt
        self._client = client
        self._ledger = ledger
        self._log = log or (lambda _message: None)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._failure: list[BaseException] = []
        self._owned: list[Any] = []
        self._paths: ArtifactPaths | None = None
        self.settlement: Settlement | None = None
        self.outcomes: list[Outcome] = []
        self.exit_code = 0
        self.interrupted = False
        self.stream: StreamDispatch | None = None

    def callback(self, event: Any) -> None:
        """Give this to ``dbtRunner(callbacks=[...])``. Only enqueues: never raises, never waits."""
        self._queue.put(event)

    # -- the context ------------------------------------------------------------------------------

    def __enter__(self) -> HexDispatchContext:
        from hexdbt.engine import Engine, EngineSettings
        from hexdbt.factory import open_client, open_ledger
        from hexdbt.planner.files import load_mapping_set

        try:
            self._paths = locate_artifacts(self.project_dir, self.target_path)
        except ConfigError:
            self._paths = None  # dbt's ArtifactWritten events say where it writes
        client = self._client
        if client is None:
            client = open_client()
            self._owned.append(client)
        ledger = self._ledger
        if ledger is None:
            ledger = open_ledger(client)
            self._owned.append(ledger)
        engine = Engine(
            client,
            ledger,
            settings=EngineSettings(wait=self.wait, cancel_on_interrupt=self.cancel_on_interrupt),
            log=self._log,
        )
        mappings_file = self.mappings_file
        planner = StreamPlanner(
            load_mappings=lambda manifest: load_mapping_set(mappings_file, manifest)[0],
            command="unknown",
            manifest_path=self._paths.manifest if self._paths else None,
            log=self._log,
        )
        self.stream = StreamDispatch(planner, engine, source="dbt-runner-callback")
        self._threads = [
            threading.Thread(target=self._consume, name="hexdbt-events", daemon=True),
            threading.Thread(target=engine.run, name="hexdbt-engine", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def _consume(self) -> None:
        stream = self.stream
        assert stream is not None
        first = True
        try:
            while True:
                message = self._queue.get()
                if message is _END:
                    return
                event = event_from_message(message)
                if event is None:
                    continue
                if first:
                    stream.planner.command, stream.planner.dbt_vars = _invocation_flags()
                    first = False
                stream.on_event(event)
        except BaseException as exc:
            self._failure.append(exc)
            stream.stop_submitting.set()
            while self._queue.get() is not _END:  # drain, so __exit__ is never kept waiting
                pass

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        from hexdbt.outcomes import exit_code_of

        stream = self.stream
        assert stream is not None
        self.interrupted = exc_type is not None and issubclass(exc_type, KeyboardInterrupt)
        consumer, engine_thread = self._threads
        try:
            if self.interrupted:
                stream.stop_submitting.set()
                stream.engine.request_stop()
            self._queue.put(_END)
            consumer.join()
            if not self._failure:
                self.settlement = stream.finish(
                    self._paths, interrupted=self.interrupted, dbt_exit_code=None
                )
        finally:
            stream.engine.close()
            engine_thread.join()
            if self.settlement is not None:
                self.outcomes = stream.engine.outcomes_of(self.settlement.plan)
                self.exit_code = exit_code_of(self.outcomes)
            for owned in reversed(self._owned):
                owned.close()
        if self._failure and exc_type is None:
            raise self._failure[0]
