"""Which waiting triggers may be sent now, and in what order.

A trigger that can go at once is claimed in the transaction that records its plan
(``SendPolicy.may_go_now``): one synced commit stands between dbt's artifacts and its POST.
When several wait, the highest ranked goes first (``send_order``: priority, Hex's views, unserved
age); an app's ``min_interval`` holds its trigger back, and under overload (builds coming faster
than the budget serves them) sends keep the budget's sustained pace (``SendPolicy.holds``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hexdbt.engine.send_order import AppViews, send_rank
from hexdbt.engine.work import Work
from hexdbt.hex.budget import CallKind, Slot
from hexdbt.ledger import Demand, NewTrigger, TriggerRecord

# While more triggers were planned in this long than Hex's budget runs in it, some app more than
# once, sends are paced at the budget's sustained rate.
DEMAND_WINDOW_S = 3600.0
# How often the engine looks at the demand on the budget again.
OVERLOAD_CHECK_S = 60.0


@dataclass(frozen=True, slots=True)
class Hold:
    """Until when a trigger waits, and whether it is a re-run that keeps the overload's pace."""

    until: float
    paced: bool


class SendPolicy:
    def __init__(self, work: Work) -> None:
        self._work = work
        self._paced_send_at = float("-inf")  # the last trigger sent while overloaded
        self._demand = (float("-inf"), Demand(0, frozenset(), repeated=False))
        self.app_views = AppViews(
            work.client, max_age_s=work.settings.app_views_max_age_s, log=work.log
        )

    def may_go_now(self, triggers: Sequence[NewTrigger]) -> dict[str, Slot | None]:
        """The triggers of a plan that may be sent now, highest priority first, each with the
        RunProject slot taken for it: none while older triggers wait (they go first), none whose
        app's ``min_interval`` has not passed, and no more than there are free places and
        slots."""
        work = self._work
        if work.pending or work.stopping.is_set():
            return {}
        now = work.clock.now()
        # Held triggers (and, under overload, all: they keep the pace) go through the sender.
        held = self.holds(triggers, now)
        ready = [trigger for trigger in triggers if trigger.trigger_key not in held]
        ready.sort(key=lambda t: (-t.options.priority, -self.app_views.share(t.project_id)))
        places = max(0, work.settings.max_live_runs - len(work.polls))
        keys = [trigger.trigger_key for trigger in ready[:places]]
        budget = work.client.budget
        if budget is None:
            return dict.fromkeys(keys)
        slots = budget.take_now(CallKind.RUN_PROJECT, len(keys))
        return dict(zip(keys, slots, strict=False))  # fewer slots than keys: the rest wait

    def planned(self, triggers: Sequence[NewTrigger]) -> None:
        """Count newly recorded triggers in the demand on the budget (until it is read again)."""
        checked_at, demand = self._demand
        self._demand = (checked_at, demand.with_planned(triggers))

    def holds(self, triggers: Sequence[NewTrigger | TriggerRecord], now: float) -> dict[str, Hold]:
        """Trigger key -> until when it waits and why, for the mapped triggers held back: by
        ``min_interval`` since their app's last start, and, while Hex's budget is overloaded,
        by the pace of the budget's sustained rate (``send_order``). The ledger is read for the
        intervals only when a trigger sets one (and for the demand at most once a minute)."""
        work = self._work
        pacing = self._overloaded(now, [t for t in triggers if isinstance(t, NewTrigger)])
        mapped = [t for t in triggers if t.entry_key]
        spaced = [t for t in mapped if t.options.min_interval_s]
        sends = (
            work.ledger.sends_of_entries(
                {t.entry_key for t in spaced if t.entry_key}, work.client.base_url
            )
            if spaced
            else {}
        )
        holds: dict[str, Hold] = {}
        for trigger in mapped:
            free_at = now
            last = sends.get(trigger.entry_key or "")
            interval = trigger.options.min_interval_s
            if interval and last is not None and last.last_sent_at is not None:
                free_at = max(free_at, last.last_sent_at + interval)
            if pacing:
                free_at = max(free_at, self._paced_send_at + self._pace_s())
            if free_at > now or pacing:
                holds[trigger.trigger_key] = Hold(free_at, paced=pacing)
        return holds

    def sent_paced(self, now: float) -> None:
        """A trigger held for the overload's pace is sent now: the next waits a pace from it."""
        self._paced_send_at = now

    def rank(self, record: TriggerRecord, now: float) -> tuple[float, float]:
        return send_rank(
            record.options.priority,
            self.app_views.share(record.project_id),
            now - record.unserved_since,
            self._work.settings.aging_s,
        )

    def _overloaded(self, now: float, planning: Sequence[NewTrigger] = ()) -> bool:
        """Whether the budget is overloaded: in the last hour, more triggers were planned
        (``planning``, those being recorded, included) than Hex's RunProject budget runs in one,
        and some app was planned more than once, so builds keep coming faster than the budget
        serves them. A single large build is not overload: it goes at the budget's full speed.
        The ledger is read at most once a minute."""
        work = self._work
        if work.client.budget is None:
            return False
        checked_at, demand = self._demand
        if now - checked_at >= OVERLOAD_CHECK_S:
            demand = work.ledger.demand_since(now - DEMAND_WINDOW_S, work.client.base_url)
            self._demand = (now, demand)
        demand = demand.with_planned(planning)
        return demand.repeated and demand.planned > DEMAND_WINDOW_S / self._pace_s()

    def _pace_s(self) -> float:
        budget = self._work.client.budget
        assert budget is not None
        return 1.0 / budget.limits.sustained_rate_per_s(CallKind.RUN_PROJECT)
