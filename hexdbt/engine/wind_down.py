"""Winding down after stop: nothing more is sent. Runs this process started are cancelled (when
asked) within ``cancel_budget_s`` as a whole, triggers claimed and not sent are given back to the
queue, and every open run is reported ``interrupted``, with what stopping did to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from hexdbt.engine.following import Following
from hexdbt.engine.work import Work
from hexdbt.errors import HexApiError, HexRejectedError, Interrupted
from hexdbt.hex.budget import CallKind, Slot
from hexdbt.hex.polls import WatchedRun


class WindDown:
    def __init__(self, work: Work, *, following: Following) -> None:
        self._work = work
        self._following = following

    def wind_down(self) -> None:
        """After stop: cancel what this process started (bounded), give back what it claimed."""
        work = self._work
        open_runs = work.polls.close_all()
        mine = [run for run in open_runs if run.run_id in work.started_here]
        cancel = work.settings.cancel_on_interrupt
        cancelled = self._cancel_all(mine) if cancel else {}
        for run in open_runs:
            key = work.run_keys[run.run_id]
            note = cancelled.get(run.run_id) or (
                "left running (--no-cancel-on-interrupt); a later hexdbt run follows it"
                if run.run_id in work.started_here
                else "left running: another process started it; a later hexdbt run follows it"
            )
            work.interrupted[key] = f"interrupted: {note}"
            if note == "cancelled in Hex":
                work.record_quietly(
                    partial(
                        work.ledger.mark_ended,
                        key,
                        hex_status="KILLED",
                        reason="hexdbt was interrupted and cancelled it",
                    )
                )
        timed_out, work.cancels = work.cancels, []
        for waiting in timed_out:  # past their timeout, not cancelled yet: stopping leaves them
            end = waiting.end.cancelled("not cancelled: hexdbt was stopped first", sent=False)
            work.record_quietly(partial(self._following.record_end, end))
        self.give_back_claims("hexdbt was interrupted before sending it")
        pending, work.pending = work.pending, []
        for item in pending:
            if item.reconcile:
                work.interrupted[item.record.trigger_key] = (
                    "interrupted while its lost RunProject answer was being looked up; a later"
                    " hexdbt run looks it up in Hex's runs before sending anything"
                )
            else:
                work.log(f"left queued after interruption: {item.record.name}")

    def give_back_claims(self, reason: str) -> None:
        """Triggers claimed and certainly not sent go back to the queue, with their slots (if the
        ledger cannot say so, they stay ``sending`` and are looked up in Hex once their window
        has closed: safe, only later)."""
        work = self._work
        for item in work.pending:
            if item.claimed:
                work.give_back([item.slot])
                record = item.record
                release = partial(
                    work.ledger.release, record.trigger_key, fence=record.fence, reason=reason
                )
                work.record_quietly(release)

    def _cancel_all(self, runs: Sequence[WatchedRun]) -> dict[str, str]:
        """Cancel ``runs`` within ``cancel_budget_s`` all together; run id -> what happened."""
        work = self._work
        deadline = work.clock.now() + work.settings.cancel_budget_s
        budget = work.client.budget
        slots: Sequence[Slot | None] = (
            budget.take_now(CallKind.OTHER, len(runs)) if budget else [None] * len(runs)
        )
        done: dict[str, str] = {}
        for index, run in enumerate(runs):
            remaining = deadline - work.clock.now()
            if index >= len(slots):
                done[run.run_id] = "not cancelled: Hex's rate budget had no call left"
            elif remaining <= 0.1:
                done[run.run_id] = "not cancelled: the time to wind down was up"
            else:
                try:
                    work.client.cancel_run(
                        run.project_id, run.run_id, slot=slots[index], read_timeout_s=remaining
                    )
                    done[run.run_id] = "cancelled in Hex"
                except HexRejectedError:
                    done[run.run_id] = "it had ended already"
                except (HexApiError, Interrupted) as exc:
                    done[run.run_id] = f"not cancelled: {exc}"
        return done
