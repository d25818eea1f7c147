"""How fast the status page answers on a large state, beside a bare static file of the same server.

A ledger of 500 mapped apps and 10,000 Hex runs over the last week (60 runs an hour, Hex's
limit, so about 1,440 in the timeline's 24 hours), 500 dbt invocations with a skipped entry
each, 50 triggers waiting, is written straight into the state (SQLite; ``--postgres URL`` for a
PostgreSQL schema too). One uvicorn on 127.0.0.1 serves the page's routes (``page_routes``, its
read cache off so that every request reads the state) and a static file of 1 kB. Each is fetched
sequentially, best and median of ``--rounds``. Printed: the times, the ratio page / static, the
page's size, and, on SQLite, the query plan of every statement the page ran that scans a table
without an index.

Targets (issue 28): the page answers in under 300 ms (median), it weighs under 2 MB, and no
query of the page scans the triggers or invocations without an index. Exits 0 when all are met.

    .venv/bin/python benchmarks/page.py [--apps 500] [--runs 10000] [--rounds 20]
                                        [--postgres postgresql://user@127.0.0.1:5432/db]
"""

from __future__ import annotations

import argparse
import json
import socket
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from hexdbt.clock import ManualClock
from hexdbt.ledger import Ledger
from hexdbt.page.routes import page_routes
from hexdbt.settings import parse_state_url
from hexdbt.store import Session

NOW = 1_800_000_000.0
BASE_URL = "https://app.hex.tech"
TARGET_MS = 300.0
MAX_BYTES = 2_000_000


def fill(ledger: Ledger, apps: int, runs: int, waiting: int) -> None:
    """``runs`` ended runs at 60 an hour up to now, round-robin over ``apps``; an invocation per
    ``apps // 25`` runs (a build refreshing that many apps), each with one skipped entry; then
    ``waiting`` triggers planned by the newest invocation, unsent."""
    per_build = max(1, apps // 25)
    invocations: list[tuple[Any, ...]] = []
    triggers: list[tuple[Any, ...]] = []
    skips: list[tuple[Any, ...]] = []
    first = NOW - runs * 60.0
    for index in range(runs + waiting):
        app = index % apps
        at = first + index * 60.0
        invocation = f"inv-{index // per_build:06d}"
        if index % per_build == 0:
            invocations.append((invocation, "build", "watch /dbt/target", at, f"/dbt/p{app % 3}"))
            skips.append((invocation, 0, f"app_{(app + 7) % apps}", "p", "orders failed", 0))
        project_id = f"00000000-0000-4000-8000-{app:012d}"
        sent = index < runs
        status = "ERRORED" if index % 37 == 0 else "COMPLETED"
        run_id = f"run-{index:08d}"
        triggers.append(
            (
                f"key-{index:08d}",
                invocation,
                f"app_{app}",
                project_id,
                BASE_URL,
                "{}",
                json.dumps({"priority": app % 3, "freshness_s": 3600.0}),
                "ended" if sent else "planned",
                at + 5 if sent else None,
                run_id if sent else None,
                f"{BASE_URL}/acme/app/{project_id}/runs/{run_id}" if sent else None,
                status if sent else None,
                at,
                at + 300 if sent else at,
                at + 240 if sent else None,
                f"{project_id}/app_{app}",
                1,
                json.dumps([f"model.shop.m{app}"]),
                at,
                "m refreshed",
            )
        )

    def write(session: Session) -> None:
        session.executemany(
            "INSERT INTO invocations (invocation_id, command, source, first_seen_at, project_dir)"
            " VALUES (?, ?, ?, ?, ?)",
            invocations,
        )
        session.executemany(
            "INSERT INTO plan_skips (invocation_id, position, name, project_id, reason, is_error)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            skips,
        )
        session.executemany(
            "INSERT INTO triggers (trigger_key, invocation_id, name, project_id, base_url,"
            " request_json, options_json, state, intent_at, run_id, run_url, hex_status,"
            " created_at, updated_at, ended_at, entry_key, coalescing, models_json,"
            " unserved_since, plan_reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            triggers,
        )

    ledger.store.write(write)


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join()


def timed(session: requests.Session, url: str, rounds: int) -> tuple[list[float], int]:
    times, size = [], 0
    session.get(url, timeout=30).raise_for_status()  # warm: templates compiled, pages cached
    for _ in range(rounds):
        started = time.perf_counter()
        answer = session.get(url, timeout=30)
        times.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
        size = len(answer.content)
    return times, size


def scans_without_index(database: Path, statements: list[str]) -> list[str]:
    """The page's statements whose plan scans triggers or invocations without an index."""
    found = []
    with sqlite3.connect(database) as db:
        for sql in dict.fromkeys(statements):
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql)]
            bare = [
                step
                for step in plan
                if step.startswith("SCAN")
                and "INDEX" not in step
                and any(table in step for table in ("triggers", " t", "invocations"))
            ]
            if bare:
                found.append(f"{sql[:160]}...\n      {'; '.join(plan)}")
    return found


