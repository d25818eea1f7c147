"""The engine against the emulator over HTTP, on a shared ManualClock, with a real ledger."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import project_id, scenario, started_runs, write_project

from hexdbt.clock import ManualClock, from_iso
from hexdbt.emulator import HexEmulator
from hexdbt.engine import Engine, EngineSettings, dry_run_outcomes, new_trigger
from hexdbt.errors import Interrupted, StateError
from hexdbt.factory import open_client
from hexdbt.hex.budget import BUDGET_FILE
from hexdbt.hex.client import HexClient
from hexdbt.hex.polls import RunView
from hexdbt.ledger import LEDGER_FILENAME, Ledger, NewTrigger, TriggerRecord, TriggerState
from hexdbt.outcomes import Outcome, OutcomeKind, exit_code_of
from hexdbt.planner.files import plan_from_files
from hexdbt.planner.rules import Plan
from hexdbt.settings import resolve_state_dir

TOKEN = "hxtp_dispatch_test_token"
EmulatorFactory = Callable[..., HexEmulator]


class World:
    """An emulator, a client and a ledger sharing one ManualClock, and a dbt target folder."""

    def __init__(self, factory: EmulatorFactory, folder: Path, count: int, **scenario_options: Any):
        self.clock = ManualClock()
        self.emulator = factory(scenario=scenario(count, **scenario_options), clock=self.clock)
        self.folder = folder
        self.count = count
        self.ledger = Ledger.in_state_dir(resolve_state_dir(), clock=self.clock)

    def client(self) -> HexClient:
        return open_client(token=TOKEN, base_url=self.emulator.url, clock=self.clock)

    def plan(self, *, invocation_id: str = "inv-1", **options: Any) -> Plan:
        target, mappings = write_project(
            self.folder, self.count, invocation_id=invocation_id, **options
        )
        return plan_from_files(target / "run_results.json", target / "manifest.json", mappings).plan

    def dispatch(
        self, plan: Plan, *, log: Callable[[str], None] | None = None, **settings: Any
    ) -> list[Outcome]:
        with self.client() as client:
            engine = Engine(client, self.ledger, settings=EngineSettings(**settings), log=log)
            engine.submit(plan, source="test")
            engine.close()
            engine.run()
            return engine.outcomes_of(plan)

    def started(self) -> dict[str, int]:
        return started_runs(self.emulator.journal())

    def run_project_slots_taken(self) -> int:
        """RunProject calls recorded in the shared budget, as every other process sees them."""
        with closing(sqlite3.connect(resolve_state_dir() / BUDGET_FILE)) as db:
            (count,) = db.execute(
                "SELECT count(*) FROM calls WHERE kind = 'run_project'"
            ).fetchone()
        return int(count)


@pytest.fixture
def world_factory(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> Iterator[Callable[..., World]]:
    worlds: list[World] = []

    def make(count: int, **scenario_options: Any) -> World:
        world = World(hex_emulator_factory, tmp_path / f"w{len(worlds)}", count, **scenario_options)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.ledger.close()


def kinds(outcomes: list[Outcome]) -> dict[str, OutcomeKind]:
    return {outcome.name: outcome.kind for outcome in outcomes}


def test_each_project_is_started_once_and_waited_on_to_its_end(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(4)
    outcomes = world.dispatch(world.plan())
    assert set(kinds(outcomes).values()) == {OutcomeKind.COMPLETED}
    assert world.started() == {project_id(i): 1 for i in range(4)}
    assert all(outcome.run_url and outcome.run_id in outcome.run_url for outcome in outcomes)
    assert exit_code_of(outcomes) == 0


def test_submitting_the_same_invocation_again_starts_nothing(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(3)
    first = world.dispatch(world.plan())
    second = world.dispatch(world.plan())
    assert world.started() == {project_id(i): 1 for i in range(3)}
    assert [o.run_id for o in second] == [o.run_id for o in first]
    assert set(kinds(second).values()) == {OutcomeKind.COMPLETED}


def test_each_post_takes_one_slot_from_the_shared_budget(
    world_factory: Callable[..., World],
) -> None:
    """The engine takes the slot before its claim; the client does not take another."""
    world = world_factory(3)
    world.dispatch(world.plan(), wait=False)
    assert world.started() == {project_id(i): 1 for i in range(3)}
    assert world.run_project_slots_taken() == 3


def test_an_invocation_already_recorded_gives_back_the_slots_taken_for_it(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(2)
    plan = world.plan()
    world.dispatch(plan, wait=False)
    with world.client() as client:
        engine = Engine(client, world.ledger)
        recorded = engine.submit(plan, source="test", only_new=True)
        engine.close()
        engine.run()
    assert recorded.result() is None
    assert world.run_project_slots_taken() == 2
    assert world.started() == {project_id(0): 1, project_id(1): 1}


def test_a_ledger_write_that_fails_keeps_no_slot_from_the_budget(
    world_factory: Callable[..., World],
) -> None:
    """A full disk, or here a table another hand dropped: the plan is not recorded, nothing is
    sent, and the slots taken for it go back to the shared budget."""
    world = world_factory(2)
    plan = world.plan()
    with closing(sqlite3.connect(resolve_state_dir() / LEDGER_FILENAME)) as db:
        db.execute("DROP TABLE triggers")
    messages: list[str] = []
    with world.client() as client:
        engine = Engine(client, world.ledger, log=messages.append)
        recorded = engine.submit(plan, source="test")
        engine.close()
        engine.run()
    with pytest.raises(StateError, match=r"cannot write the ledger .*no such table: triggers"):
        recorded.result()
    # Tried again a few times (a full disk may clear), then given up; each try logged.
    assert len(messages) == EngineSettings().submit_attempts
    assert messages[0].startswith("cannot record dbt invocation inv-1 in the ledger:")
    assert world.run_project_slots_taken() == 0
    assert world.started() == {}


def test_a_new_invocation_triggers_again(world_factory: Callable[..., World]) -> None:
    world = world_factory(2)
    world.dispatch(world.plan(invocation_id="inv-1"))
    world.dispatch(world.plan(invocation_id="inv-2"))
    assert world.started() == {project_id(0): 2, project_id(1): 2}


def test_one_failure_never_discards_the_others(world_factory: Callable[..., World]) -> None:
    world = world_factory(3)
    world.emulator.load_scenario(
        {
            "projects": [
                {"id": project_id(0), "title": "ok", "runs": "COMPLETED"},
                {"id": project_id(1), "title": "errors", "runs": "ERRORED"},
                {"id": project_id(2), "title": "unpublished", "published": False},
            ]
        }
    )
    outcomes = world.dispatch(world.plan())
    assert kinds(outcomes) == {
        "app_0": OutcomeKind.COMPLETED,
        "app_1": OutcomeKind.ERRORED,
        "app_2": OutcomeKind.FAILED_TO_START,
    }
    refused = next(o for o in outcomes if o.name == "app_2")
    assert refused.reason
    assert "422" in refused.reason
    assert exit_code_of(outcomes) == 5


def test_a_failed_model_skips_its_project_and_says_why(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(2)
    outcomes = world.dispatch(world.plan(statuses={"model.shop.m1": "error"}))
    assert kinds(outcomes) == {"app_0": OutcomeKind.COMPLETED, "app_1": OutcomeKind.SKIPPED}
    assert "m1 failed" in (outcomes[1].reason or "")
    assert world.started() == {project_id(0): 1}


def test_a_lost_answer_is_reconciled_not_resent(world_factory: Callable[..., World]) -> None:
    world = world_factory(1)
    world.emulator.inject_faults("RunProject", sequence=["lost_reset"])
    (outcome,) = world.dispatch(world.plan())
    (created,) = world.emulator.runs(project_id(0))
    assert outcome.kind is OutcomeKind.COMPLETED
    assert outcome.run_id == created.run_id
    assert world.started() == {project_id(0): 1}


def test_a_post_that_never_arrived_is_sent_after_reconciling(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(1)
    # A 502 may or may not have started a run; here it did not, so the trigger is sent again.
    world.emulator.inject_faults("RunProject", sequence=[{"kind": "error", "status": 502}])
    (outcome,) = world.dispatch(world.plan())
    assert outcome.kind is OutcomeKind.COMPLETED
    assert world.started() == {project_id(0): 1}


def _claim_and_die(ledger_path: Path, trigger_key: str, now: float) -> None:
    """A real process commits the intent to send at ``now`` (the test's clock), then dies
    before posting."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from hexdbt.clock import ManualClock;"
            " from hexdbt.ledger import Ledger;"
            "ledger = Ledger(Path(sys.argv[1]), clock=ManualClock(float(sys.argv[3])));"
            "assert ledger.claim_for_sending(sys.argv[2])",
            str(ledger_path),
            trigger_key,
            repr(now),
        ],
        check=True,
    )


