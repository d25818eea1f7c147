"""The engine: the one loop that sends triggers, follows their runs and records everything.

Every way in (``hexdbt run``, the dbt wrapper, the dbtRunner callback, ``hexdbt watch``,
``hexdbt trigger`` and the Python API) hands the engine plans through ``submit``, from any thread,
and reads outcomes back; the engine's own thread (``run``) does all the rest, in one loop on one
clock: it records plans in the ledger, sends what the budget allows, polls what is due, and ends
when it is closed and idle, or within a second of ``request_stop``, whatever it waits on.

For every trigger the ledger row decides what happens, so a crash, a retry or a second process
never starts a Hex project twice for one key:

- ``started`` (a run id is known): follow that run; never post again;
- ``sending`` whose owner is gone (its POST's answer may be lost): ``find_run_of_lost_post``
  decides, once the POST can no longer be in flight; ``sending`` owned by another live process:
  followed through the ledger until it has a run (or is given back);
- ``planned`` / ``queued``: sent when the RunProject budget has a slot and fewer than
  ``max_live_runs`` runs are followed. A trigger that can go at once is claimed in the
  transaction that records it: one synced commit stands between dbt's artifacts and its POST.
  The engine takes each call's budget slot itself (``take_now``) and never waits in the client:
  a 429 or 503 requeues the trigger for the moment the budget allows, a trigger that cannot go
  before its deadline stays queued in the ledger and is reported. When several wait, the highest
  ranked goes first (``send_order``: priority, Hex's views, unserved age); an app's
  ``min_interval`` holds its trigger back, and under overload sends keep the budget's sustained
  pace;
- ``superseded`` (a later build's trigger of the same mapping entry took it over before it was
  sent): a waiting caller follows the trigger that superseded it, and reports that run's outcome;
- ended, failed, expired, ambiguous: reported as they are.

When the state cannot be reached (PostgreSQL lost), nothing is sent: the runs followed are still
polled and their ends kept until the state is back (``_turn_without_state``).

Once stop is requested nothing more is sent. Runs this process started are cancelled (when asked)
within ``cancel_budget_s`` as a whole, triggers claimed and not sent are given back to the queue,
and every open run is reported ``interrupted``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass, field, replace
from functools import partial

from hexdbt.clock import Clock
from hexdbt.crashpoints import crash_point
from hexdbt.engine.lease_keeper import LeaseKeeper
from hexdbt.engine.reconcile import WINDOW_MARGIN_S, find_run_of_lost_post, window_closes_at
from hexdbt.engine.records import new_trigger, outcome_of, plan_skip, skipped_outcomes
from hexdbt.engine.send_order import AGING_S, VIEWS_MAX_AGE_S, AppViews, send_rank
from hexdbt.errors import (
    ConfigError,
    HexAmbiguousRunError,
    HexApiError,
    HexdbtError,
    HexRateLimitedError,
    HexRejectedError,
    HexTransportError,
    HexUnavailableError,
    Interrupted,
    MoveRefusedError,
    StateError,
    StateUnavailable,
)
from hexdbt.hex.budget import CallKind, Slot
from hexdbt.hex.client import HexClient, backoff_delay_s, run_may_have_started
from hexdbt.hex.models import Run, RunRequest
from hexdbt.hex.polls import Polls, RunEnd, WaitCause, WatchedRun
from hexdbt.ledger import Demand, Ledger, NewTrigger, TriggerRecord, TriggerState
from hexdbt.outcomes import Outcome, OutcomeKind
from hexdbt.planner.rules import Plan, Skipped, Trigger
from hexdbt.settings import LEASE_TTL_ENV, resolve_unfenced, resolve_window_margin_s

Log = Callable[[str], None]
Records = list[TriggerRecord] | None

# The longest the loop sleeps without looking at the stop event.
STOP_CHECK_S = 1.0
# Without the state, it is tried again this often (the store backs off its reconnects itself).
STATE_RETRY_S = 1.0
# A RunProject that provably never reached Hex is tried again this many times (with backoff).
UNREACHABLE_ATTEMPTS = 2
# A lost POST's run list that Hex fails to give (5xx, 429, no answer) is looked up this many
# times, each as many requests as the client tries a GET (one per budget slot of the engine's),
# before the trigger is reported ambiguous. Twice: one failed look-up is no longer a final
# verdict, and a silent Hex still ends the command soon.
LOOKUP_ATTEMPTS = 2
# While more triggers were planned in this long than Hex's budget runs in it, some app more than
# once, sends are paced at the budget's sustained rate.
DEMAND_WINDOW_S = 3600.0
# How often the engine looks at the demand on the budget again.
OVERLOAD_CHECK_S = 60.0
# While a lost POST may still be in flight, Hex's run list is looked at again this often (seconds
# of the clock): a run Hex creates just after the read timeout is adopted then, not at the close.
LOOKUP_AGAIN_S = 10.0


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
class _Pending:
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


class _NoSlot(Exception):
    """Hex's budget for other calls has no slot now: come back at ``free_at``."""

    def __init__(self, free_at: float) -> None:
        super().__init__(f"no budget slot before {free_at}")
        self.free_at = free_at


@dataclass
class _Cancel:
    """A run past its timeout, to cancel on a budget slot of the engine's own."""

    end: RunEnd
    attempts: int = 0
    not_before: float = 0.0


@dataclass(frozen=True, slots=True)
class _Hold:
    """Until when a trigger waits, and whether it is a re-run that keeps the overload's pace."""

    until: float
    paced: bool


@dataclass
class _Submission:
    invocation_id: str
    command: str
    source: str
    triggers: Sequence[Trigger]
    only_new: bool
    project_dir: str | None
    skipped: Sequence[Skipped] = ()
    result: Future[Records] = field(default_factory=Future)
    attempts: int = 0
    not_before: float = 0.0


@dataclass
class _Resume:
    result: Future[list[TriggerRecord]] = field(default_factory=Future)


