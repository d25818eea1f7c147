"""Hex's rate limits as one budget shared by every hexdbt process that uses a token.

Hex allows RunProject 20 a minute and 60 an hour, everything else about 30 a minute, per user
behind the token. A watcher, a CI step and a person at a terminal using the same token must draw
from one budget, so the budget lives in a small SQLite file in hexdbt's state folder
(``budget.sqlite3``), keyed by a SHA-256 of the token and the base URL, never the token itself.

Each call is logged with its time; a call fits when, for every limit, fewer than ``calls`` calls
lie in the last ``window_s`` (plus a small margin). Hex's windows are fixed and start at its first
request; a sliding log on our side keeps every 60-second interval within the limit, so whatever the
phase of Hex's window, it never sees more than the limit. The margin absorbs the network delay
between our clock reading and Hex's. ``BEGIN IMMEDIATE`` serialises the check-and-record between
processes.

Why not a library: pyrate-limiter (the one well-kept limiter with a SQLite bucket and a file lock
for processes) takes a clock for ``now`` but waits with its own ``time.sleep``, so an hour-long
wait cannot run on hexdbt's manual clock; it has no way to tell a bucket "Hex said 429, block until
then"; and its "how long until a slot" is internal. What hexdbt needs is about 150 lines.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from hexdbt.clock import Clock, SystemClock
from hexdbt.errors import ConfigError, HexRateLimitedError, Interrupted, StateError
from hexdbt.settings import BUDGET_ENV

BUDGET_FILE = "budget.sqlite3"


class CallKind(StrEnum):
    RUN_PROJECT = "run_project"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Limit:
    calls: int
    window_s: float

    def __post_init__(self) -> None:
        if self.calls < 1 or self.window_s <= 0:
            raise ConfigError(f"a rate limit needs calls >= 1 and a window > 0, got {self}")


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """Hex's published defaults; Hex can change them per workspace, so they are settings."""

    run_project: tuple[Limit, ...] = (Limit(20, 60.0), Limit(60, 3600.0))
    other: tuple[Limit, ...] = (Limit(30, 60.0),)
    # Network delay between our clock reading and Hex's: calls count as this much longer.
    margin_s: float = 1.0

    def for_kind(self, kind: CallKind) -> tuple[Limit, ...]:
        return self.run_project if kind is CallKind.RUN_PROJECT else self.other

    def sustained_rate_per_s(self, kind: CallKind) -> float:
        """The most calls per second that can be kept up for ever (the tightest limit)."""
        return min(limit.calls / (limit.window_s + self.margin_s) for limit in self.for_kind(kind))

    @classmethod
    def parse(cls, text: str) -> BudgetLimits:
        """``run_project=20/60,60/3600;other=30/60`` (calls/seconds); a kind left out keeps its default."""
        defaults = cls()
        found: dict[str, tuple[Limit, ...]] = {}
        for part in filter(None, (piece.strip() for piece in text.split(";"))):
            name, _, spec = part.partition("=")
            name = name.strip()
            if name not in ("run_project", "other") or not spec.strip():
                raise ConfigError(
                    f"{BUDGET_ENV}: cannot read {part!r}",
                    hint="write e.g. run_project=20/60,60/3600;other=30/60 (calls/seconds)",
                )
            limits = []
            for item in spec.split(","):
                calls, _, window = item.strip().partition("/")
                try:
                    limits.append(Limit(int(calls), float(window)))
                except ValueError:
                    raise ConfigError(
                        f"{BUDGET_ENV}: {item.strip()!r} is not calls/seconds",
                        hint="write e.g. run_project=20/60,60/3600;other=30/60",
                    ) from None
            found[name] = tuple(limits)
        return cls(
            run_project=found.get("run_project", defaults.run_project),
            other=found.get("other", defaults.other),
        )


@dataclass(frozen=True, slots=True)
class Slot:
    """A call of ``kind`` recorded in the budget at ``at``, taken before the call is made."""

    kind: CallKind
    at: float


class Budget(Protocol):
    """What the client, the dispatcher and the waiter need from a budget."""

    limits: BudgetLimits

    def acquire(self, kind: CallKind, *, deadline: float, stop: threading.Event) -> None:
        """Wait (on the clock) for a slot and take it; HexRateLimitedError when none comes
        before ``deadline``, Interrupted as soon as ``stop`` is set."""
        ...

    def take_now(self, kind: CallKind, calls: int) -> tuple[Slot, ...]:
        """Take as many of ``calls`` slots as fit now (maybe none), without waiting."""
        ...

    def use(self, slot: Slot) -> None:
        """The call on ``slot`` is made now (instead of ``acquire``)."""
        ...

    def give_back(self, slots: Sequence[Slot]) -> None:
        """Slots taken and not used: they count no more."""
        ...

    def note_rate_limited(self, kind: CallKind, retry_after_s: float | None) -> None:
        """Hex answered 429: no call of ``kind`` until Retry-After (or a whole window)."""
        ...

    def next_slot_at(self, kind: CallKind) -> float:
        """When the next call of ``kind`` would fit (now, if it fits now). Takes nothing."""
        ...