def _crashed_after_intent(world: World, plan: Plan, *, posts_that_arrived: int) -> None:
    """Leave the plan's first trigger as a dead process's ``sending`` row; optionally the POSTs
    it sent did reach Hex (runs exist that the ledger never heard of)."""
    trigger = plan.triggers[0]
    with world.client() as client:
        world.ledger.plan_and_claim(
            plan.invocation_id, plan.command, "test", [new_trigger(trigger, client.base_url)], ()
        )
        _claim_and_die(world.ledger.path, trigger.trigger_key, world.clock.now())
        for _ in range(posts_that_arrived):
            client.run_project(trigger.project_id)


def test_a_crash_after_the_post_arrived_adopts_that_run(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(1)
    plan = world.plan()
    _crashed_after_intent(world, plan, posts_that_arrived=1)
    (outcome,) = world.dispatch(plan)
    assert outcome.kind is OutcomeKind.COMPLETED
    assert world.started() == {project_id(0): 1}


def test_a_crash_before_the_post_arrived_sends_it(world_factory: Callable[..., World]) -> None:
    world = world_factory(1)
    plan = world.plan()
    _crashed_after_intent(world, plan, posts_that_arrived=0)
    (outcome,) = world.dispatch(plan)
    assert outcome.kind is OutcomeKind.COMPLETED
    assert world.started() == {project_id(0): 1}


def test_two_candidate_runs_are_ambiguous_and_not_resent_unless_asked(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(1)
    plan = world.plan()
    _crashed_after_intent(world, plan, posts_that_arrived=2)
    (outcome,) = world.dispatch(plan)
    assert outcome.kind is OutcomeKind.AMBIGUOUS
    assert "--resend-ambiguous" in (outcome.reason or "")
    assert exit_code_of([outcome]) == 4
    assert world.started() == {project_id(0): 2}

    (again,) = world.dispatch(plan, resend_ambiguous=True)
    assert again.kind is OutcomeKind.COMPLETED
    assert world.started() == {project_id(0): 3}


class HookedLedger(Ledger):
    """The real ledger, calling ``after_recording`` right after a plan's transaction commits:
    the moment between the intent's commit and the POST, where a signal or a resume may land."""

    after_recording: Callable[[list[TriggerRecord]], None] = staticmethod(lambda records: None)

    def plan_and_claim(
        self,
        invocation_id: str,
        command: str,
        source: str,
        triggers: Sequence[NewTrigger],
        claim: Collection[str],
        *,
        only_new_invocation: bool = False,
    ) -> tuple[list[TriggerRecord], set[str]] | None:
        recorded = super().plan_and_claim(
            invocation_id,
            command,
            source,
            triggers,
            claim,
            only_new_invocation=only_new_invocation,
        )
        if recorded is not None:
            self.after_recording(recorded[0])
        return recorded


def test_a_trigger_that_can_go_at_once_is_claimed_with_its_plan(
    world_factory: Callable[..., World],
) -> None:
    """One synced commit before its POST; a resume between the commit and the send takes
    nothing twice and reconciles nothing."""
    world = world_factory(2)
    plan = world.plan()
    ledger = HookedLedger(world.ledger.path, clock=world.clock)
    states: list[dict[str, TriggerState]] = []

    def look_and_resume(records: list[TriggerRecord]) -> None:
        states.append({r.name: r.state for r in ledger.triggers_of(plan.invocation_id)})
        engine.resume()

    ledger.after_recording = look_and_resume
    with world.client() as client, ledger:
        engine = Engine(client, ledger, settings=EngineSettings(max_live_runs=1))
        engine.submit(plan, source="test")
        engine.close()
        engine.run()
        assert set(kinds(engine.outcomes_of(plan)).values()) == {OutcomeKind.COMPLETED}
    assert states == [{"app_0": TriggerState.SENDING, "app_1": TriggerState.PLANNED}]
    assert world.started() == {project_id(0): 1, project_id(1): 1}
    operations = {entry["operation"] for entry in world.emulator.journal()}
    assert "GetProjectRuns" not in operations  # nothing was reconciled


def test_a_trigger_claimed_with_its_plan_is_given_back_when_interrupted(
    world_factory: Callable[..., World],
) -> None:
    """A stop between the intent's commit and the POST: nothing is sent, the claim and its
    budget slot are given back, and the caller is told what was recorded."""
    world = world_factory(1)
    plan = world.plan()
    ledger = HookedLedger(world.ledger.path, clock=world.clock)
    ledger.after_recording = lambda records: engine.request_stop()
    with world.client() as client, ledger:
        engine = Engine(client, ledger)
        recorded = engine.submit(plan, source="test")
        engine.run()
        outcomes = engine.outcomes_of(plan)
    assert [record.name for record in recorded.result() or []] == ["app_0"]
    (record,) = world.ledger.triggers_of(plan.invocation_id)
    assert (record.state, record.owner_pid) == (TriggerState.QUEUED, None)
    assert kinds(outcomes) == {"app_0": OutcomeKind.QUEUED}
    assert world.started() == {}
    assert world.run_project_slots_taken() == 0  # its slot went back to the budget


def test_a_plan_submitted_after_the_stop_is_not_recorded(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(1)
    plan = world.plan()
    with world.client() as client:
        engine = Engine(client, world.ledger)
        engine.request_stop()
        recorded = engine.submit(plan, source="test")
        engine.run()
    with pytest.raises(Interrupted, match="stopped before it was recorded"):
        recorded.result()
    assert world.ledger.triggers_of(plan.invocation_id) == []
    assert world.started() == {}


def test_at_most_max_live_runs_are_live_at_once(world_factory: Callable[..., World]) -> None:
    world = world_factory(7, running_s=100)
    messages: list[str] = []
    outcomes = world.dispatch(world.plan(), max_live_runs=3, log=messages.append)
    assert set(kinds(outcomes).values()) == {OutcomeKind.COMPLETED}
    waiting = [m for m in messages if m.startswith("waiting to send")]
    assert waiting == [
        "waiting to send app_3, app_4, app_5, app_6: 3 runs are live (max_live_runs)"
    ]
    runs = world.emulator.runs()
    assert len(runs) == 7
    # A run is live from its creation to its end; never more than 3 overlapped.
    events = sorted(
        [(run.created_at, 1) for run in runs] + [(run.end_time or "", -1) for run in runs],
        key=lambda event: (event[0], event[1]),
    )
    live = peak = 0
    for _, change in events:
        live += change
        peak = max(peak, live)
    assert peak == 3


def test_a_run_past_its_timeout_is_cancelled_and_reported(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(1, running_s=7200)
    (outcome,) = world.dispatch(world.plan(mapping_options={"timeout_minutes": 60}))
    assert outcome.kind is OutcomeKind.TIMEOUT
    assert outcome.hex_status == "KILLED"
    assert exit_code_of([outcome]) == 6
    (run,) = world.emulator.runs(project_id(0))
    assert run.status == "KILLED"


def test_a_timeout_without_cancel_leaves_the_run_going(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(1, running_s=7200)
    options = {"timeout_minutes": 10, "cancel_on_timeout": False}
    (outcome,) = world.dispatch(world.plan(mapping_options=options))
    assert outcome.kind is OutcomeKind.TIMEOUT
    (run,) = world.emulator.runs(project_id(0))
    assert run.status == "RUNNING"


def test_no_wait_reports_started_runs(world_factory: Callable[..., World]) -> None:
    world = world_factory(2)
    outcomes = world.dispatch(world.plan(), wait=False)
    assert set(kinds(outcomes).values()) == {OutcomeKind.STARTED}
    assert world.started() == {project_id(0): 1, project_id(1): 1}


def test_triggers_past_the_hourly_budget_are_queued_then_sent_by_a_later_process(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(65)
    plan = world.plan()
    outcomes = world.dispatch(plan, wait=False, no_wait_send_window_s=180)
    counts = {kind: list(kinds(outcomes).values()).count(kind) for kind in OutcomeKind}
    assert counts[OutcomeKind.STARTED] == 60
    assert counts[OutcomeKind.QUEUED] == 5
    queued = world.ledger.in_state(TriggerState.QUEUED)
    assert all(record.deadline_at for record in queued)

    world.clock.advance(3600)
    with world.client() as client:
        later = Engine(client, world.ledger, settings=EngineSettings(wait=False))
        resumed = later.resume()
        later.close()
        later.run()
    assert [r.state for r in resumed.result()].count(TriggerState.QUEUED) == 5
    assert not world.ledger.in_state(TriggerState.QUEUED)
    assert sum(world.started().values()) == 65
    assert all(count == 1 for count in world.started().values())
    assert not [e for e in world.emulator.journal() if e["status"] == 429]


def test_triggers_waiting_for_the_budget_say_so_once_and_are_sent_when_it_allows(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(22, running_s=5)
    messages: list[str] = []
    outcomes = world.dispatch(world.plan(), log=messages.append, max_live_runs=25)
    assert set(kinds(outcomes).values()) == {OutcomeKind.COMPLETED}
    assert world.started() == {project_id(i): 1 for i in range(22)}
    waiting = [m for m in messages if m.startswith("waiting to send")]
    assert waiting == [
        "waiting to send app_20, app_21: Hex's RunProject budget has its next slot in 61 s"
    ]
    assert not [e for e in world.emulator.journal() if e["status"] == 429]


def test_a_queued_trigger_past_its_deadline_is_reported_expired(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(62)
    outcomes = world.dispatch(world.plan(), wait=False, no_wait_send_window_s=180)
    assert list(kinds(outcomes).values()).count(OutcomeKind.QUEUED) == 2

    world.clock.advance(7 * 3600)
    with world.client() as client:
        later = Engine(client, world.ledger)
        later.resume()
        later.close()
        later.run()
    expired = world.ledger.in_state(TriggerState.EXPIRED)
    assert len(expired) == 2
    assert all("deadline" in (record.reason or "") for record in expired)
    assert sum(world.started().values()) == 60


def test_an_interrupt_cancels_the_runs_this_process_started(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(2, running_s=600)
    plan = world.plan()
    with world.client() as client:
        engine = Engine(client, world.ledger)
        # The stop arrives once both runs are live (as a signal handler would request it).
        engine.polls.progress = StopWhenLive(engine, live=2)
        engine.submit(plan, source="test")
        engine.close()
        engine.run()
        outcomes = engine.outcomes_of(plan)
    assert set(kinds(outcomes).values()) == {OutcomeKind.INTERRUPTED}
    assert {o.reason for o in outcomes} == {"interrupted: cancelled in Hex"}
    assert exit_code_of(outcomes) == 130
    assert {run.status for run in world.emulator.runs()} == {"KILLED"}
    ended = world.ledger.triggers_of(plan.invocation_id)
    assert {(r.state, r.hex_status) for r in ended} == {(TriggerState.ENDED, "KILLED")}


class StopWhenLive:
    """A progress display that requests the engine's stop once ``live`` runs are followed."""

    refresh_s = 3600.0

    def __init__(self, engine: Engine, live: int) -> None:
        self.engine, self.live, self.seen = engine, live, 0

    def changed(self, view: RunView, now: float) -> None:
        if view.status is None and view.outcome is None:
            self.seen += 1
            if self.seen == self.live:
                self.engine.request_stop()

    def refresh(self, views: Sequence[RunView], now: float) -> None:
        pass

    def close(self, now: float) -> None:
        pass


def test_dry_run_validates_with_hex_and_records_nothing(
    world_factory: Callable[..., World],
) -> None:
    world = world_factory(2)
    world.emulator.load_scenario(
        {
            "projects": [
                {"id": project_id(0), "title": "ok"},
                {"id": project_id(1), "title": "draft", "published": False},
            ]
        }
    )
    with world.client() as client:
        outcomes = dry_run_outcomes(world.plan(), client)
    assert kinds(outcomes) == {"app_0": OutcomeKind.DRY_RUN, "app_1": OutcomeKind.FAILED_TO_START}
    assert world.emulator.runs() == []
    assert world.ledger.recent_invocations() == []


def test_a_hundred_projects_start_on_the_fastest_schedule_hex_allows(
    world_factory: Callable[..., World],
) -> None:
    """Hex's real limits (20/min, 60/h): no 429, none lost, makespan within 10 % of the bound."""
    world = world_factory(100)
    begin = world.clock.now()
    outcomes = world.dispatch(world.plan(mapping_options={"wait": False}))
    assert set(kinds(outcomes).values()) == {OutcomeKind.STARTED}
    runs = world.emulator.runs()
    assert len(runs) == 100
    assert len({run.project_id for run in runs}) == 100
    assert not [e for e in world.emulator.journal() if e["status"] == 429]
    # 60 in the first hour (20 a minute), the last 40 as soon as the hour has passed.
    lower_bound_s = 3600 + 60
    makespan = max(from_iso(run.created_at) for run in runs) - begin
    assert lower_bound_s <= makespan <= lower_bound_s * 1.1
