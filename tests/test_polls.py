"""Following runs to their end, through the engine with direct plans, against the emulator on a
shared ManualClock with a real ledger: outcomes, timeouts, stop, failing polls, schedules."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from hexdbt.clock import ManualClock
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import (
    CUSTOMER_HEALTH_ID,
    ERRORS_ID,
    KILLED_ID,
    NO_KERNEL_ID,
    SCHEDULED_ID,
    filler_project_id,
)
from hexdbt.engine import Engine, EngineSettings
from hexdbt.factory import open_client
from hexdbt.feeders.direct import direct_plan, run_direct
from hexdbt.hex.client import HexClient
from hexdbt.hex.models import RunRequest
from hexdbt.hex.polls import (
    FixedSchedule,
    NoProgress,
    Polls,
    PollSchedule,
    Progress,
    RunView,
    expected_duration_s,
)
from hexdbt.hex.progress import LineProgress
from hexdbt.ledger import Ledger
from hexdbt.outcomes import Outcome, OutcomeKind
from hexdbt.planner.rules import Plan
from hexdbt.settings import resolve_state_location

TOKEN = "hxtp_polls_secret"


@dataclass
class Follow:
    """A client and a ledger on the emulator's ManualClock; each ``run`` is one engine."""

    emulator: HexEmulator
    client: HexClient
    ledger: Ledger
    engines: list[Engine] = field(default_factory=list)

    def plan(
        self,
        project_ids: Sequence[str],
        *,
        timeout_minutes: float = 60,
        cancel_on_timeout: bool = True,
    ) -> Plan:
        return direct_plan(
            project_ids,
            RunRequest(),
            idempotency_key=None,
            timeout_minutes=timeout_minutes,
            cancel_on_timeout=cancel_on_timeout,
        )

    def engine(
        self,
        *,
        progress: Progress | None = None,
        schedule: PollSchedule | None = None,
        **settings: Any,
    ) -> Engine:
        polls = Polls(self.client, schedule=schedule, progress=progress)
        engine = Engine(self.client, self.ledger, settings=EngineSettings(**settings), polls=polls)
        self.engines.append(engine)
        return engine

    def run(self, plan: Plan, **options: Any) -> list[Outcome]:
        return run_direct(self.engine(**options), plan)

    def status(self, project_id: str, run_id: str | None) -> str:
        assert run_id is not None
        return self.client.get_run_status(project_id, run_id).status


@pytest.fixture
def follow(hex_emulator: HexEmulator) -> Iterator[Follow]:
    assert isinstance(hex_emulator.clock, ManualClock)
    client = open_client(TOKEN, hex_emulator.url, clock=hex_emulator.clock)
    ledger = Ledger.open(resolve_state_location(), clock=hex_emulator.clock)
    yield Follow(hex_emulator, client, ledger)
    ledger.close()
    client.close()


class Views(NoProgress):
    """A progress display that keeps every view it is shown."""

    refresh_s = 3600.0

    def __init__(self) -> None:
        self.views: list[RunView] = []

    def changed(self, view: RunView, now: float) -> None:
        self.views.append(view)

    def refresh(self, views: Sequence[RunView], now: float) -> None:
        pass

    def close(self, now: float) -> None:
        pass


@pytest.mark.parametrize(
    ("project_id", "kind", "status"),
    [
        (CUSTOMER_HEALTH_ID, OutcomeKind.COMPLETED, "COMPLETED"),
        (ERRORS_ID, OutcomeKind.ERRORED, "ERRORED"),
        (KILLED_ID, OutcomeKind.KILLED, "KILLED"),
        (NO_KERNEL_ID, OutcomeKind.UNABLE_TO_ALLOCATE_KERNEL, "UNABLE_TO_ALLOCATE_KERNEL"),
    ],
)
def test_each_terminal_status_is_its_own_outcome(
    follow: Follow, project_id: str, kind: OutcomeKind, status: str
) -> None:
    views = Views()
    (outcome,) = follow.run(follow.plan([project_id]), progress=views)
    assert (outcome.kind, outcome.hex_status) == (kind, status)
    assert outcome.exit_code == (0 if kind is OutcomeKind.COMPLETED else 5)
    last = views.views[-1]
    assert last.outcome is kind
    if kind is OutcomeKind.COMPLETED:
        assert last.error is None
    else:
        assert last.error is not None
        assert status in last.error
        assert outcome.run_id
        assert outcome.run_id in last.error
    assert outcome.run_url
    assert outcome.run_id in outcome.run_url  # the report links the run's page


def test_detection_is_prompt_and_polls_are_few(follow: Follow) -> None:
    plan = follow.plan([SCHEDULED_ID])  # 30 s pending + 600 s running
    engine = follow.engine()
    (outcome,) = run_direct(engine, plan)
    assert outcome.kind is OutcomeKind.COMPLETED
    assert outcome.elapsed_s is not None
    assert 630 <= outcome.elapsed_s <= 630 + 63
    fixed_polls = 630 // 10
    assert engine.polls.polls <= fixed_polls / 2


def test_many_runs_share_one_poller_without_a_429(follow: Follow) -> None:
    plan = follow.plan([filler_project_id(number) for number in range(1, 21)])
    outcomes = follow.run(plan, max_live_runs=20)
    assert len(outcomes) == 20
    assert {outcome.kind for outcome in outcomes} == {OutcomeKind.COMPLETED}
    assert all(entry["status"] != 429 for entry in follow.emulator.journal())


