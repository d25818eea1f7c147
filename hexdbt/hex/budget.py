"""Hex's rate limits as one budget shared by every hexdbt process that uses a token.

Hex allows RunProject 20 a minute and 60 an hour, everything else about 30 a minute, per user
behind the token. A watcher, a CI step and a person at a terminal using the same token must draw
from one budget, so the budget lives in hexdbt's state (``hexdbt.store``): a small SQLite file in
the state folder (``budget.sqlite3``), or the PostgreSQL schema that every host shares. It is
keyed by a SHA-256 of the token and the base URL, never the token itself.

Each call is logged with its time; a call fits when, for every limit, fewer than ``calls`` calls
lie in the last ``window_s`` (plus a small margin). Hex's windows are fixed and start at its first
request; a sliding log on our side keeps every 60-second interval within the limit, so whatever the
phase of Hex's window, it never sees more than the limit. The margin absorbs the network delay
between our clock reading and Hex's. The check-and-record is one short transaction under the
store's lock for the budget key (SQLite's ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), never
held across an HTTP call; a 429 that one process sees blocks every process until Retry-After.
While PostgreSQL cannot be reached, a process keeps to a window of its own at a third of the
limits (``ALONE_SHARE``), so its runs are still polled.

Why not a library: pyrate-limiter (the one well-kept limiter with a SQLite bucket and a file lock
for processes) takes a clock for ``now`` but waits with its own ``time.sleep``, so an hour-long
wait cannot run on hexdbt's manual clock; it has no way to tell a bucket "Hex said 429, block until
then"; and its "how long until a slot" is internal. What hexdbt needs is about 150 lines.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol, TypeVar

from hexdbt.clock import Clock, SystemClock
from hexdbt.errors import ConfigError, HexRateLimitedError, Interrupted, StateUnavailable
from hexdbt.settings import BUDGET_ENV, StateLocation
from hexdbt.store import Session, SqliteStore, Store, open_store

BUDGET_FILE = "budget.sqlite3"
T = TypeVar("T")


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

    def share(self, fraction: float) -> BudgetLimits:
        """``fraction`` of every limit's calls (one at least), over the same windows."""

        def cut(limits: tuple[Limit, ...]) -> tuple[Limit, ...]:
            return tuple(
                Limit(max(1, int(limit.calls * fraction)), limit.window_s) for limit in limits
            )

        return replace(self, run_project=cut(self.run_project), other=cut(self.other))

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

    def close(self) -> None:
        """Let go of the store (the client closes its budget with itself)."""
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


_KINDS = tuple(kind.value for kind in CallKind)
_KIND_MARKS = ", ".join("?" * len(_KINDS))

# The row a slot recorded (slots taken together share a time: any one of them will do).
_ROW_OF_SLOT = "SELECT rowid FROM calls WHERE scope = ? AND kind = ? AND at = ? LIMIT 1"

_MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1 (files from before versions had these tables already)
    """
    CREATE TABLE IF NOT EXISTS calls (
        {rowid}
        scope TEXT NOT NULL,
        kind  TEXT NOT NULL,
        at    DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX IF NOT EXISTS calls_by_scope ON calls (scope, kind, at);
    CREATE TABLE IF NOT EXISTS blocks (
        scope TEXT NOT NULL,
        kind  TEXT NOT NULL,
        until DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (scope, kind)
    )
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)

# While the shared store cannot be reached (PostgreSQL lost), a process keeps to a window of its
# own at this share of Hex's limits: it cannot see what other hosts draw meanwhile, and a server
# that restarts leaves them all on their own at once. Three hosts on one token is the case the
# share is made for.
ALONE_SHARE = 1 / 3


class SharedBudget:
    """The budget of one (token, base URL), in the store that every process shares."""

    def __init__(
        self,
        store: Store,
        token: str,
        base_url: str,
        *,
        clock: Clock | None = None,
        limits: BudgetLimits | None = None,
    ) -> None:
        self.store = store
        self.scope = budget_scope(token, base_url)
        self.clock: Clock = clock or SystemClock()
        self.limits = limits or BudgetLimits()
        self._longest_window_s = max(
            limit.window_s for limit in (*self.limits.run_project, *self.limits.other)
        )
        self._alone: SharedBudget | None = None  # made the first time the store is lost
        try:
            self.prepare(store)
        except BaseException:
            store.close()
            raise

    @staticmethod
    def prepare(store: Store) -> None:
        """Create or migrate the budget's tables in ``store`` (``hexdbt state check`` too)."""
        store.migrate("budget", _MIGRATIONS)

    @classmethod
    def open(
        cls,
        location: StateLocation,
        token: str,
        base_url: str,
        *,
        clock: Clock | None = None,
        limits: BudgetLimits | None = None,
    ) -> SharedBudget:
        store = open_store(location, BUDGET_FILE, what="budget store", clock=clock)
        return cls(store, token, base_url, clock=clock, limits=limits)

    def __repr__(self) -> str:
        return f"SharedBudget({self.store.describe()!r})"

    def close(self) -> None:
        self.store.close()
        if self._alone is not None:
            self._alone.close()

    def _write(self, work: Callable[[Session], T]) -> T:
        # A power cut may forget the last calls' records: that only makes the budget briefly
        # generous, never wrong about a run, so no write waits for the disk.
        return self.store.write(work, durable=False, lock_key=self.scope)

    def _or_alone(self, shared: Callable[[], T], alone: Callable[[SharedBudget], T]) -> T:
        """``shared()``; while the store cannot be reached, ``alone`` on this process's own
        window (in memory, at ``ALONE_SHARE`` of the limits), so polls go on meanwhile. The calls
        made alone are not shared: the others learn of them from Hex's 429s, if at all."""
        try:
            return shared()
        except StateUnavailable:
            if self._alone is None:
                self._alone = SharedBudget(
                    SqliteStore.in_memory(what="budget of this process alone"),
                    token="",  # its own store holds one budget: the key does not matter
                    base_url="",
                    clock=self.clock,
                    limits=self.limits.share(ALONE_SHARE),
                )
            return alone(self._alone)

    def _oldest_that_counts(self, now: float) -> float:
        """Calls made before this lie outside every window: they count no more."""
        return now - self._longest_window_s - self.limits.margin_s

    def _state(self, session: Session, kind: CallKind, now: float) -> tuple[list[float], float]:
        oldest = self._oldest_that_counts(now)
        times = [
            row["at"]
            for row in session.execute(
                "SELECT at FROM calls WHERE scope = ? AND kind = ? AND at >= ?",
                (self.scope, kind.value, oldest),
            ).rows
        ]
        row = session.execute(
            "SELECT until FROM blocks WHERE scope = ? AND kind = ?", (self.scope, kind.value)
        ).first()
        return times, (row["until"] if row else 0.0)

    def _all_fit_now(self, session: Session, kind: CallKind, now: float, calls: int) -> bool:
        """Whether ``calls`` more calls fit every limit of ``kind`` at ``now`` and no 429 holds
        them back: ``plan_slots`` would put them all at ``now``. The usual case before each
        RunProject, so the store counts the calls in each window and none is read into Python
        (reading the log cost about a microsecond a call, a tenth of a millisecond before each
        trigger in benchmarks/watch.py)."""
        limits = self.limits.for_kind(kind)
        starts = [now - limit.window_s - self.limits.margin_s for limit in limits]
        counts = ", ".join(
            f"COUNT(CASE WHEN at > ? THEN 1 END) AS in_window_{i}" for i in range(len(limits))
        )
        row = session.execute(
            f"SELECT {counts},"
            " (SELECT until FROM blocks WHERE scope = ? AND kind = ?) AS blocked_until"
            " FROM calls WHERE scope = ? AND kind = ? AND at > ?",
            (*starts, self.scope, kind.value, self.scope, kind.value, min(starts)),
        ).first()
        assert row is not None  # an aggregate always has its row
        if (row["blocked_until"] or 0.0) > now:
            return False
        return all(row[f"in_window_{i}"] + calls <= limit.calls for i, limit in enumerate(limits))

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

        def take(session: Session) -> tuple[int, float]:
            if not session.retried and self._all_fit_now(session, kind, now, calls):
                taken, next_at = calls, now
            else:
                times, blocked_until = self._state(session, kind, now)
                if session.retried:  # an earlier attempt's commit may stand: count it once
                    times = [at for at in times if at != now]
                    session.execute(
                        "DELETE FROM calls WHERE scope = ? AND kind = ? AND at = ?",
                        (self.scope, kind.value, now),
                    )
                limits = self.limits.for_kind(kind)
                slots = plan_slots(times, limits, self.limits.margin_s, now, blocked_until, calls)
                # Slots never come earlier in the list.
                taken = sum(1 for slot in slots if slot <= now)
                next_at = slots[taken] if taken < calls else now
            if taken:
                session.executemany(
                    "INSERT INTO calls (scope, kind, at) VALUES (?, ?, ?)",
                    [(self.scope, kind.value, now)] * taken,
                )
                # Kind by kind, so that the index's range of old calls is read, not every call.
                session.execute(
                    f"DELETE FROM calls WHERE scope = ? AND kind IN ({_KIND_MARKS}) AND at < ?",
                    (self.scope, *_KINDS, self._oldest_that_counts(now)),
                )
            return taken, next_at

        return self._or_alone(
            lambda: self._write(take), lambda alone: alone._take(kind, calls, now)
        )

    def use(self, slot: Slot) -> None:
        now = self.clock.now()
        if now - slot.at <= self.limits.margin_s / 10:
            return  # fresh: Hex's window and ours start together, well within the margin

        # Taken a while ago (behind other sends): the call counts from now, as Hex counts it.
        # Moving a call later only makes the budget stricter, so it needs no check.
        def move(session: Session) -> None:
            moved = session.execute(
                f"UPDATE calls SET at = ? WHERE rowid = ({_ROW_OF_SLOT})",
                (now, self.scope, slot.kind.value, slot.at),
            )
            if moved.rowcount == 0:  # forgotten after its window: record the call afresh
                session.execute(
                    "INSERT INTO calls (scope, kind, at) VALUES (?, ?, ?)",
                    (self.scope, slot.kind.value, now),
                )

        self._or_alone(lambda: self._write(move), lambda alone: alone.use(slot))

    def give_back(self, slots: Sequence[Slot]) -> None:
        if not slots:
            return

        def forget(session: Session) -> None:
            for slot in slots:
                session.execute(
                    f"DELETE FROM calls WHERE rowid = ({_ROW_OF_SLOT})",
                    (self.scope, slot.kind.value, slot.at),
                )

        self._or_alone(lambda: self._write(forget), lambda alone: alone.give_back(slots))

    def note_rate_limited(self, kind: CallKind, retry_after_s: float | None) -> None:
        now = self.clock.now()
        if retry_after_s is None:
            retry_after_s = min(limit.window_s for limit in self.limits.for_kind(kind))
        until = now + max(0.0, retry_after_s)

        def block(session: Session) -> None:
            session.execute(
                "INSERT INTO blocks (scope, kind, until) VALUES (?, ?, ?)"
                " ON CONFLICT (scope, kind) DO UPDATE SET until = CASE"
                " WHEN excluded.until > blocks.until THEN excluded.until ELSE blocks.until END",
                (self.scope, kind.value, until),
            )

        self._or_alone(
            lambda: self._write(block),
            lambda alone: alone.note_rate_limited(kind, retry_after_s),
        )

    def next_slot_at(self, kind: CallKind) -> float:
        return self.slots_for(kind, 1)[0]

    def calls_left(self, kind: CallKind) -> tuple[tuple[Limit, int], ...]:
        """How many more calls of ``kind`` each limit allows now (``hexdbt debug``). A call
        recorded with a later time, by a clock ahead of this one, counts until its window has
        passed. Takes nothing."""
        now = self.clock.now()

        def shared() -> tuple[tuple[Limit, int], ...]:
            times, _ = self.store.read(lambda session: self._state(session, kind, now))
            margin = self.limits.margin_s
            return tuple(
                (
                    limit,
                    max(
                        0,
                        limit.calls - sum(1 for at in times if at > now - limit.window_s - margin),
                    ),
                )
                for limit in self.limits.for_kind(kind)
            )

        return self._or_alone(shared, lambda alone: alone.calls_left(kind))

    def slots_for(self, kind: CallKind, calls: int) -> tuple[float, ...]:
        """When ``calls`` calls of ``kind`` made one after another would each fit. Takes nothing."""
        now = self.clock.now()

        def shared() -> tuple[float, ...]:
            # Reads only, outside a write: they block no writer, and a call recorded between
            # them makes this advice (``acquire`` decides) a moment old, no more.
            times, blocked_until = self.store.read(lambda session: self._state(session, kind, now))
            return plan_slots(
                times, self.limits.for_kind(kind), self.limits.margin_s, now, blocked_until, calls
            )

        return self._or_alone(shared, lambda alone: alone.slots_for(kind, calls))
