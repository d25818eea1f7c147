"""What hexdbt's state costs per trigger: PostgreSQL on loopback next to SQLite files, in one run.

For each trigger the engine writes the ledger three times and the budget once: (a) it records the
plan (``plan_and_claim`` of one trigger), (b) claims it for sending (the intent, durable before
the POST), (c) records the run id (``mark_started``), and (d) takes a RunProject slot
(``take_now``). Each is timed alone, as the median of REPETITIONS triggers after a warm-up; the
total is the sum of the medians.

PostgreSQL is a real server started for the run on 127.0.0.1 (the tests' ``PostgresServer``:
Debian's postgresql, which ``.ci/run`` installs), with fsync and full-page writes turned back on so
that its durable commits reach the disk as SQLite's do (both in the same temporary folder's file
system). The budget sees Hex's real limits on a ManualClock moved 61 s per trigger, so its window
holds the ~60 calls that an hour of steady triggering leaves there.

    .venv/bin/python benchmarks/state.py

Target (issue 15): PostgreSQL adds at most 5 ms per trigger. The script exits 1 when it does not.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from postgres_server import PostgresServer, PostgresServerError

from hexdbt.clock import ManualClock
from hexdbt.hex.budget import CallKind, SharedBudget
from hexdbt.ledger import Ledger, NewTrigger, TriggerOptions
from hexdbt.settings import SqliteState, StateLocation, parse_state_url

T = TypeVar("T")
TOKEN = "hxtp_benchmark"
BASE_URL = "http://127.0.0.1:1"
REPETITIONS = 200
WARM_UP = 20
# Apart enough that every trigger fits Hex's 20 a minute and 60 an hour.
SPACING_S = 61.0
TARGET_ADDED_MS = 5.0
STEPS = (
    "(a) record the plan",
    "(b) claim for sending",
    "(c) record the run id",
    "(d) take a budget slot",
)


def _timed(action: Callable[[], T]) -> tuple[float, T]:
    """How long ``action`` took, in milliseconds, and what it returned."""
    started = time.perf_counter()
    result = action()
    return (time.perf_counter() - started) * 1000, result


def measure(location: StateLocation) -> list[float]:
    """The median milliseconds of each of STEPS over REPETITIONS triggers, at ``location``."""
    clock = ManualClock()
    samples: list[list[float]] = [[] for _ in STEPS]
    with Ledger.open(location, clock=clock) as ledger:
        budget = SharedBudget.open(location, TOKEN, BASE_URL, clock=clock)
        try:
            for number in range(WARM_UP + REPETITIONS):
                clock.advance(SPACING_S)
                key = f"trigger-{number}"
                trigger = NewTrigger(
                    key, f"project {number}", f"p-{number}", BASE_URL, {}, TriggerOptions()
                )
                planned, _ = _timed(
                    partial(
                        ledger.plan_and_claim,
                        f"invocation-{number}",
                        "run",
                        "benchmark",
                        [trigger],
                        claim=(),
                    )
                )
                claimed, sendable = _timed(partial(ledger.claim_for_sending, key))
                started, _ = _timed(
                    partial(
                        ledger.mark_started, key, run_id=f"r-{number}", run_url=None, trace_id=None
                    )
                )
                took, slots = _timed(partial(budget.take_now, CallKind.RUN_PROJECT, 1))
                if not sendable or len(slots) != 1:  # then it would time the wrong thing
                    raise SystemExit(f"trigger {number} was not claimed or got no budget slot")
                if number >= WARM_UP:
                    for sample, timing in zip(
                        samples, (planned, claimed, started, took), strict=True
                    ):
                        sample.append(timing)
        finally:
            budget.close()
    return [statistics.median(sample) for sample in samples]


def postgres_for_benchmark(server: PostgresServer) -> None:
    """Durable commits on disk, as on a real server (the tests' server skips fsync)."""
    with server.admin_connect() as admin:
        admin.execute("ALTER SYSTEM SET fsync = on")
        admin.execute("ALTER SYSTEM SET full_page_writes = on")
        admin.execute("SELECT pg_reload_conf()")
        # A connection opened after the reload has the new settings: one says so.
        with server.admin_connect() as check:
            settings = check.execute("SELECT current_setting('fsync')").fetchone()
        if settings != ("on",):
            raise SystemExit(f"PostgreSQL kept fsync {settings}: the comparison would flatter it")


def main() -> int:
    try:
        server = PostgresServer.create()
    except PostgresServerError as exc:
        print(f"cannot start PostgreSQL: {exc}", file=sys.stderr)
        return 1
    with server, tempfile.TemporaryDirectory() as folder:
        postgres_for_benchmark(server)
        sqlite = measure(SqliteState(Path(folder)))
        postgres = measure(parse_state_url(f"{server.url}?schema=benchmark"))
    rows = [
        *zip(STEPS, sqlite, postgres, strict=True),
        ("total per trigger", sum(sqlite), sum(postgres)),
    ]
    print(f"hexdbt's state per trigger, median of {REPETITIONS} triggers (ms)")
    header = f"{'step':<24} {'SQLite':>8} {'PostgreSQL':>11} {'difference':>11}"
    print(header)
    print("-" * len(header))
    for step, on_sqlite, on_postgres in rows:
        print(
            f"{step:<24} {on_sqlite:>8.2f} {on_postgres:>11.2f} {on_postgres - on_sqlite:>+11.2f}"
        )
    added = sum(postgres) - sum(sqlite)
    met = added <= TARGET_ADDED_MS
    print(
        f"target (PostgreSQL adds at most {TARGET_ADDED_MS:.0f} ms per trigger):"
        f" {'met' if met else 'MISSED'} ({added:+.2f} ms)"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
