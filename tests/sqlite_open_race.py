"""Processes released together on a new SQLite file, each opening it: how many failed, per round.

Run as a script by tests/test_state.py, so that the openers are forked from this small process
and not from pytest's: late in a whole run pytest's process is large, a fork of it costs tens of
milliseconds, and rounds whose forks come that far apart raced seldom (the race took 3 to 18 s
of rounds to hit, against about 1 s from here).

    python sqlite_open_race.py raw|store FOLDER ROUNDS [--until-one-fails]

prints one JSON list: how many openers failed in each round played.
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

OPENERS_PER_ROUND = 4


def _raw_open(path: Path) -> None:
    """What the store did before it waited: the switch to WAL, once."""
    sqlite3.connect(path, timeout=30, isolation_level=None).execute("PRAGMA journal_mode=WAL")


def _store_open(path: Path) -> None:
    SqliteStore(path, what="budget store").write(
        lambda session: session.execute("CREATE TABLE IF NOT EXISTS calls (at REAL)")
    )


OPENERS: dict[str, Callable[[Path], None]] = {"raw": _raw_open, "store": _store_open}


def _open_at_the_barrier(opener: Callable[[Path], None], path: Path, barrier: Any) -> None:
    barrier.wait()
    try:
        opener(path)
    except (sqlite3.Error, StateError):
        os._exit(1)


def _opens_of_a_new_file_together(opener: Callable[[Path], None], path: Path) -> int:
    """How many of ``OPENERS_PER_ROUND`` processes, released together on the new file ``path``,
    failed to open it."""
    fork = multiprocessing.get_context("fork")
    barrier = fork.Barrier(OPENERS_PER_ROUND)
    openers = [
        fork.Process(target=_open_at_the_barrier, args=(opener, path, barrier))
        for _ in range(OPENERS_PER_ROUND)
    ]
    for process in openers:
        process.start()
    for process in openers:
        process.join(timeout=60)
    return sum(process.exitcode != 0 for process in openers)


def main(arguments: list[str]) -> None:
    kind, folder, rounds, *options = arguments
    failed = []
    for round_ in range(int(rounds)):
        failed.append(
            _opens_of_a_new_file_together(OPENERS[kind], Path(folder) / f"{kind}_{round_}.sqlite3")
        )
        if failed[-1] and "--until-one-fails" in options:
            break
    print(json.dumps(failed))


if __name__ == "__main__":
    main(sys.argv[1:])