def test_timeout_cancels_the_run_by_default(follow: Follow) -> None:
    (outcome,) = follow.run(follow.plan([SCHEDULED_ID], timeout_minutes=2))
    assert outcome.kind is OutcomeKind.TIMEOUT
    assert outcome.exit_code == 6
    assert outcome.hex_status == "KILLED"  # the cancel was sent
    assert "did not end within 2 min" in (outcome.reason or "")
    assert "cancelled" in (outcome.reason or "")
    assert outcome.elapsed_s == pytest.approx(120, abs=1)
    assert follow.status(SCHEDULED_ID, outcome.run_id) == "KILLED"


def test_timeout_without_cancel_leaves_the_run(follow: Follow) -> None:
    plan = follow.plan([SCHEDULED_ID], timeout_minutes=2, cancel_on_timeout=False)
    (outcome,) = follow.run(plan)
    assert outcome.kind is OutcomeKind.TIMEOUT
    assert "left running" in (outcome.reason or "")
    assert follow.status(SCHEDULED_ID, outcome.run_id) == "RUNNING"
    assert not [e for e in follow.emulator.journal() if e["operation"] == "CancelRun"]


class StopWhenRunning(Views):
    """Requests the engine's stop once a run is seen RUNNING (as a signal handler would)."""

    def __init__(self, engine_of: list[Engine]) -> None:
        super().__init__()
        self.engine_of = engine_of

    def changed(self, view: RunView, now: float) -> None:
        super().changed(view, now)
        if view.status == "RUNNING":
            self.engine_of[-1].request_stop()


@pytest.mark.parametrize("cancel", [True, False])
def test_a_stop_interrupts_the_wait_and_cancels_the_run_unless_told_not_to(
    follow: Follow, cancel: bool
) -> None:
    progress = StopWhenRunning(follow.engines)
    plan = follow.plan([SCHEDULED_ID])
    (outcome,) = follow.run(plan, progress=progress, cancel_on_interrupt=cancel)
    assert outcome.kind is OutcomeKind.INTERRUPTED
    assert outcome.exit_code == 130
    assert progress.views[-1].outcome is OutcomeKind.INTERRUPTED
    cancels = [e for e in follow.emulator.journal() if e["operation"] == "CancelRun"]
    if cancel:
        assert outcome.reason == "interrupted: cancelled in Hex"
        assert follow.status(SCHEDULED_ID, outcome.run_id) == "KILLED"
        assert len(cancels) == 1
    else:
        assert "left running" in (outcome.reason or "")
        assert follow.status(SCHEDULED_ID, outcome.run_id) == "RUNNING"
        assert cancels == []


def test_runs_submitted_while_waiting_are_waited_on(follow: Follow) -> None:
    first, second = follow.plan([CUSTOMER_HEALTH_ID]), follow.plan([ERRORS_ID])

    class SubmitWhenTheFirstEnds(Views):
        def changed(self, view: RunView, now: float) -> None:
            super().changed(view, now)
            if view.outcome is OutcomeKind.COMPLETED:
                engine.submit(second, source="test")

    engine = follow.engine(progress=SubmitWhenTheFirstEnds())
    # Closed before the second plan comes: a submission made while busy is still taken in.
    run_direct(engine, first)
    assert [o.hex_status for o in engine.outcomes_of(first) + engine.outcomes_of(second)] == [
        "COMPLETED",
        "ERRORED",
    ]


def test_polling_that_keeps_failing_loses_the_run(follow: Follow) -> None:
    follow.emulator.inject_faults("GetRunStatus", sequence=[{"kind": "error", "status": 401}] * 3)
    (outcome,) = follow.run(follow.plan([SCHEDULED_ID]))
    assert outcome.kind is OutcomeKind.POLL_FAILED
    assert outcome.exit_code == 4
    assert "polling the run failed" in (outcome.reason or "")
    assert "401" in (outcome.reason or "")


def test_fixed_schedule_polls_every_ten_seconds(follow: Follow) -> None:
    engine = follow.engine(schedule=FixedSchedule(10))
    (outcome,) = run_direct(engine, follow.plan([CUSTOMER_HEALTH_ID]))  # ends after 28 s
    assert engine.polls.polls == 3
    assert outcome.elapsed_s == pytest.approx(30, abs=0.5)


def test_expected_duration_comes_from_completed_runs(follow: Follow) -> None:
    assert expected_duration_s(follow.client, SCHEDULED_ID) == pytest.approx(300)  # 540 and 60
    assert expected_duration_s(follow.client, "unknown-project") is None


def test_line_progress_prints_changes_and_a_heartbeat(follow: Follow) -> None:
    lines: list[str] = []
    (outcome,) = follow.run(follow.plan([SCHEDULED_ID]), progress=LineProgress(lines.append))
    assert any("PENDING" in line for line in lines)
    assert outcome.run_url
    assert any(" RUNNING " in line and outcome.run_url in line for line in lines)
    assert any("COMPLETED" in line for line in lines)
    heartbeats = [line for line in lines if line.startswith("waiting on 1 run: ")]
    assert len(heartbeats) >= 5  # a 10-minute run, at least one line a minute


def test_views_carry_the_length_the_projects_history_leads_to_expect(follow: Follow) -> None:
    """What a display shows as "expected": the median of the project's completed runs."""
    views = Views()
    follow.run(follow.plan([SCHEDULED_ID]), progress=views)
    assert views.views[0].expected_s is None  # followed before its history is read
    assert views.views[-1].expected_s == 300.0  # completed runs of 540 s and 60 s
