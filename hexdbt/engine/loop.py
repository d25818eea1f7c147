"""The engine: the one loop that sends triggers, follows their runs and records everything.

Every way in (``hexdbt run``, the dbt wrapper, the dbtRunner callback, ``hexdbt watch``,
``hexdbt trigger`` and the Python API) hands the engine plans through ``submit``, from any thread,
and reads outcomes back; the engine's own thread (``run``) does all the rest, in one loop on one
clock: it records plans in the ledger, sends what the budget allows, polls what is due, and ends
when it is closed and idle, or within a second of ``request_stop``, whatever it waits on.

``Engine`` composes its parts, which share one ``Work`` (``work``: what the engine holds):

- ``inbox``: the plans and resumes handed in, recorded in the ledger;
- ``line_up``: what each trigger's ledger row says this process does with it, and its outcome;
- ``send_policy``: which waiting triggers may go now, and in what order;
- ``sender``: the fence (arm right before the POST), the POST, recording the start, strays,
  and what a failed send means;
- ``lost_posts``: a POST whose answer was lost, looked up in Hex's runs (``reconcile``);
- ``following``: the runs followed, polled and cancelled on the engine's own budget slots;
- ``state_outage``: the state lost, the runs followed meanwhile, the state regained;
- ``wind_down``: after stop;
- ``lease_keeper``: this process's lease, renewed on its own thread while the loop lives.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future

from hexdbt.engine.following import Following
from hexdbt.engine.inbox import Inbox, Records, Resume, Submission
from hexdbt.engine.lease_keeper import LeaseKeeper
from hexdbt.engine.line_up import LineUp
from hexdbt.engine.lost_posts import LostPosts
from hexdbt.engine.reconcile import WINDOW_MARGIN_S
from hexdbt.engine.records import skipped_outcomes
from hexdbt.engine.send_policy import SendPolicy
from hexdbt.engine.sender import Sender
from hexdbt.engine.state_outage import StateOutage
from hexdbt.engine.wind_down import WindDown
from hexdbt.engine.work import EngineSettings, Log, Work
from hexdbt.errors import ConfigError, Interrupted, StateUnavailable
from hexdbt.hex.client import HexClient
from hexdbt.hex.polls import Polls
from hexdbt.ledger import Ledger, TriggerRecord
from hexdbt.outcomes import Outcome
from hexdbt.planner.rules import Plan, Skipped, Trigger
from hexdbt.settings import LEASE_TTL_ENV, resolve_window_margin_s

# The longest the loop sleeps without looking at the stop event.
STOP_CHECK_S = 1.0


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
        self.clock = client.clock
        # The runs followed, with their schedule and progress display (none by default).
        self.polls = polls if polls is not None else Polls(client)
        # Set by request_stop (and by a signal, through the client's stop event).
        self.stopping = client.stop
        margin_s = self.settings.window_margin_s or resolve_window_margin_s() or WINDOW_MARGIN_S
        # The arm renews the lease; it must outlast the POST that follows (the self-fence).
        lease_ttl_s = ledger.lease_real_s
        if lease_ttl_s <= sum(client.timeout):
            raise ConfigError(
                f"{LEASE_TTL_ENV} ({lease_ttl_s:g} s) must be longer than the longest RunProject"
                f" (connect and read timeouts: {sum(client.timeout):g} s)",
                hint="a POST must end before the lease that allowed it can lapse",
            )
        work = Work(
            client=client,
            ledger=ledger,
            settings=self.settings,
            polls=self.polls,
            log=log or (lambda _message: None),
            # How long a POST of this process may be in flight: its timeouts (real seconds, on
            # the clock), and the margin (on the clock, as Hex's run times are).
            window_s=client.longest_request_s + margin_s,
            stopping=self.stopping,
        )
        self._work = work
        self._closed = False
        self._lease_keeper = LeaseKeeper(ledger, log=work.log)
        self._following = Following(work)
        self._line_up = LineUp(work, self._following)
        policy = SendPolicy(work)
        self._inbox = Inbox(work, policy=policy, line_up=self._line_up)
        self._sender = Sender(
            work,
            policy=policy,
            line_up=self._line_up,
            lost_posts=LostPosts(work, self._line_up),
            following=self._following,
            lease_keeper=self._lease_keeper,
        )
        self._outage = StateOutage(
            work, following=self._following, sender=self._sender, line_up=self._line_up
        )
        self._wind_down = WindDown(work, following=self._following)

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
        item = Submission(
            invocation_id, command, source, tuple(triggers), only_new, project_dir, skipped
        )
        self._inbox.put(item)
        return item.result

    def resume(self) -> Future[list[TriggerRecord]]:
        """Take up what earlier processes left for this Hex workspace: queued triggers, orphaned
        sends, and live runs (followed when waiting). The result: those records."""
        item = Resume()
        self._inbox.put(item)
        if self.settings.daemon:
            self._work.next_resume = self.clock.now() + self.settings.resume_every_s
        return item.result

    def close(self) -> None:
        """No more submissions: ``run`` returns once everything taken up is done."""
        self._closed = True
        self._work.wake.set()

    def request_stop(self) -> None:
        """Stop within a second: nothing more is sent (signal handlers call this too)."""
        self.stopping.set()
        self._work.wake.set()

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
                    wake_at = self._outage.turn_without_state(exc)
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
                self._wind_down.wind_down()
            self._inbox.settle_unrecorded()
            self._lease_keeper.stop()
            self.polls.progress.close(self.clock.now())

    def _sleep_until(self, wake_at: float) -> None:
        """Until ``wake_at``, new work (``wake``) or stop, which is looked at every second: a
        signal handler only sets the stop event."""
        wake = self._work.wake
        while not self.stopping.is_set() and not wake.is_set():
            remaining = wake_at - self.clock.now()
            if remaining <= 0:
                break
            self.clock.wait(wake, min(remaining, STOP_CHECK_S))
        wake.clear()

    def _start_afresh(self, exc: Exception, *, pause_s: float) -> float:
        """A daemon's turn failed (the ledger could not be written, or a bug): forget what was
        lined up and take it up again from the ledger after ``pause_s``; the runs followed stay."""
        work = self._work
        work.log(
            f"dispatching failed ({type(exc).__name__}: {exc}); starting afresh from the"
            f" ledger in {pause_s:g} s"
        )
        self._wind_down.give_back_claims("not sent yet when dispatching failed")
        work.pending = []
        work.elsewhere = {}
        work.next_resume = self.clock.now() + pause_s
        return work.next_resume

    def _turn(self) -> float | None:
        """One turn: take in, send, poll. When to come back, or None when all is done."""
        work = self._work
        if self._outage.is_on:
            self._outage.regain()
        now = self.clock.now()
        self._inbox.take_in(now)
        if now >= work.next_resume:
            work.next_resume = now + self.settings.resume_every_s
            self._line_up.resume()
        self._line_up.look_elsewhere(now)
        send_at = self._sender.send_due()
        self._inbox.tell_recorded()
        moments = [send_at, *self._following.poll_and_cancel_due()]
        now = self.clock.now()
        busy = work.pending or work.elsewhere or len(self.polls) or work.cancels
        if self._closed and not busy and self._inbox.is_empty():
            return None
        moments += [work.next_resume, *work.elsewhere.values()]
        moments += [item.not_before for item in self._inbox.waiting_submissions]
        return min((moment for moment in moments if moment is not None), default=now + 3600.0)

    # -- results ----------------------------------------------------------------------------------

    def outcome(self, record: TriggerRecord) -> Outcome:
        return self._line_up.outcome(record)

    def outcomes_of(self, plan: Plan) -> list[Outcome]:
        """Every mapping of a plan with what happened to it, in the plan's order."""
        by_key = {r.trigger_key: r for r in self.ledger.triggers_of(plan.invocation_id)}
        outcomes = [
            self.outcome(by_key[t.trigger_key]) for t in plan.triggers if t.trigger_key in by_key
        ]
        return outcomes + skipped_outcomes(plan)
