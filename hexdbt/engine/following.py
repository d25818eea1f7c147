"""Following the runs: each started run is polled when due, on a budget slot the engine takes
now, and its end recorded. A run past its timeout is cancelled on a slot of the engine's own too
(never waited for inside the client: sending, polling and stop go on meanwhile). An end seen
while the state cannot be reached is kept until it is back (``state_outage``).
"""

from __future__ import annotations

from contextlib import suppress

from hexdbt.engine.work import UNREACHABLE_ATTEMPTS, Cancel, NoSlot, Work
from hexdbt.errors import HexApiError, HexRejectedError, MoveRefusedError, StateUnavailable
from hexdbt.hex.client import backoff_delay_s
from hexdbt.hex.polls import RunEnd, WatchedRun
from hexdbt.ledger import TriggerRecord
from hexdbt.outcomes import OutcomeKind


class Following:
    def __init__(self, work: Work) -> None:
        self._work = work

    def follow(self, record: TriggerRecord) -> None:
        work = self._work
        assert record.run_id is not None
        if not work.should_wait(record) or record.run_id in work.polls:
            return
        work.run_keys[record.run_id] = record.trigger_key
        work.lost.pop(record.trigger_key, None)
        work.polls.add(
            WatchedRun(
                project_id=record.project_id,
                run_id=record.run_id,
                started_at=record.intent_at or record.created_at,
                run_url=record.run_url,
                timeout_s=record.options.timeout_minutes * 60,
                label=record.name,
                cancel_on_timeout=record.options.cancel_on_timeout,
            )
        )

    def poll_due(self) -> float | None:
        """Poll the runs that are due; when the next one is (None: no run is followed)."""
        work = self._work
        while not work.stopping.is_set():
            poll_at = work.polls.next_poll_at()
            if poll_at is None or poll_at > work.clock.now():
                return poll_at
            try:
                slot = work.other_slot()
            except NoSlot as no_slot:
                return no_slot.free_at
            end = work.polls.poll(slot)
            if end is not None:
                self.ended(end)
        return None

    def cancel_due(self) -> float | None:
        """Cancel the runs past their timeout, each on a budget slot taken now (never waited
        for: sending, polling and stop go on meanwhile); when to come back for the rest."""
        work = self._work
        while work.cancels and not work.stopping.is_set():
            now = work.clock.now()
            due = [item for item in work.cancels if item.not_before <= now]
            if not due:
                return min(item.not_before for item in work.cancels)
            try:
                slot = work.other_slot()
            except NoSlot as no_slot:
                return no_slot.free_at
            item = due[0]
            run = item.end.run
            try:
                work.client.cancel_run(run.project_id, run.run_id, slot=slot)
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
            work.cancels.remove(item)
            self.ended(end)
        return None

    def poll_and_cancel_due(self) -> list[float | None]:
        """One turn's following: poll and cancel what is due, refresh the progress; the moments
        to come back (None where there is nothing to come back for)."""
        work = self._work
        poll_at = self.poll_due()
        cancel_at = self.cancel_due()
        now = work.clock.now()
        work.polls.refresh(now)
        moments = [poll_at, cancel_at]
        if len(work.polls):
            moments.append(work.polls.next_refresh_at())
        return moments

    def ended(self, end: RunEnd) -> None:
        work = self._work
        if end.cancel_wanted:
            minutes = (end.run.timeout_s or 0) / 60
            work.log(f"{end.run.label}: past its timeout of {minutes:g} min; cancelling it")
            work.cancels.append(Cancel(end))
            return
        if work.state_lost_since is None:
            try:
                # Another process following the same run may have recorded its end first.
                with suppress(MoveRefusedError):
                    self.record_end(end)
                return
            except StateUnavailable as exc:
                work.lose_state(exc)
        work.unrecorded_ends.append(end)
        seen = end.status or end.kind.value
        work.log(f"{end.run.label}: {seen}; recorded in the ledger once the state is back")

    def record_end(self, end: RunEnd) -> None:
        work = self._work
        key = work.run_keys[end.run.run_id]
        status = end.status or "UNKNOWN"
        if end.kind is OutcomeKind.TIMEOUT:
            work.ledger.mark_ended(
                key,
                hex_status="KILLED" if end.cancel_sent else status,
                timed_out=True,
                reason=str(end.error),
            )
        elif end.kind is OutcomeKind.POLL_FAILED:
            work.lost[key] = f"polling the run failed: {end.error}"
            if status != "UNKNOWN":
                work.ledger.mark_status(key, status)
        else:
            work.ledger.mark_ended(key, hex_status=status)
