"""The ledger: what hexdbt has done, in SQLite, safe for several processes at once.

It is what makes triggering exactly-once. For each trigger key (dbt invocation, Hex project,
rendered params) it keeps one row, whose state moves only as ``ALLOWED_MOVES`` says:

    planned ──┬──> sending ──┬──> started ──> ended
     │  ▲     │     │        ├──> failed      (Hex refused it: nothing was started)
     │  │     │     │        └──> ambiguous   (answer lost, GetProjectRuns could not decide)
     │  │     │     │                  │
     │  └─────┼─────┼──────────────────┘ reopen_ambiguous (the user asked to send it again)
     v        │     │
    queued ───┘     │ release (nothing was sent, or Hex started no run)
     │  ▲           │
     │  └───────────┘
     v
    expired   (did not fit the budget before its deadline; from planned too)

Three moves keep the state and change the row: ``mark_queued`` on a queued row (a new deadline
or reason), ``take_over_orphan`` on a sending row (a new owner), ``mark_status`` on a started row
(Hex's latest status). Ended, failed and expired are final: nothing leaves them. A move asked of
a row in another state is refused with a ``StateError`` and changes nothing, except
``claim_for_sending`` and ``take_over_orphan``, which answer False: another process may hold the
row, and that is no error.

``sending`` is committed *before* the POST and ``started`` (with the run id) right after it, so a
crash between the two leaves a row that says "a run may exist": the dispatcher reconciles it
through GetProjectRuns instead of posting again. Claiming a row for sending is atomic
(``BEGIN IMMEDIATE``), so two processes handling the same invocation never both post.

The schema is versioned with ``PRAGMA user_version``; ``_MIGRATIONS[n]`` takes version n to n+1.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hexdbt.clock import Clock, SystemClock
from hexdbt.errors import MoveRefusedError, StateError

LEDGER_FILENAME = "ledger.sqlite3"


class TriggerState(StrEnum):
    PLANNED = "planned"
    QUEUED = "queued"
    SENDING = "sending"
    STARTED = "started"
    ENDED = "ended"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        """Whether no move leaves this state."""
        return all(self not in transition.sources for transition in ALLOWED_MOVES.values())


class Move(StrEnum):
    """A change of a trigger's row, named after the ``Ledger`` method that makes it."""

    CLAIM_FOR_SENDING = "claim_for_sending"
    TAKE_OVER_ORPHAN = "take_over_orphan"
    MARK_STARTED = "mark_started"
    MARK_STATUS = "mark_status"
    MARK_ENDED = "mark_ended"
    MARK_FAILED = "mark_failed"
    MARK_AMBIGUOUS = "mark_ambiguous"
    MARK_QUEUED = "mark_queued"
    MARK_EXPIRED = "mark_expired"
    RELEASE = "release"
    REOPEN_AMBIGUOUS = "reopen_ambiguous"


@dataclass(frozen=True, slots=True)
class Transition:
    """The states a move may start from, and the state it leaves the row in."""

    sources: frozenset[TriggerState]
    target: TriggerState


def _moving(*sources: TriggerState, to: TriggerState) -> Transition:
    return Transition(frozenset(sources), to)


# The state machine, drawn in the module's docstring. A move from any other state is refused.
ALLOWED_MOVES: Mapping[Move, Transition] = MappingProxyType(
    {
        Move.CLAIM_FOR_SENDING: _moving(
            TriggerState.PLANNED, TriggerState.QUEUED, to=TriggerState.SENDING
        ),
        Move.TAKE_OVER_ORPHAN: _moving(TriggerState.SENDING, to=TriggerState.SENDING),
        # The POST was answered, or reconciling found the run it started.
        Move.MARK_STARTED: _moving(TriggerState.SENDING, to=TriggerState.STARTED),
        Move.MARK_STATUS: _moving(TriggerState.STARTED, to=TriggerState.STARTED),
        Move.MARK_ENDED: _moving(TriggerState.STARTED, to=TriggerState.ENDED),
        Move.MARK_FAILED: _moving(TriggerState.SENDING, to=TriggerState.FAILED),
        Move.MARK_AMBIGUOUS: _moving(TriggerState.SENDING, to=TriggerState.AMBIGUOUS),
        Move.MARK_QUEUED: _moving(
            TriggerState.PLANNED, TriggerState.QUEUED, to=TriggerState.QUEUED
        ),
        Move.MARK_EXPIRED: _moving(
            TriggerState.PLANNED, TriggerState.QUEUED, to=TriggerState.EXPIRED
        ),
        # Nothing was sent (interrupted before the POST, 429, 503), or Hex started no run.
        Move.RELEASE: _moving(TriggerState.SENDING, to=TriggerState.QUEUED),
        Move.REOPEN_AMBIGUOUS: _moving(TriggerState.AMBIGUOUS, to=TriggerState.PLANNED),
    }
)

_MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1
    """
    CREATE TABLE invocations (
        invocation_id TEXT PRIMARY KEY,
        command       TEXT NOT NULL,
        source        TEXT NOT NULL,
        first_seen_at REAL NOT NULL
    );
    CREATE TABLE triggers (
        trigger_key   TEXT PRIMARY KEY,
        invocation_id TEXT NOT NULL REFERENCES invocations(invocation_id),
        name          TEXT NOT NULL,
        project_id    TEXT NOT NULL,
        base_url      TEXT NOT NULL,
        request_json  TEXT NOT NULL,
        options_json  TEXT NOT NULL,
        state         TEXT NOT NULL,
        owner_pid     INTEGER,
        deadline_at   REAL,
        intent_at     REAL,
        run_id        TEXT,
        run_url       TEXT,
        hex_status    TEXT,
        timed_out     INTEGER NOT NULL DEFAULT 0,
        trace_id      TEXT,
        reason        TEXT,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        ended_at      REAL
    );
    CREATE INDEX triggers_by_invocation ON triggers(invocation_id);
    CREATE INDEX triggers_by_state ON triggers(state);
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    """One row of the ledger: a trigger and what has happened to it so far."""

    trigger_key: str
    invocation_id: str
    name: str
    project_id: str
    base_url: str
    request: dict[str, Any]
    options: dict[str, Any]
    state: TriggerState
    owner_pid: int | None
    deadline_at: float | None
    intent_at: float | None
    run_id: str | None
    run_url: str | None
    hex_status: str | None
    timed_out: bool
    trace_id: str | None
    reason: str | None
    created_at: float
    updated_at: float
    ended_at: float | None


@dataclass(frozen=True, slots=True)
class NewTrigger:
    """What the ledger needs to know of a trigger before anything is sent."""

    trigger_key: str
    name: str
    project_id: str
    base_url: str
    request: dict[str, Any]
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class InvocationRecord:
    invocation_id: str
    command: str
    source: str
    first_seen_at: float


def _unreadable(path: Path, trigger_key: str, what: str) -> StateError:
    return StateError(
        f"the ledger {path} has an unreadable trigger {trigger_key}: {what}",
        hint=f"move {path} aside to start afresh (hexdbt then forgets what it sent before),"
        " or use the hexdbt that wrote it",
    )


def _state_of(row: sqlite3.Row, path: Path) -> TriggerState:
    try:
        return TriggerState(row["state"])
    except ValueError:
        known = ", ".join(TriggerState)
        what = f"its state {row['state']!r} is none of {known}"
        raise _unreadable(path, row["trigger_key"], what) from None


def _json_object_of(row: sqlite3.Row, column: str, path: Path) -> dict[str, Any]:
    try:
        value = json.loads(row[column])
    except ValueError as exc:
        raise _unreadable(path, row["trigger_key"], f"its {column} is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _unreadable(path, row["trigger_key"], f"its {column} is not a JSON object")
    return value


def _trigger_from_row(row: sqlite3.Row, path: Path) -> TriggerRecord:
    """The record of a row of the ledger at ``path``; a StateError when it cannot be read."""
    return TriggerRecord(
        trigger_key=row["trigger_key"],
        invocation_id=row["invocation_id"],
        name=row["name"],
        project_id=row["project_id"],
        base_url=row["base_url"],
        request=_json_object_of(row, "request_json", path),
        options=_json_object_of(row, "options_json", path),
        state=_state_of(row, path),
        owner_pid=row["owner_pid"],
        deadline_at=row["deadline_at"],
        intent_at=row["intent_at"],
        run_id=row["run_id"],
        run_url=row["run_url"],
        hex_status=row["hex_status"],
        timed_out=bool(row["timed_out"]),
        trace_id=row["trace_id"],
        reason=row["reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        ended_at=row["ended_at"],
    )


def pid_is_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (the owner of a ``sending`` row)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class Ledger:
    """The SQLite ledger. Each call is its own short transaction; one instance may be shared by
    the threads of a process (a lock keeps their transactions apart)."""

    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._synchronous: str | None = None  # the connection's PRAGMA synchronous, once set
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below), so a
            # writer takes the lock before reading the row it is about to change.
            self._db = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StateError(
                f"cannot open the ledger {path}: {exc}",
                hint="check that HEXDBT_STATE_DIR is writable, or move it elsewhere",
            ) from exc

    @classmethod
    def in_state_dir(cls, state_dir: Path, *, clock: Clock | None = None) -> Ledger:
        return cls(state_dir / LEDGER_FILENAME, clock=clock)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. ``durable``: fsync at commit, so it survives a power cut.

        What is only planned may be lost with the machine (nothing was sent yet); the intent to
        send, and all that follows it, may not. A durable commit also makes every earlier one in
        the write-ahead log durable, so the order of events is kept either way.
        """
        with self._lock:
            synchronous = "FULL" if durable else "NORMAL"
            if synchronous != self._synchronous:  # most writes are durable: set it when it changes
                self._db.execute(f"PRAGMA synchronous={synchronous}")
                self._synchronous = synchronous
            with self._transaction() as db:
                yield db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StateError(f"cannot write the ledger {self.path}: {exc}") from exc

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            with self._lock:
                return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the ledger {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"the ledger {self.path} has schema version {version}, newer than this "
                    f"hexdbt knows ({SCHEMA_VERSION})",
                    hint="upgrade hexdbt, or point HEXDBT_STATE_DIR at another folder",
                )
            for step in range(version, SCHEMA_VERSION):
                # executescript() would commit on its own; one statement at a time keeps the
                # whole migration inside this transaction.
                for statement in _MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- invocations ----------------------------------------------------------------------

    def has_invocation(self, invocation_id: str) -> bool:
        rows = self._read("SELECT 1 FROM invocations WHERE invocation_id = ?", (invocation_id,))
        return bool(rows)

    def recent_invocations(self, limit: int = 10) -> list[InvocationRecord]:
        rows = self._read(
            "SELECT * FROM invocations ORDER BY first_seen_at DESC, rowid DESC LIMIT ?", (limit,)
        )
        return [InvocationRecord(**dict(row)) for row in rows]

    def newest_invocation_from(self, source: str) -> InvocationRecord | None:
        """The invocation recorded last with ``source`` (``hexdbt watch`` names its target folder
        there), or None."""
        rows = self._read(
            "SELECT * FROM invocations WHERE source = ?"
            " ORDER BY first_seen_at DESC, rowid DESC LIMIT 1",
            (source,),
        )
        return InvocationRecord(**dict(rows[0])) if rows else None

    # -- triggers -------------------------------------------------------------------------

    def plan_and_claim(
        self,
        invocation_id: str,
        command: str,
        source: str,
        triggers: Sequence[NewTrigger],
        claim: Collection[str],
        *,
        only_new_invocation: bool = False,
    ) -> tuple[list[TriggerRecord], set[str]] | None:
        """Record an invocation and its triggers as planned, in one transaction (a key already in
        the ledger keeps its row and its state), and in the same transaction claim the keys in
        ``claim`` as ``claim_for_sending`` would: a trigger sent at once costs one synced commit
        instead of two. Returns the records and the keys this call claimed (a row someone else
        holds is left alone); None, recording nothing, when ``only_new_invocation`` and the
        ledger has the invocation."""
        now = self._clock.now()
        with self._write(durable=bool(claim)) as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO invocations VALUES (?, ?, ?, ?)",
                (invocation_id, command, source, now),
            )
            if only_new_invocation and cursor.rowcount == 0:
                return None
            db.executemany(
                "INSERT OR IGNORE INTO triggers (trigger_key, invocation_id, name, project_id,"
                " base_url, request_json, options_json, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        trigger.trigger_key,
                        invocation_id,
                        trigger.name,
                        trigger.project_id,
                        trigger.base_url,
                        json.dumps(trigger.request, sort_keys=True),
                        json.dumps(trigger.options, sort_keys=True),
                        TriggerState.PLANNED.value,
                        now,
                        now,
                    )
                    for trigger in triggers
                ],
            )
            claimed = {key for key in claim if self._claim(db, key, now)}
            keys = [trigger.trigger_key for trigger in triggers]
            rows = db.execute(
                f"SELECT * FROM triggers WHERE trigger_key IN ({', '.join('?' * len(keys))})",
                keys,
            ).fetchall()
            # Read in the transaction: a row that cannot be read undoes the claims.
            by_key = {row["trigger_key"]: _trigger_from_row(row, self.path) for row in rows}
        return [by_key[key] for key in keys], claimed

    def get(self, trigger_key: str) -> TriggerRecord:
        rows = self._read("SELECT * FROM triggers WHERE trigger_key = ?", (trigger_key,))
        if not rows:
            raise self._no_trigger(trigger_key)
        return _trigger_from_row(rows[0], self.path)

    def claim_for_sending(self, trigger_key: str) -> bool:
        """Commit the intent to POST. False when the row is not sendable (someone else has it)."""
        with self._write() as db:
            return self._claim(db, trigger_key, self._clock.now())

    def take_over_orphan(self, trigger_key: str) -> bool:
        """Adopt a ``sending`` row whose owner process is gone, so this process reconciles it.
        False when the row is no longer ``sending`` or its owner lives."""
        with self._write() as db:
            row = self._row(db, trigger_key)
            owner = row["owner_pid"]
            if owner is not None and owner != os.getpid() and pid_is_alive(owner):
                return False
            return self._move(
                db, trigger_key, Move.TAKE_OVER_ORPHAN, self._clock.now(), owner_pid=os.getpid()
            )

    def mark_started(
        self, trigger_key: str, *, run_id: str, run_url: str | None, trace_id: str | None
    ) -> TriggerRecord:
        return self._make(
            trigger_key,
            Move.MARK_STARTED,
            run_id=run_id,
            run_url=run_url,
            trace_id=trace_id,
            reason=None,
        )

    def mark_status(self, trigger_key: str, hex_status: str) -> TriggerRecord:
        """A live run's latest Hex status (PENDING, RUNNING)."""
        return self._make(trigger_key, Move.MARK_STATUS, hex_status=hex_status)

    def mark_ended(
        self,
        trigger_key: str,
        *,
        hex_status: str,
        timed_out: bool = False,
        reason: str | None = None,
    ) -> TriggerRecord:
        return self._make(
            trigger_key,
            Move.MARK_ENDED,
            hex_status=hex_status,
            timed_out=int(timed_out),
            reason=reason,
            ended_at=self._clock.now(),
        )

    def mark_failed(
        self, trigger_key: str, *, reason: str, trace_id: str | None = None
    ) -> TriggerRecord:
        return self._make(
            trigger_key,
            Move.MARK_FAILED,
            reason=reason,
            trace_id=trace_id,
            ended_at=self._clock.now(),
        )

    def mark_ambiguous(self, trigger_key: str, *, reason: str) -> TriggerRecord:
        return self._make(
            trigger_key, Move.MARK_AMBIGUOUS, reason=reason, ended_at=self._clock.now()
        )

    def mark_queued(self, trigger_key: str, *, deadline_at: float, reason: str) -> TriggerRecord:
        return self._make(trigger_key, Move.MARK_QUEUED, deadline_at=deadline_at, reason=reason)

    def mark_expired(self, trigger_key: str, *, reason: str) -> TriggerRecord:
        return self._make(trigger_key, Move.MARK_EXPIRED, reason=reason, ended_at=self._clock.now())

    def release(self, trigger_key: str, *, reason: str) -> TriggerRecord:
        """Give a claimed trigger back: nothing was sent (interrupted before the POST, 429, 503),
        or reconciling found that Hex started no run."""
        return self._make(trigger_key, Move.RELEASE, reason=reason, owner_pid=None, intent_at=None)

    def reopen_ambiguous(self, trigger_key: str) -> TriggerRecord:
        """The user asked to send an ambiguous trigger again (``--resend-ambiguous``)."""
        return self._make(
            trigger_key, Move.REOPEN_AMBIGUOUS, reason=None, ended_at=None, owner_pid=None
        )

    def _claim(self, db: sqlite3.Connection, trigger_key: str, now: float) -> bool:
        """In a write transaction: make a sendable row ``sending``, owned by this process."""
        return self._move(
            db, trigger_key, Move.CLAIM_FOR_SENDING, now, owner_pid=os.getpid(), intent_at=now
        )

    def _make(self, trigger_key: str, move: Move, **fields: Any) -> TriggerRecord:
        """Make ``move`` on a row, setting ``fields`` too; a StateError when the row is in a
        state the move does not start from."""
        with self._write() as db:
            if not self._move(db, trigger_key, move, self._clock.now(), **fields):
                row = self._row(db, trigger_key)
                transition = ALLOWED_MOVES[move]
                sources = " or ".join(sorted(transition.sources))
                raise MoveRefusedError(
                    f"the ledger {self.path} refuses to move trigger {row['name']} ({trigger_key})"
                    f" from {_state_of(row, self.path)} to {transition.target}"
                    f" ({move} moves only {sources} triggers)",
                    hint="another hexdbt process may have moved it first; hexdbt status shows it",
                )
            return _trigger_from_row(self._row(db, trigger_key), self.path)

    def _move(
        self, db: sqlite3.Connection, trigger_key: str, move: Move, now: float, **fields: Any
    ) -> bool:
        """In a write transaction: make ``move`` on a row in one UPDATE guarded by the states it
        starts from. False, changing nothing, when the row is in another state."""
        transition = ALLOWED_MOVES[move]
        changes = {"state": transition.target.value, **fields, "updated_at": now}
        sources = sorted(state.value for state in transition.sources)
        cursor = db.execute(
            f"UPDATE triggers SET {', '.join(f'{column} = ?' for column in changes)}"
            f" WHERE trigger_key = ? AND state IN ({', '.join('?' * len(sources))})",
            (*changes.values(), trigger_key, *sources),
        )
        if cursor.rowcount == 1:
            return True
        self._row(db, trigger_key)  # no such row is an error, not a refusal
        return False

    def _row(self, db: sqlite3.Connection, trigger_key: str) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM triggers WHERE trigger_key = ?", (trigger_key,)
        ).fetchone()
        if row is None:
            raise self._no_trigger(trigger_key)
        return row

    def _no_trigger(self, trigger_key: str) -> StateError:
        return StateError(f"the ledger {self.path} has no trigger {trigger_key}")

    def triggers_of(self, invocation_id: str) -> list[TriggerRecord]:
        rows = self._read(
            "SELECT * FROM triggers WHERE invocation_id = ? ORDER BY created_at, rowid",
            (invocation_id,),
        )
        return [_trigger_from_row(row, self.path) for row in rows]

    def run_ids_of_project(self, project_id: str) -> set[str]:
        """Every Hex run id the ledger has recorded for a project (to tell ours from others')."""
        rows = self._read(
            "SELECT run_id FROM triggers WHERE project_id = ? AND run_id IS NOT NULL", (project_id,)
        )
        return {row["run_id"] for row in rows}

    def in_state(self, *states: TriggerState) -> list[TriggerRecord]:
        rows = self._read(
            f"SELECT * FROM triggers WHERE state IN ({', '.join('?' * len(states))})"
            " ORDER BY created_at, rowid",
            tuple(state.value for state in states),
        )
        return [_trigger_from_row(row, self.path) for row in rows]
