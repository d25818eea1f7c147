"""The sender and its fence: each trigger is armed, POSTed once, and its start recorded.

- **Arm** (``Ledger.arm``, or ``claim_for_sending`` for a trigger not claimed with its plan):
  right before its POST, one short transaction sets the intent's time, raises the fence and
  records when the POST's in-flight window closes, only where the row is still ``sending``
  under this process's lease and the lease has more time left than the POST can take. If it
  updates nothing, nothing is POSTed: another process holds the trigger.
- **POST** on the RunProject slot taken for it. The engine takes each call's budget slot itself
  (``take_now``) and never waits in the client: a 429 or 503 requeues the trigger for the moment
  the budget allows, and a trigger that cannot go before its deadline stays queued in the ledger
  and is reported (in the order of ``send_policy``).
- **Record the start** at the armed fence. Every move out of ``sending`` is guarded by owner and
  fence: a process that stalled past its lease finds its row taken over and never overwrites it;
  a run it started after the new owner decided without it is a **stray**, cancelled in Hex on a
  slot of the budget, recorded beside the trigger and reported. A start that cannot be recorded
  because the state is lost is kept and followed (``state_outage``).
- **A failed send**: a lost answer is looked up in Hex's runs (``lost_posts``); a 429, a 503 or
  a POST that provably never left started nothing, and the trigger is tried again later; any
  other refusal is recorded as failed.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from hexdbt.crashpoints import crash_point
from hexdbt.engine.following import Following
from hexdbt.engine.lease_keeper import LeaseKeeper
from hexdbt.engine.line_up import LineUp
from hexdbt.engine.lost_posts import LostPosts
from hexdbt.engine.send_policy import SendPolicy
from hexdbt.engine.work import UNREACHABLE_ATTEMPTS, NoSlot, Pending, Work
from hexdbt.errors import (
    HexApiError,
    HexRateLimitedError,
    HexRejectedError,
    HexTransportError,
    HexUnavailableError,
    Interrupted,
    MoveRefusedError,
    StateUnavailable,
)
from hexdbt.hex.budget import CallKind, Slot
from hexdbt.hex.client import backoff_delay_s, run_may_have_started
from hexdbt.hex.models import Run
from hexdbt.hex.polls import WaitCause
from hexdbt.ledger import TriggerRecord, TriggerState
from hexdbt.settings import resolve_unfenced


class Sender:
    def __init__(
        self,
        work: Work,
        *,
        policy: SendPolicy,
        line_up: LineUp,
        lost_posts: LostPosts,
        following: Following,
        lease_keeper: LeaseKeeper,
    ) -> None:
        self._work = work
        self._policy = policy
        self._line_up = line_up
        self._lost_posts = lost_posts
        self._following = following
        self._lease_keeper = lease_keeper
        self._unfenced = resolve_unfenced()

    def send_due(self) -> float | None:
        """Send what may be sent now, the highest ranked first (``send_order``); when to come
        back for the rest (None: nothing pending)."""
        work = self._work
        while work.pending and not work.stopping.is_set():
            now = work.clock.now()
            claimed = next((p for p in work.pending if p.claimed), None)
            if claimed is not None:  # its place was counted and its slot taken when it was claimed
                self._send(claimed, claimed.slot)
                continue
            due = [p for p in work.pending if p.not_before <= now]
            if not due:
                return min(p.not_before for p in work.pending)
            lookup = next((p for p in due if p.reconcile), None)
            if lookup is not None:
                self._lost_posts.look_up(lookup)
                continue
            if len(work.polls) >= work.settings.max_live_runs:
                self._say_why_they_wait(
                    WaitCause.PLACES, f"{len(work.polls)} runs are live (max_live_runs)"
                )
                return work.polls.next_poll_at()  # a finishing run frees a place
            if len(due) > 1:  # they compete: Hex's views help order them
                self._policy.app_views.read_if_due(now)
            item = max(due, key=lambda p: self._policy.rank(p.record, now))
            record = item.record
            deadline = record.created_at + work.settings.queue_deadline_s
            if now >= deadline:
                work.pending.remove(item)
                try:
                    expired = work.ledger.mark_expired(
                        record.trigger_key,
                        reason="did not fit Hex's RunProject budget before its deadline",
                    )
                    work.log(f"{record.name}: expired in the queue")
                    self._line_up.line_up(expired)
                except MoveRefusedError:  # another process took it meanwhile
                    self._line_up.line_up(work.ledger.get(record.trigger_key))
                continue
            hold = self._policy.holds([record], now).get(record.trigger_key)
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
            budget = work.client.budget
            taken = budget.take_now(CallKind.RUN_PROJECT, 1) if budget is not None else (None,)
            if taken:
                if hold is not None and hold.paced:
                    self._policy.sent_paced(now)
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
        settings = self._work.settings
        return not settings.wait and can_go_at > now + settings.no_wait_send_window_s

    def _say_why_they_wait(self, cause: WaitCause, reason: str) -> None:
        """Why the pending triggers have not been sent yet (a wait can last an hour): once per
        trigger and ``cause``."""
        work = self._work
        untold = [item for item in work.pending if cause not in item.told]
        for item in untold:
            item.told.add(cause)
        if untold:
            work.log(f"waiting to send {', '.join(i.record.name for i in untold)}: {reason}")
            triggers = [(item.record.name, item.record.project_id) for item in untold]
            work.polls.progress.waiting(triggers, cause, work.clock.now())

    def _leave_queued(self, item: Pending, waiting_for: str) -> None:
        """Leave a trigger in the ledger's queue, for a later run or watch (--no-wait)."""
        work = self._work
        work.pending.remove(item)
        record = item.record
        try:
            queued = work.ledger.mark_queued(
                record.trigger_key,
                deadline_at=record.created_at + work.settings.queue_deadline_s,
                reason=f"waiting for {waiting_for}; a later hexdbt run or watch sends it",
            )
            work.log(f"{record.name}: queued for {waiting_for}")
            self._line_up.settle(queued)
        except MoveRefusedError:  # another process took it meanwhile
            self._line_up.line_up(work.ledger.get(record.trigger_key))

    def _send(self, item: Pending, slot: Slot | None) -> None:
        """Arm one trigger and POST it, on the RunProject ``slot`` taken for it."""
        work = self._work
        work.pending.remove(item)
        record = item.record
        armed = self._arm(item)
        if armed is None:
            work.give_back([slot])  # another process holds it
            current = work.ledger.get(record.trigger_key)
            if item.claimed and current.owner_lease != record.owner_lease:
                owner = work.ledger.owner_of(current)
                work.log(
                    f"{record.name}: not sent: {owner} took it over while this process was"
                    " stalled past its lease"
                )
            self._line_up.line_up(current)
            return
        crash_point("armed")
        self._lease_keeper.beat()
        try:
            run = work.client.run_project_body(armed.project_id, armed.request, slot=slot)
        except Interrupted as exc:
            if exc.sent:
                work.interrupted[armed.trigger_key] = (
                    "interrupted while RunProject was in flight; a later hexdbt run looks it up"
                    " in Hex's runs before sending anything"
                )
            else:
                work.give_back([slot])
                reason = "hexdbt was interrupted before sending it"
                work.record_quietly(partial(work.move, armed, work.ledger.release, reason=reason))
            raise
        except HexApiError as exc:
            self._send_failed(replace(item, record=armed), exc)
            return
        crash_point("post-answered")
        work.started_here.add(run.run_id)
        try:
            started = self.record_start(armed, run)
        except StateUnavailable:
            # The run is Hex's now: follow it, and record it (then its end) once the state is back.
            work.unrecorded_starts.append((armed, run))
            self._following.follow(replace(armed, state=TriggerState.STARTED, run_id=run.run_id))
            raise
        crash_point("run-id-recorded")
        if started.state is TriggerState.STARTED and not work.should_wait(started):
            self._line_up.settle(started)  # sent, its run not waited on: this engine is done

    def _arm(self, item: Pending) -> TriggerRecord | None:
        """Commit the intent to POST (``Ledger.arm``; ``claim_for_sending`` for a trigger not
        claimed with its plan): the armed record, or None when this process may not send it."""
        work = self._work
        record = item.record
        if not item.claimed:
            return work.ledger.claim_for_sending(
                record.trigger_key,
                hex_clock_offset_s=work.client.hex_clock_offset_s,
                window_s=work.window_s,
                post_takes_s=sum(work.client.timeout),
            )
        if self._unfenced:  # stall tests only: POST on the claim alone, as before the fence
            return record
        return work.ledger.arm(
            record.trigger_key,
            fence=record.fence,
            hex_clock_offset_s=work.client.hex_clock_offset_s,
            window_s=work.window_s,
            post_takes_s=sum(work.client.timeout),
        )

    def record_start(self, armed: TriggerRecord, run: Run) -> TriggerRecord:
        """Record the run a POST of ``armed`` started, and follow it. When another process took
        the trigger over meanwhile (this one stalled past its lease), its row stands: the run is
        its own, or the one it waits to find in Hex, or else a stray, cancelled and recorded."""
        work = self._work
        try:
            started = work.ledger.mark_started(
                armed.trigger_key,
                fence=armed.fence,
                run_id=run.run_id,
                run_url=run.run_url,
                trace_id=run.trace_id,
            )
        except MoveRefusedError:
            started = work.ledger.get(armed.trigger_key)
            taken_over_at_this_intent = (
                started.state is TriggerState.SENDING and started.fence == armed.fence
            )
            if started.run_id != run.run_id and not taken_over_at_this_intent:
                self._stray(armed, run, started)
        else:
            work.log(f"{armed.name}: started run {run.run_id}  {run.run_url or ''}".rstrip())
        self._line_up.line_up(started)
        return started

    def _stray(self, armed: TriggerRecord, run: Run, current: TriggerRecord) -> None:
        """A run this process started after another had taken its trigger over and decided
        without it: cancel it in Hex (on a slot of the budget), record it, say so."""
        work = self._work
        work.started_here.discard(run.run_id)
        try:
            work.client.cancel_run(armed.project_id, run.run_id, slot=work.other_slot())
            fate = "cancelled in Hex"
        except NoSlot:
            fate = "not cancelled: Hex's rate budget had no call left; cancel it in Hex"
        except HexRejectedError:
            fate = "not cancelled: it had ended already"
        except HexApiError as exc:
            fate = f"not cancelled ({exc}); cancel it in Hex"
        work.ledger.record_stray(armed, run_id=run.run_id, run_url=run.run_url, fate=fate)
        owner = work.ledger.owner_of(current) if current.owner_lease else "another process"
        work.log(
            f"{armed.name}: run {run.run_id} was started after {owner} had taken the trigger"
            f" over (this process stalled past its lease); stray run {fate}"
        )

    def _send_failed(self, item: Pending, exc: HexApiError) -> None:
        work = self._work
        now = work.clock.now()
        record = item.record
        if run_may_have_started(exc):
            work.log(f"{record.name}: the answer to RunProject was lost; checking Hex's runs")
            work.pending.append(Pending(record, reconcile=True, own_intent=True))
            return
        unreachable = item.unreachable + isinstance(exc, HexTransportError)
        if unreachable > UNREACHABLE_ATTEMPTS:
            pass  # Hex cannot be reached at all (a wrong address, no network): say so, once
        elif isinstance(exc, HexRateLimitedError | HexUnavailableError | HexTransportError):
            # 429, 503 (no free kernel), or a POST that provably never left: nothing started.
            budget = work.client.budget
            if isinstance(exc, HexRateLimitedError) and budget is not None:
                retry_at = budget.next_slot_at(CallKind.RUN_PROJECT)
            elif isinstance(exc, HexTransportError):
                retry_at = now + backoff_delay_s(unreachable, None, jitter=0.5)
            else:
                retry_at = now + work.settings.retry_later_s
            released = work.move(record, work.ledger.release, reason=str(exc))
            work.log(f"{record.name}: not started ({exc}); trying again in {retry_at - now:.0f} s")
            if released.state is TriggerState.QUEUED:
                work.pending.append(Pending(released, not_before=retry_at, unreachable=unreachable))
            else:
                self._line_up.line_up(released)
            return
        failed = work.move(record, work.ledger.mark_failed, reason=str(exc), trace_id=exc.trace_id)
        work.log(f"{record.name}: Hex refused the run: {exc}")
        self._line_up.line_up(failed)
