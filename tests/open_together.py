"""Processes opening one new SQLite state file at the same moment, as daemons started together on
a new state folder do: run in a small process of its own, whose forks cost little.

    python tests/open_together.py raw|store FOLDER ROUNDS [--until-one-fails]

Each round forks ``OPENERS`` processes, releases them together on a new file of FOLDER, and
counts those that could not open it; ``raw`` is the switch to WAL alone (what the store did
before it waited for the lock), ``store`` is ``SqliteStore`` opening the file and writing to it.
Prints the rounds run and the failed opens, as JSON.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hexdbt.errors import StateError
from hexdbt.store import SqliteStore

OPENERS = 4


def raw_open(path: Path) -> None:
    sqlite3.connect(path, timeout=30, isolation_level=None).execute("PRAGMA journal_mode=WAL")


def store_open(path: Path) -> None:
    SqliteStore(path, what="budget store").write(
        lambda session: session.execute("CREATE TABLE IF NOT EXISTS calls (at REAL)")
    )


def _open_at_the_barrier(opener: Callable[[Path], None], path: Path, barrier: Any) -> None:
    barrier.wait()
    try:
        opener(path)
    except (sqlite3.Error, StateError):
        os._exit(1)


def failed_opens(opener: Callable[[Path], None], path: Path) -> int:
    fork = multiprocessing.get_context("fork")
    barrier = fork.Barrier(OPENERS)
    openers = [
        fork.Process(target=_open_at_the_barrier, args=(opener, path, barrier))
        for _ in range(OPENERS)
    ]
    for process in openers:
        process.start()
    for process in openers:
        process.join(timeout=60)
    return sum(process.exitcode != 0 for process in openers)


def main() -> None:
    kind, folder, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    until_one_fails = "--until-one-fails" in sys.argv[4:]
    opener = {"raw": raw_open, "store": store_open}[kind]
    failed = played = 0
    while played < rounds and not (until_one_fails and failed):
        failed += failed_opens(opener, folder / f"{kind}_{played}.sqlite3")
        played += 1
    print(json.dumps({"rounds": played, "failed": failed}))


if __name__ == "__main__":
    main()
