"""How fresh each mapped Hex app is: the lag from its models' refresh to the run that reads it.

For each entry of the mapping, the ledger's newest trigger of that entry says when its models
last refreshed; the trigger that stands for it now (itself, or the later one that superseded it)
says whether a run reads that data yet. The lag is the time from the oldest refresh that run
covers (``unserved_since``) to the run's start, or, while no run covers it (waiting, refused,
expired), to now. An app whose lag exceeds its ``freshness_minutes`` is past its target;
without a target it has a lag and no breach. ``hexdbt status --apps`` shows this, and the
daemons export it as ``hexdbt_app_lag_seconds`` and ``hexdbt_app_freshness_breached``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hexdbt.clock import to_iso
from hexdbt.ledger import Ledger, TriggerRecord, TriggerState
from hexdbt.mapping.model import ProjectMapping
from hexdbt.planner.rules import entry_key
from hexdbt.wording import display_width, pad

# The states in which a trigger has a run that reads its data.
_RAN = (TriggerState.STARTED, TriggerState.ENDED)


@dataclass(frozen=True, slots=True)
class AppFreshness:
    name: str
    project_id: str
    target_s: float | None  # freshness_minutes, in seconds
    refreshed_at: float | None  # when its models last refreshed (None: never seen)
    models: tuple[str, ...]
    run_started_at: float | None  # the run that reads that refresh (None: none yet)
    run_id: str | None
    run_url: str | None
    state: str | None  # the covering trigger's state, or its run's Hex status once it ran
    lag_s: float | None

    @property
    def breached(self) -> bool:
        return self.target_s is not None and self.lag_s is not None and self.lag_s > self.target_s

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "projectId": self.project_id,
            "models": list(self.models),
            "refreshedAt": self.refreshed_at,
            "runStartedAt": self.run_started_at,
            "runId": self.run_id,
            "runUrl": self.run_url,
            "state": self.state,
            "lagSeconds": self.lag_s,
            "targetSeconds": self.target_s,
            "breached": self.breached,
        }


def _state_of(covering: TriggerRecord) -> str:
    if covering.state in _RAN and covering.hex_status:
        return covering.hex_status
    return covering.state.value


def app_freshness(ledger: Ledger, mapping: ProjectMapping, now: float) -> AppFreshness:
    """How fresh a mapped app is, by its entry's newest trigger in the ledger."""
    target_s = None if mapping.freshness_minutes is None else mapping.freshness_minutes * 60
    newest = ledger.newest_of_entry(entry_key(mapping))
    if newest is None:
        return AppFreshness(
            mapping.name, mapping.project_id, target_s, None, (), None, None, None, None, None
        )
    return freshness_of_newest(ledger, newest, target_s, now)


def freshness_of_newest(
    ledger: Ledger, newest: TriggerRecord, target_s: float | None, now: float
) -> AppFreshness:
    """How fresh an app is, from its entry's newest trigger (read by the caller, which may read
    every entry's at once)."""
    covering = ledger.successor_of(newest)
    ran = covering.state in _RAN and covering.intent_at is not None
    started_at = covering.intent_at if ran else None
    lag_s = (started_at if started_at is not None else now) - covering.unserved_since
    return AppFreshness(
        name=newest.name,
        project_id=newest.project_id,
        target_s=target_s,
        refreshed_at=newest.created_at,
        models=newest.models,
        run_started_at=started_at,
        run_id=covering.run_id if ran else None,
        run_url=covering.run_url if ran else None,
        state=_state_of(covering),
        lag_s=round(max(0.0, lag_s), 3),
    )


def apps_freshness(
    ledger: Ledger, mappings: Iterable[ProjectMapping], now: float
) -> list[AppFreshness]:
    """One row per enabled mapping entry, those past their target first, then by lag."""
    rows = [app_freshness(ledger, mapping, now) for mapping in mappings if mapping.enabled]
    return stalest_first(rows)


def apps_of_state(ledger: Ledger, now: float) -> list[AppFreshness]:
    """One row per mapping entry the ledger has planned, by any process, with the target its
    newest trigger was planned with: what a daemon can judge without the mapping files."""
    rows = []
    for newest in ledger.newest_per_entry():
        rows.append(freshness_of_newest(ledger, newest, newest.options.freshness_s, now))
    return stalest_first(rows)


def stalest_first(rows: list[AppFreshness]) -> list[AppFreshness]:
    """Those past their target first, then the longest lag first."""
    return sorted(rows, key=lambda row: (not row.breached, -(row.lag_s or 0.0)))


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"


def _moment(at: float | None, now: float) -> str:
    return "never" if at is None else f"{to_iso(at)[:16]}Z ({_duration(now - at)} ago)"


def render_apps(rows: Iterable[AppFreshness], now: float) -> str:
    """The plain table of ``hexdbt status --apps``; run ids are never shortened."""
    table = [("APP", "MODELS REFRESHED", "RUN STARTED", "RUN", "STATE", "LAG", "TARGET", "")]
    for row in rows:
        table.append(
            (
                row.name,
                _moment(row.refreshed_at, now),
                "-" if row.run_started_at is None else to_iso(row.run_started_at)[:16] + "Z",
                row.run_id or "-",
                row.state or "never triggered",
                _duration(row.lag_s),
                _duration(row.target_s),
                "STALE" if row.breached else "",
            )
        )
    widths = [max(display_width(line[column]) for line in table) for column in range(len(table[0]))]
    return "\n".join(
        "  ".join(pad(cell, width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    )
