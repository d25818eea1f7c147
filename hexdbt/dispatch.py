"""Carry out plans exactly once: ledger -> budget -> client -> waiter -> ledger.

For every trigger the ledger row decides what happens, so a crash, a retry or a second process
never starts a Hex project twice for one dbt invocation:

- ``started`` (a run id is known): re-attach, i.e. poll that run; never post again;
- ``sending`` left by a dead process (the POST's answer may have been lost): reconcile through
  GetProjectRuns; one unclaimed API run started since the intent is adopted, none means nothing
  started and the trigger is sent, several (or an error) make it ``ambiguous``, reported and not
  re-sent unless the user asks (``resend_ambiguous``);
- ``planned`` / ``queued``: sent when the RunProject budget has a slot and fewer than
  ``max_live_runs`` runs are live; one that cannot be sent before its deadline stays queued in the
  ledger for a later ``hexdbt run`` or ``hexdbt watch``, and is reported ``expired`` past it. A new
  trigger that can go at once (nothing older waits, a place and a slot are free) is claimed in the
  transaction that records it: one synced commit stands between dbt's artifacts and its POST.
  The dispatcher takes each POST's budget slot itself, before the claim: it never waits in the
  client for a slot that another process took first, and gives back the slots it does not use;
- ended, failed, expired: reported as they are.

The dispatcher is one object with a loop (``run``) driven by the waiter: sending happens in the
waiter's ``tick``, so one thread sends and polls, on one clock. Once ``stop`` is set nothing more
is sent; what was lined up stays in the ledger's queue. ``submit`` may be called from other
threads while ``run`` runs (the dbt wrapper and the watcher do).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from hexdbt.clock import Clock
from hexdbt.errors import (
    HexAmbiguousRunError,
    HexApiError,
    HexRateLimitedError,
    HexUnavailableError,
)
from hexdbt.hex.budget import CallKind, Slot
from hexdbt.hex.client import HexClient, run_may_have_started
from hexdbt.hex.models import Notification, RunRequest
from hexdbt.hex.waiter import Outcome as WaitOutcome
from hexdbt.hex.waiter import Progress, RunResult, Waiter, WatchedRun, cancel_runs
from hexdbt.ledger import Ledger, NewTrigger, TriggerRecord, TriggerState
from hexdbt.planner.rules import Plan, Trigger
from hexdbt.report import Outcome, OutcomeKind, outcome_of

Log = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    wait: bool = True
    # Hex allows 25 live kernels per user, UI included: stay well under.
    max_live_runs: int = 10
    # A trigger that has not fitted the budget this long after it was planned is reported expired.
    queue_deadline_s: float = 6 * 3600
    # With --no-wait: send what fits the budget within this, queue the rest for a later process.
    no_wait_send_window_s: float = 60.0
    resend_ambiguous: bool = False
    cancel_on_interrupt: bool = True
    # Hex's clock and ours may disagree: a run that started this much before our intent counts.
    reconcile_margin_s: float = 60.0
    # After a 503 (no free kernel) or a 429 that outlasted the client's retries.
    retry_later_s: float = 60.0


def run_request_of(trigger: Trigger) -> RunRequest:
    options = trigger.options
    return RunRequest(
        input_params=dict(trigger.input_params),
        update_published_results=options.update_published_results,
        use_cached_sql_results=options.use_cached_sql_results,
        view_id=options.view_id,
        notifications=tuple(Notification.from_api(item) for item in options.notifications),
    )


def new_trigger(trigger: Trigger, base_url: str) -> NewTrigger:
    """What the ledger records of a planned trigger."""
    return NewTrigger(
        trigger_key=trigger.trigger_key,
        name=trigger.name,
        project_id=trigger.project_id,
        base_url=base_url,
        request=run_request_of(trigger).to_api(),
        options={
            "wait": trigger.wait,
            "timeout_minutes": trigger.timeout_minutes,
            "cancel_on_timeout": trigger.cancel_on_timeout,
        },
    )


@dataclass
class _Pending:
    """A trigger waiting to be sent by this process. Its record is read when it is lined up:
    what sending needs of it (project, request, creation time) never changes, and the claim
    checks its state in the ledger itself. ``claimed``: claimed with its plan (the intent is
    committed already), with the RunProject ``slot`` taken for it; it is sent first. ``told``:
    the causes of waiting the log has named for it."""

    record: TriggerRecord
    not_before: float = 0.0
    claimed: bool = False
    slot: Slot | None = None
    told: set[str] = field(default_factory=set)


class Dispatcher:
    def __init__(
        self,
        client: HexClient,
        ledger: Ledger,
        *,
        settings: DispatchSettings | None = None,
        waiter: Waiter | None = None,
        progress: Progress | None = None,
        log: Log | None = None,
        on_turn: Callable[[float], None] | None = None,
    ) -> None:
        """``on_turn(now)`` runs on the dispatcher's thread at every turn of its loop, before
        sending: the watcher takes in new invocations there."""
        self.client = client
        self.ledger = ledger
        self.settings = settings or DispatchSettings()
        self.clock: Clock = client.clock
        self.waiter = waiter or Waiter(client, progress=progress)
        self._log: Log = log or (lambda _message: None)
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self._run_keys: dict[str, str] = {}  # run id -> trigger key, for every run attached
        self._live: set[str] = set()  # run ids the waiter is polling now
        self._closed = False
        self._lost: dict[str, str] = {}  # trigger key -> why polling gave up
        self._started_here: set[str] = set()
        self._on_turn = on_turn
        self._stop: threading.Event | None = None

    # -- feeding it -----------------------------------------------------------------------------

    def submit(
        self, plan: Plan, *, source: str, only_new: bool = False
    ) -> list[TriggerRecord] | None:
        """Record a plan's invocation and triggers, and line up whatever is left to do.
        ``only_new``: unless the ledger has the invocation already (then None, nothing done)."""
        return self.submit_triggers(
            plan.invocation_id, plan.command, plan.triggers, source=source, only_new=only_new
        )

    def submit_triggers(
        self,
        invocation_id: str,
        command: str,
        triggers: Sequence[Trigger],
        *,
        source: str,
        only_new: bool = False,
    ) -> list[TriggerRecord] | None:
        """Record the triggers; those that can be sent at once are claimed in the same
        transaction (one synced commit before their POST, not two)."""
        sending_now = self._take_slots_for([trigger.trigger_key for trigger in triggers])
        claimed: set[str] = set()
        try:
            planned_and_claimed = self.ledger.plan_and_claim(
                invocation_id,
                command,
                source,
                [new_trigger(trigger, self.client.base_url) for trigger in triggers],
                list(sending_now),
                only_new_invocation=only_new,
            )
            claimed = planned_and_claimed[1] if planned_and_claimed else set()
        finally:  # a ledger that cannot be written (a full disk) keeps no slot from the budget
            self._give_back([slot for key, slot in sending_now.items() if key not in claimed])
        if planned_and_claimed is None:
            return None
        records = []
        for record in planned_and_claimed[0]:
            if record.trigger_key in claimed:
                with self._lock:
                    self._pending.append(
                        _Pending(record, claimed=True, slot=sending_now[record.trigger_key])
                    )
                records.append(record)
            else:
                records.append(self._line_up(record))
        self.waiter.wake()
        return records

    def _take_slots_for(self, keys: Sequence[str]) -> dict[str, Slot | None]:
        """The first of ``keys`` that may be sent now, each with the RunProject slot taken for
        it: none while older triggers wait (they go first), and no more than there are free
        places and slots."""
        with self._lock:
            if self._pending:
                return {}
        keys = keys[: max(0, self.settings.max_live_runs - len(self._live))]
        budget = self.client.budget
        if budget is None:
            return dict.fromkeys(keys)
        slots = budget.take_now(CallKind.RUN_PROJECT, len(keys))
        return dict(zip(keys, slots, strict=False))  # fewer slots than keys: the rest wait

    def _give_back(self, slots: Sequence[Slot | None]) -> None:
        budget = self.client.budget
        if budget is not None:
            budget.give_back([slot for slot in slots if slot is not None])

    def resume(self) -> list[TriggerRecord]:
        """Take up what earlier processes left for this Hex workspace: queued triggers, orphaned
        sends, and live runs (re-attached when waiting)."""
        records = self.ledger.in_state(
            TriggerState.PLANNED, TriggerState.QUEUED, TriggerState.SENDING, TriggerState.STARTED
        )
        return [self._line_up(r) for r in records if r.base_url == self.client.base_url]

    def close(self) -> None:
        """No more submissions: ``run`` returns once everything lined up is done."""
        with self._lock:
            self._closed = True
        self.waiter.wake()

    def _line_up(self, record: TriggerRecord) -> TriggerRecord:
        """Decide from its ledger row what this process does with a trigger."""
        with self._lock:
            if any(p.claimed and p.record.trigger_key == record.trigger_key for p in self._pending):
                return record  # claimed with its plan, about to be sent: not an orphan
        if record.state is TriggerState.AMBIGUOUS and self.settings.resend_ambiguous:
            record = self.ledger.reopen_ambiguous(record.trigger_key)
        if record.state is TriggerState.SENDING and self.ledger.take_over_orphan(
            record.trigger_key
        ):
            record = self._reconcile(record)
        if record.state is TriggerState.STARTED:
            self._attach(record)
        elif record.state in (TriggerState.PLANNED, TriggerState.QUEUED):
            with self._lock:
                if all(p.record.trigger_key != record.trigger_key for p in self._pending):
                    self._pending.append(_Pending(record))
        return record

    # -- the loop -------------------------------------------------------------------------------

    def run(self, *, stop: threading.Event | None = None) -> None:
        """Send and wait until closed and idle (or ``stop`` is set)."""
        self._stop = stop
        results = self.waiter.wait(stop=stop, on_result=self._on_result, tick=self._tick)
        interrupted = [r for r in results if r.outcome is WaitOutcome.INTERRUPTED]
        if interrupted and self.settings.cancel_on_interrupt:
            mine = [r for r in interrupted if r.run.run_id in self._started_here]
            for result, what in cancel_runs(self.client, mine):
                if what == "cancelled":
                    self.ledger.mark_ended(
                        self._run_keys[result.run.run_id],
                        hex_status="KILLED",
                        reason="hexdbt was interrupted and cancelled the run",
                    )
        if stop is not None and stop.is_set():
            with self._lock:
                pending, self._pending = self._pending, []
            for item in pending:
                if item.claimed:
                    self.ledger.release(
                        item.record.trigger_key, reason="hexdbt was interrupted before sending it"
                    )
                    self._give_back([item.slot])
                self._log(f"left queued after interruption: {item.record.name}")

    def _tick(self, now: float) -> float | None:
        """Send what may be sent now; say when to come back, or None when nothing is left."""
        if self._on_turn is not None:
            self._on_turn(now)
        if self._stop is not None and self._stop.is_set():
            return None  # interrupted: nothing more is sent; ``run`` leaves the rest queued
        while True:
            now = self.clock.now()  # sending takes time: each turn looks at the clock again
            with self._lock:
                pending = list(self._pending)
                closed = self._closed
            if not pending:
                return None if closed else now + 1.0
            claimed = next((p for p in pending if p.claimed), None)
            if claimed is not None:  # its place was counted and its slot taken when it was claimed
                self._send(claimed, claimed.slot)
                continue
            if len(self._live) >= self.settings.max_live_runs:
                self._say_why_they_wait(
                    "places", f"{len(self._live)} runs are live (max_live_runs)"
                )
                return now + 5.0  # a finishing run frees a place; the waiter turns often enough
            item = min(pending, key=lambda p: p.not_before)
            if item.not_before > now:
                return item.not_before
            record = item.record
            deadline = record.created_at + self.settings.queue_deadline_s
            if now >= deadline:
                self._drop(item)
                self.ledger.mark_expired(
                    record.trigger_key,
                    reason="did not fit Hex's RunProject budget before its deadline",
                )
                self._log(f"{record.name}: expired in the queue")
                continue
            budget = self.client.budget
            if budget is None:
                self._send(item, None)
                continue
            taken = budget.take_now(CallKind.RUN_PROJECT, 1)
            if taken:
                self._send(item, taken[0])
                continue
            next_slot = budget.next_slot_at(CallKind.RUN_PROJECT)
            if not self.settings.wait and next_slot > now + self.settings.no_wait_send_window_s:
                self._leave_queued()
                continue
            self._say_why_they_wait(
                "budget", f"Hex's RunProject budget has its next slot in {next_slot - now:.0f} s"
            )
            return min(next_slot, deadline)

    def _say_why_they_wait(self, cause: str, reason: str) -> None:
        """Why the pending triggers have not been sent yet (a wait can last an hour): once per
        trigger and ``cause``."""
        with self._lock:
            untold = [item for item in self._pending if cause not in item.told]
            for item in untold:
                item.told.add(cause)
        if untold:
            names = ", ".join(item.record.name for item in untold)
            self._log(f"waiting to send {names}: {reason}")

    def _drop(self, item: _Pending) -> None:
        with self._lock:
            if item in self._pending:
                self._pending.remove(item)

    def _leave_queued(self) -> None:
        """Leave every pending trigger in the ledger's queue, for a later run or watch."""
        with self._lock:
            pending, self._pending = self._pending, []
        for item in pending:
            record = item.record
            self.ledger.mark_queued(
                record.trigger_key,
                deadline_at=record.created_at + self.settings.queue_deadline_s,
                reason="waiting for Hex's RunProject budget; a later hexdbt run or watch sends it",
            )
            self._log(f"{record.name}: queued for Hex's RunProject budget")

    def _send(self, item: _Pending, slot: Slot | None) -> None:
        """POST one trigger, on the RunProject ``slot`` taken for it."""
        record = item.record
        self._drop(item)
        if not item.claimed and not self.ledger.claim_for_sending(record.trigger_key):
            # Another process holds it; report whatever it records.
            self._give_back([slot])
            return
        try:
            run = self.client.run_project(
                record.project_id, RunRequest.from_api(record.request), slot=slot
            )
        except HexApiError as exc:
            if run_may_have_started(exc):
                self._log(f"{record.name}: the answer to RunProject was lost; checking Hex's runs")
                self._line_up(self._reconcile(self.ledger.get(record.trigger_key)))
            elif isinstance(exc, HexRateLimitedError | HexUnavailableError):
                # 429 past the client's retries, or 503: no free kernel. Nothing started.
                self.ledger.release(record.trigger_key, reason=str(exc))
                with self._lock:
                    self._pending.append(
                        _Pending(record, self.clock.now() + self.settings.retry_later_s)
                    )
            else:
                self.ledger.mark_failed(record.trigger_key, reason=str(exc), trace_id=exc.trace_id)
                self._log(f"{record.name}: Hex refused the run: {exc}")
            return
        started = self.ledger.mark_started(
            record.trigger_key, run_id=run.run_id, run_url=run.run_url, trace_id=run.trace_id
        )
        self._started_here.add(run.run_id)
        self._log(f"{record.name}: started run {run.run_id}  {run.run_url or ''}".rstrip())
        self._attach(started)

    def _reconcile(self, record: TriggerRecord) -> TriggerRecord:
        """Find out whether a POST whose answer was lost started a run."""
        since = (record.intent_at or record.created_at) - self.settings.reconcile_margin_s
        try:
            run = self.client.run_started_by_lost_post(
                record.project_id,
                since,
                known_run_ids=self.ledger.run_ids_of_project(record.project_id),
            )
        except HexAmbiguousRunError as exc:
            return self.ledger.mark_ambiguous(
                record.trigger_key,
                reason=f"{exc}; not re-sent (use --resend-ambiguous to send it anyway)",
            )
        except HexApiError as exc:
            return self.ledger.mark_ambiguous(
                record.trigger_key,
                reason=f"RunProject's answer was lost and Hex's run list could not be read: {exc}",
            )
        if run is None:
            return self.ledger.release(
                record.trigger_key, reason="RunProject's answer was lost; Hex started no run"
            )
        self._log(f"{record.name}: found run {run.run_id}, which its POST had started")
        return self.ledger.mark_started(
            record.trigger_key, run_id=run.run_id, run_url=run.run_url, trace_id=run.trace_id
        )

    def _attach(self, record: TriggerRecord) -> None:
        assert record.run_id is not None
        if not self._should_wait(record) or record.run_id in self._live:
            return
        self._live.add(record.run_id)
        self._run_keys[record.run_id] = record.trigger_key
        self.waiter.add(
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

    def _should_wait(self, record: TriggerRecord) -> bool:
        return self.settings.wait and bool(record.options.get("wait", True))

    def _on_result(self, result: RunResult) -> None:
        self._live.discard(result.run.run_id)
        key = self._run_keys[result.run.run_id]
        status = result.status or "UNKNOWN"
        if result.outcome is WaitOutcome.COMPLETED or result.outcome is WaitOutcome.FAILED:
            self.ledger.mark_ended(key, hex_status=status)
        elif result.outcome is WaitOutcome.TIMED_OUT:
            self.ledger.mark_ended(
                key,
                hex_status="KILLED" if result.cancel_sent else status,
                timed_out=True,
                reason=str(result.error),
            )
        elif result.outcome is WaitOutcome.LOST:
            self._lost[key] = f"polling the run failed: {result.error}"
            if status != "UNKNOWN":
                self.ledger.mark_status(key, status)
        # INTERRUPTED: the row stays ``started``; the next run re-attaches to it.

    # -- results --------------------------------------------------------------------------------

    def outcomes_of(self, invocation_id: str) -> list[Outcome]:
        return [self.outcome(record) for record in self.ledger.triggers_of(invocation_id)]

    def outcome(self, record: TriggerRecord) -> Outcome:
        outcome = outcome_of(record)
        if record.trigger_key in self._lost and record.state is TriggerState.STARTED:
            return replace(
                outcome, kind=OutcomeKind.POLL_FAILED, reason=self._lost[record.trigger_key]
            )
        return outcome


def plan_outcomes(plan: Plan, dispatcher: Dispatcher) -> list[Outcome]:
    """Every mapping of a plan with what happened to it, in the plan's order."""
    by_key = {r.trigger_key: r for r in dispatcher.ledger.triggers_of(plan.invocation_id)}
    outcomes = [
        dispatcher.outcome(by_key[t.trigger_key]) for t in plan.triggers if t.trigger_key in by_key
    ]
    return outcomes + skipped_outcomes(plan)


def skipped_outcomes(plan: Plan) -> list[Outcome]:
    return [
        Outcome(
            name=skipped.name,
            project_id=skipped.project_id,
            kind=OutcomeKind.PLAN_ERROR if skipped.is_error else OutcomeKind.SKIPPED,
            reason=skipped.reason,
        )
        for skipped in plan.skipped
    ]


def dry_run_outcomes(plan: Plan, client: HexClient) -> list[Outcome]:
    """Ask Hex to validate each trigger (``dryRun``): nothing runs, nothing is recorded."""
    outcomes = []
    for trigger in plan.triggers:
        request = replace(run_request_of(trigger), dry_run=True)
        try:
            run = client.run_project(trigger.project_id, request)
        except HexApiError as exc:
            outcomes.append(
                Outcome(
                    trigger.name,
                    trigger.project_id,
                    OutcomeKind.FAILED_TO_START,
                    reason=str(exc),
                    trace_id=exc.trace_id,
                    input_params=dict(trigger.input_params),
                )
            )
            continue
        outcomes.append(
            Outcome(
                trigger.name,
                trigger.project_id,
                OutcomeKind.DRY_RUN,
                reason=trigger.reason,
                trace_id=run.trace_id,
                input_params=dict(trigger.input_params),
            )
        )
    return outcomes + skipped_outcomes(plan)
