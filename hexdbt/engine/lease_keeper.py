"""The lease keeper: renews this process's lease on its own thread, while the engine lives.

Other processes judge the ``sending`` rows this one owns by its lease (``hexdbt.ledger``). The
engine's thread may spend a while inside one call (a POST of up to its connect and read
timeouts, a slow poll), so the renewal cannot wait for its next turn; but a hung engine must let
its lease lapse, so that another process takes its rows over. The keeper renews only while the
engine has shown life (``beat``) within one lease length: as procrastinate's workers renew
their heartbeat, and stop when their loop stops.

It runs on real time (``time.monotonic``), as the lease's length is real seconds; a manual clock
in a test does not make it spin.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from hexdbt.crashpoints import no_stall_meanwhile
from hexdbt.errors import HexdbtError
from hexdbt.ledger import Ledger

Log = Callable[[str], None]


class LeaseKeeper:
    def __init__(self, ledger: Ledger, *, log: Log) -> None:
        self._ledger = ledger
        self._log = log
        # A third of the lease's length, so that two renewals may fail before it lapses; an
        # engine silent for a whole lease is hung.
        self._hung_after_s = ledger.lease_real_s
        self._every_s = self._hung_after_s / 3
        self._alive_at = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def beat(self) -> None:
        """The engine is alive (called at each turn and before each POST)."""
        self._alive_at = time.monotonic()

    def start(self) -> None:
        self.beat()
        self._thread = threading.Thread(target=self._keep, name="hexdbt-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _keep(self) -> None:
        while not self._stop.wait(self._every_s):
            if time.monotonic() - self._alive_at >= self._hung_after_s:
                continue  # the engine is stuck: let the lease lapse
            try:
                with no_stall_meanwhile():
                    self._ledger.renew_lease()
            except HexdbtError as exc:  # the state is lost: the lease lapses, the rows stay
                if not self._failing:
                    self._log(f"cannot renew this process's lease: {exc}")
                self._failing = True
            else:
                self._failing = False