def budget_scope(token: str, base_url: str) -> str:
    """The key of a budget: a hash of the token (never the token) and the base URL."""
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    return f"{digest}@{base_url.rstrip('/')}"


def _next_fit(
    times: list[float], limits: tuple[Limit, ...], margin_s: float, now: float, blocked_until: float
) -> float:
    """The earliest moment >= now at which one more call fits ``limits`` given past ``times``."""
    moment = max(now, blocked_until)
    ordered = sorted(times)
    for limit in limits:
        window = limit.window_s + margin_s
        recent = [at for at in ordered if at > moment - window]
        if len(recent) >= limit.calls:
            # The call that must age out so that one more fits.
            moment = max(moment, recent[len(recent) - limit.calls] + window)
    return moment


def plan_slots(
    times: list[float],
    limits: tuple[Limit, ...],
    margin_s: float,
    now: float,
    blocked_until: float,
    calls: int,
) -> tuple[float, ...]:
    """Pure: when each of ``calls`` calls would fit, given past call ``times``."""
    log = list(times)
    slots: list[float] = []
    for _ in range(calls):
        # Several limits interact (20/min and 60/h): repeat until one moment satisfies them all.
        moment = _next_fit(log, limits, margin_s, now, blocked_until)
        while (again := _next_fit(log, limits, margin_s, moment, blocked_until)) > moment:
            moment = again
        slots.append(moment)
        log.append(moment)
        now = moment
    return tuple(slots)


# The row a slot recorded (slots taken together share a time: any one of them will do).
_ROW_OF_SLOT = "SELECT rowid FROM calls WHERE scope = ? AND kind = ? AND at = ? LIMIT 1"