def measure(label: str, state_url: str, args: argparse.Namespace) -> bool:
    clock = ManualClock(start=NOW)
    statements: list[str] = []
    with Ledger.open(parse_state_url(state_url), clock=clock) as ledger:
        fill(ledger, args.apps, args.runs, args.waiting)
        static = Path(tempfile.mkdtemp(prefix="hexdbt-page-static-"))
        (static / "bare.txt").write_text("x" * 1024)
        app = Starlette(
            routes=[
                *page_routes(ledger, clock=clock, cache_s=0),
                Mount("/static", StaticFiles(directory=static)),
            ]
        )
        database = getattr(ledger.store, "path", None)
        if database is not None:  # SQLite: record what the page runs, for its query plans
            ledger.store._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        with serving(app) as url, requests.Session() as session:
            page_ms, page_bytes = timed(session, url, args.rounds)
            fragment_ms, _ = timed(session, url + "page/fragment", args.rounds)
            bare_ms, _ = timed(session, url + "static/bare.txt", args.rounds)
            invocation_ms, _ = timed(session, url + "invocations/inv-000100", args.rounds)
        scans = scans_without_index(database, statements) if database is not None else []
        distinct = len({sql for sql in statements if sql.lstrip().upper().startswith("SELECT")})
    median_page = statistics.median(page_ms)
    ratio = median_page / statistics.median(bare_ms)
    print(f"\n{label}: {args.apps} apps, {args.runs} runs, {args.waiting} waiting")
    print(f"  {'':12} {'best ms':>9} {'median ms':>10}")
    for name, times in (
        ("page /", page_ms),
        ("fragment", fragment_ms),
        ("invocation", invocation_ms),
        ("static file", bare_ms),
    ):
        print(f"  {name:12} {min(times):9.1f} {statistics.median(times):10.1f}")
    print(f"  page / static file: {ratio:.1f}x;  page size {page_bytes / 1e6:.2f} MB")
    ok = median_page < TARGET_MS and page_bytes < MAX_BYTES and not scans
    if database is not None:
        print(f"  distinct SELECTs the page and the invocation ran: {distinct}")
    for scan in scans:
        print(f"  scan without an index: {scan}")
    print(
        f"  targets: median < {TARGET_MS:.0f} ms, < {MAX_BYTES / 1e6:.0f} MB,"
        f" no scan without an index{'' if database else ' (checked on SQLite)'}:"
        f" {'met' if ok else 'MISSED'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=500)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--waiting", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--postgres", help="also on this PostgreSQL (a schema of its own)")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="hexdbt-page-bench-") as folder:
        ok &= measure("SQLite", f"sqlite://{folder}", args)
    if args.postgres:
        schema = f"hexdbt_page_bench_{int(time.time())}"
        separator = "&" if "?" in args.postgres else "?"
        ok &= measure("PostgreSQL", f"{args.postgres}{separator}schema={schema}", args)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
