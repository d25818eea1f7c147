"""The engine's side of a RunProject whose answer was lost (``reconcile`` gives the one answer):
when to look in Hex's run list, on which budget slot, how often, and what each verdict moves the
trigger's row to.

A lost POST is looked up at once, then every ``LOOKUP_AGAIN_S`` while it may still be in flight
(the window the sender recorded with its intent): a run Hex creates late is adopted as soon as
it is there. Once the window has closed, no run means nothing started and the trigger is given
back to the queue. Each page of the look-up takes a slot of the engine's own budget, never waited
for in the client; a run list Hex fails to give is looked up again ``LOOKUP_ATTEMPTS`` times
before the trigger is reported ambiguous, as several candidates are.
"""

from __future__ import annotations

from dataclasses import replace

from hexdbt.engine.line_up import LineUp
from hexdbt.engine.reconcile import find_run_of_lost_post, window_closes_at
from hexdbt.engine.work import NoSlot, Pending, Work
from hexdbt.errors import (
    HexAmbiguousRunError,
    HexApiError,
    HexRateLimitedError,
    HexTransportError,
    HexUnavailableError,
)
from hexdbt.hex.client import backoff_delay_s
from hexdbt.ledger import TriggerState

# A lost POST's run list that Hex fails to give (5xx, 429, no answer) is looked up this many
# times, each as many requests as the client tries a GET (one per budget slot of the engine's),
# before the trigger is reported ambiguous. Twice: one failed look-up is no longer a final
# verdict, and a silent Hex still ends the command soon.
LOOKUP_ATTEMPTS = 2
# While a lost POST may still be in flight, Hex's run list is looked at again this often (seconds
# of the clock): a run Hex creates just after the read timeout is adopted then, not at the close.
LOOKUP_AGAIN_S = 10.0


class LostPosts:
    def __init__(self, work: Work, line_up: LineUp) -> None:
        self._work = work
        self._line_up = line_up

    def look_up(self, item: Pending) -> None:
        """Find out whether a POST whose answer was lost started a run."""
        work = self._work
        ledger = work.ledger
        work.pending.remove(item)
        record = ledger.get(item.record.trigger_key)
        if record.state is not TriggerState.SENDING or record.fence != item.record.fence:
            self._line_up.line_up(record)  # moved, or taken over, meanwhile
            return
        window_closes = window_closes_at(record, work.window_s)
        # "Nothing started" may be concluded only from a run list asked for once the window had
        # closed: one asked just before it may miss a run Hex creates in its last moments.
        asked_at = work.clock.now()
        try:
            run = find_run_of_lost_post(
                work.client,
                record,
                ledger.run_ids_of_project(record.project_id),
                own_intent=item.own_intent,
                slot_for_page=work.other_slot,
            )
        except NoSlot as no_slot:  # the look-up waits for a slot of the engine's, not in the client
            work.pending.append(replace(item, record=record, not_before=no_slot.free_at))
            return
        except HexAmbiguousRunError as exc:
            reason = f"{exc}; not re-sent (use --resend-ambiguous to send it anyway)"
            self._line_up.line_up(work.move(record, ledger.mark_ambiguous, reason=reason))
            return
        except HexApiError as exc:
            failures = item.lookups_failed + 1
            passing = isinstance(exc, HexTransportError | HexRateLimitedError | HexUnavailableError)
            attempts = work.client.get_attempts
            if passing and failures < LOOKUP_ATTEMPTS * attempts:
                # Hex failing for a moment proves nothing either way: look again, still sending.
                retry_after = exc.retry_after_s if isinstance(exc, HexRateLimitedError) else None
                delay = backoff_delay_s((failures - 1) % attempts + 1, retry_after, jitter=0.5)
                if failures % attempts == 0:  # a whole look-up failed: say so once
                    work.log(
                        f"{record.name}: Hex's run list could not be read ({exc}); looking again"
                    )
                work.pending.append(
                    replace(
                        item,
                        record=record,
                        not_before=work.clock.now() + delay,
                        lookups_failed=failures,
                    )
                )
                return
            reason = f"RunProject's answer was lost and Hex's run list could not be read: {exc}"
            self._line_up.line_up(work.move(record, ledger.mark_ambiguous, reason=reason))
            return
        now = work.clock.now()
        if run is not None:
            work.log(f"{record.name}: found run {run.run_id}, the one started after its intent")
            work.started_here.add(run.run_id)
            started = work.move(
                record,
                ledger.mark_started,
                run_id=run.run_id,
                run_url=run.run_url,
                trace_id=run.trace_id,
            )
            self._line_up.line_up(started)
        elif asked_at < window_closes:
            # The POST may still be in flight: "nothing started" cannot be concluded yet. Look
            # again now and then, so that a run Hex creates late is adopted as soon as it is there.
            again = min(window_closes, now + LOOKUP_AGAIN_S)
            work.pending.append(replace(item, record=record, not_before=again))
        else:
            reason = "RunProject's answer was lost; Hex started no run"
            self._line_up.line_up(work.move(record, ledger.release, reason=reason))
