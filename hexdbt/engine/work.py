"""What the engine holds in hand, shared by its parts: its settings, what it works with (the
client, the ledger, the clock, the runs followed) and what it has lined up, started, lost or
interrupted. One object, handed to each part (``inbox``, ``send_policy``, ``line_up``,
``sender``, ``lost_posts``, ``following``, ``state_outage``, ``wind_down``): they share it
rather than reaching into each other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hexdbt.clock import Clock
from hexdbt.engine.send_order import AGING_S, VIEWS_MAX_AGE_S
from hexdbt.errors import HexdbtError, MoveRefusedError, StateUnavailable
from hexdbt.hex.budget import CallKind, Slot
from hexdbt.hex.client import HexClient
from hexdbt.hex.models import Run
from hexdbt.hex.polls import Polls, RunEnd
from hexdbt.ledger import Ledger, TriggerRecord

Log = Callable[[str], None]

# A RunProject that provably never reached Hex is tried again this many times (with backoff);
# a cancel on timeout that fails, as many.
UNREACHABLE_ATTEMPTS = 2


@dataclass(frozen=True, slots=True)
class EngineSettings:
    wait: bool = True
    # Hex allows 25 live kernels per user, UI included: stay well under.
    max_live_runs: int = 10
    # A trigger that has not fitted the budget this long after it was planned is reported expired.
    queue_deadline_s: float = 6 * 3600
    # With --no-wait: send what fits the budget within this, queue the rest for a later process.
    no_wait_send_window_s: float = 60.0
    resend_ambiguous: bool = False
    cancel_on_interrupt: bool = True
    # Cancelling the runs this process started, once stopped, takes at most this, all together.
    cancel_budget_s: float = 10.0
    # After a 503 (no free kernel) or a POST that provably never left.
    retry_later_s: float = 60.0
    # How often a trigger another live process is sending is looked at again in the ledger.
    elsewhere_check_s: float = 5.0
    # A daemon (watch) lives on: every resume_every_s it takes up what other processes queued
    # and the runs whose polling gave up, and an error in a turn (a full disk, a bug) is logged
    # and the engine starts afresh from the ledger, instead of ending.
    daemon: bool = False
    resume_every_s: float = 60.0
    # A plan whose recording failed (a full disk) is tried again this often, this many times.
    submit_retry_s: float = 5.0
    submit_attempts: int = 5
    # How long after a RunProject's read deadline Hex may still create its run (seconds of the
    # clock); None: HEXDBT_WINDOW_MARGIN_S, else reconcile's default.
    window_margin_s: float | None = None
    # When more triggers wait than the budget sends: one priority level per this much of an
    # app's unserved age, and Hex's views of the apps read at most this often (send_order).
    aging_s: float = AGING_S
    app_views_max_age_s: float = VIEWS_MAX_AGE_S
    # A one-shot command goes on this long (real seconds) without its state (PostgreSQL lost),
    # following its runs, before it stops with exit 7; a daemon goes on until the state is back.
    state_outage_limit_s: float = 60.0


@dataclass
class Pending:
    """A trigger this process means to send (or, with ``reconcile``, to look up in Hex).

    ``claimed``: claimed with its plan (the intent is committed), with the RunProject ``slot``
    taken for it; sent first. ``own_intent``: a look-up of a POST this process sent itself (its
    clock is the intent's). ``unreachable``: how many times its POST provably never reached
    Hex. ``lookups_failed``: how many requests for its lost POST's run list Hex failed.
    ``told``: the causes of waiting the log has named for it."""

    record: TriggerRecord
    not_before: float = 0.0
    claimed: bool = False
    slot: Slot | None = None
    reconcile: bool = False
    own_intent: bool = False
    unreachable: int = 0
    lookups_failed: int = 0
    told: set[str] = field(default_factory=set)


class NoSlot(Exception):
    """Hex's budget for other calls has no slot now: come back at ``free_at``."""

    def __init__(self, free_at: float) -> None:
        super().__init__(f"no budget slot before {free_at}")
        self.free_at = free_at


@dataclass
class Cancel:
    """A run past its timeout, to cancel on a budget slot of the engine's own."""

    end: RunEnd
    attempts: int = 0
    not_before: float = 0.0


@dataclass
class Work:
    """The engine's state, shared by its parts (all on the engine's thread but ``wake`` and
    ``stopping``)."""

    client: HexClient
    ledger: Ledger
    settings: EngineSettings
    polls: Polls
    log: Log
    # How long a POST of this process may be in flight (``reconcile``'s window).
    window_s: float
    # Set by request_stop (and by a signal, through the client's stop event).
    stopping: threading.Event
    # New work has come (a submission, a resume, close or stop): the loop's sleep ends.
    wake: threading.Event = field(default_factory=threading.Event)
    pending: list[Pending] = field(default_factory=list)
    elsewhere: dict[str, float] = field(default_factory=dict)  # trigger key -> next look at it
    run_keys: dict[str, str] = field(default_factory=dict)  # run id -> trigger key, all followed
    started_here: set[str] = field(default_factory=set)
    lost: dict[str, str] = field(default_factory=dict)  # trigger key -> why polling gave up
    cancels: list[Cancel] = field(default_factory=list)
    interrupted: dict[str, str] = field(default_factory=dict)  # trigger key -> what stop did
    next_resume: float = float("inf")
    # While the state cannot be reached (``state_outage``): since when, and the run ends seen
    # meanwhile.
    state_lost_since: float | None = None
    unrecorded_ends: list[RunEnd] = field(default_factory=list)
    # Runs started while the state was lost: recorded, before their ends, once it is back.
    unrecorded_starts: list[tuple[TriggerRecord, Run]] = field(default_factory=list)

    @property
    def clock(self) -> Clock:
        return self.client.clock

    def should_wait(self, record: TriggerRecord) -> bool:
        return self.settings.wait and record.options.wait

    def lose_state(self, exc: StateUnavailable) -> None:
        """The state cannot be reached: follow the live runs meanwhile and send nothing. What was
        lined up to send is forgotten; the ledger has it (a claim stays ``sending`` under this
        process's lease and is looked up in Hex once the state is back, since the lease may have
        expired meanwhile and another host taken it over)."""
        if self.state_lost_since is not None:
            return
        self.state_lost_since = self.clock.now()
        self.pending = []
        self.log(
            f"{exc}; following the {len(self.polls)} live runs meanwhile, sending nothing"
            " until the state is back"
        )

    def move(
        self, record: TriggerRecord, move: Callable[..., TriggerRecord], **fields: object
    ) -> TriggerRecord:
        """Move a ``sending`` row this process holds at ``record``'s fence. Another process may
        have taken it over first (this one stalled past its lease): then its row stands."""
        try:
            return move(record.trigger_key, fence=record.fence, **fields)
        except MoveRefusedError:
            return self.ledger.get(record.trigger_key)

    def record_quietly(self, write: Callable[[], object]) -> None:
        """A ledger write while winding down: a failure is logged, the wind-down goes on."""
        try:
            write()
        except HexdbtError as exc:
            self.log(f"cannot record the interruption in the ledger: {exc}")

    def other_slot(self) -> Slot | None:
        """A slot of Hex's budget for a call other than RunProject, taken now (None: no budget
        is kept); ``NoSlot`` when none is free: the engine never waits for one in the client."""
        budget = self.client.budget
        if budget is None:
            return None
        taken = budget.take_now(CallKind.OTHER, 1)
        if not taken:
            raise NoSlot(budget.next_slot_at(CallKind.OTHER))
        return taken[0]

    def give_back(self, slots: Sequence[Slot | None]) -> None:
        budget = self.client.budget
        if budget is not None:
            budget.give_back([slot for slot in slots if slot is not None])
