"""The lease keeper renews a process's lease on its own thread while the engine shows life,
and lets it lapse once the engine is hung, so that another process takes its rows over."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from hexdbt.engine.lease_keeper import LeaseKeeper
from hexdbt.ledger import LEDGER_FILENAME, Holder, Ledger, NewTrigger, TriggerOptions
from hexdbt.settings import StateLocation
from hexdbt.store import open_store

LEASE_TTL_S = 0.3  # renewed every 0.1 s


def _expiry(ledger: Ledger) -> float:
    (row,) = ledger._read("SELECT expires_at FROM leases")
    return float(row["expires_at"])


def _renewed_since(ledger: Ledger, expiry: float) -> bool:
    return _expiry(ledger) > expiry


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def test_the_lease_is_renewed_while_the_engine_beats_and_lapses_once_it_stops(
    state_location: StateLocation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEXDBT_LEASE_TTL_S", str(LEASE_TTL_S))
    with Ledger.open(state_location) as ledger:
        trigger = NewTrigger("k1", "app", "p-1", "http://127.0.0.1:9", {}, TriggerOptions())
        ledger.plan_and_claim("inv-1", "build", "run", [trigger], ["k1"])  # takes the lease
        keeper = LeaseKeeper(ledger, log=lambda line: None)
        keeper.start()
        try:
            first = _expiry(ledger)
            for _ in range(3):  # an engine that lives renews its lease again and again
                seen = _expiry(ledger)
                keeper.beat()
                _wait_until(partial(_renewed_since, ledger, seen), "the lease renewed")
            assert _expiry(ledger) > first
            # The engine hangs: no beat. After three renewal periods, no more renewals.
            hung_at = time.monotonic()
            _wait_until(lambda: time.monotonic() - hung_at > 2 * LEASE_TTL_S, "time to pass")
            last = _expiry(ledger)
            _wait_until(lambda: time.monotonic() - hung_at > 4 * LEASE_TTL_S, "time to pass")
            assert _expiry(ledger) == last, "a hung engine's lease is not renewed"
            # Another host sees the lease lapsed and takes the row over.
            other_host = Holder("other-host", 4242, boot_id="boot of other-host")
            store = open_store(state_location, LEDGER_FILENAME, what="ledger")
            with Ledger(store, holder=other_host) as other:
                assert other.take_over_orphan("k1") is not None
        finally:
            keeper.stop()


# A process whose second thread is inside ``no_stall_meanwhile`` (as the keeper's renewal is)
# when its engine's thread reaches a stop point: the thread says it still runs once told to, and
# only then leaves the block.
_STALL_BESIDE_A_WRITE = """
import sys, threading
from hexdbt.crashpoints import crash_point, no_stall_meanwhile

holding = threading.Event()

def write_beside():
    with no_stall_meanwhile():
        holding.set()
        sys.stdin.readline()
        print("still running inside the block", flush=True)

thread = threading.Thread(target=write_beside)
thread.start()
holding.wait()
print("about to stall", flush=True)
crash_point("armed")
thread.join()
print("let go", flush=True)
"""


def _process_state(pid: int) -> str:
    """The process's state letter in /proc (T: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_stall_waits_for_a_write_beside_the_engine_to_end() -> None:
    """Stopped inside the lease's renewal, a process would hold SQLite's write lock, and every
    other process with it: the stall waits for the renewal to end."""
    child = subprocess.Popen(
        [sys.executable, "-c", _STALL_BESIDE_A_WRITE],
        env={**os.environ, "HEXDBT_STOP_AT": "armed"},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdin is not None
        assert child.stdout is not None
        assert child.stdout.readline() == "about to stall\n"
        child.stdin.write("go on\n")
        child.stdin.flush()
        _wait_until(lambda: _process_state(child.pid) == "T", "the process stopped")
        # Stopped now, it can write nothing more: what it wrote, it wrote before the stop,
        # while the block was still held.
        assert select.select([child.stdout], [], [], 0)[0], "it stopped inside the block"
        assert child.stdout.readline() == "still running inside the block\n"
        child.send_signal(signal.SIGCONT)
        assert child.communicate(timeout=10) == ("let go\n", None)
        assert child.returncode == 0
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGCONT)
            child.kill()
            child.communicate()
