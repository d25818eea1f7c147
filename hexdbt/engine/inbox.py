"""The engine's inbox: plans and resumes handed in from any thread, taken in by the engine's own.

Every way in (``hexdbt run``, the dbt wrapper, the dbtRunner callback, ``hexdbt watch``,
``hexdbt trigger`` and the Python API) hands the engine plans through ``Engine.submit``; the
engine's thread records each plan in the ledger, claims in the same transaction the triggers
that can go at once (``send_policy``), and tells its caller the records once that turn's POSTs
are out. A plan whose recording fails (a full disk) is tried again a few times; without the
state (PostgreSQL lost) it waits for the state, and that is not an attempt. Submissions the
engine never recorded (it was stopped first) are settled when it ends: their callers learn so.
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from hexdbt.crashpoints import crash_point
from hexdbt.engine.line_up import LineUp
from hexdbt.engine.records import new_trigger, plan_skip
from hexdbt.engine.send_policy import SendPolicy
from hexdbt.engine.work import Pending, Work
from hexdbt.errors import HexdbtError, Interrupted, StateUnavailable
from hexdbt.hex.budget import Slot
from hexdbt.ledger import TriggerRecord
from hexdbt.planner.rules import Skipped, Trigger

Records = list[TriggerRecord] | None


@dataclass
class Submission:
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
class Resume:
    result: Future[list[TriggerRecord]] = field(default_factory=Future)


class Inbox:
    def __init__(self, work: Work, *, policy: SendPolicy, line_up: LineUp) -> None:
        self._work = work
        self._policy = policy
        self._line_up = line_up
        self._queue: queue.SimpleQueue[Submission | Resume] = queue.SimpleQueue()
        self.waiting_submissions: list[Submission] = []
        self._resumes_waiting: list[Resume] = []
        self._recorded: list[tuple[Future[Records], list[TriggerRecord]]] = []

    # -- any thread -------------------------------------------------------------------------------

    def put(self, item: Submission | Resume) -> None:
        self._queue.put(item)
        self._work.wake.set()

    # -- the engine's thread ----------------------------------------------------------------------

    def is_empty(self) -> bool:
        """Nothing handed in is waiting to be taken in or recorded."""
        return not self.waiting_submissions and self._queue.empty()

    def take_in(self, now: float) -> None:
        """Answer the resumes and record the submissions handed in (StateUnavailable: what could
        not be done stays for the turn that has the state again)."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Resume):
                self._resumes_waiting.append(item)
            else:
                self.waiting_submissions.append(item)
        # Without the state, what cannot be done now stays for the turn that has it again.
        while self._resumes_waiting:
            self._resumes_waiting[0].result.set_result(self._line_up.resume())
            self._resumes_waiting.pop(0)
        waiting, self.waiting_submissions = self.waiting_submissions, []
        for index, submission in enumerate(waiting):
            if submission.not_before > now:
                self.waiting_submissions.append(submission)
                continue
            try:
                self._record(submission, now)
            except StateUnavailable:
                self.waiting_submissions.extend(waiting[index:])  # not an attempt: kept
                raise

    def tell_recorded(self) -> None:
        """Tell the callers their records (once this turn's POSTs are out)."""
        recorded, self._recorded = self._recorded, []
        for result, records in recorded:
            result.set_result(records)

    def settle_unrecorded(self) -> None:
        """Submissions the loop never recorded (it was stopped first): their callers learn so."""
        leftovers: list[Submission | Resume] = [
            *self._resumes_waiting,
            *self.waiting_submissions,
        ]
        self._resumes_waiting, self.waiting_submissions = [], []
        while True:
            try:
                leftovers.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self.tell_recorded()  # recorded, then stopped before they were told
        for item in leftovers:
            if isinstance(item, Resume):
                item.result.set_result([])
            elif not item.result.done():
                item.result.set_exception(Interrupted("stopped before it was recorded"))

    def _record(self, item: Submission, now: float) -> None:
        """Record a submission; those of its triggers that can go at once are claimed in the
        same transaction. A ledger that cannot be written is tried again a few times."""
        work = self._work
        triggers = [new_trigger(trigger, work.client.base_url) for trigger in item.triggers]
        sending_now: dict[str, Slot | None] = {}
        claimed: set[str] = set()
        try:
            # The holds read the ledger: a ledger that cannot be read fails this attempt too.
            sending_now = self._policy.may_go_now(triggers)
            recorded = work.ledger.plan_and_claim(
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
            retry = item.attempts < work.settings.submit_attempts
            work.log(
                f"cannot record dbt invocation {item.invocation_id} in the ledger: {exc}"
                + (f"; trying again in {work.settings.submit_retry_s:g} s" if retry else "")
            )
            if retry:
                item.not_before = now + work.settings.submit_retry_s
                self.waiting_submissions.append(item)
            else:
                item.result.set_exception(exc)
            return
        finally:  # a ledger that cannot be written keeps no slot from the budget
            work.give_back([slot for key, slot in sending_now.items() if key not in claimed])
        if recorded is None:
            item.result.set_result(None)
            return
        crash_point("planned")
        self._policy.planned(triggers)
        self._forget_superseded(recorded[0])
        for record in recorded[0]:
            if record.trigger_key in claimed:
                slot = sending_now[record.trigger_key]
                work.pending.append(Pending(record, claimed=True, slot=slot))
            else:
                self._line_up.line_up(record)
        # Told once this turn's POSTs are out: a caller's callback (a log line) never delays them.
        self._recorded.append((item.result, recorded[0]))

    def _forget_superseded(self, newer: Sequence[TriggerRecord]) -> None:
        """Triggers lined up here that the newly recorded ones may have superseded are looked at
        again in the ledger, which says whether they were (or were claimed first elsewhere)."""
        work = self._work
        entries = {(r.entry_key, r.base_url) for r in newer if r.coalesce}
        if not entries:
            return
        newer_keys = {record.trigger_key for record in newer}
        older = [
            item
            for item in work.pending
            if not item.claimed
            and not item.reconcile
            and (item.record.entry_key, item.record.base_url) in entries
            and item.record.trigger_key not in newer_keys
        ]
        for item in older:
            work.pending.remove(item)
            self._line_up.line_up(work.ledger.get(item.record.trigger_key))