class SharedBudget:
    """The budget of one (token, base URL), in a SQLite file shared by all processes."""

    def __init__(
        self,
        path: Path,
        token: str,
        base_url: str,
        *,
        clock: Clock | None = None,
        limits: BudgetLimits | None = None,
    ) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self.scope = budget_scope(token, base_url)
        self.clock: Clock = clock or SystemClock()
        self.limits = limits or BudgetLimits()
        self._longest_window_s = max(
            limit.window_s for limit in (*self.limits.run_project, *self.limits.other)
        )
        with self._transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS calls (scope TEXT NOT NULL, kind TEXT NOT NULL,"
                " at REAL NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS calls_by_scope ON calls (scope, kind, at)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS blocks (scope TEXT NOT NULL, kind TEXT NOT NULL,"
                " until REAL NOT NULL, PRIMARY KEY (scope, kind))"
            )

    @classmethod
    def in_state_dir(
        cls,
        state_dir: Path,
        token: str,
        base_url: str,
        *,
        clock: Clock | None = None,
        limits: BudgetLimits | None = None,
    ) -> SharedBudget:
        return cls(state_dir / BUDGET_FILE, token, base_url, clock=clock, limits=limits)

    def __repr__(self) -> str:
        return f"SharedBudget(path={str(self.path)!r})"

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            try:
                db = sqlite3.connect(
                    self.path, timeout=30.0, isolation_level=None, check_same_thread=False
                )
                # WAL lets processes read while one writes; NORMAL skips an fsync per call: a
                # power cut may forget the last calls' records, which only makes the budget
                # briefly generous, never wrong about a run.
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise StateError(f"cannot open the budget store {self.path}: {exc}") from exc
            self._db = db
        return self._db

    @contextmanager
    def _store(self) -> Iterator[sqlite3.Connection]:
        """The connection, under this process's lock, with SQLite's errors as StateError."""
        with self._lock:
            db = self._connection()
            try:
                yield db
            except sqlite3.Error as exc:
                raise StateError(f"the budget store {self.path} cannot be used: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._store() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    def _oldest_that_counts(self, now: float) -> float:
        """Calls made before this lie outside every window: they count no more."""
        return now - self._longest_window_s - self.limits.margin_s

    def _state(
        self, db: sqlite3.Connection, kind: CallKind, now: float
    ) -> tuple[list[float], float]:
        oldest = self._oldest_that_counts(now)
        times = [
            row[0]
            for row in db.execute(
                "SELECT at FROM calls WHERE scope = ? AND kind = ? AND at >= ?",
                (self.scope, kind.value, oldest),
            )
        ]
        row = db.execute(
            "SELECT until FROM blocks WHERE scope = ? AND kind = ?", (self.scope, kind.value)
        ).fetchone()
        return times, (row[0] if row else 0.0)

    def acquire(self, kind: CallKind, *, deadline: float, stop: threading.Event) -> None:
        while True:
            now = self.clock.now()
            taken, next_at = self._take(kind, 1, now)
            if taken:
                return
            if next_at > deadline:
                raise HexRateLimitedError(
                    f"Hex's rate budget for {kind.value} calls has no slot before the deadline"
                    f" (next slot in {next_at - now:.0f} s)",
                    status=None,
                    retry_after_s=next_at - now,
                )
            # Another process may take the slot first: wait, then check again.
            if self.clock.wait(stop, next_at - now):
                raise Interrupted("stopped while waiting for Hex's rate budget")

    def take_now(self, kind: CallKind, calls: int) -> tuple[Slot, ...]:
        now = self.clock.now()
        taken, _next_at = self._take(kind, calls, now)
        return tuple(Slot(kind, now) for _ in range(taken))

    def _take(self, kind: CallKind, calls: int, now: float) -> tuple[int, float]:
        """Record as many of ``calls`` calls as fit at ``now``, in one transaction. Returns how
        many were taken and when the first one not taken would fit (``now`` if all were)."""
        if calls <= 0:
            return 0, now
        with self._transaction() as db:
            times, blocked_until = self._state(db, kind, now)
            slots = plan_slots(
                times, self.limits.for_kind(kind), self.limits.margin_s, now, blocked_until, calls
            )
            taken = sum(1 for slot in slots if slot <= now)  # slots never come earlier in the list
            if taken:
                db.executemany(
                    "INSERT INTO calls (scope, kind, at) VALUES (?, ?, ?)",
                    [(self.scope, kind.value, now)] * taken,
                )
                db.execute(
                    "DELETE FROM calls WHERE scope = ? AND at < ?",
                    (self.scope, self._oldest_that_counts(now)),
                )
        return taken, slots[taken] if taken < calls else now

    def use(self, slot: Slot) -> None:
        now = self.clock.now()
        if now - slot.at <= self.limits.margin_s / 10:
            return  # fresh: Hex's window and ours start together, well within the margin
        # Taken a while ago (behind other sends): the call counts from now, as Hex counts it.
        # Moving a call later only makes the budget stricter, so it needs no check.
        with self._transaction() as db:
            moved = db.execute(
                f"UPDATE calls SET at = ? WHERE rowid = ({_ROW_OF_SLOT})",
                (now, self.scope, slot.kind.value, slot.at),
            )
            if moved.rowcount == 0:  # forgotten after its window: record the call afresh
                db.execute(
                    "INSERT INTO calls (scope, kind, at) VALUES (?, ?, ?)",
                    (self.scope, slot.kind.value, now),
                )

    def give_back(self, slots: Sequence[Slot]) -> None:
        if not slots:
            return
        with self._transaction() as db:
            for slot in slots:
                db.execute(
                    f"DELETE FROM calls WHERE rowid = ({_ROW_OF_SLOT})",
                    (self.scope, slot.kind.value, slot.at),
                )

    def note_rate_limited(self, kind: CallKind, retry_after_s: float | None) -> None:
        now = self.clock.now()
        if retry_after_s is None:
            retry_after_s = min(limit.window_s for limit in self.limits.for_kind(kind))
        until = now + max(0.0, retry_after_s)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO blocks (scope, kind, until) VALUES (?, ?, ?)"
                " ON CONFLICT (scope, kind) DO UPDATE SET until = max(until, excluded.until)",
                (self.scope, kind.value, until),
            )

    def next_slot_at(self, kind: CallKind) -> float:
        return self.slots_for(kind, 1)[0]

    def slots_for(self, kind: CallKind, calls: int) -> tuple[float, ...]:
        """When ``calls`` calls of ``kind`` made one after another would each fit. Takes nothing."""
        now = self.clock.now()
        # Reads only, outside a transaction: they block no writer, and a call recorded between
        # them makes this advice (``acquire`` decides) a moment old, no more.
        with self._store() as db:
            times, blocked_until = self._state(db, kind, now)
        return plan_slots(
            times, self.limits.for_kind(kind), self.limits.margin_s, now, blocked_until, calls
        )
