"""The lease keeper renews a process's lease on its own thread while the engine shows life,
and lets it lapse once the engine is hung, so that another process takes its rows over."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

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
