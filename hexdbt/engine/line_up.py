"""What this process does with a trigger, decided from its ledger row, and what it means for
the user.

For every trigger the ledger row decides what happens, so a crash, a retry or a second process
never starts a Hex project twice for one key:

- ``started`` (a run id is known): follow that run; never post again;
- ``sending`` whose owner is gone (its POST's answer may be lost): ``find_run_of_lost_post``
  decides, once the POST can no longer be in flight (``lost_posts``); ``sending`` owned by
  another live process: followed through the ledger until it has a run (or is given back);
- ``planned`` / ``queued``: sent when the RunProject budget has a slot and fewer than
  ``max_live_runs`` runs are followed (``sender``, in the order of ``send_policy``);
- ``superseded`` (a later build's trigger of the same mapping entry took it over before it was
  sent): a waiting caller follows the trigger that superseded it, and reports that run's outcome;
- ended, failed, expired, ambiguous: reported as they are.
"""

from __future__ import annotations

from dataclasses import replace

from hexdbt.engine.following import Following
from hexdbt.engine.records import outcome_of
from hexdbt.engine.work import Pending, Work
from hexdbt.ledger import TriggerRecord, TriggerState
from hexdbt.outcomes import Outcome, OutcomeKind


class LineUp:
    def __init__(self, work: Work, following: Following) -> None:
        self._work = work
        self._following = following

    def resume(self) -> list[TriggerRecord]:
        """Line up what the ledger holds for this Hex workspace and is not done."""
        work = self._work
        records = work.ledger.in_state(
            TriggerState.PLANNED, TriggerState.QUEUED, TriggerState.SENDING, TriggerState.STARTED
        )
        return [self.line_up(r) for r in records if r.base_url == work.client.base_url]

    def line_up(self, record: TriggerRecord) -> TriggerRecord:
        """Decide from its ledger row what this process does with a trigger."""
        work = self._work
        key = record.trigger_key
        if any(p.record.trigger_key == key for p in work.pending):
            return record  # already lined up here (claimed with its plan, or queued)
        if record.state is TriggerState.AMBIGUOUS and work.settings.resend_ambiguous:
            record = work.ledger.reopen_ambiguous(key)
        if record.state is TriggerState.SENDING:
            adopted = work.ledger.take_over_orphan(key)
            if adopted is not None and adopted.intent_at is None:
                # Claimed, never armed: its owner sent nothing, and can no longer.
                work.elsewhere.pop(key, None)
                reason = "its claim lapsed before it was sent"
                self.line_up(work.move(adopted, work.ledger.release, reason=reason))
            elif adopted is not None:
                work.elsewhere.pop(key, None)
                work.pending.append(Pending(adopted, reconcile=True))
            elif work.should_wait(record):
                # Another live process is sending it: follow it through the ledger.
                if key not in work.elsewhere:
                    owner = work.ledger.owner_of(record)
                    work.log(f"{record.name}: being sent by {owner}; following it in the ledger")
                work.elsewhere.setdefault(key, work.clock.now())
        elif record.state is TriggerState.STARTED:
            work.elsewhere.pop(key, None)
            self._following.follow(record)
        elif record.state in (TriggerState.PLANNED, TriggerState.QUEUED):
            work.elsewhere.pop(key, None)
            work.pending.append(Pending(record))
        elif record.state is TriggerState.SUPERSEDED and work.should_wait(record):
            # A later build's trigger covers this build: wait for that one's run instead.
            work.elsewhere.pop(key, None)
            self.line_up(work.ledger.successor_of(record))
        else:
            work.elsewhere.pop(key, None)
            self.settle(record)
        return record

    def look_elsewhere(self, now: float) -> None:
        """Look again at the rows other live processes are sending, when due."""
        work = self._work
        for key, due in list(work.elsewhere.items()):
            if due <= now:
                work.elsewhere[key] = now + work.settings.elsewhere_check_s
                self.line_up(work.ledger.get(key))

    def settle(self, record: TriggerRecord) -> None:
        """The progress learns the outcome of a trigger this engine follows no run of."""
        self._work.polls.progress.settled(self.outcome(record), self._work.clock.now())

    def outcome(self, record: TriggerRecord) -> Outcome:
        work = self._work
        if record.state is TriggerState.SUPERSEDED and work.should_wait(record):
            # What a waiting caller learns is the true outcome of the run that covers its build.
            successor = work.ledger.successor_of(record)
            covering = self.outcome(successor)
            reason = f"superseded by dbt invocation {successor.invocation_id}"
            return replace(
                covering,
                name=record.name,
                reason=f"{reason}; {covering.reason}" if covering.reason else reason,
            )
        outcome = outcome_of(record)
        key = record.trigger_key
        if key in work.interrupted and record.state in (
            TriggerState.STARTED,
            TriggerState.SENDING,
            TriggerState.ENDED,
        ):
            return replace(outcome, kind=OutcomeKind.INTERRUPTED, reason=work.interrupted[key])
        if key in work.lost and record.state is TriggerState.STARTED:
            return replace(outcome, kind=OutcomeKind.POLL_FAILED, reason=work.lost[key])
        return outcome
