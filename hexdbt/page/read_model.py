"""What the status page shows, read from the ledger and the budget: records, no HTML.

A page costs a fixed handful of queries whatever the number of apps (each on an index of the
ledger's schema 4): every entry's newest trigger, every entry's newest run, the triggers that
wait, the timeline's window, the superseded counts of those that wait, and the dbt projects for
the filter. Nothing here writes, and nothing reads Hex: the page must not cost Hex's budget.

One row per app: an entry of the mapping (when the server has one) or of the state (what any
process planned), joined by the entry's key (project id and name). Its freshness is
``hexdbt.freshness``'s, so the page, ``hexdbt status --apps`` and the metrics agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hexdbt.engine.send_order import AGING_S, send_rank
from hexdbt.freshness import AppFreshness, freshness_of_newest, stalest_first
from hexdbt.hex.budget import CallKind, SharedBudget
from hexdbt.ledger import InvocationRecord, Ledger, PlanSkip, TriggerRecord, TriggerState
from hexdbt.mapping.model import ProjectMapping
from hexdbt.planner.rules import entry_key
from hexdbt.store import Row

DEFAULT_WINDOW_H = 24
MAX_WINDOW_H = 24 * 14
# A wait shorter than this is "next in line", not "waiting for the budget".
_BUDGET_WAIT_S = 1.0
WAITING_STATES = (TriggerState.PLANNED, TriggerState.QUEUED, TriggerState.SENDING)


def safe_link(url: str | None) -> str | None:
    """``url`` when it is an http(s) address, else None: a link's target comes from Hex, and a
    ``javascript:`` one would run in the page whatever the escaping."""
    if url and url.lower().startswith(("https://", "http://")):
        return url
    return None


def app_url_of(run_url: str | None, project_id: str) -> str | None:
    """The Hex app's address from one of its runs' (``.../app/<project id>/...``): the run's URL
    cut after the project id; None when the project id is not in it."""
    url = safe_link(run_url)
    if url is None:
        return None
    marker = f"/{project_id}/"
    at = url.find(marker)
    return url[: at + len(marker)] if at >= 0 else None


@dataclass(frozen=True, slots=True)
class RunView:
    """One Hex run of an app (a trigger that has, or had, a run)."""

    name: str
    trigger_key: str
    invocation_id: str
    run_id: str
    run_url: str | None
    status: str  # Hex's status, or the trigger's state while Hex has said none
    outcome: str  # completed, failed, timeout, live: the colour
    started_at: float
    ended_at: float | None

    @classmethod
    def of(cls, record: TriggerRecord) -> RunView:
        assert record.run_id is not None
        assert record.intent_at is not None
        live = record.state in (TriggerState.STARTED, TriggerState.SENDING)
        if live:
            outcome = "live"
        elif record.timed_out:
            outcome = "timeout"
        elif record.hex_status == "COMPLETED":
            outcome = "completed"
        else:
            outcome = "failed"
        return cls(
            name=record.name,
            trigger_key=record.trigger_key,
            invocation_id=record.invocation_id,
            run_id=record.run_id,
            run_url=safe_link(record.run_url),
            status=record.hex_status or record.state.value,
            outcome=outcome,
            started_at=record.intent_at,
            ended_at=record.ended_at,
        )


@dataclass(frozen=True, slots=True)
class Waiting:
    """What waits for an app: a trigger not yet sent (or being sent)."""

    trigger_key: str
    invocation_id: str
    kind: str  # "sending", "waiting for the budget", "queued"
    reason: str | None
    estimated_start: float | None  # by the budget and the send order (None: no budget known)
    covers: int  # older builds' triggers it superseded


@dataclass(frozen=True, slots=True)
class AppRow:
    name: str
    project_id: str
    entry_key: str
    link: str | None  # the Hex app, else its newest run
    link_is_app: bool
    models: tuple[str, ...]
    refreshed_at: float | None
    newest_run: RunView | None
    lag_s: float | None
    target_s: float | None
    breached: bool
    state: str | None  # the covering trigger's state, or its run's status
    waiting: Waiting | None


@dataclass(frozen=True, slots=True)
class Build:
    """A dbt build that refreshed an app's models: its trigger's planning."""

    at: float
    invocation_id: str
    superseded: bool


@dataclass(frozen=True, slots=True)
class TimelineRow:
    name: str
    entry_key: str
    builds: tuple[Build, ...]
    runs: tuple[RunView, ...]


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A trigger waiting to be sent, in the order this engine would send it."""

    name: str
    trigger_key: str
    invocation_id: str
    state: str
    priority: int
    unserved_since: float
    estimated_start: float | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class LimitUse:
    calls: int
    window_s: float
    used: int