class Engine:
    def __init__(
        self,
        client: HexClient,
        ledger: Ledger,
        *,
        settings: EngineSettings | None = None,
        polls: Polls | None = None,
        log: Log | None = None,
    ) -> None:
        self.client = client
        self.ledger = ledger
        self.settings = settings or EngineSettings()
        self.clock: Clock = client.clock
        # The runs followed, with their schedule and progress display (none by default).
        self.polls = polls if polls is not None else Polls(client)
        self._log: Log = log or (lambda _message: None)
        # Set by request_stop (and by a signal, through the client's stop event).
        self.stopping = client.stop
        self._wake = threading.Event()
        self._inbox: queue.SimpleQueue[_Submission | _Resume] = queue.SimpleQueue()
        self._waiting_submissions: list[_Submission] = []
        self._resumes_waiting: list[_Resume] = []
        self._recorded: list[tuple[Future[Records], list[TriggerRecord]]] = []
        self._closed = False
        self._pending: list[_Pending] = []
        self._elsewhere: dict[str, float] = {}  # trigger key -> when to look at its row again
        self._run_keys: dict[str, str] = {}  # run id -> trigger key, for every run followed
        self._started_here: set[str] = set()
        self._lost: dict[str, str] = {}  # trigger key -> why polling gave up
        self._cancels: list[_Cancel] = []
        self._interrupted: dict[str, str] = {}  # trigger key -> what stopping did to it
        self._next_resume = float("inf")
        # While the state cannot be reached: since when, and the run ends seen meanwhile.
        self._state_lost_since: float | None = None
        self._unrecorded_ends: list[RunEnd] = []
        # Runs started while the state was lost: recorded, before their ends, once it is back.
        self._unrecorded_starts: list[tuple[TriggerRecord, Run]] = []
        self._next_outage_note = 0.0
        margin_s = self.settings.window_margin_s or resolve_window_margin_s() or WINDOW_MARGIN_S
        # How long a POST of this process may be in flight: its timeouts (real seconds, on the
        # clock), and the margin (on the clock, as Hex's run times are).
        self._window_s = client.longest_request_s + margin_s
        # The arm renews the lease; it must outlast the POST that follows (the self-fence).
        lease_ttl_s = 3 * ledger.lease_renew_every_s
        if lease_ttl_s <= sum(client.timeout):
            raise ConfigError(
                f"{LEASE_TTL_ENV} ({lease_ttl_s:g} s) must be longer than the longest RunProject"
                f" (connect and read timeouts: {sum(client.timeout):g} s)",
                hint="a POST must end before the lease that allowed it can lapse",
            )
        self._lease_keeper = LeaseKeeper(ledger, log=self._log)
        self._unfenced = resolve_unfenced()
        self._paced_send_at = float("-inf")  # the last trigger sent while overloaded
        self._demand = (float("-inf"), Demand(0, frozenset(), repeated=False))
        self._app_views = AppViews(
            client, max_age_s=self.settings.app_views_max_age_s, log=self._log
        )

    # -- feeding it: any thread -------------------------------------------------------------------

    def submit(
        self,
        plan: Plan,
        *,
        source: str,
        only_new: bool = False,
        project_dir: str | None = None,
    ) -> Future[Records]:
        """Record a plan's invocation and triggers, and take up whatever is left to do.
        ``only_new``: unless the ledger has the invocation already (then the result is None).
        ``project_dir``: the dbt project the invocation built, where known."""
        return self.submit_triggers(
            plan.invocation_id,
            plan.command,
            plan.triggers,
            source=source,
            only_new=only_new,
            project_dir=project_dir,
            skipped=plan.skipped,
        )

    def submit_triggers(
        self,
        invocation_id: str,
        command: str,
        triggers: Sequence[Trigger],
        *,
        source: str,
        only_new: bool = False,
        project_dir: str | None = None,
        skipped: Sequence[Skipped] = (),
    ) -> Future[Records]:
        """``skipped``: the plan's entries not triggered, recorded with the invocation."""
        item = _Submission(
            invocation_id, command, source, tuple(triggers), only_new, project_dir, skipped
        )
        self._put(item)
        return item.result

    def resume(self) -> Future[list[TriggerRecord]]:
        """Take up what earlier processes left for this Hex workspace: queued triggers, orphaned
        sends, and live runs (followed when waiting). The result: those records."""
        item = _Resume()
        self._put(item)
        if self.settings.daemon:
            self._next_resume = self.clock.now() + self.settings.resume_every_s
        return item.result

    def close(self) -> None:
        """No more submissions: ``run`` returns once everything taken up is done."""
        self._closed = True
        self._wake.set()

    def request_stop(self) -> None:
        """Stop within a second: nothing more is sent (signal handlers call this too)."""
        self.stopping.set()
        self._wake.set()

    def _put(self, item: _Submission | _Resume) -> None:
        self._inbox.put(item)
        self._wake.set()

    # -- the loop: one thread ---------------------------------------------------------------------

    def run(self) -> None:
        """Send, poll and record until closed and idle, or until stop is requested."""
        failures = 0
        self._lease_keeper.start()
        try:
            while not self.stopping.is_set():
                self._lease_keeper.beat()
                try:
                    wake_at = self._turn()
                    failures = 0
                except StateUnavailable as exc:
                    wake_at = self._turn_without_state(exc)
                except Interrupted:
                    raise
                except Exception as exc:
                    if not self.settings.daemon:
                        raise
                    failures += 1
                    wake_at = self._start_afresh(exc, pause_s=min(60.0, 2.0**failures))
                if wake_at is None:
                    break
                self._sleep_until(wake_at)
        except Interrupted:
            self.stopping.set()  # a signal cut a call short: wind down as for any stop
        finally:
            if self.stopping.is_set():
                self._wind_down()
            self._settle_unrecorded()
            self._lease_keeper.stop()
            self.polls.progress.close(self.clock.now())

    def _sleep_until(self, wake_at: float) -> None:
        """Until ``wake_at``, new work (``_wake``) or stop, which is looked at every second: a
        signal handler only sets the stop event."""
        while not self.stopping.is_set() and not self._wake.is_set():
            remaining = wake_at - self.clock.now()
            if remaining <= 0:
                break
            self.clock.wait(self._wake, min(remaining, STOP_CHECK_S))
        self._wake.clear()

    def _start_afresh(self, exc: Exception, *, pause_s: float) -> float:
        """A daemon's turn failed (the ledger could not be written, or a bug): forget what was
        lined up and take it up again from the ledger after ``pause_s``; the runs followed stay."""
        self._log(
            f"dispatching failed ({type(exc).__name__}: {exc}); starting afresh from the"
            f" ledger in {pause_s:g} s"
        )
        self._give_back_claims("not sent yet when dispatching failed")
        self._pending = []
        self._elsewhere = {}
        self._next_resume = self.clock.now() + pause_s
        return self._next_resume

    def _give_back_claims(self, reason: str) -> None:
        """Triggers claimed and certainly not sent go back to the queue, with their slots (if the
        ledger cannot say so, they stay ``sending`` and are looked up in Hex once their window
        has closed: safe, only later)."""
        for item in self._pending:
            if item.claimed:
                self._give_back([item.slot])
                record = item.record
                release = partial(
                    self.ledger.release, record.trigger_key, fence=record.fence, reason=reason
                )
                self._record_quietly(release)

    def _settle_unrecorded(self) -> None:
        """Submissions the loop never recorded (it was stopped first): their callers learn so."""
        leftovers: list[_Submission | _Resume] = [
            *self._resumes_waiting,
            *self._waiting_submissions,
        ]
        self._resumes_waiting, self._waiting_submissions = [], []
        while True:
            try:
                leftovers.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for result, records in self._recorded:  # recorded, then stopped before they were told
            result.set_result(records)
        self._recorded = []
        for item in leftovers:
            if isinstance(item, _Resume):
                item.result.set_result([])
            elif not item.result.done():
                item.result.set_exception(Interrupted("stopped before it was recorded"))

    def _turn(self) -> float | None:
        """One turn: take in, send, poll. When to come back, or None when all is done."""
        if self._state_lost_since is not None:
            self._regain_state()
        now = self.clock.now()
        self._take_in(now)
        if now >= self._next_resume:
            self._next_resume = now + self.settings.resume_every_s
            self._resume()
        self._look_elsewhere(now)
        send_at = self._send_due()
        recorded, self._recorded = self._recorded, []
        for result, records in recorded:
            result.set_result(records)
        poll_at = self._poll_due()
        cancel_at = self._cancel_due()
        now = self.clock.now()
        self.polls.refresh(now)
        busy = (
            self._pending
            or self._elsewhere
            or len(self.polls)
            or self._cancels
            or self._waiting_submissions
        )
        if self._closed and not busy and self._inbox.empty():
            return None
        moments = [send_at, poll_at, cancel_at, self._next_resume, *self._elsewhere.values()]
        moments += [item.not_before for item in self._waiting_submissions]
        if len(self.polls):
            moments.append(self.polls.next_refresh_at())
        return min((moment for moment in moments if moment is not None), default=now + 3600.0)

    # -- without the state: PostgreSQL lost -------------------------------------------------------

    def _lose_state(self, exc: StateUnavailable) -> None:
        """The state cannot be reached: follow the live runs meanwhile and send nothing. What was
        lined up to send is forgotten; the ledger has it (a claim stays ``sending`` under this
        process's lease and is looked up in Hex once the state is back, since the lease may have
        expired meanwhile and another host taken it over)."""
        if self._state_lost_since is not None:
            return
        self._state_lost_since = self.clock.now()
        self._pending = []
        self._log(
            f"{exc}; following the {len(self.polls)} live runs meanwhile, sending nothing"
            " until the state is back"
        )

    def _turn_without_state(self, exc: StateUnavailable) -> float:
        """A turn that found the state lost: poll what is due, keep the ends seen, and come back
        soon to try the state again. A one-shot command gives up after ``state_outage_limit_s``."""
        self._lose_state(exc)
        assert self._state_lost_since is not None
        now = self.clock.now()
        limit_s = self.settings.state_outage_limit_s
        lost_for = now - self._state_lost_since
        if lost_for >= self.clock.from_real_s(limit_s):
            if not self.settings.daemon:
                unrecorded = len(self._unrecorded_ends)
                raise StateError(
                    f"gave up after {limit_s:g} s without the state: {exc}",
                    hint="the runs it started stay in the ledger as started"
                    + (f" ({unrecorded} of them ended meanwhile)" if unrecorded else "")
                    + ": once the state is back, `hexdbt status` lists them and the next"
                    " `hexdbt run` or `watch` follows them to their end",
                ) from None
            if now >= self._next_outage_note:  # a daemon lives on, and says so now and then
                self._next_outage_note = now + self.settings.resume_every_s
                self._log(f"still without the state after {lost_for:.0f} s: {exc}")
        poll_at = self._poll_due()
        cancel_at = self._cancel_due()
        now = self.clock.now()
        self.polls.refresh(now)
        moments = [poll_at, cancel_at, now + self.clock.from_real_s(STATE_RETRY_S)]
        if len(self.polls):
            moments.append(self.polls.next_refresh_at())
        return min(moment for moment in moments if moment is not None)

    def _regain_state(self) -> None:
        """Record the run ends seen without the state and take up again from the ledger what was
        lined up. StateUnavailable while the state is still lost."""
        while self._unrecorded_starts:
            self._record_start(*self._unrecorded_starts[0])
            self._unrecorded_starts.pop(0)
        while self._unrecorded_ends:
            with suppress(MoveRefusedError):  # another process recorded it first
                self._record_end(self._unrecorded_ends[0])
            self._unrecorded_ends.pop(0)
        self._resume()
        assert self._state_lost_since is not None
        now = self.clock.now()
        self._log(f"the state is back after {now - self._state_lost_since:.0f} s")
        self._state_lost_since = None
        self._next_resume = now + self.settings.resume_every_s

    def _take_in(self, now: float) -> None:
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Resume):
                self._resumes_waiting.append(item)
            else:
                self._waiting_submissions.append(item)
        # Without the state, what cannot be done now stays for the turn that has it again.
        while self._resumes_waiting:
            self._resumes_waiting[0].result.set_result(self._resume())
            self._resumes_waiting.pop(0)
        waiting, self._waiting_submissions = self._waiting_submissions, []
        for index, submission in enumerate(waiting):
            if submission.not_before > now:
                self._waiting_submissions.append(submission)
                continue
            try:
                self._record(submission, now)
            except StateUnavailable:
                self._waiting_submissions.extend(waiting[index:])  # not an attempt: kept
                raise

    def _record(self, item: _Submission, now: float) -> None:
        """Record a submission; those of its triggers that can go at once are claimed in the
        same transaction. A ledger that cannot be written is tried again a few times."""
        triggers = [new_trigger(trigger, self.client.base_url) for trigger in item.triggers]
        sending_now: dict[str, Slot | None] = {}
        claimed: set[str] = set()
        try:
            # The holds read the ledger: a ledger that cannot be read fails this attempt too.
            sending_now = self._take_slots_for(triggers)
            recorded = self.ledger.plan_and_claim(
                item.invocation_id,
                item.command,
                item.source,
                triggers,
                list(sending_now),
                # A retry takes up what an attempt that failed halfway may have recorded.
                only_new_invocation=item.only_new and item.attempts == 0,
                project_dir=item.project_dir,
                skipped=[plan_skip(skipped) for skipped in item.skipped],
            )
            claimed = recorded[1] if recorded else set()
        except StateUnavailable:
            raise  # the caller keeps it for when the state is back
        except HexdbtError as exc:
            item.attempts += 1
            retry = item.attempts < self.settings.submit_attempts
            self._log(
                f"cannot record dbt invocation {item.invocation_id} in the ledger: {exc}"
                + (f"; trying again in {self.settings.submit_retry_s:g} s" if retry else "")
            )
            if retry:
                item.not_before = now + self.settings.submit_retry_s
                self._waiting_submissions.append(item)
            else:
                item.result.set_exception(exc)
            return
        finally:  # a ledger that cannot be written keeps no slot from the budget
            self._give_back([slot for key, slot in sending_now.items() if key not in claimed])
        if recorded is None:
            item.result.set_result(None)
            return
        crash_point("planned")
        checked_at, demand = self._demand
        self._demand = (checked_at, demand.with_planned(triggers))
        self._forget_superseded(recorded[0])
        for record in recorded[0]:
            if record.trigger_key in claimed:
                slot = sending_now[record.trigger_key]
                self._pending.append(_Pending(record, claimed=True, slot=slot))
            else:
                self._line_up(record)
        # Told once this turn's POSTs are out: a caller's callback (a log line) never delays them.
        self._recorded.append((item.result, recorded[0]))

    def _forget_superseded(self, newer: Sequence[TriggerRecord]) -> None:
        """Triggers lined up here that the newly recorded ones may have superseded are looked at
        again in the ledger, which says whether they were (or were claimed first elsewhere)."""
        entries = {(r.entry_key, r.base_url) for r in newer if r.coalesce}
        if not entries:
            return
        newer_keys = {record.trigger_key for record in newer}
        older = [
            item
            for item in self._pending
            if not item.claimed
            and not item.reconcile
            and (item.record.entry_key, item.record.base_url) in entries
            and item.record.trigger_key not in newer_keys
        ]
        for item in older:
            self._pending.remove(item)
            self._line_up(self.ledger.get(item.record.trigger_key))

    def _take_slots_for(self, triggers: Sequence[NewTrigger]) -> dict[str, Slot | None]:
        """The triggers of a plan that may be sent now, highest priority first, each with the
        RunProject slot taken for it: none while older triggers wait (they go first), none whose
        app's ``min_interval`` has not passed, and no more than there are free places and
        slots."""
        if self._pending or self.stopping.is_set():
            return {}
        now = self.clock.now()
        # Held triggers (and, under overload, all: they keep the pace) go through _send_due.
        held = self._holds(triggers, now)
        ready = [trigger for trigger in triggers if trigger.trigger_key not in held]
        ready.sort(key=lambda t: (-t.options["priority"], -self._app_views.share(t.project_id)))
        places = max(0, self.settings.max_live_runs - len(self.polls))
        keys = [trigger.trigger_key for trigger in ready[:places]]
        budget = self.client.budget
        if budget is None:
            return dict.fromkeys(keys)
        slots = budget.take_now(CallKind.RUN_PROJECT, len(keys))
        return dict(zip(keys, slots, strict=False))  # fewer slots than keys: the rest wait

    def _holds(
        self, triggers: Sequence[NewTrigger | TriggerRecord], now: float
    ) -> dict[str, _Hold]:
        """Trigger key -> until when it waits and why, for the mapped triggers held back: by
        ``min_interval`` since their app's last start, and, while Hex's budget is overloaded,
        by the pace of the budget's sustained rate (``send_order``). The ledger is read for the
        intervals only when a trigger sets one (and for the demand at most once a minute)."""
        pacing = self._overloaded(now, [t for t in triggers if isinstance(t, NewTrigger)])
        mapped = [t for t in triggers if t.entry_key]
        spaced = [t for t in mapped if t.options.get("min_interval_s")]
        sends = (
            self.ledger.sends_of_entries(
                {t.entry_key for t in spaced if t.entry_key}, self.client.base_url
            )
            if spaced
            else {}
        )
        holds: dict[str, _Hold] = {}
        for trigger in mapped:
            free_at = now
            last = sends.get(trigger.entry_key or "")
            interval = trigger.options.get("min_interval_s")
            if interval and last is not None and last.last_sent_at is not None:
                free_at = max(free_at, last.last_sent_at + float(interval))
            if pacing:
                free_at = max(free_at, self._paced_send_at + self._pace_s())
            if free_at > now or pacing:
                holds[trigger.trigger_key] = _Hold(free_at, paced=pacing)
        return holds

    def _overloaded(self, now: float, planning: Sequence[NewTrigger] = ()) -> bool:
        """Whether the budget is overloaded: in the last hour, more triggers were planned
        (``planning``, those being recorded, included) than Hex's RunProject budget runs in one,
        and some app was planned more than once, so builds keep coming faster than the budget
        serves them. A single large build is not overload: it goes at the budget's full speed.
        The ledger is read at most once a minute."""
        if self.client.budget is None:
            return False
        checked_at, demand = self._demand
        if now - checked_at >= OVERLOAD_CHECK_S:
            demand = self.ledger.demand_since(now - DEMAND_WINDOW_S, self.client.base_url)
            self._demand = (now, demand)
        demand = demand.with_planned(planning)
        return demand.repeated and demand.planned > DEMAND_WINDOW_S / self._pace_s()

    def _pace_s(self) -> float:
        budget = self.client.budget
        assert budget is not None
        return 1.0 / budget.limits.sustained_rate_per_s(CallKind.RUN_PROJECT)

    def _other_slot(self) -> Slot | None:
        """A slot of Hex's budget for a call other than RunProject, taken now (None: no budget
        is kept); ``_NoSlot`` when none is free: the engine never waits for one in the client."""
        budget = self.client.budget
        if budget is None:
            return None
        taken = budget.take_now(CallKind.OTHER, 1)
        if not taken:
            raise _NoSlot(budget.next_slot_at(CallKind.OTHER))
        return taken[0]

    def _give_back(self, slots: Sequence[Slot | None]) -> None:
        budget = self.client.budget
        if budget is not None:
            budget.give_back([slot for slot in slots if slot is not None])

    def _resume(self) -> list[TriggerRecord]:
        records = self.ledger.in_state(
            TriggerState.PLANNED, TriggerState.QUEUED, TriggerState.SENDING, TriggerState.STARTED
        )
        return [self._line_up(r) for r in records if r.base_url == self.client.base_url]

    def _line_up(self, record: TriggerRecord) -> TriggerRecord:
        """Decide from its ledger row what this process does with a trigger."""
        key = record.trigger_key
        if any(p.record.trigger_key == key for p in self._pending):
            return record  # already lined up here (claimed with its plan, or queued)
        if record.state is TriggerState.AMBIGUOUS and self.settings.resend_ambiguous:
            record = self.ledger.reopen_ambiguous(key)
        if record.state is TriggerState.SENDING:
            adopted = self.ledger.take_over_orphan(key)
            if adopted is not None and adopted.intent_at is None:
                # Claimed, never armed: its owner sent nothing, and can no longer.
                self._elsewhere.pop(key, None)
                reason = "its claim lapsed before it was sent"
                self._line_up(self._move(adopted, self.ledger.release, reason=reason))
            elif adopted is not None:
                self._elsewhere.pop(key, None)
                self._pending.append(_Pending(adopted, reconcile=True))
            elif self._should_wait(record):
                # Another live process is sending it: follow it through the ledger.
                if key not in self._elsewhere:
                    owner = self.ledger.owner_of(record)
                    self._log(f"{record.name}: being sent by {owner}; following it in the ledger")
                self._elsewhere.setdefault(key, self.clock.now())
        elif record.state is TriggerState.STARTED:
            self._elsewhere.pop(key, None)
            self._follow(record)
        elif record.state in (TriggerState.PLANNED, TriggerState.QUEUED):
            self._elsewhere.pop(key, None)
            self._pending.append(_Pending(record))
        elif record.state is TriggerState.SUPERSEDED and self._should_wait(record):
            # A later build's trigger covers this build: wait for that one's run instead.
            self._elsewhere.pop(key, None)
            self._line_up(self.ledger.successor_of(record))
        else:
            self._elsewhere.pop(key, None)
            self._settle(record)
        return record

    def _settle(self, record: TriggerRecord) -> None:
        """The progress learns the outcome of a trigger this engine follows no run of."""
        self.polls.progress.settled(self.outcome(record), self.clock.now())

    def _look_elsewhere(self, now: float) -> None:
        for key, due in list(self._elsewhere.items()):
            if due <= now:
                self._elsewhere[key] = now + self.settings.elsewhere_check_s
                self._line_up(self.ledger.get(key))

    # -- sending ----------------------------------------------------------------------------------

    def _send_due(self) -> float | None:
        """Send what may be sent now, the highest ranked first (``send_order``); when to come
        back for the rest (None: nothing pending)."""
        while self._pending and not self.stopping.is_set():
            now = self.clock.now()
            claimed = next((p for p in self._pending if p.claimed), None)
            if claimed is not None:  # its place was counted and its slot taken when it was claimed
                self._send(claimed, claimed.slot)
                continue
            due = [p for p in self._pending if p.not_before <= now]
            if not due:
                return min(p.not_before for p in self._pending)
            lookup = next((p for p in due if p.reconcile), None)
            if lookup is not None:
                self._reconcile(lookup)
                continue
            if len(self.polls) >= self.settings.max_live_runs:
                self._say_why_they_wait(
                    WaitCause.PLACES, f"{len(self.polls)} runs are live (max_live_runs)"
                )
                return self.polls.next_poll_at()  # a finishing run frees a place
            if len(due) > 1:  # they compete: Hex's views help order them
                self._app_views.read_if_due(now)
            item = max(due, key=lambda p: self._rank(p.record, now))
            record = item.record
            deadline = record.created_at + self.settings.queue_deadline_s
            if now >= deadline:
                self._pending.remove(item)
                try:
                    expired = self.ledger.mark_expired(
                        record.trigger_key,
                        reason="did not fit Hex's RunProject budget before its deadline",
                    )
                    self._log(f"{record.name}: expired in the queue")
                    self._line_up(expired)
                except MoveRefusedError:  # another process took it meanwhile
                    self._line_up(self.ledger.get(record.trigger_key))
                continue
            hold = self._holds([record], now).get(record.trigger_key)
            if hold is not None and hold.until > now:
                if self._leaves_for_later(hold.until, now):
                    waiting_for = (
                        "the budget's sustained pace while it is overloaded"
                        if hold.paced
                        else "its app's min_interval_minutes to pass"
                    )
                    self._leave_queued(item, waiting_for)
                else:
                    item.not_before = hold.until
                continue
            budget = self.client.budget
            taken = budget.take_now(CallKind.RUN_PROJECT, 1) if budget is not None else (None,)
            if taken:
                if hold is not None and hold.paced:
                    self._paced_send_at = now
                self._send(item, taken[0])
                continue
            assert budget is not None
            next_slot = budget.next_slot_at(CallKind.RUN_PROJECT)
            if self._leaves_for_later(next_slot, now):
                self._leave_queued(item, "Hex's RunProject budget")
                continue
            self._say_why_they_wait(
                WaitCause.BUDGET,
                f"Hex's RunProject budget has its next slot in {next_slot - now:.0f} s",
            )
            return min(next_slot, deadline)
        return None

    def _leaves_for_later(self, can_go_at: float, now: float) -> bool:
        """Only --no-wait leaves triggers for a later process: a waiting command stays to send
        them, whether or not it waits on their runs (a mapping's wait: false)."""
        return not self.settings.wait and can_go_at > now + self.settings.no_wait_send_window_s

    def _rank(self, record: TriggerRecord, now: float) -> tuple[float, float]:
        return send_rank(
            int(record.options.get("priority", 0)),
            self._app_views.share(record.project_id),
            now - record.unserved_since,
            self.settings.aging_s,
        )

    def _say_why_they_wait(self, cause: WaitCause, reason: str) -> None:
        """Why the pending triggers have not been sent yet (a wait can last an hour): once per
        trigger and ``cause``."""
        untold = [item for item in self._pending if cause not in item.told]
        for item in untold:
            item.told.add(cause)
        if untold:
            self._log(f"waiting to send {', '.join(i.record.name for i in untold)}: {reason}")
            triggers = [(item.record.name, item.record.project_id) for item in untold]
            self.polls.progress.waiting(triggers, cause, self.clock.now())

    def _leave_queued(self, item: _Pending, waiting_for: str) -> None:
        """Leave a trigger in the ledger's queue, for a later run or watch (--no-wait)."""
        self._pending.remove(item)
        record = item.record
        try:
            queued = self.ledger.mark_queued(
                record.trigger_key,
                deadline_at=record.created_at + self.settings.queue_deadline_s,
                reason=f"waiting for {waiting_for}; a later hexdbt run or watch sends it",
            )
            self._log(f"{record.name}: queued for {waiting_for}")
            self._settle(queued)
        except MoveRefusedError:  # another process took it meanwhile
            self._line_up(self.ledger.get(record.trigger_key))

    def _send(self, item: _Pending, slot: Slot | None) -> None:
        """Arm one trigger and POST it, on the RunProject ``slot`` taken for it."""
        self._pending.remove(item)
        record = item.record
        armed = self._arm(item)
        if armed is None:
            self._give_back([slot])  # another process holds it
            current = self.ledger.get(record.trigger_key)
            if item.claimed and current.owner_lease != record.owner_lease:
                owner = self.ledger.owner_of(current)
                self._log(
                    f"{record.name}: not sent: {owner} took it over while this process was"
                    " stalled past its lease"
                )
            self._line_up(current)
            return
        crash_point("armed")
        self._lease_keeper.beat()
        try:
            run = self.client.run_project(
                armed.project_id, RunRequest.from_api(armed.request), slot=slot
            )
        except Interrupted as exc:
            if exc.sent:
                self._interrupted[armed.trigger_key] = (
                    "interrupted while RunProject was in flight; a later hexdbt run looks it up"
                    " in Hex's runs before sending anything"
                )
            else:
                self._give_back([slot])
                reason = "hexdbt was interrupted before sending it"
                self._record_quietly(partial(self._move, armed, self.ledger.release, reason=reason))
            raise
        except HexApiError as exc:
            self._send_failed(replace(item, record=armed), exc)
            return
        crash_point("post-answered")
        self._started_here.add(run.run_id)
        try:
            started = self._record_start(armed, run)
        except StateUnavailable:
            # The run is Hex's now: follow it, and record it (then its end) once the state is back.
            self._unrecorded_starts.append((armed, run))
            self._follow(replace(armed, state=TriggerState.STARTED, run_id=run.run_id))
            raise
        crash_point("run-id-recorded")
        if started.state is TriggerState.STARTED and not self._should_wait(started):
            self._settle(started)  # sent, its run not waited on: this engine is done with it

    def _arm(self, item: _Pending) -> TriggerRecord | None:
        """Commit the intent to POST (``Ledger.arm``; ``claim_for_sending`` for a trigger not
        claimed with its plan): the armed record, or None when this process may not send it."""
        record = item.record
        if not item.claimed:
            return self.ledger.claim_for_sending(
                record.trigger_key,
                hex_clock_offset_s=self.client.hex_clock_offset_s,
                window_s=self._window_s,
            )
        if self._unfenced:  # stall tests only: POST on the claim alone, as before the fence
            return record
        return self.ledger.arm(
            record.trigger_key,
            fence=record.fence,
            hex_clock_offset_s=self.client.hex_clock_offset_s,
            window_s=self._window_s,
        )

    def _record_start(self, armed: TriggerRecord, run: Run) -> TriggerRecord:
        """Record the run a POST of ``armed`` started, and follow it. When another process took
        the trigger over meanwhile (this one stalled past its lease), its row stands: the run is
        its own, or the one it waits to find in Hex, or else a stray, cancelled and recorded."""
        try:
            started = self.ledger.mark_started(
                armed.trigger_key,
                fence=armed.fence,
                run_id=run.run_id,
                run_url=run.run_url,
                trace_id=run.trace_id,
            )
        except MoveRefusedError:
            started = self.ledger.get(armed.trigger_key)
            taken_over_at_this_intent = (
                started.state is TriggerState.SENDING and started.fence == armed.fence
            )
            if started.run_id != run.run_id and not taken_over_at_this_intent:
                self._stray(armed, run, started)
        else:
            self._log(f"{armed.name}: started run {run.run_id}  {run.run_url or ''}".rstrip())
        self._line_up(started)
        return started

    def _stray(self, armed: TriggerRecord, run: Run, current: TriggerRecord) -> None:
        """A run this process started after another had taken its trigger over and decided
        without it: cancel it in Hex (on a slot of the budget), record it, say so."""
        self._started_here.discard(run.run_id)
        try:
            self.client.cancel_run(armed.project_id, run.run_id, slot=self._other_slot())
            fate = "cancelled in Hex"
        except _NoSlot:
            fate = "not cancelled: Hex's rate budget had no call left; cancel it in Hex"
        except HexRejectedError:
            fate = "not cancelled: it had ended already"
        except HexApiError as exc:
            fate = f"not cancelled ({exc}); cancel it in Hex"
        self.ledger.record_stray(armed, run_id=run.run_id, run_url=run.run_url, fate=fate)
        owner = self.ledger.owner_of(current) if current.owner_lease else "another process"
        self._log(
            f"{armed.name}: run {run.run_id} was started after {owner} had taken the trigger"
            f" over (this process stalled past its lease); stray run {fate}"
        )

    def _move(
        self, record: TriggerRecord, move: Callable[..., TriggerRecord], **fields: object
    ) -> TriggerRecord:
        """Move a ``sending`` row this process holds at ``record``'s fence. Another process may
        have taken it over first (this one stalled past its lease): then its row stands."""
        try:
            return move(record.trigger_key, fence=record.fence, **fields)
        except MoveRefusedError:
            return self.ledger.get(record.trigger_key)

    def _send_failed(self, item: _Pending, exc: HexApiError) -> None:
        now = self.clock.now()
        record = item.record
        if run_may_have_started(exc):
            self._log(f"{record.name}: the answer to RunProject was lost; checking Hex's runs")
            self._pending.append(_Pending(record, reconcile=True, own_intent=True))
            return
        unreachable = item.unreachable + isinstance(exc, HexTransportError)
        if unreachable > UNREACHABLE_ATTEMPTS:
            pass  # Hex cannot be reached at all (a wrong address, no network): say so, once
        elif isinstance(exc, HexRateLimitedError | HexUnavailableError | HexTransportError):
            # 429, 503 (no free kernel), or a POST that provably never left: nothing started.
            budget = self.client.budget
            if isinstance(exc, HexRateLimitedError) and budget is not None:
                retry_at = budget.next_slot_at(CallKind.RUN_PROJECT)
            elif isinstance(exc, HexTransportError):
                retry_at = now + backoff_delay_s(unreachable, None, jitter=0.5)
            else:
                retry_at = now + self.settings.retry_later_s
            released = self._move(record, self.ledger.release, reason=str(exc))
            self._log(f"{record.name}: not started ({exc}); trying again in {retry_at - now:.0f} s")
            if released.state is TriggerState.QUEUED:
                self._pending.append(
                    _Pending(released, not_before=retry_at, unreachable=unreachable)
                )
            else:
                self._line_up(released)
            return
        failed = self._move(record, self.ledger.mark_failed, reason=str(exc), trace_id=exc.trace_id)
        self._log(f"{record.name}: Hex refused the run: {exc}")
        self._line_up(failed)

    def _reconcile(self, item: _Pending) -> None:
        """Find out whether a POST whose answer was lost started a run."""
        self._pending.remove(item)
        record = self.ledger.get(item.record.trigger_key)
        if record.state is not TriggerState.SENDING or record.fence != item.record.fence:
            self._line_up(record)  # moved, or taken over, meanwhile
            return
        window_closes = window_closes_at(record, self._window_s)
        try:
            run = find_run_of_lost_post(
                self.client,
                record,
                self.ledger.run_ids_of_project(record.project_id),
                own_intent=item.own_intent,
                slot_for_page=self._other_slot,
            )
        except (
            _NoSlot
        ) as no_slot:  # the look-up waits for a slot of the engine's, not in the client
            self._pending.append(replace(item, record=record, not_before=no_slot.free_at))
            return
        except HexAmbiguousRunError as exc:
            reason = f"{exc}; not re-sent (use --resend-ambiguous to send it anyway)"
            self._line_up(self._move(record, self.ledger.mark_ambiguous, reason=reason))
            return
        except HexApiError as exc:
            failures = item.lookups_failed + 1
            passing = isinstance(exc, HexTransportError | HexRateLimitedError | HexUnavailableError)
            attempts = self.client.get_attempts
            if passing and failures < LOOKUP_ATTEMPTS * attempts:
                # Hex failing for a moment proves nothing either way: look again, still sending.
                retry_after = exc.retry_after_s if isinstance(exc, HexRateLimitedError) else None
                delay = backoff_delay_s((failures - 1) % attempts + 1, retry_after, jitter=0.5)
                if failures % attempts == 0:  # a whole look-up failed: say so once
                    self._log(
                        f"{record.name}: Hex's run list could not be read ({exc}); looking again"
                    )
                self._pending.append(
                    replace(
                        item,
                        record=record,
                        not_before=self.clock.now() + delay,
                        lookups_failed=failures,
                    )
                )
                return
            reason = f"RunProject's answer was lost and Hex's run list could not be read: {exc}"
            self._line_up(self._move(record, self.ledger.mark_ambiguous, reason=reason))
            return
        now = self.clock.now()
        if run is not None:
            self._log(f"{record.name}: found run {run.run_id}, the one started after its intent")
            self._started_here.add(run.run_id)
            started = self._move(
                record,
                self.ledger.mark_started,
                run_id=run.run_id,
                run_url=run.run_url,
                trace_id=run.trace_id,
            )
            self._line_up(started)
        elif now < window_closes:
            # The POST may still be in flight: "nothing started" cannot be concluded yet. Look
            # again now and then, so that a run Hex creates late is adopted as soon as it is there.
            again = min(window_closes, now + LOOKUP_AGAIN_S)
            self._pending.append(replace(item, record=record, not_before=again))
        else:
            reason = "RunProject's answer was lost; Hex started no run"
            self._line_up(self._move(record, self.ledger.release, reason=reason))

    # -- following runs ---------------------------------------------------------------------------

    def _should_wait(self, record: TriggerRecord) -> bool:
        return self.settings.wait and bool(record.options.get("wait", True))

    def _follow(self, record: TriggerRecord) -> None:
        assert record.run_id is not None
        if not self._should_wait(record) or record.run_id in self.polls:
            return
        self._run_keys[record.run_id] = record.trigger_key
        self._lost.pop(record.trigger_key, None)
        self.polls.add(
            WatchedRun(
                project_id=record.project_id,
                run_id=record.run_id,
                started_at=record.intent_at or record.created_at,
                run_url=record.run_url,
                timeout_s=float(record.options.get("timeout_minutes", 60)) * 60,
                label=record.name,
                cancel_on_timeout=bool(record.options.get("cancel_on_timeout", True)),
            )
        )

    def _poll_due(self) -> float | None:
        """Poll the runs that are due; when the next one is (None: no run is followed)."""
        while not self.stopping.is_set():
            poll_at = self.polls.next_poll_at()
            if poll_at is None or poll_at > self.clock.now():
                return poll_at
            try:
                slot = self._other_slot()
            except _NoSlot as no_slot:
                return no_slot.free_at
            end = self.polls.poll(slot)
            if end is not None:
                self._ended(end)
        return None

    def _cancel_due(self) -> float | None:
        """Cancel the runs past their timeout, each on a budget slot taken now (never waited
        for: sending, polling and stop go on meanwhile); when to come back for the rest."""
        while self._cancels and not self.stopping.is_set():
            now = self.clock.now()
            due = [item for item in self._cancels if item.not_before <= now]
            if not due:
                return min(item.not_before for item in self._cancels)
            try:
                slot = self._other_slot()
            except _NoSlot as no_slot:
                return no_slot.free_at
            item = due[0]
            run = item.end.run
            try:
                self.client.cancel_run(run.project_id, run.run_id, slot=slot)
            except HexRejectedError:
                end = item.end.cancelled("it ended just as hexdbt cancelled it", sent=False)
            except HexApiError as exc:
                item.attempts += 1
                if item.attempts < UNREACHABLE_ATTEMPTS:
                    item.not_before = now + backoff_delay_s(item.attempts, None, jitter=0.5)
                    continue
                end = item.end.cancelled(f"cancelling it failed: {exc}", sent=False)
            else:
                end = item.end.cancelled("cancelled", sent=True)
            self._cancels.remove(item)
            self._ended(end)
        return None

    def _ended(self, end: RunEnd) -> None:
        if end.cancel_wanted:
            minutes = (end.run.timeout_s or 0) / 60
            self._log(f"{end.run.label}: past its timeout of {minutes:g} min; cancelling it")
            self._cancels.append(_Cancel(end))
            return
        if self._state_lost_since is None:
            try:
                # Another process following the same run may have recorded its end first.
                with suppress(MoveRefusedError):
                    self._record_end(end)
                return
            except StateUnavailable as exc:
                self._lose_state(exc)
        self._unrecorded_ends.append(end)
        seen = end.status or end.kind.value
        self._log(f"{end.run.label}: {seen}; recorded in the ledger once the state is back")

    def _record_end(self, end: RunEnd) -> None:
        key = self._run_keys[end.run.run_id]
        status = end.status or "UNKNOWN"
        if end.kind is OutcomeKind.TIMEOUT:
            self.ledger.mark_ended(
                key,
                hex_status="KILLED" if end.cancel_sent else status,
                timed_out=True,
                reason=str(end.error),
            )
        elif end.kind is OutcomeKind.POLL_FAILED:
            self._lost[key] = f"polling the run failed: {end.error}"
            if status != "UNKNOWN":
                self.ledger.mark_status(key, status)
        else:
            self.ledger.mark_ended(key, hex_status=status)

    # -- stopping ---------------------------------------------------------------------------------

    def _wind_down(self) -> None:
        """After stop: cancel what this process started (bounded), give back what it claimed."""
        open_runs = self.polls.close_all()
        mine = [run for run in open_runs if run.run_id in self._started_here]
        cancel = self.settings.cancel_on_interrupt
        cancelled = self._cancel_all(mine) if cancel else {}
        for run in open_runs:
            key = self._run_keys[run.run_id]
            note = cancelled.get(run.run_id) or (
                "left running (--no-cancel-on-interrupt); a later hexdbt run follows it"
                if run.run_id in self._started_here
                else "left running: another process started it; a later hexdbt run follows it"
            )
            self._interrupted[key] = f"interrupted: {note}"
            if note == "cancelled in Hex":
                self._record_quietly(
                    partial(
                        self.ledger.mark_ended,
                        key,
                        hex_status="KILLED",
                        reason="hexdbt was interrupted and cancelled it",
                    )
                )
        timed_out, self._cancels = self._cancels, []
        for waiting in timed_out:  # past their timeout, not cancelled yet: stopping leaves them
            end = waiting.end.cancelled("not cancelled: hexdbt was stopped first", sent=False)
            self._record_quietly(partial(self._record_end, end))
        self._give_back_claims("hexdbt was interrupted before sending it")
        pending, self._pending = self._pending, []
        for item in pending:
            if item.reconcile:
                self._interrupted[item.record.trigger_key] = (
                    "interrupted while its lost RunProject answer was being looked up; a later"
                    " hexdbt run looks it up in Hex's runs before sending anything"
                )
            else:
                self._log(f"left queued after interruption: {item.record.name}")

    def _cancel_all(self, runs: Sequence[WatchedRun]) -> dict[str, str]:
        """Cancel ``runs`` within ``cancel_budget_s`` all together; run id -> what happened."""
        deadline = self.clock.now() + self.settings.cancel_budget_s
        budget = self.client.budget
        slots: Sequence[Slot | None] = (
            budget.take_now(CallKind.OTHER, len(runs)) if budget else [None] * len(runs)
        )
        done: dict[str, str] = {}
        for index, run in enumerate(runs):
            remaining = deadline - self.clock.now()
            if index >= len(slots):
                done[run.run_id] = "not cancelled: Hex's rate budget had no call left"
            elif remaining <= 0.1:
                done[run.run_id] = "not cancelled: the time to wind down was up"
            else:
                try:
                    self.client.cancel_run(
                        run.project_id, run.run_id, slot=slots[index], read_timeout_s=remaining
                    )
                    done[run.run_id] = "cancelled in Hex"
                except HexRejectedError:
                    done[run.run_id] = "it had ended already"
                except (HexApiError, Interrupted) as exc:
                    done[run.run_id] = f"not cancelled: {exc}"
        return done

    def _record_quietly(self, write: Callable[[], object]) -> None:
        """A ledger write while winding down: a failure is logged, the wind-down goes on."""
        try:
            write()
        except HexdbtError as exc:
            self._log(f"cannot record the interruption in the ledger: {exc}")

    # -- results ----------------------------------------------------------------------------------

    def outcome(self, record: TriggerRecord) -> Outcome:
        if record.state is TriggerState.SUPERSEDED and self._should_wait(record):
            # What a waiting caller learns is the true outcome of the run that covers its build.
            successor = self.ledger.successor_of(record)
            covering = self.outcome(successor)
            reason = f"superseded by dbt invocation {successor.invocation_id}"
            return replace(
                covering,
                name=record.name,
                reason=f"{reason}; {covering.reason}" if covering.reason else reason,
            )
        outcome = outcome_of(record)
        key = record.trigger_key
        if key in self._interrupted and record.state in (
            TriggerState.STARTED,
            TriggerState.SENDING,
            TriggerState.ENDED,
        ):
            return replace(outcome, kind=OutcomeKind.INTERRUPTED, reason=self._interrupted[key])
        if key in self._lost and record.state is TriggerState.STARTED:
            return replace(outcome, kind=OutcomeKind.POLL_FAILED, reason=self._lost[key])
        return outcome

    def outcomes_of(self, plan: Plan) -> list[Outcome]:
        """Every mapping of a plan with what happened to it, in the plan's order."""
        by_key = {r.trigger_key: r for r in self.ledger.triggers_of(plan.invocation_id)}
        outcomes = [
            self.outcome(by_key[t.trigger_key]) for t in plan.triggers if t.trigger_key in by_key
        ]
        return outcomes + skipped_outcomes(plan)
