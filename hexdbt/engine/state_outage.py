"""The engine without its state (PostgreSQL lost): nothing is sent, the runs followed are still
polled, and what they do is kept in memory until the state is back.

Once the state cannot be reached (``Work.lose_state``), what was lined up to send is forgotten:
the ledger has it, and a claim stays ``sending`` under this process's lease, looked up in Hex once
the state is back (the lease may have expired meanwhile and another host taken it over). Runs
started just before (their start not recorded yet) and run ends seen meanwhile are kept, and
recorded, starts first, once it is back; then the engine takes up again from the ledger what it
had lined up. A one-shot command gives up after ``state_outage_limit_s`` (exit 7); a daemon
goes on, and says so now and then.
"""

from __future__ import annotations

from contextlib import suppress

from hexdbt.engine.following import Following
from hexdbt.engine.line_up import LineUp
from hexdbt.engine.sender import Sender
from hexdbt.engine.work import Work
from hexdbt.errors import MoveRefusedError, StateError, StateUnavailable

# Without the state, it is tried again this often (the store backs off its reconnects itself).
STATE_RETRY_S = 1.0


class StateOutage:
    def __init__(
        self, work: Work, *, following: Following, sender: Sender, line_up: LineUp
    ) -> None:
        self._work = work
        self._following = following
        self._sender = sender
        self._line_up = line_up
        self._next_outage_note = 0.0

    @property
    def is_on(self) -> bool:
        return self._work.state_lost_since is not None

    def turn_without_state(self, exc: StateUnavailable) -> float:
        """A turn that found the state lost: poll what is due, keep the ends seen, and come back
        soon to try the state again. A one-shot command gives up after ``state_outage_limit_s``."""
        work = self._work
        work.lose_state(exc)
        assert work.state_lost_since is not None
        now = work.clock.now()
        limit_s = work.settings.state_outage_limit_s
        lost_for = now - work.state_lost_since
        if lost_for >= work.clock.from_real_s(limit_s):
            if not work.settings.daemon:
                unrecorded = len(work.unrecorded_ends)
                raise StateError(
                    f"gave up after {limit_s:g} s without the state: {exc}",
                    hint="the runs it started stay in the ledger as started"
                    + (f" ({unrecorded} of them ended meanwhile)" if unrecorded else "")
                    + ": once the state is back, `hexdbt status` lists them and the next"
                    " `hexdbt run` or `watch` follows them to their end",
                ) from None
            if now >= self._next_outage_note:  # a daemon lives on, and says so now and then
                self._next_outage_note = now + work.settings.resume_every_s
                work.log(f"still without the state after {lost_for:.0f} s: {exc}")
        moments = self._following.poll_and_cancel_due()
        moments.append(work.clock.now() + work.clock.from_real_s(STATE_RETRY_S))
        return min(moment for moment in moments if moment is not None)

    def regain(self) -> None:
        """Record the run starts and ends seen without the state and take up again from the
        ledger what was lined up. StateUnavailable while the state is still lost."""
        work = self._work
        while work.unrecorded_starts:
            self._sender.record_start(*work.unrecorded_starts[0])
            work.unrecorded_starts.pop(0)
        while work.unrecorded_ends:
            with suppress(MoveRefusedError):  # another process recorded it first
                self._following.record_end(work.unrecorded_ends[0])
            work.unrecorded_ends.pop(0)
        self._line_up.resume()
        assert work.state_lost_since is not None
        now = work.clock.now()
        work.log(f"the state is back after {now - work.state_lost_since:.0f} s")
        work.state_lost_since = None
        work.next_resume = now + work.settings.resume_every_s
