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
     ├──> expired     (did not fit the budget before its deadline; from planned too)
     └──> superseded  (a later build's trigger of the same mapping entry took it over; from
                       planned too)

Three moves keep the state and change the row: ``mark_queued`` on a queued row (a new deadline
or reason), ``take_over_orphan`` on a sending row (a new owner), ``mark_status`` on a started row
(Hex's latest status). Ended, failed and expired are final: nothing leaves them. A move asked of
a row in another state is refused with a ``StateError`` and changes nothing, except
``claim_for_sending`` and ``take_over_orphan``, which answer False: another process may hold the
row, and that is no error.

A trigger whose mapping entry coalesces (``entry_key``) is superseded, in the transaction that
records a later build's trigger of the same entry, while it is still planned or queued: the
supersede and the claim are both guarded UPDATEs of the same row, so exactly one of them wins, on
SQLite and PostgreSQL alike. The newer trigger inherits the oldest refresh it now covers
(``unserved_since``); the superseded row names it (``superseded_by``).

A row is claimed (``sending``, owned, not armed) and then *armed* right before its POST: one
synced transaction that commits the intent's time, raises the row's fence and records when the
POST can no longer be in flight, only while the row is still this process's and its lease has
not lapsed. ``started`` (with the run id) is committed right after the POST, so a crash between
the two leaves a row that says "a run may exist": the engine reconciles it through GetProjectRuns
instead of posting again. A claimed row never armed says "nothing was sent". Claiming is one
guarded UPDATE, so two processes handling the same invocation never both post, on one machine or
many; every move out of ``sending`` is guarded by the owner and the fence it names, so a process
that stalled past its lease cannot arm, or overwrite, a row another has taken over.

A ``sending`` row names its owner's lease: host, pid, boot id and an expiry that the owner renews
while it lives (``renew_lease``, from ``engine.lease_keeper``), judged on PostgreSQL's clock, or
on SQLite the process's. The owner is gone, and the row an orphan, when the lease is released or
has expired; on the owner's own host (same boot) at once when its pid has ended. The rule is the
same on SQLite and PostgreSQL (``hexdbt.store``); ``_MIGRATIONS[n]`` takes the schema from
version n to n+1 on either.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from collections.abc import Collection, Mapping, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from hexdbt.clock import Clock, SystemClock
from hexdbt.errors import MoveRefusedError, StateError, StateUnavailable
from hexdbt.settings import StateLocation, resolve_host_name, resolve_lease_ttl_s
from hexdbt.store import Row, Session, Store, open_store

LEDGER_FILENAME = "ledger.sqlite3"
# A lease lasts this long (real seconds) unless renewed; its owner renews it well before.
LEASE_TTL_S = 60.0
LEASE_RENEW_EVERY_S = 20.0
# An arm renews its lease unless the lease outlasts the POST by this much (real seconds).
SELF_FENCE_MARGIN_S = 5.0
# A lease expired this long ago is deleted when a new one is taken.
LEASE_FORGOTTEN_AFTER_S = 86_400.0


class TriggerState(StrEnum):
    PLANNED = "planned"
    QUEUED = "queued"
    SENDING = "sending"
    STARTED = "started"
    ENDED = "ended"
    FAILED = "failed"
    AMBIGUOUS = "ambiguous"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"

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
    SUPERSEDE = "supersede"
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
        # A later build's trigger of the same mapping entry covers it (in plan_and_claim).
        Move.SUPERSEDE: _moving(
            TriggerState.PLANNED, TriggerState.QUEUED, to=TriggerState.SUPERSEDED
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
        {rowid}
        invocation_id TEXT PRIMARY KEY,
        command       TEXT NOT NULL,
        source        TEXT NOT NULL,
        first_seen_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE triggers (
        {rowid}
        trigger_key   TEXT PRIMARY KEY,
        invocation_id TEXT NOT NULL REFERENCES invocations(invocation_id),
        name          TEXT NOT NULL,
        project_id    TEXT NOT NULL,
        base_url      TEXT NOT NULL,
        request_json  TEXT NOT NULL,
        options_json  TEXT NOT NULL,
        state         TEXT NOT NULL,
        owner_pid     INTEGER,
        deadline_at   DOUBLE PRECISION,
        intent_at     DOUBLE PRECISION,
        run_id        TEXT,
        run_url       TEXT,
        hex_status    TEXT,
        timed_out     INTEGER NOT NULL DEFAULT 0,
        trace_id      TEXT,
        reason        TEXT,
        created_at    DOUBLE PRECISION NOT NULL,
        updated_at    DOUBLE PRECISION NOT NULL,
        ended_at      DOUBLE PRECISION
    );
    CREATE INDEX triggers_by_invocation ON triggers(invocation_id);
    CREATE INDEX triggers_by_state ON triggers(state);
    """,
    # 1 -> 2: owners are leases, not pids (a pid means nothing on another host); the Hex clock
    # offset known at the intent is kept with it, for whichever process reconciles.
    """
    CREATE TABLE leases (
        lease_id   TEXT PRIMARY KEY,
        host       TEXT NOT NULL,
        pid        INTEGER NOT NULL,
        boot_id    TEXT NOT NULL,
        renewed_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL
    );
    ALTER TABLE triggers ADD COLUMN owner_lease TEXT;
    ALTER TABLE triggers ADD COLUMN hex_clock_offset_s DOUBLE PRECISION;
    ALTER TABLE triggers DROP COLUMN owner_pid
    """,
    # 2 -> 3: fresh apps. A trigger names its mapping entry and whether it coalesces, the
    # models that made it, the trigger that superseded it, and the oldest refresh it covers;
    # an invocation names its dbt project. A feeder's input that cannot be read (a damaged
    # outbox entry) is set aside with its reason, so one bad item never blocks the rest.
    """
    CREATE TABLE rejected_inputs (
        source      TEXT NOT NULL,
        item_id     TEXT NOT NULL,
        reason      TEXT NOT NULL,
        rejected_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (source, item_id)
    );
    ALTER TABLE invocations ADD COLUMN project_dir TEXT;
    ALTER TABLE triggers ADD COLUMN entry_key TEXT;
    ALTER TABLE triggers ADD COLUMN coalescing INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE triggers ADD COLUMN models_json TEXT;
    ALTER TABLE triggers ADD COLUMN superseded_by TEXT;
    ALTER TABLE triggers ADD COLUMN unserved_since DOUBLE PRECISION;
    ALTER TABLE triggers ADD COLUMN window_closes_at DOUBLE PRECISION;
    CREATE INDEX triggers_by_entry ON triggers(entry_key);
    CREATE INDEX triggers_by_creation ON triggers(created_at)
    """,
    # 3 -> 4: fenced sends, and the status page (hexdbt.page). Each arm before a POST raises
    # the row's fence; every move out of ``sending`` names the fence it holds, so a process that
    # stalled past its lease cannot move a row someone else has taken over, and a run such a
    # process started all the same is a stray, recorded beside its trigger. A plan's entries
    # that were not triggered are kept with the planner's reason, as is each trigger's, so an
    # invocation's page shows its whole plan; indexes for the page's reads (each app's newest
    # trigger and run, the timeline's window, what superseded what, one dbt project's
    # invocations; partial, so that a trigger being planned or armed writes none it need not).
    # A new trigger of a coalescing entry looks for the entry's triggers that wait
    # unsent: by entry alone it read every trigger the entry ever had (0.14 ms at 400 of them,
    # growing for as long as the ledger keeps them), by entry and state only the waiting ones;
    # the index by entry alone is a prefix of it. dbt Cloud as a way in (``hexdbt serve``): each
    # webhook event received, by its eventId, so that a redelivery does nothing; each ended dbt
    # Cloud run to plan (from a webhook or from polling), settled once with what became of it;
    # when polling first started per account (runs from before it are not taken); and an
    # invocation names the dbt Cloud run and step it came from.
    """
    ALTER TABLE triggers ADD COLUMN fence INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE stray_runs (
        run_id      TEXT PRIMARY KEY,
        trigger_key TEXT NOT NULL,
        project_id  TEXT NOT NULL,
        run_url     TEXT,
        found_at    DOUBLE PRECISION NOT NULL,
        fate        TEXT NOT NULL
    );
    CREATE TABLE plan_skips (
        invocation_id TEXT NOT NULL REFERENCES invocations(invocation_id),
        position      INTEGER NOT NULL,
        name          TEXT NOT NULL,
        project_id    TEXT NOT NULL,
        reason        TEXT NOT NULL,
        is_error      INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (invocation_id, position)
    );
    ALTER TABLE triggers ADD COLUMN plan_reason TEXT;
    CREATE INDEX triggers_by_entry_and_creation ON triggers(entry_key, created_at);
    CREATE INDEX triggers_by_entry_and_intent ON triggers(entry_key, intent_at)
        WHERE intent_at IS NOT NULL;
    CREATE INDEX triggers_by_end ON triggers(ended_at) WHERE ended_at IS NOT NULL;
    CREATE INDEX triggers_by_superseding ON triggers(superseded_by)
        WHERE superseded_by IS NOT NULL;
    CREATE INDEX invocations_by_project_dir ON invocations(project_dir, first_seen_at);
    CREATE INDEX invocations_by_first_seen ON invocations(first_seen_at);
    CREATE INDEX triggers_by_entry_and_state ON triggers(entry_key, state);
    DROP INDEX triggers_by_entry;
    CREATE TABLE dbt_cloud_events (
        event_id    TEXT PRIMARY KEY,
        event_type  TEXT NOT NULL,
        run_id      TEXT NOT NULL,
        job_id      TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE dbt_cloud_runs (
        run_id         TEXT PRIMARY KEY,
        job_id         TEXT NOT NULL,
        environment_id TEXT NOT NULL,
        status_code    INTEGER NOT NULL,
        seen_via       TEXT NOT NULL,
        seen_at        DOUBLE PRECISION NOT NULL,
        settled_at     DOUBLE PRECISION,
        outcome        TEXT
    );
    CREATE INDEX dbt_cloud_runs_by_settled ON dbt_cloud_runs(settled_at);
    CREATE TABLE dbt_cloud_polling (
        account_id TEXT PRIMARY KEY,
        started_at DOUBLE PRECISION NOT NULL
    );
    ALTER TABLE invocations ADD COLUMN dbt_cloud_run_id TEXT;
    ALTER TABLE invocations ADD COLUMN dbt_cloud_step INTEGER
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True, slots=True)
class TriggerOptions:
    """What a trigger's mapping entry asks of its send and its run, kept with it in the ledger
    (``options_json``, one JSON object). A key the hexdbt that wrote the row did not know takes
    its default here, the one place the defaults are."""

    wait: bool = True
    timeout_minutes: float = 60.0
    cancel_on_timeout: bool = True
    # When more triggers wait than the budget allows, higher goes first.
    priority: int = 0
    # Not sent sooner than this after its entry's last send (None: no interval).
    min_interval_s: float | None = None
    # The entry's freshness target, for the status page and the metrics (None: none).
    freshness_s: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json_object(cls, stored: Mapping[str, Any]) -> TriggerOptions:
        """The options of a stored JSON object; ValueError or TypeError when a value is of the
        wrong kind."""
        default = cls()
        min_interval_s = stored.get("min_interval_s")
        freshness_s = stored.get("freshness_s")
        return cls(
            wait=bool(stored.get("wait", default.wait)),
            timeout_minutes=float(stored.get("timeout_minutes", default.timeout_minutes)),
            cancel_on_timeout=bool(stored.get("cancel_on_timeout", default.cancel_on_timeout)),
            priority=int(stored.get("priority") or default.priority),
            min_interval_s=None if min_interval_s is None else float(min_interval_s),
            freshness_s=None if freshness_s is None else float(freshness_s),
        )


@dataclass(frozen=True, slots=True)
class TriggerRecord:
    """One row of the ledger: a trigger and what has happened to it so far."""

    trigger_key: str
    invocation_id: str
    name: str
    project_id: str
    base_url: str
    request: dict[str, Any]
    options: TriggerOptions
    state: TriggerState
    owner_lease: str | None
    deadline_at: float | None
    intent_at: float | None
    hex_clock_offset_s: float | None  # Hex's clock minus ours, as known at the intent
    run_id: str | None
    run_url: str | None
    hex_status: str | None
    timed_out: bool
    trace_id: str | None
    reason: str | None
    created_at: float
    updated_at: float
    ended_at: float | None
    entry_key: str | None  # the mapping entry it comes from; None: a direct trigger
    coalesce: bool  # a later trigger of its entry supersedes it while it waits unsent
    models: tuple[str, ...]  # the models whose refresh made it
    superseded_by: str | None  # the trigger key that took it over
    unserved_since: float  # the oldest refresh of its entry that no run covers but its own
    # When its POST can no longer be in flight, by the sender's own timeouts (None: not sent,
    # or sent by a hexdbt that did not record it).
    window_closes_at: float | None
    plan_reason: str | None  # why the planner triggered it (None: recorded before 4)
    # Raised by each arm: a move out of ``sending`` must name the fence of the arm it follows.
    fence: int


@dataclass(frozen=True, slots=True)
class _Arming:
    """What an arm records beside its fence (see ``Ledger.arm``)."""

    hex_clock_offset_s: float | None
    window_s: float | None
    post_takes_s: float | None


@dataclass(frozen=True, slots=True)
class StrayRun:
    """A run a process started after it had lost its trigger to another (it stalled past its
    lease between its arm and its POST), and what was done about it."""

    run_id: str
    trigger_key: str
    project_id: str
    run_url: str | None
    found_at: float
    fate: str


@dataclass(frozen=True, slots=True)
class NewTrigger:
    """What the ledger needs to know of a trigger before anything is sent."""

    trigger_key: str
    name: str
    project_id: str
    base_url: str
    request: dict[str, Any]
    options: TriggerOptions
    entry_key: str | None = None
    coalesce: bool = False
    models: tuple[str, ...] = ()
    plan_reason: str | None = None  # why the planner triggered it, for the status page


@dataclass(frozen=True, slots=True)
class PlanSkip:
    """A mapping entry the plan did not trigger, and the planner's reason."""

    name: str
    project_id: str
    reason: str
    is_error: bool = False  # something is wrong (a template error), not merely "not stale"


@dataclass(frozen=True, slots=True)
class InvocationRecord:
    invocation_id: str
    command: str
    source: str
    first_seen_at: float
    project_dir: str | None


@dataclass(frozen=True, slots=True)
class DbtCloudRunRecord:
    """A dbt Cloud run the ledger was told of (by a webhook or by polling)."""

    run_id: str
    job_id: str
    environment_id: str
    status_code: int
    seen_via: str  # webhook, poll
    seen_at: float
    settled_at: float | None
    outcome: str | None  # what became of it, once settled


@dataclass(frozen=True, slots=True)
class DbtCloudEvent:
    """A dbt Cloud webhook event; ``run``: the run to plan, for a completed one."""

    event_id: str
    event_type: str
    run_id: str
    job_id: str
    run: DbtCloudRunRecord | None = None


@dataclass(frozen=True, slots=True)
class EntrySends:
    """What a mapping entry has sent: when its newest send was meant."""

    last_sent_at: float | None


@dataclass(frozen=True, slots=True)
class Demand:
    """The triggers planned in a while: how many, for which mapping entries, and whether an
    entry was planned more than once."""

    planned: int
    entries: frozenset[str]
    repeated: bool

    def with_planned(self, triggers: Sequence[NewTrigger]) -> Demand:
        keys = [trigger.entry_key for trigger in triggers if trigger.entry_key]
        repeated = self.repeated or len(set(keys)) < len(keys) or not self.entries.isdisjoint(keys)
        return Demand(self.planned + len(triggers), self.entries | set(keys), repeated)


def _unreadable(where: str, trigger_key: str, what: str) -> StateError:
    return StateError(
        f"the ledger {where} has an unreadable trigger {trigger_key}: {what}",
        hint=f"move {where} aside to start afresh (hexdbt then forgets what it sent before),"
        " or use the hexdbt that wrote it",
    )


def _state_of(row: Row, where: str) -> TriggerState:
    try:
        return TriggerState(row["state"])
    except ValueError:
        known = ", ".join(TriggerState)
        what = f"its state {row['state']!r} is none of {known}"
        raise _unreadable(where, row["trigger_key"], what) from None


def _json_object_of(row: Row, column: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(row[column])
    except (TypeError, ValueError) as exc:
        raise _unreadable(where, row["trigger_key"], f"its {column} is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _unreadable(where, row["trigger_key"], f"its {column} is not a JSON object")
    return value


def _options_of(row: Row, where: str) -> TriggerOptions:
    try:
        return TriggerOptions.from_json_object(_json_object_of(row, "options_json", where))
    except (TypeError, ValueError) as exc:
        what = f"its options_json has a value of the wrong kind ({exc})"
        raise _unreadable(where, row["trigger_key"], what) from None


def _trigger_from_row(row: Row, where: str) -> TriggerRecord:
    """The record of a row of the ledger at ``where``; a StateError when it cannot be read."""
    return TriggerRecord(
        trigger_key=row["trigger_key"],
        invocation_id=row["invocation_id"],
        name=row["name"],
        project_id=row["project_id"],
        base_url=row["base_url"],
        request=_json_object_of(row, "request_json", where),
        options=_options_of(row, where),
        state=_state_of(row, where),
        owner_lease=row["owner_lease"],
        deadline_at=row["deadline_at"],
        intent_at=row["intent_at"],
        hex_clock_offset_s=row["hex_clock_offset_s"],
        run_id=row["run_id"],
        run_url=row["run_url"],
        hex_status=row["hex_status"],
        timed_out=bool(row["timed_out"]),
        trace_id=row["trace_id"],
        reason=row["reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        ended_at=row["ended_at"],
        entry_key=row["entry_key"],
        coalesce=bool(row["coalescing"]),
        models=tuple(json.loads(row["models_json"] or "[]")),
        superseded_by=row["superseded_by"],
        unserved_since=row["unserved_since"] or row["created_at"],
        window_closes_at=row["window_closes_at"],
        fence=row["fence"],
        plan_reason=row["plan_reason"],
    )


def pid_is_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _boot_id() -> str:
    """This boot of this machine (Linux); empty elsewhere, where leases go by expiry alone."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a lease: a process of a host, since the host's last boot."""

    host: str
    pid: int
    boot_id: str

    @classmethod
    def this_process(cls) -> Holder:
        return cls(resolve_host_name() or socket.gethostname(), os.getpid(), _boot_id())


def owner_is_gone(lease: Row | None, me: Holder, now: float) -> bool:
    """Whether the owner of a ``sending`` row is gone, from its lease (None: released)."""
    if lease is None:
        return True
    if lease["host"] == me.host and me.boot_id:
        if lease["boot_id"] != me.boot_id:
            return True  # the host has restarted since
        # Here a pid says for certain, long before the expiry would.
        return not pid_is_alive(lease["pid"])
    return bool(lease["expires_at"] < now)


class Ledger:
    """The ledger, on a ``Store``. Each call is its own short transaction; one instance may be
    shared by the threads of a process (the store keeps their transactions apart).

    Leases are judged on one clock for every process that shares the state: PostgreSQL's own
    (``clock_timestamp()``, the server's) and, on SQLite, which one machine's processes share,
    the process's clock. ``lease_clock`` replaces either (tests of takeovers on a manual
    clock)."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock | None = None,
        holder: Holder | None = None,
        lease_clock: Clock | None = None,
    ):
        self.store = store
        self.where = store.describe()
        self._clock = clock or SystemClock()
        self._holder = holder or Holder.this_process()
        self._server_leases = lease_clock is None and store.backend == "postgresql"
        self._lease_clock = lease_clock or self._clock
        self._lease_lock = threading.Lock()
        self._lease_id: str | None = None  # taken with the first claim
        try:
            store.migrate("ledger", _MIGRATIONS)
        except BaseException:
            store.close()
            raise

    @classmethod
    def open(cls, location: StateLocation, *, clock: Clock | None = None) -> Ledger:
        return cls(open_store(location, LEDGER_FILENAME, what="ledger", clock=clock), clock=clock)

    def close(self) -> None:
        """Release the lease (rows still ``sending`` are orphans from now on) and disconnect."""
        try:
            if self._lease_id is not None:
                lease_id, self._lease_id = self._lease_id, None
                # A lease that cannot be released now (PostgreSQL lost) expires by itself.
                with suppress(StateUnavailable):
                    self.store.write(
                        lambda session: session.execute(
                            "DELETE FROM leases WHERE lease_id = ?", (lease_id,)
                        ),
                        durable=False,
                    )
        finally:
            self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.store.read(lambda session: session.execute(sql, params).rows)

    # -- the lease ------------------------------------------------------------------------

    @property
    def lease_real_s(self) -> float:
        """How long a lease lasts unless renewed, in real seconds (``HEXDBT_LEASE_TTL_S``)."""
        return resolve_lease_ttl_s() or LEASE_TTL_S

    @property
    def lease_ttl_s(self) -> float:
        """How long a lease lasts unless renewed, in seconds of the leases' clock."""
        return self._lease_s(self.lease_real_s)

    @property
    def holds_lease(self) -> bool:
        return self._lease_id is not None

    def _lease_s(self, real_s: float) -> float:
        """``real_s`` real seconds in the leases' clock's seconds."""
        return real_s if self._server_leases else self._lease_clock.from_real_s(real_s)

    def _lease_now(self, session: Session) -> float:
        """Now on the leases' clock, in a transaction."""
        if not self._server_leases:
            return self._lease_clock.now()
        row = session.execute("SELECT extract(epoch FROM clock_timestamp()) AS now").first()
        assert row is not None
        return float(row["now"])

    def _lease(self, session: Session) -> str:
        """In a write transaction: this process's lease, taken or renewed (for a claim)."""
        with self._lease_lock:
            now = self._lease_now(session)
            if self._lease_id is None:
                self._lease_id = uuid.uuid4().hex
                forgotten_s = self.lease_ttl_s / LEASE_TTL_S * LEASE_FORGOTTEN_AFTER_S
                session.execute("DELETE FROM leases WHERE expires_at < ?", (now - forgotten_s,))
            holder = self._holder
            session.execute(
                "INSERT INTO leases (lease_id, host, pid, boot_id, renewed_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (lease_id) DO UPDATE"
                " SET renewed_at = excluded.renewed_at, expires_at = excluded.expires_at",
                (
                    self._lease_id,
                    holder.host,
                    holder.pid,
                    holder.boot_id,
                    now,
                    now + self.lease_ttl_s,
                ),
            )
            return self._lease_id

    def renew_lease(self) -> None:
        """Renew this process's lease, if it holds one (``engine.lease_keeper`` calls this
        while the engine lives; a lapsed lease is renewed too, but the rows another process
        took over meanwhile stay its)."""
        if self._lease_id is not None:
            self.store.write(self._lease, durable=False)

    # -- invocations ----------------------------------------------------------------------

    def has_invocation(self, invocation_id: str) -> bool:
        rows = self._read("SELECT 1 FROM invocations WHERE invocation_id = ?", (invocation_id,))
        return bool(rows)

    def recent_invocations(
        self, limit: int = 10, *, project_dir: str | None = None
    ) -> list[InvocationRecord]:
        """The newest invocations; with ``project_dir``, only those of that dbt project."""
        where, params = ("WHERE project_dir = ?", (project_dir,)) if project_dir else ("", ())
        rows = self._read(
            "SELECT invocation_id, command, source, first_seen_at, project_dir FROM invocations"
            f" {where} ORDER BY first_seen_at DESC, rowid DESC LIMIT ?",
            (*params, limit),
        )
        return [InvocationRecord(**row) for row in rows]

    def newest_invocation_from(self, source: str) -> InvocationRecord | None:
        """The invocation recorded last with ``source`` (``hexdbt watch`` names its target folder
        there), or None."""
        rows = self._read(
            "SELECT invocation_id, command, source, first_seen_at, project_dir FROM invocations"
            " WHERE source = ? ORDER BY first_seen_at DESC, rowid DESC LIMIT 1",
            (source,),
        )
        return InvocationRecord(**rows[0]) if rows else None

    # -- inputs set aside -------------------------------------------------------------------

    def reject_input(self, source: str, item_id: str, reason: str) -> bool:
        """Set aside a feeder's input that cannot be read. False when it was set aside before
        (by this process or another): it has been reported already."""
        now = self._clock.now()
        added = self.store.write(
            lambda session: session.execute(
                "INSERT INTO rejected_inputs (source, item_id, reason, rejected_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (source, item_id) DO NOTHING",
                (source, item_id, reason, now),
            ),
            durable=False,
        )
        return added.rowcount == 1

    def rejected_inputs(self, source: str) -> dict[str, str]:
        """The inputs of ``source`` set aside: item id -> why."""
        rows = self._read("SELECT item_id, reason FROM rejected_inputs WHERE source = ?", (source,))
        return {row["item_id"]: row["reason"] for row in rows}

    # -- dbt Cloud ------------------------------------------------------------------------

    def record_dbt_cloud_events(self, events: Sequence[DbtCloudEvent]) -> list[bool]:
        """Record webhook events, and with each completed one its run to plan, in one synced
        transaction (deliveries that arrive together share its commit): once this returns, a
        crash loses none. Each answer: False when that event was recorded before (a
        redelivery: nothing more to do)."""
        now = self._clock.now()

        def record(session: Session) -> list[bool]:
            answers = []
            seen: set[str] = set()  # an event delivered twice in one batch is new once
            for event in events:
                if event.event_id in seen:
                    answers.append(False)
                    continue
                seen.add(event.event_id)
                added = session.execute(
                    "INSERT INTO dbt_cloud_events (event_id, event_type, run_id, job_id,"
                    " received_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
                    (event.event_id, event.event_type, event.run_id, event.job_id, now),
                )
                new = added.rowcount == 1 or self._event_recorded_by_me(
                    session, event.event_id, now
                )
                if new and event.run is not None:
                    self._note_run(session, event.run, now)
                answers.append(new)
            return answers

        return self.store.write(record, durable=True)

    def note_dbt_cloud_run(self, run: DbtCloudRunRecord) -> bool:
        """Record an ended run found by polling; False when the ledger knew it already."""
        now = self._clock.now()
        return self.store.write(lambda session: self._note_run(session, run, now), durable=True)

    @staticmethod
    def _note_run(session: Session, run: DbtCloudRunRecord, now: float) -> bool:
        added = session.execute(
            "INSERT INTO dbt_cloud_runs (run_id, job_id, environment_id, status_code, seen_via,"
            " seen_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING",
            (run.run_id, run.job_id, run.environment_id, run.status_code, run.seen_via, now),
        )
        return added.rowcount == 1

    def _event_recorded_by_me(self, session: Session, event_id: str, now: float) -> bool:
        """After a lost connection: whether the event's row is this transaction's own earlier
        attempt, whose commit stood (as ``_recorded_by_me`` for invocations)."""
        if not session.retried:
            return False
        row = session.execute(
            "SELECT received_at FROM dbt_cloud_events WHERE event_id = ?", (event_id,)
        ).first()
        return row is not None and row["received_at"] == now

    def dbt_cloud_runs(self, *, unsettled_only: bool = False) -> list[DbtCloudRunRecord]:
        """The dbt Cloud runs the ledger knows, oldest first; with ``unsettled_only``, those
        still to plan."""
        where = "WHERE settled_at IS NULL" if unsettled_only else ""
        rows = self._read(
            "SELECT run_id, job_id, environment_id, status_code, seen_via, seen_at, settled_at,"
            f" outcome FROM dbt_cloud_runs {where} ORDER BY seen_at, run_id"
        )
        return [DbtCloudRunRecord(**row) for row in rows]

    def known_dbt_cloud_runs(self, run_ids: Collection[str]) -> set[str]:
        """Which of ``run_ids`` the ledger was told of already."""
        if not run_ids:
            return set()
        ids = list(run_ids)
        rows = self._read(
            f"SELECT run_id FROM dbt_cloud_runs WHERE run_id IN ({', '.join('?' * len(ids))})",
            ids,
        )
        return {row["run_id"] for row in rows}

    def settle_dbt_cloud_run(self, run_id: str, outcome: str) -> bool:
        """Say what became of a run (planned, or why not), once: False when another process
        settled it first."""
        now = self._clock.now()
        settled = self.store.write(
            lambda session: session.execute(
                "UPDATE dbt_cloud_runs SET settled_at = ?, outcome = ?"
                " WHERE run_id = ? AND settled_at IS NULL",
                (now, outcome, run_id),
            ),
            durable=False,
        )
        return settled.rowcount == 1

    def handle_dbt_cloud_steps(
        self, run_id: str, source: str, steps: Sequence[tuple[str, str, int]]
    ) -> list[str]:
        """Record each step's dbt invocation (id, command, step index) as handled by the dbt Cloud
        run, so that the on-run-end hook's relay, seeing the same invocations, starts nothing.
        Returns the ids another way in had recorded first (then that way in has the run)."""
        now = self._clock.now()

        def handle(session: Session) -> list[str]:
            taken = []
            for invocation_id, command, step in steps:
                session.execute(
                    "INSERT INTO invocations (invocation_id, command, source, first_seen_at,"
                    " dbt_cloud_run_id, dbt_cloud_step) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (invocation_id) DO NOTHING",
                    (invocation_id, command, source, now, run_id, step),
                )
                row = session.execute(
                    "SELECT dbt_cloud_run_id FROM invocations WHERE invocation_id = ?",
                    (invocation_id,),
                ).first()
                if row is None or row["dbt_cloud_run_id"] != run_id:
                    taken.append(invocation_id)
            return taken

        return self.store.write(handle, durable=False)

    def dbt_cloud_polling_since(self, account_id: str) -> tuple[float, bool]:
        """When polling of ``account_id`` first started (by any process), and whether that is
        now (this call started it): runs that ended before it are not taken by polling."""
        now = self._clock.now()

        def since(session: Session) -> tuple[float, bool]:
            added = session.execute(
                "INSERT INTO dbt_cloud_polling (account_id, started_at) VALUES (?, ?)"
                " ON CONFLICT (account_id) DO NOTHING",
                (account_id, now),
            )
            row = session.execute(
                "SELECT started_at FROM dbt_cloud_polling WHERE account_id = ?", (account_id,)
            ).first()
            assert row is not None  # inserted just now, or before
            return float(row["started_at"]), added.rowcount == 1

        return self.store.write(since, durable=False)

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
        project_dir: str | None = None,
        skipped: Sequence[PlanSkip] = (),
    ) -> tuple[list[TriggerRecord], set[str]] | None:
        """Record an invocation and its triggers as planned, in one transaction (a key already in
        the ledger keeps its row and its state), and in the same transaction claim the keys in
        ``claim``: ``sending``, owned by this process, not yet armed. Nothing may be sent before
        ``arm``, whose commit is the one synced before a POST; this one needs none (a plan lost
        with the machine is planned again from dbt's artifacts). A new trigger of a coalescing
        entry supersedes the entry's triggers that wait unsent. ``skipped``: the plan's entries
        not triggered, kept with the invocation (the first plan recorded of an invocation keeps
        them). Returns the records and the keys
        this call claimed (a row someone else holds is left alone); None, recording nothing,
        when ``only_new_invocation`` and the ledger has the invocation."""
        now = self._clock.now()

        def plan(session: Session) -> tuple[list[TriggerRecord], set[str]] | None:
            inserted = session.execute(
                "INSERT INTO invocations (invocation_id, command, source, first_seen_at,"
                " project_dir) VALUES (?, ?, ?, ?, ?) ON CONFLICT (invocation_id) DO NOTHING",
                (invocation_id, command, source, now, project_dir),
            )
            if (
                only_new_invocation
                and inserted.rowcount == 0
                and not self._recorded_by_me(session, invocation_id, now)
            ):
                return None
            if skipped:
                session.executemany(
                    "INSERT INTO plan_skips (invocation_id, position, name, project_id, reason,"
                    " is_error) VALUES (?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (invocation_id, position) DO NOTHING",
                    [
                        (
                            invocation_id,
                            position,
                            skip.name,
                            skip.project_id,
                            skip.reason,
                            int(skip.is_error),
                        )
                        for position, skip in enumerate(skipped)
                    ],
                )
            for trigger in triggers:
                added = session.execute(
                    "INSERT INTO triggers (trigger_key, invocation_id, name, project_id,"
                    " base_url, request_json, options_json, state, created_at, updated_at,"
                    " entry_key, coalescing, models_json, unserved_since, plan_reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (trigger_key) DO NOTHING",
                    (
                        trigger.trigger_key,
                        invocation_id,
                        trigger.name,
                        trigger.project_id,
                        trigger.base_url,
                        json.dumps(trigger.request, sort_keys=True),
                        trigger.options.to_json(),
                        TriggerState.PLANNED.value,
                        now,
                        now,
                        trigger.entry_key,
                        int(trigger.coalesce),
                        json.dumps(list(trigger.models)),
                        now,
                        trigger.plan_reason,
                    ),
                )
                # Only a trigger new to the ledger supersedes: planning an invocation again
                # (a second hexdbt run on the same build) must not take over a later build's.
                if trigger.coalesce and added.rowcount == 1:
                    self._supersede_older(session, trigger, invocation_id, now)
            claimed = {key for key in claim if self._claim(session, key, now)}
            keys = [trigger.trigger_key for trigger in triggers]
            if not keys:  # an invocation that triggers nothing (PostgreSQL refuses "IN ()")
                return [], claimed
            rows = session.execute(
                f"SELECT * FROM triggers WHERE trigger_key IN ({', '.join('?' * len(keys))})",
                keys,
            ).rows
            # Read in the transaction: a row that cannot be read undoes the claims.
            by_key = {row["trigger_key"]: _trigger_from_row(row, self.where) for row in rows}
            return [by_key[key] for key in keys], claimed

        return self.store.write(plan, durable=False)

    def _supersede_older(
        self, session: Session, newer: NewTrigger, invocation_id: str, now: float
    ) -> None:
        """In a write transaction: the triggers of ``newer``'s entry that wait unsent are
        superseded by it, and it inherits the oldest refresh they stood for. Each is a move
        guarded by state as a claim is: a row claimed first is sent, never superseded too."""
        transition = ALLOWED_MOVES[Move.SUPERSEDE]
        sources = sorted(state.value for state in transition.sources)
        waiting = session.execute(
            "SELECT trigger_key, unserved_since, created_at FROM triggers"
            " WHERE entry_key = ? AND coalescing = 1 AND base_url = ? AND trigger_key <> ?"
            f" AND state IN ({', '.join('?' * len(sources))})",
            (newer.entry_key, newer.base_url, newer.trigger_key, *sources),
        ).rows
        reason = f"superseded by dbt invocation {invocation_id}: its run covers this build too"
        oldest = now
        for row in waiting:
            if self._move(
                session,
                row["trigger_key"],
                Move.SUPERSEDE,
                now,
                superseded_by=newer.trigger_key,
                reason=reason,
                ended_at=now,
            ):
                oldest = min(oldest, row["unserved_since"] or row["created_at"])
        if oldest < now:
            session.execute(
                "UPDATE triggers SET unserved_since = ? WHERE trigger_key = ?",
                (oldest, newer.trigger_key),
            )

    def supersede(self, trigger_key: str, *, by: str, reason: str) -> TriggerRecord:
        """Mark a trigger that waits unsent as taken over by the trigger ``by`` (planning a later
        build does this itself, in ``plan_and_claim``)."""
        return self._make(
            trigger_key,
            Move.SUPERSEDE,
            superseded_by=by,
            reason=reason,
            ended_at=self._clock.now(),
        )

    def _recorded_by_me(self, session: Session, invocation_id: str, now: float) -> bool:
        """After a lost connection: whether the invocation's row is this transaction's own
        earlier attempt, whose commit stood."""
        if not session.retried:
            return False
        row = session.execute(
            "SELECT first_seen_at FROM invocations WHERE invocation_id = ?", (invocation_id,)
        ).first()
        return row is not None and row["first_seen_at"] == now

    def get(self, trigger_key: str) -> TriggerRecord:
        rows = self._read("SELECT * FROM triggers WHERE trigger_key = ?", (trigger_key,))
        if not rows:
            raise self._no_trigger(trigger_key)
        return _trigger_from_row(rows[0], self.where)

    def claim_for_sending(
        self,
        trigger_key: str,
        *,
        hex_clock_offset_s: float | None = None,
        window_s: float | None = None,
        post_takes_s: float | None = None,
    ) -> TriggerRecord | None:
        """Claim a sendable row and arm it, in one synced transaction: what a trigger sent now
        that was not claimed with its plan needs before its POST. None when the row is not
        sendable (someone else has it)."""
        now = self._clock.now()
        arming = _Arming(hex_clock_offset_s, window_s, post_takes_s)

        def claim_and_arm(session: Session) -> TriggerRecord | None:
            if not self._claim(session, trigger_key, now):
                return None
            fence = self._row(session, trigger_key)["fence"]
            return self._arm(session, trigger_key, fence, now, arming)

        return self.store.write(claim_and_arm)

    def arm(
        self,
        trigger_key: str,
        *,
        fence: int,
        hex_clock_offset_s: float | None = None,
        window_s: float | None = None,
        post_takes_s: float | None = None,
    ) -> TriggerRecord | None:
        """Arm a row this process claimed, right before its POST, in one synced transaction:
        the intent's time, a raised fence, and when the POST can no longer be in flight
        (``window_s`` after the intent, by the sender's timeouts; ``hex_clock_offset_s``: Hex's
        clock minus ours, when an answer has told it). Only while the row is still ``sending``,
        this process's, at ``fence``, and its lease has not lapsed on the leases' clock. The
        lease must outlast the POST (``post_takes_s`` real seconds at most) with a margin: it
        is renewed with the arm when it would not (always, without ``post_takes_s``). None when
        any of that fails: then nothing may be sent."""
        now = self._clock.now()
        arming = _Arming(hex_clock_offset_s, window_s, post_takes_s)
        return self.store.write(lambda session: self._arm(session, trigger_key, fence, now, arming))

    def _arm(
        self, session: Session, trigger_key: str, fence: int, now: float, arming: _Arming
    ) -> TriggerRecord | None:
        lease = session.execute(
            "SELECT expires_at FROM leases WHERE lease_id = ?", (self._lease_id,)
        ).first()
        lease_now = self._lease_now(session)
        if lease is None or lease["expires_at"] <= lease_now:
            return None  # lapsed: another process may be taking its rows over right now
        window_s = arming.window_s
        armed = session.execute(
            "UPDATE triggers SET fence = fence + 1, intent_at = ?, window_closes_at = ?,"
            " hex_clock_offset_s = ?, updated_at = ?"
            " WHERE trigger_key = ? AND state = ? AND owner_lease = ? AND fence = ?",
            (
                now,
                None if window_s is None else now + window_s,
                arming.hex_clock_offset_s,
                now,
                trigger_key,
                TriggerState.SENDING.value,
                self._lease_id,
                fence,
            ),
        )
        if armed.rowcount != 1:
            row = self._row(session, trigger_key)
            # An earlier attempt of this transaction whose commit stood (its answer was lost).
            mine = row["owner_lease"] == self._lease_id and row["fence"] == fence + 1
            if not (session.retried and mine and row["intent_at"] == now):
                return None
        # The self-fence: the POST ends inside the lease that allowed it.
        needed = None if arming.post_takes_s is None else arming.post_takes_s + SELF_FENCE_MARGIN_S
        if needed is None or lease["expires_at"] - lease_now <= self._lease_s(needed):
            self._lease(session)
        return _trigger_from_row(self._row(session, trigger_key), self.where)

    def take_over_orphan(self, trigger_key: str) -> TriggerRecord | None:
        """Adopt a ``sending`` row whose owner is gone, so this process reconciles it (or, when
        it was never armed, sends it). None when the row is no longer ``sending``, its owner
        lives, or it was armed meanwhile."""
        now = self._clock.now()

        def take(session: Session) -> TriggerRecord | None:
            row = self._row(session, trigger_key)
            owner = row["owner_lease"]
            # A row of this very ledger (an earlier engine of this process left it) is ours.
            if owner is not None and owner != self._lease_id:
                lease = session.execute(
                    "SELECT host, pid, boot_id, expires_at FROM leases WHERE lease_id = ?",
                    (owner,),
                ).first()
                if not owner_is_gone(lease, self._holder, self._lease_now(session)):
                    return None
            # Guarded by the owner and fence read above: of two processes adopting at once one
            # wins, and an owner that woke up and armed it first keeps it.
            moved = self._move(
                session,
                trigger_key,
                Move.TAKE_OVER_ORPHAN,
                now,
                owner=owner,
                fence=row["fence"],
                owner_lease=self._lease(session),
            )
            return _trigger_from_row(self._row(session, trigger_key), self.where) if moved else None

        return self.store.write(take)

    def successor_of(self, record: TriggerRecord) -> TriggerRecord:
        """The trigger that stands for a superseded one now: the end of its ``superseded_by``
        chain (the record itself when it was not superseded)."""
        seen = {record.trigger_key}
        while record.superseded_by is not None:
            record = self.get(record.superseded_by)
            if record.trigger_key in seen:  # cannot be written, but must not hang a reader
                raise _unreadable(self.where, record.trigger_key, "its supersede chain loops")
            seen.add(record.trigger_key)
        return record

    def sends_of_entries(self, entry_keys: Collection[str], base_url: str) -> dict[str, EntrySends]:
        """For each mapping entry that has sent anything to ``base_url``: when its newest send
        started (its intent)."""
        if not entry_keys:
            return {}
        marks = ", ".join("?" * len(entry_keys))
        rows = self._read(
            "SELECT entry_key, max(intent_at) AS last_sent_at"
            f" FROM triggers WHERE entry_key IN ({marks}) AND base_url = ?"
            " AND state IN ('sending', 'started', 'ended') GROUP BY entry_key",
            (*entry_keys, base_url),
        )
        return {row["entry_key"]: EntrySends(row["last_sent_at"]) for row in rows}

    def demand_since(self, since: float, base_url: str) -> Demand:
        """The triggers planned for ``base_url`` since ``since`` (superseded ones too): the
        demand on Hex's budget."""
        rows = self._read(
            "SELECT entry_key, count(*) AS planned FROM triggers"
            " WHERE created_at >= ? AND base_url = ? GROUP BY entry_key",
            (since, base_url),
        )
        entries = frozenset(row["entry_key"] for row in rows if row["entry_key"] is not None)
        repeated = any(row["planned"] > 1 for row in rows if row["entry_key"] is not None)
        return Demand(sum(int(row["planned"]) for row in rows), entries, repeated)

    def newest_per_entry(self) -> list[TriggerRecord]:
        """The newest trigger of every mapping entry in the ledger."""
        rows = self._read(
            "SELECT t.* FROM triggers t JOIN (SELECT entry_key, max(created_at) AS newest"
            " FROM triggers WHERE entry_key IS NOT NULL GROUP BY entry_key) n"
            " ON t.entry_key = n.entry_key AND t.created_at = n.newest ORDER BY t.name"
        )
        newest = {row["entry_key"]: _trigger_from_row(row, self.where) for row in rows}
        return list(newest.values())

    def count_in_state(self, state: TriggerState) -> int:
        rows = self._read("SELECT count(*) AS rows FROM triggers WHERE state = ?", (state.value,))
        return int(rows[0]["rows"])

    def newest_of_entry(self, entry_key: str) -> TriggerRecord | None:
        """The newest trigger of a mapping entry, whatever its state."""
        rows = self._read(
            "SELECT * FROM triggers WHERE entry_key = ? ORDER BY created_at DESC, rowid DESC"
            " LIMIT 1",
            (entry_key,),
        )
        return _trigger_from_row(rows[0], self.where) if rows else None

    def owner_of(self, record: TriggerRecord) -> str:
        """Who holds a ``sending`` row, for messages: ``host pid N`` (or "nobody")."""
        if record.owner_lease is None:
            return "nobody"
        rows = self._read("SELECT host, pid FROM leases WHERE lease_id = ?", (record.owner_lease,))
        return f"{rows[0]['host']} pid {rows[0]['pid']}" if rows else "a process that has ended"

    # A move out of ``sending`` names the fence it holds (the claim's, or its arm's): it is
    # refused unless the row is still this process's at that fence.

    def mark_started(
        self,
        trigger_key: str,
        *,
        fence: int,
        run_id: str,
        run_url: str | None,
        trace_id: str | None,
    ) -> TriggerRecord:
        return self._make(
            trigger_key,
            Move.MARK_STARTED,
            fence=fence,
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
        self, trigger_key: str, *, fence: int, reason: str, trace_id: str | None = None
    ) -> TriggerRecord:
        return self._make(
            trigger_key,
            Move.MARK_FAILED,
            fence=fence,
            reason=reason,
            trace_id=trace_id,
            ended_at=self._clock.now(),
        )

    def mark_ambiguous(self, trigger_key: str, *, fence: int, reason: str) -> TriggerRecord:
        return self._make(
            trigger_key, Move.MARK_AMBIGUOUS, fence=fence, reason=reason, ended_at=self._clock.now()
        )

    def mark_queued(self, trigger_key: str, *, deadline_at: float, reason: str) -> TriggerRecord:
        return self._make(trigger_key, Move.MARK_QUEUED, deadline_at=deadline_at, reason=reason)

    def mark_expired(self, trigger_key: str, *, reason: str) -> TriggerRecord:
        return self._make(trigger_key, Move.MARK_EXPIRED, reason=reason, ended_at=self._clock.now())

    def release(self, trigger_key: str, *, fence: int, reason: str) -> TriggerRecord:
        """Give a claimed trigger back: nothing was sent (interrupted before the POST, 429, 503,
        never armed), or reconciling found that Hex started no run."""
        return self._make(
            trigger_key,
            Move.RELEASE,
            fence=fence,
            reason=reason,
            owner_lease=None,
            intent_at=None,
            hex_clock_offset_s=None,
            window_closes_at=None,
        )

    def reopen_ambiguous(self, trigger_key: str) -> TriggerRecord:
        """The user asked to send an ambiguous trigger again (``--resend-ambiguous``)."""
        return self._make(
            trigger_key, Move.REOPEN_AMBIGUOUS, reason=None, ended_at=None, owner_lease=None
        )

    def _claim(self, session: Session, trigger_key: str, now: float) -> bool:
        """In a write transaction: make a sendable row ``sending``, owned by this process and
        not armed (no intent: until it is armed, nothing can have been sent)."""
        return self._move(
            session,
            trigger_key,
            Move.CLAIM_FOR_SENDING,
            now,
            owner_lease=self._lease(session),
            intent_at=None,
            hex_clock_offset_s=None,
            window_closes_at=None,
        )

    def _make(
        self, trigger_key: str, move: Move, *, fence: int | None = None, **fields: Any
    ) -> TriggerRecord:
        """Make ``move`` on a row, setting ``fields`` too (a move out of ``sending`` only while
        the row is this process's at ``fence``); a MoveRefusedError when the row is in a state
        the move does not start from, or another process holds it now."""
        now = self._clock.now()
        owner = self._lease_id if fence is not None else None

        def make(session: Session) -> TriggerRecord:
            if not self._move(session, trigger_key, move, now, owner=owner, fence=fence, **fields):
                raise self._refused(self._row(session, trigger_key), move)
            return _trigger_from_row(self._row(session, trigger_key), self.where)

        return self.store.write(make)

    def _refused(self, row: Row, move: Move) -> MoveRefusedError:
        transition = ALLOWED_MOVES[move]
        state = _state_of(row, self.where)
        what = f"trigger {row['name']} ({row['trigger_key']}) from {state} to {transition.target}"
        if state in transition.sources:
            return MoveRefusedError(
                f"the ledger {self.where} refuses to move {what}: another process took it"
                " over after this one's lease lapsed",
                hint="that process sends or follows it now; hexdbt status shows it",
            )
        sources = " or ".join(sorted(transition.sources))
        return MoveRefusedError(
            f"the ledger {self.where} refuses to move {what} ({move} moves only {sources}"
            " triggers)",
            hint="another hexdbt process may have moved it first; hexdbt status shows it",
        )

    def _move(
        self,
        session: Session,
        trigger_key: str,
        move: Move,
        now: float,
        *,
        owner: str | None = None,
        fence: int | None = None,
        **fields: Any,
    ) -> bool:
        """In a write transaction: make ``move`` on a row in one UPDATE guarded by the states it
        starts from and, when ``fence`` is given, by the owner and fence the caller holds (or,
        taking over an orphan, saw). False, changing nothing, when the row is in another state
        or held by another."""
        transition = ALLOWED_MOVES[move]
        changes = {"state": transition.target.value, **fields, "updated_at": now}
        sources = sorted(state.value for state in transition.sources)
        guard = f"state IN ({', '.join('?' * len(sources))})"
        params: list[Any] = [*changes.values(), trigger_key, *sources]
        if fence is not None:
            guard += " AND coalesce(owner_lease, '') = ? AND fence = ?"
            params += [owner or "", fence]
        changed = session.execute(
            f"UPDATE triggers SET {', '.join(f'{column} = ?' for column in changes)}"
            f" WHERE trigger_key = ? AND {guard}",
            params,
        )
        if changed.rowcount == 1:
            return True
        row = self._row(session, trigger_key)  # no such row is an error, not a refusal
        # An earlier attempt of this transaction whose commit stood (its answer was lost).
        return (
            session.retried
            and row["updated_at"] == now
            and row["state"] == transition.target.value
            and row["owner_lease"] == changes.get("owner_lease", row["owner_lease"])
        )

    def _row(self, session: Session, trigger_key: str) -> Row:
        row = session.execute(
            "SELECT * FROM triggers WHERE trigger_key = ?", (trigger_key,)
        ).first()
        if row is None:
            raise self._no_trigger(trigger_key)
        return row

    def _no_trigger(self, trigger_key: str) -> StateError:
        return StateError(f"the ledger {self.where} has no trigger {trigger_key}")

    def record_stray(
        self, record: TriggerRecord, *, run_id: str, run_url: str | None, fate: str
    ) -> None:
        """Record a run this process started for ``record`` after another had taken the trigger
        over (see ``StrayRun``), and what was done about it (``fate``)."""
        now = self._clock.now()
        self.store.write(
            lambda session: session.execute(
                "INSERT INTO stray_runs (run_id, trigger_key, project_id, run_url, found_at, fate)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO UPDATE SET fate = excluded.fate",
                (run_id, record.trigger_key, record.project_id, run_url, now, fate),
            )
        )

    def stray_runs(self) -> list[StrayRun]:
        rows = self._read(
            "SELECT run_id, trigger_key, project_id, run_url, found_at, fate FROM stray_runs"
            " ORDER BY found_at, run_id"
        )
        return [StrayRun(**row) for row in rows]

    def triggers_of(self, invocation_id: str) -> list[TriggerRecord]:
        rows = self._read(
            "SELECT * FROM triggers WHERE invocation_id = ? ORDER BY created_at, rowid",
            (invocation_id,),
        )
        return [_trigger_from_row(row, self.where) for row in rows]

    def run_ids_of_project(self, project_id: str) -> set[str]:
        """Every Hex run id the ledger has recorded for a project, strays too (to tell ours from
        others')."""
        rows = self._read(
            "SELECT run_id FROM triggers WHERE project_id = ? AND run_id IS NOT NULL"
            " UNION SELECT run_id FROM stray_runs WHERE project_id = ?",
            (project_id, project_id),
        )
        return {row["run_id"] for row in rows}

    def select_triggers(self, clause: str, params: Sequence[Any] = ()) -> list[TriggerRecord]:
        """The triggers (table alias ``t``) that ``clause`` (a JOIN, a WHERE, an ORDER BY)
        selects: for read models such as the status page. ``clause`` is hexdbt's own SQL, never
        a user's text; values go in ``params``."""
        rows = self._read(f"SELECT t.* FROM triggers t {clause}", params)
        return [_trigger_from_row(row, self.where) for row in rows]

    def in_state(self, *states: TriggerState) -> list[TriggerRecord]:
        rows = self._read(
            f"SELECT * FROM triggers WHERE state IN ({', '.join('?' * len(states))})"
            " ORDER BY created_at, rowid",
            tuple(state.value for state in states),
        )
        return [_trigger_from_row(row, self.where) for row in rows]