@dataclass(frozen=True, slots=True)
class BudgetView:
    run_project: tuple[LimitUse, ...]
    next_free_at: float


@dataclass(frozen=True, slots=True)
class PageView:
    now: float
    window_start: float
    window_h: int
    project_dir: str | None  # the filter
    project_dirs: tuple[str, ...]  # every dbt project the ledger knows
    apps: tuple[AppRow, ...]
    timeline: tuple[TimelineRow, ...]
    queue: tuple[QueueEntry, ...]
    budget: BudgetView | None
    invocations: tuple[InvocationRecord, ...]

    @property
    def stale(self) -> int:
        return sum(1 for app in self.apps if app.breached)


@dataclass(frozen=True, slots=True)
class InvocationView:
    invocation: InvocationRecord
    triggers: tuple[TriggerRecord, ...]
    skipped: tuple[PlanSkip, ...]

    @property
    def runs(self) -> tuple[RunView, ...]:
        return tuple(
            RunView.of(record)
            for record in self.triggers
            if record.run_id is not None and record.intent_at is not None
        )


# -- the queries ------------------------------------------------------------------------------


def _rows(ledger: Ledger, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    return ledger.store.read(lambda session: session.execute(sql, params).rows)


def _in_project(project_dir: str | None) -> tuple[str, tuple[Any, ...]]:
    """A condition on triggers (alias ``t``) keeping those of one dbt project's invocations."""
    if project_dir is None:
        return "", ()
    return (
        " AND t.invocation_id IN (SELECT invocation_id FROM invocations WHERE project_dir = ?)",
        (project_dir,),
    )


def _newest_per_entry(
    ledger: Ledger, column: str, condition: str, project_dir: str | None
) -> list[TriggerRecord]:
    """Each mapping entry's trigger with the largest ``column`` among those meeting
    ``condition``."""
    where, params = _in_project(project_dir)
    return ledger.select_triggers(
        f"JOIN (SELECT entry_key, max({column}) AS newest FROM triggers t"
        f" WHERE entry_key IS NOT NULL {condition}{where} GROUP BY entry_key) n"
        f" ON t.entry_key = n.entry_key AND t.{column} = n.newest ORDER BY t.rowid",
        params,
    )


def project_dirs(ledger: Ledger) -> tuple[str, ...]:
    rows = _rows(
        ledger,
        "SELECT DISTINCT project_dir FROM invocations WHERE project_dir IS NOT NULL"
        " ORDER BY project_dir",
    )
    return tuple(row["project_dir"] for row in rows)


def _superseded_counts(ledger: Ledger, keys: Sequence[str]) -> dict[str, int]:
    if not keys:
        return {}
    rows = _rows(
        ledger,
        "SELECT superseded_by, count(*) AS older FROM triggers"
        f" WHERE superseded_by IN ({', '.join('?' * len(keys))}) GROUP BY superseded_by",
        keys,
    )
    return {row["superseded_by"]: int(row["older"]) for row in rows}


def send_queue(
    waiting: Iterable[TriggerRecord], budget: SharedBudget | None, now: float
) -> list[QueueEntry]:
    """The triggers not yet sent, in the engine's send order (its rank without Hex's views, which
    only the engine reads), each with the budget's slot for it: an estimate, since other hosts'
    sends, ``min_interval`` and the live runs' cap move it."""
    unsent = [r for r in waiting if r.state in (TriggerState.PLANNED, TriggerState.QUEUED)]
    ordered = sorted(
        unsent,
        key=lambda r: send_rank(r.options.priority, 0.0, now - r.unserved_since, AGING_S),
        reverse=True,
    )
    slots: Sequence[float | None] = [None] * len(ordered)
    if budget is not None and ordered:
        slots = budget.slots_for(CallKind.RUN_PROJECT, len(ordered))
    return [
        QueueEntry(
            name=record.name,
            trigger_key=record.trigger_key,
            invocation_id=record.invocation_id,
            state=record.state.value,
            priority=record.options.priority,
            unserved_since=record.unserved_since,
            estimated_start=slot,
            reason=record.reason,
        )
        for record, slot in zip(ordered, slots, strict=True)
    ]


def budget_view(budget: SharedBudget) -> BudgetView:
    used = tuple(
        LimitUse(limit.calls, limit.window_s, limit.calls - left)
        for limit, left in budget.calls_left(CallKind.RUN_PROJECT)
    )
    return BudgetView(used, budget.next_slot_at(CallKind.RUN_PROJECT))


def _waiting_of(
    records: Sequence[TriggerRecord],
    queue: Sequence[QueueEntry],
    covers: dict[str, int],
    now: float,
) -> dict[str, Waiting]:
    """Per entry key: the trigger that waits for it (the newest, if several do)."""
    estimates = {entry.trigger_key: entry.estimated_start for entry in queue}
    found: dict[str, Waiting] = {}
    for record in sorted(records, key=lambda r: r.created_at):
        if record.entry_key is None:
            continue
        estimate = estimates.get(record.trigger_key)
        if record.state is TriggerState.SENDING:
            kind = "sending"
        elif estimate is not None and estimate > now + _BUDGET_WAIT_S:
            kind = "waiting for the budget"
        else:
            kind = "queued"
        found[record.entry_key] = Waiting(
            record.trigger_key,
            record.invocation_id,
            kind,
            record.reason,
            estimate,
            covers.get(record.trigger_key, 0),
        )
    return found


def _target_s(mapping: ProjectMapping | None, newest: TriggerRecord | None) -> float | None:
    if mapping is not None:
        return None if mapping.freshness_minutes is None else mapping.freshness_minutes * 60.0
    return newest.options.freshness_s if newest is not None else None


def _app_row(
    key: str,
    freshness: AppFreshness,
    newest_run: TriggerRecord | None,
    waiting: Waiting | None,
) -> AppRow:
    run = RunView.of(newest_run) if newest_run is not None else None
    app_url = app_url_of(run.run_url, freshness.project_id) if run is not None else None
    return AppRow(
        name=freshness.name,
        project_id=freshness.project_id,
        entry_key=key,
        link=app_url or (run.run_url if run is not None else None),
        link_is_app=app_url is not None,
        models=freshness.models,
        refreshed_at=freshness.refreshed_at,
        newest_run=run,
        lag_s=freshness.lag_s,
        target_s=freshness.target_s,
        breached=freshness.breached,
        state=freshness.state,
        waiting=waiting,
    )


def read_page(
    ledger: Ledger,
    *,
    now: float,
    mappings: Iterable[ProjectMapping] = (),
    budget: SharedBudget | None = None,
    project_dir: str | None = None,
    window_h: int = DEFAULT_WINDOW_H,
    invocations: int = 20,
) -> PageView:
    """Everything the page shows, as it is at ``now``; with ``project_dir``, only the apps and
    invocations of that dbt project (the queue and the budget stay whole: they are shared)."""
    window_h = max(1, min(window_h, MAX_WINDOW_H))
    window_start = now - window_h * 3600.0
    newest = {r.entry_key: r for r in _newest_per_entry(ledger, "created_at", "", project_dir)}
    runs = {
        r.entry_key: r
        for r in _newest_per_entry(ledger, "intent_at", "AND run_id IS NOT NULL", project_dir)
    }
    waiting_records = ledger.in_state(*WAITING_STATES)
    queue = send_queue(waiting_records, budget, now)
    covers = _superseded_counts(ledger, [r.trigger_key for r in waiting_records])
    waiting = _waiting_of(waiting_records, queue, covers, now)

    by_key: dict[str, tuple[ProjectMapping | None, TriggerRecord | None]] = {}
    if project_dir is None:
        for mapping in mappings:
            if mapping.enabled:
                by_key[entry_key(mapping)] = (mapping, None)
    for key, latest in newest.items():
        assert key is not None
        by_key[key] = (by_key.get(key, (None, None))[0], latest)
    freshness: list[tuple[str, AppFreshness]] = []
    for key, (known, newest_trigger) in by_key.items():
        target_s = _target_s(known, newest_trigger)
        if newest_trigger is None:
            assert known is not None
            row = AppFreshness(
                known.name, known.project_id, target_s, None, (), None, None, None, None, None
            )
        else:
            row = freshness_of_newest(ledger, newest_trigger, target_s, now)
        freshness.append((key, row))
    keys = {id(row): key for key, row in freshness}
    apps = tuple(
        _app_row(keys[id(row)], row, runs.get(keys[id(row)]), waiting.get(keys[id(row)]))
        for row in stalest_first([row for _key, row in freshness])
    )
    return PageView(
        now=now,
        window_start=window_start,
        window_h=window_h,
        project_dir=project_dir,
        project_dirs=project_dirs(ledger),
        apps=apps,
        timeline=_timeline(ledger, apps, window_start, project_dir),
        queue=tuple(queue),
        budget=budget_view(budget) if budget is not None else None,
        invocations=tuple(ledger.recent_invocations(invocations, project_dir=project_dir)),
    )


def _timeline(
    ledger: Ledger, apps: Sequence[AppRow], window_start: float, project_dir: str | None
) -> tuple[TimelineRow, ...]:
    """Per app, in the apps' order, its builds and runs that touch the window; apps with
    nothing in it are left out."""
    where, params = _in_project(project_dir)
    records = ledger.select_triggers(
        "WHERE t.entry_key IS NOT NULL AND (t.created_at >= ? OR t.ended_at >= ?"
        f" OR t.state IN ('sending', 'started')){where} ORDER BY t.created_at, t.rowid",
        (window_start, window_start, *params),
    )
    builds: dict[str, list[Build]] = {}
    runs: dict[str, list[RunView]] = {}
    for record in records:
        key = record.entry_key
        assert key is not None
        if record.created_at >= window_start:
            superseded = record.state is TriggerState.SUPERSEDED
            builds.setdefault(key, []).append(
                Build(record.created_at, record.invocation_id, superseded)
            )
        if record.run_id is not None and record.intent_at is not None:
            runs.setdefault(key, []).append(RunView.of(record))
    return tuple(
        TimelineRow(app.name, app.entry_key, tuple(builds.get(key, ())), tuple(runs.get(key, ())))
        for app in apps
        if (key := app.entry_key) in builds or key in runs
    )


def read_invocation(ledger: Ledger, invocation_id: str) -> InvocationView | None:
    """An invocation, its triggers and the plan's skipped entries; None when unknown."""
    rows = _rows(
        ledger,
        "SELECT invocation_id, command, source, first_seen_at, project_dir FROM invocations"
        " WHERE invocation_id = ?",
        (invocation_id,),
    )
    if not rows:
        return None
    skipped = _rows(
        ledger,
        "SELECT name, project_id, reason, is_error FROM plan_skips WHERE invocation_id = ?"
        " ORDER BY position",
        (invocation_id,),
    )
    return InvocationView(
        invocation=InvocationRecord(**rows[0]),
        triggers=tuple(ledger.triggers_of(invocation_id)),
        skipped=tuple(
            PlanSkip(row["name"], row["project_id"], row["reason"], bool(row["is_error"]))
            for row in skipped
        ),
    )
