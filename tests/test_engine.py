"""The engine against the emulator over HTTP, on a shared ManualClock, with a real ledger."""

from __future__ import annotations

import math
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
from engine_helpers import project_id, scenario, started_runs, write_project

from hexdbt.clock import Clock, ManualClock, SystemClock, from_iso
from hexdbt.emulator import HexEmulator
from hexdbt.engine import (
    WINDOW_MARGIN_S,
    Engine,
    EngineSettings,
    dry_run_outcomes,
    new_trigger,
)
from hexdbt.engine.lost_posts import LOOKUP_AGAIN_S
from hexdbt.errors import ConfigError, Interrupted, StateError
from hexdbt.factory import open_client
from hexdbt.hex.budget import BUDGET_FILE
from hexdbt.hex.client import HexClient
from hexdbt.hex.polls import FixedSchedule, NoProgress, Polls, RunView
from hexdbt.ledger import (
    LEDGER_FILENAME,
    Holder,
    Ledger,
    NewTrigger,
    PlanSkip,
    TriggerRecord,
    TriggerState,
)
from hexdbt.outcomes import Outcome, OutcomeKind, exit_code_of
from hexdbt.planner.files import plan_from_files
from hexdbt.planner.rules import Plan
from hexdbt.settings import parse_state_url
from hexdbt.store import Store, open_store

TOKEN = "hxtp_dispatch_test_token"
EmulatorFactory = Callable[..., HexEmulator]


class World:
    """An emulator, a client and a ledger sharing one ManualClock, and a dbt target folder.

    ``clock``: the engine's (its client's and ledger's) clock when it is not Hex's; ``log``:
    told each request the emulator answered, once it is in the journal."""

    def __init__(
        self,
        factory: EmulatorFactory,
        folder: Path,
        state_url: str,
        count: int,
        *,
        hex_clock: ManualClock | None = None,
        clock: Clock | None = None,
        log: Callable[[str], None] | None = None,
        **scenario_options: Any,
    ):
        self.hex_clock = hex_clock or ManualClock()
        self.clock: Clock = clock or self.hex_clock
        self.emulator = factory(
            scenario=scenario(count, **scenario_options), clock=self.hex_clock, log=log
        )
        self.folder = folder
        self.count = count
        self.state_url = state_url
        self.state = parse_state_url(state_url)
        self.ledger = Ledger.open(self.state, clock=self.clock)

    def client(self) -> HexClient:
        return open_client(
            token=TOKEN, base_url=self.emulator.url, clock=self.clock, state=self.state
        )

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
        with world_store(self, BUDGET_FILE) as store:
            rows = store.read(
                lambda session: (
                    session.execute(
                        "SELECT count(*) AS calls FROM calls WHERE kind = 'run_project'"
                    ).rows
                )
            )
        return int(rows[0]["calls"])


@contextmanager
def world_store(world: World, filename: str) -> Iterator[Store]:
    """The world's state as another process sees it: a store of its own."""
    store = open_store(world.state, filename, what="state")
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def world_factory(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path, state_url: str
) -> Iterator[Callable[..., World]]:
    """Worlds on each backend of the state: SQLite files, a PostgreSQL schema."""
    worlds: list[World] = []

    def make(count: int, **options: Any) -> World:
        folder = tmp_path / f"w{len(worlds)}"
        world = World(hex_emulator_factory, folder, state_url, count, **options)
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
    with world_store(world, LEDGER_FILENAME) as store:
        store.write(lambda session: session.execute("DROP TABLE triggers"))
    messages: list[str] = []
    with world.client() as client:
        engine = Engine(client, world.ledger, log=messages.append)
        recorded = engine.submit(plan, source="test")
        engine.close()
        engine.run()
    with pytest.raises(StateError, match=r"ledger .*(no such table: triggers|\"triggers\" does)"):
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


def _claim_and_die(state_url: str, trigger_key: str, now: float) -> None:
    """A real process commits the intent to send at ``now`` (the test's clock), then dies
    before posting."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; from hexdbt.clock import ManualClock; from hexdbt.ledger import"
            " Ledger; from hexdbt.settings import parse_state_url;"
            "ledger = Ledger.open(parse_state_url(sys.argv[1]), clock=ManualClock(float(sys.argv[3])));"
            "assert ledger.claim_for_sending(sys.argv[2]); os._exit(0)",
            state_url,
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
        _claim_and_die(world.state_url, trigger.trigger_key, world.clock.now())
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
        project_dir: str | None = None,
        skipped: Sequence[PlanSkip] = (),
    ) -> tuple[list[TriggerRecord], set[str]] | None:
        recorded = super().plan_and_claim(
            invocation_id,
            command,
            source,
            triggers,
            claim,
            only_new_invocation=only_new_invocation,
            project_dir=project_dir,
            skipped=skipped,
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
    ledger = HookedLedger.open(world.state, clock=world.clock)
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
    assert "GetProjectRuns" not in {op for op, _ in operations(world)}  # nothing was reconciled


def test_a_trigger_claimed_with_its_plan_is_given_back_when_interrupted(
    world_factory: Callable[..., World],
) -> None:
    """A stop between the intent's commit and the POST: nothing is sent, the claim and its
    budget slot are given back, and the caller is told what was recorded."""
    world = world_factory(1)
    plan = world.plan()
    ledger = HookedLedger.open(world.state, clock=world.clock)
    ledger.after_recording = lambda records: engine.request_stop()
    with world.client() as client, ledger:
        engine = Engine(client, ledger)
        recorded = engine.submit(plan, source="test")
        engine.run()
        outcomes = engine.outcomes_of(plan)
    assert [record.name for record in recorded.result() or []] == ["app_0"]
    (record,) = world.ledger.triggers_of(plan.invocation_id)
    assert (record.state, record.owner_lease) == (TriggerState.QUEUED, None)
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

    world.hex_clock.advance(3600)
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

    world.hex_clock.advance(7 * 3600)
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


class StopWhenLive(NoProgress):
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


# -- the engine's own promises ----------------------------------------------------------------


class Answered:
    """The emulator's request log (``HexEmulator(log=...)``), called once an answer is in the
    journal: ``event`` is set when a request matching ``method path -> status`` is answered."""

    def __init__(self, method: str, path_ending: str, status: int) -> None:
        self.method, self.path_ending, self.status = method, path_ending, status
        self.event = threading.Event()

    def __call__(self, line: str) -> None:
        request, _, answer = line.partition(" -> ")
        method, _, target = request.partition(" ")
        if (method, answer) == (self.method, str(self.status)) and target.endswith(
            self.path_ending
        ):
            self.event.set()


def operations(world: World) -> list[tuple[str, int | None]]:
    """The journal's operations; a project's history (its completed runs, read once to space the
    polls) is left out: what is asserted here is what sending and reconciling did."""
    return [
        (entry["operation"], entry["status"])
        for entry in world.emulator.journal()
        if "statusFilter=COMPLETED" not in entry["path"]
    ]


def test_a_stop_during_an_hour_long_wait_for_hex_s_budget_ends_run_at_once(
    world_factory: Callable[..., World],
) -> None:
    """Hex allows one RunProject an hour: A starts, B gets a 429 with Retry-After 3600, and the
    engine waits for the hour while it follows A. A stop from another thread ends ``run`` within
    2 s: A is cancelled and reported interrupted, B stays queued and is reported so.

    The ManualClock has ``real_wait_s``: each of the engine's waits (at most STOP_CHECK_S = 1 s
    of clock time) first waits 50 ms of real time, so the hour takes at least 3 real minutes.
    The stop, requested as soon as the journal shows the 429, comes first whatever the
    machine's load, while a plain ManualClock would race through the hour and send B."""
    b_refused = Answered("POST", f"/projects/{project_id(1)}/runs", 429)
    world = world_factory(
        2,
        hex_clock=ManualClock(real_wait_s=0.05),
        log=b_refused,
        running_s=7200,
        run_project_per_hour=1,
    )
    plan = world.plan()
    with world.client() as client:
        engine = Engine(client, world.ledger)
        engine.submit(plan, source="test")
        engine.close()
        loop = threading.Thread(target=engine.run)
        loop.start()
        assert b_refused.event.wait(timeout=30)
        posts_before_the_stop = [op for op in operations(world) if op[0] == "RunProject"]
        engine.request_stop()
        loop.join(timeout=2)
        assert not loop.is_alive()
        outcomes = engine.outcomes_of(plan)
    refused = next(e for e in world.emulator.journal() if e["status"] == 429)
    assert refused["operation"] == "RunProject"
    assert posts_before_the_stop == [("RunProject", 201), ("RunProject", 429)]
    assert [op for op in operations(world) if op[0] == "RunProject"] == posts_before_the_stop
    assert ("CancelRun", 204) in operations(world)
    assert kinds(outcomes) == {"app_0": OutcomeKind.INTERRUPTED, "app_1": OutcomeKind.QUEUED}
    assert outcomes[0].reason == "interrupted: cancelled in Hex"
    states = {r.name: r.state for r in world.ledger.triggers_of(plan.invocation_id)}
    assert states == {"app_0": TriggerState.ENDED, "app_1": TriggerState.QUEUED}
    (run,) = world.emulator.runs()
    assert run.status == "KILLED"


def test_a_second_engine_on_the_same_invocation_follows_the_runs_to_their_true_end(
    world_factory: Callable[..., World],
) -> None:
    """Two engines (two ledgers, each with its own lease) on one invocation; the first claims
    every trigger with its plan. The second sees rows another live owner is sending and follows
    them through the ledger to the run's end: ERRORED, exit code 5, not in_progress_elsewhere
    with exit 0. Nothing is started twice, nothing is reconciled. The clock's ``real_wait_s``
    keeps the two loops, which both move the one ManualClock, from racing it through the runs'
    timeout while the other is busy with HTTP."""
    world = world_factory(2, hex_clock=ManualClock(real_wait_s=0.002), outcome="ERRORED")
    plan = world.plan()
    first_ledger = HookedLedger.open(world.state, clock=world.clock)
    second_ledger = Ledger.open(world.state, clock=world.clock)
    with world.client() as first_client, world.client() as second_client:
        first = Engine(first_client, first_ledger)
        second = Engine(second_client, second_ledger)
        second_loop = threading.Thread(target=second.run)

        def start_the_second(records: list[TriggerRecord]) -> None:
            """The first has recorded and claimed everything: the second comes now."""
            assert {r.state for r in records} == {TriggerState.SENDING}
            second.submit(plan, source="second")
            second.close()
            second_loop.start()

        first_ledger.after_recording = start_the_second
        first.submit(plan, source="first")
        first.close()
        first.run()
        second_loop.join(timeout=30)
        assert not second_loop.is_alive()
        seconds = second.outcomes_of(plan)
        firsts = first.outcomes_of(plan)
    first_ledger.close()
    second_ledger.close()
    assert set(kinds(seconds).values()) == {OutcomeKind.ERRORED}
    assert exit_code_of(seconds) == 5
    assert [o.run_id for o in seconds] == [o.run_id for o in firsts]
    assert world.started() == {project_id(0): 1, project_id(1): 1}
    assert "GetProjectRuns" not in {op for op, _ in operations(world)}


class OffsetClock:
    """Hex's ManualClock read ``offset_s`` ahead: the engine's clock when the two disagree.
    Waiting on it moves Hex's clock, so both advance together."""

    def __init__(self, hex_clock: ManualClock, offset_s: float) -> None:
        self.hex_clock, self.offset_s = hex_clock, offset_s

    def now(self) -> float:
        return self.hex_clock.now() + self.offset_s

    def sleep(self, seconds: float) -> None:
        self.hex_clock.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return self.hex_clock.wait(event, seconds)

    def from_real_s(self, seconds: float) -> float:
        return self.hex_clock.from_real_s(seconds)


@pytest.mark.parametrize("ahead_s", [5.0, 50.0])
def test_a_lost_answer_adopts_the_run_its_post_started_when_the_clocks_disagree(
    world_factory: Callable[..., World], ahead_s: float
) -> None:
    """RunProject creates the run and the connection is reset before the answer; the engine's
    clock is ahead of Hex's (within CLOCK_SKEW_S). The run is found and followed: started once."""
    hex_clock = ManualClock()
    world = world_factory(1, hex_clock=hex_clock, clock=OffsetClock(hex_clock, ahead_s))
    world.emulator.inject_faults("RunProject", sequence=["lost_reset"])
    plan = world.plan()
    (outcome,) = world.dispatch(plan)
    (created,) = world.emulator.runs(project_id(0))
    assert [op for op in operations(world) if op[0] == "RunProject"] == [("RunProject", None)]
    assert world.started() == {project_id(0): 1}
    assert (outcome.kind, outcome.run_id) == (OutcomeKind.COMPLETED, created.run_id)
    (record,) = world.ledger.triggers_of(plan.invocation_id)
    assert (record.state, record.run_id, record.hex_status) == (
        TriggerState.ENDED,
        created.run_id,
        "COMPLETED",
    )


def test_nothing_started_is_concluded_only_once_the_post_can_no_longer_be_in_flight(
    world_factory: Callable[..., World],
) -> None:
    """The connection drops before Hex handled the POST: no run exists, but the client cannot
    know it. The engine looks at Hex's runs at once, every LOOKUP_AGAIN_S while the POST may be
    in flight, and when the window closes (intent + the client's longest request +
    WINDOW_MARGIN_S); only then it sends again, once."""
    world = world_factory(1)
    world.emulator.inject_faults("RunProject", sequence=["drop"])
    plan = world.plan()
    intent_at = world.clock.now()  # the ManualClock moves only when the engine waits
    with world.client() as client:
        window_s = client.longest_request_s + WINDOW_MARGIN_S
        window_closes = intent_at + window_s
        engine = Engine(client, world.ledger)
        engine.submit(plan, source="test")
        engine.close()
        engine.run()
        (outcome,) = engine.outcomes_of(plan)
    calls = [op for op in operations(world) if op[0] in ("RunProject", "GetProjectRuns")]
    # At once, then every 10 s while the POST may still be in flight, and when the window
    # closed: nothing each time, so nothing started.
    lookups = 1 + math.ceil(window_s / LOOKUP_AGAIN_S)
    assert calls == [
        ("RunProject", None),
        *[("GetProjectRuns", 200)] * lookups,
        ("RunProject", 201),
    ]
    (run,) = world.emulator.runs()
    assert window_closes <= from_iso(run.created_at) < window_closes + 1
    assert (outcome.kind, outcome.run_id) == (OutcomeKind.COMPLETED, run.run_id)
    (record,) = world.ledger.triggers_of(plan.invocation_id)
    assert (record.state, record.run_id) == (TriggerState.ENDED, run.run_id)
    assert record.intent_at is not None
    assert record.intent_at >= window_closes  # the second claim's intent


def test_a_run_another_process_recorded_ended_keeps_its_first_recorded_end(
    world_factory: Callable[..., World],
) -> None:
    """While this engine follows a run, another process (its own ledger on the same file)
    records the run's end first; this engine's own end is a move the ledger refuses: the first
    end is reported, nothing crashes."""
    world = world_factory(1)
    plan = world.plan()
    other_process = Ledger.open(world.state, clock=world.clock)

    class EndElsewhereWhenRunning(StopWhenLive):
        def changed(self, view: RunView, now: float) -> None:
            if view.status == "RUNNING":
                (record,) = other_process.triggers_of(plan.invocation_id)
                other_process.mark_ended(
                    record.trigger_key, hex_status="KILLED", reason="cancelled by another run"
                )

    messages: list[str] = []
    with world.client() as client, other_process:
        engine = Engine(client, world.ledger, log=messages.append)
        engine.polls.progress = EndElsewhereWhenRunning(engine, live=0)
        engine.submit(plan, source="test")
        engine.close()
        engine.run()
        (outcome,) = engine.outcomes_of(plan)
    assert (outcome.kind, outcome.hex_status) == (OutcomeKind.KILLED, "KILLED")
    assert outcome.reason == "cancelled by another run"
    (run,) = world.emulator.runs()
    assert run.status == "COMPLETED"  # Hex's end came second: the ledger kept the first


def test_a_dropped_post_never_adopts_a_run_another_client_started_before_its_intent(
    world_factory: Callable[..., World],
) -> None:
    """Another client starts the project; five seconds later the engine's POST is dropped before
    Hex handles it. The engine had read Hex's clock from an earlier answer, so the other run,
    started before the intent, is no candidate: once the POST's window has closed, the trigger is
    sent again and follows a run of its own (it once adopted the other client's run)."""
    world = world_factory(1)
    plan = world.plan()
    with world.client() as other_client:
        other_run = other_client.run_project(project_id(0))
    world.hex_clock.advance(5)
    world.emulator.inject_faults("RunProject", sequence=["drop"])
    with world.client() as client:
        client.list_projects(limit=1)  # an answer before the intent: Hex's clock is read
        engine = Engine(client, world.ledger)
        engine.submit(plan, source="test")
        engine.close()
        engine.run()
        (outcome,) = engine.outcomes_of(plan)
    runs = {record.run_id for record in world.emulator.runs(project_id(0))}
    assert len(runs) == 2
    assert outcome.kind is OutcomeKind.COMPLETED
    assert outcome.run_id in runs - {other_run.run_id}


def test_a_trigger_another_live_process_is_sending_is_followed_and_says_who_holds_it(
    world_factory: Callable[..., World],
) -> None:
    """A real process holds the trigger's claim (its lease lives): the engine does not send it,
    and says which host and pid holds it."""
    world = world_factory(1)
    plan = world.plan()
    trigger = plan.triggers[0]
    with world.client() as client:
        world.ledger.plan_and_claim(
            plan.invocation_id, plan.command, "test", [new_trigger(trigger, client.base_url)], ()
        )
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from hexdbt.ledger import Ledger; from hexdbt.settings import"
            " parse_state_url; ledger = Ledger.open(parse_state_url(sys.argv[1]));"
            "assert ledger.claim_for_sending(sys.argv[2]); print('claimed', flush=True);"
            "sys.stdin.read()",
            world.state_url,
            trigger.trigger_key,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    notes: list[str] = []
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "claimed"
        with world.client() as client:

            def note(message: str) -> None:
                notes.append(message)
                if "being sent by" in message:
                    engine.request_stop()  # seen: nothing more to learn here

            engine = Engine(client, world.ledger, log=note)
            engine.submit(plan, source="test")
            engine.close()
            engine.run()
    finally:
        holder.communicate("")
    owner = f"{socket.gethostname()} pid {holder.pid}"
    assert f"app_0: being sent by {owner}; following it in the ledger" in notes
    assert world.started() == {}


class HexCreatesTheRunLate(ManualClock):
    """Hex's clock, on which Hex creates the run of a POST whose connection dropped ``late_s``
    after it: a RunProject Hex went on handling past the client's read timeout. The run is
    started through Hex's own API, as the late POST would have."""

    def __init__(self, late_s: float) -> None:
        super().__init__(real_wait_s=0.0)
        self.late_s = late_s
        self.posted_at: float | None = None  # when the dropped POST left (set by the test)
        self.url = ""
        self.created_at: float | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        due = self.posted_at is not None and self.now() >= self.posted_at + self.late_s
        if due and self.created_at is None:
            self.created_at = self.now()
            response = requests.post(
                f"{self.url}/api/v1/projects/{project_id(0)}/runs",
                headers={"Authorization": f"Bearer {TOKEN}"},
                json={},
                timeout=10,
            )
            assert response.status_code == 201, response.text


def _late_run_world(
    world_factory: Callable[..., World], late_s: float
) -> tuple[World, HexCreatesTheRunLate]:
    hex_clock = HexCreatesTheRunLate(late_s)
    world = world_factory(1, hex_clock=hex_clock)
    hex_clock.url = world.emulator.url
    return world, hex_clock


@pytest.mark.parametrize(("margin_s", "runs"), [(80.0, 1), (None, 2)])
def test_a_run_hex_creates_110_s_after_its_post_is_adopted_when_the_margin_covers_it(
    world_factory: Callable[..., World], margin_s: float | None, runs: int
) -> None:
    """The POST's connection drops and Hex creates the run 110 s later: with the window's margin
    set to 80 s (40 s of timeouts + 80 > 110) the run is found and followed, one run; with the
    default 60 s the window closes first and the trigger is sent again (the documented limit)."""
    world, hex_clock = _late_run_world(world_factory, 110.0)
    world.emulator.inject_faults("RunProject", sequence=["drop"])  # Hex has not handled it yet
    plan = world.plan()
    hex_clock.posted_at = world.clock.now()
    (outcome,) = world.dispatch(plan, window_margin_s=margin_s)
    assert hex_clock.created_at is not None
    assert sum(world.started().values()) == runs
    assert outcome.kind is OutcomeKind.COMPLETED
    if runs == 1:  # the late run is the one followed
        (run,) = world.emulator.runs()
        assert outcome.run_id == run.run_id


def test_the_reconciler_keeps_the_window_the_sender_recorded_not_its_own(
    world_factory: Callable[..., World],
) -> None:
    """A sender with a 300 s window (its timeouts and margin) lost its answer and is gone; Hex
    creates the run 200 s after the POST. The process that takes the row over has a 100 s window
    of its own, yet waits out the recorded one: the late run is adopted, nothing sent again."""
    world, hex_clock = _late_run_world(world_factory, 200.0)
    plan = world.plan()
    sender = Ledger.open(world.state, clock=world.clock)
    key = plan.triggers[0].trigger_key
    (claimed,), _ = sender.plan_and_claim(
        plan.invocation_id,
        plan.command,
        "test",
        [new_trigger(plan.triggers[0], world.emulator.url)],
        [key],
    )
    assert sender.arm(key, fence=claimed.fence, window_s=300.0) is not None
    hex_clock.posted_at = world.clock.now()
    assert sender.get(key).window_closes_at == hex_clock.posted_at + 300.0
    sender.close()  # its lease released: the row is an orphan, as after the sender's crash
    (outcome,) = world.dispatch(plan, window_margin_s=60.0)
    # Waited for it: Hex created the late run, and it is the one RunProject in Hex's journal.
    assert hex_clock.created_at is not None
    assert hex_clock.created_at - hex_clock.posted_at == pytest.approx(200.0, abs=1.0)
    assert world.started() == {project_id(0): 1}
    (run,) = world.emulator.runs()
    assert (outcome.kind, outcome.run_id) == (OutcomeKind.COMPLETED, run.run_id)


def test_the_window_margin_the_docs_state_is_the_code_s() -> None:
    root = Path(__file__).resolve().parent.parent
    docs = (root / "docs" / "exactly-once.md").read_text(encoding="utf-8")
    stated = re.search(r"`HEXDBT_WINDOW_MARGIN_S`, by default (\d+) s", docs)
    assert stated is not None
    assert float(stated.group(1)) == WINDOW_MARGIN_S
    reference = (root / "docs" / "cli.md").read_text(encoding="utf-8")
    assert f"in seconds (default {WINDOW_MARGIN_S:g};" in reference


def test_a_window_margin_that_is_no_number_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, world_factory: Callable[..., World]
) -> None:
    world = world_factory(1)
    monkeypatch.setenv("HEXDBT_WINDOW_MARGIN_S", "soon")
    with world.client() as client, pytest.raises(ConfigError) as caught:
        Engine(client, world.ledger)
    assert (
        str(caught.value)
        == "HEXDBT_WINDOW_MARGIN_S must be a number of seconds above 0, got 'soon'"
    )
    assert caught.value.exit_code == 2


class StallingLedger(Ledger):
    """The real ledger of a host whose process stalls once, right after its first arm (before
    the bytes of its POST): ``stall`` is what the world does meanwhile."""

    stall: Callable[[], None] = staticmethod(lambda: None)

    def arm(self, trigger_key: str, **fields: Any) -> TriggerRecord | None:
        armed = super().arm(trigger_key, **fields)
        stall, self.stall = self.stall, (lambda: None)
        stall()
        return armed


def _ledger_of_host(world: World, host: str, kind: type[Ledger] = Ledger) -> Ledger:
    """A ledger as a process of another machine opens it; leases on the world's clock."""
    store = open_store(world.state, LEDGER_FILENAME, what="ledger", clock=world.clock)
    holder = Holder(host, 4242, boot_id=f"boot of {host}")
    return kind(store, clock=world.clock, holder=holder, lease_clock=world.clock)


def test_a_run_posted_after_a_takeover_decided_without_it_is_cancelled_as_a_stray(
    world_factory: Callable[..., World],
) -> None:
    """What fencing leaves (docs/exactly-once.md): a process stalls between its arm and its POST
    past its lease and past the POST's window. Another host takes the trigger over, finds no run
    in Hex, sends it and follows its run to the end. When the first wakes up, its POST starts a
    second run: a stray, which it cancels, records beside the trigger and reports. Its own
    outcome is the other host's run, and the row keeps that run."""
    world = world_factory(1)
    plan = world.plan()
    stalled = _ledger_of_host(world, "host-a", StallingLedger)
    taker = _ledger_of_host(world, "host-b")
    assert isinstance(stalled, StallingLedger)

    def stall_past_the_lease_and_the_window() -> None:
        world.clock.sleep(3600)
        with world.client() as client:
            other = Engine(client, taker)
            other.resume()
            other.close()
            other.run()

    stalled.stall = stall_past_the_lease_and_the_window
    lines: list[str] = []
    try:
        with world.client() as client:
            engine = Engine(client, stalled, log=lines.append)
            engine.submit(plan, source="test")
            engine.close()
            engine.run()
            (outcome,) = engine.outcomes_of(plan)
        strays = stalled.stray_runs()
    finally:
        stalled.close()
        taker.close()
    runs = {run.status: run.run_id for run in world.emulator.runs(project_id(0))}
    assert set(runs) == {"COMPLETED", "KILLED"}
    assert (outcome.kind, outcome.run_id) == (OutcomeKind.COMPLETED, runs["COMPLETED"])
    assert [(s.run_id, s.trigger_key, s.fate) for s in strays] == [
        (runs["KILLED"], plan.triggers[0].trigger_key, "cancelled in Hex")
    ]
    (said,) = [line for line in lines if "stray run" in line]
    assert said == (
        f"app_0: run {runs['KILLED']} was started after host-b pid 4242 had taken the trigger"
        " over (this process stalled past its lease); stray run cancelled in Hex"
    )


def test_a_lease_shorter_than_the_longest_post_is_refused(
    world_factory: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    world = world_factory(1)
    monkeypatch.setenv("HEXDBT_LEASE_TTL_S", "30")
    with world.client() as client, pytest.raises(ConfigError) as caught:
        Engine(client, world.ledger)
    assert str(caught.value) == (
        "HEXDBT_LEASE_TTL_S (30 s) must be longer than the longest RunProject (connect and read"
        " timeouts: 40 s)"
    )
    assert caught.value.exit_code == 2


def test_a_run_timing_out_while_the_budget_for_other_calls_is_spent_holds_up_nothing(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On real time: RunProject's budget is free, the one for other calls has one call a minute,
    spent by the poll that finds the run past its timeout. Its cancel waits for a slot of the
    engine's, never inside the client: a build handed over meanwhile is sent at once, and stop is
    obeyed within 2 s, the run reported timed out and not cancelled."""
    monkeypatch.setenv("HEXDBT_BUDGET", "other=1/60")
    emulator = hex_emulator_factory(scenario=scenario(1, running_s=600), clock=SystemClock())
    state = parse_state_url(f"sqlite://{tmp_path / 'state'}")
    first, mappings = write_project(
        tmp_path / "first", 1, mapping_options={"timeout_minutes": 0.001}
    )
    later, _ = write_project(tmp_path / "later", 1, invocation_id="inv-2")
    plans = [
        plan_from_files(target / "run_results.json", target / "manifest.json", mappings).plan
        for target in (first, later)
    ]
    past_timeout = threading.Event()

    def log(line: str) -> None:
        if "past its timeout" in line:
            past_timeout.set()

    with (
        Ledger.open(state) as ledger,
        open_client(token=TOKEN, base_url=emulator.url, state=state) as client,
    ):
        polls = Polls(client, schedule=FixedSchedule(every_s=0.2))
        engine = Engine(client, ledger, polls=polls, log=log)
        loop = threading.Thread(target=engine.run)
        engine.submit(plans[0], source="test")
        loop.start()
        try:
            assert past_timeout.wait(30), "the poll never found the run past its timeout"
            engine.submit(plans[1], source="test")
            deadline = time.monotonic() + 10
            while started_runs(emulator.journal()) != {project_id(0): 2}:
                assert time.monotonic() < deadline, "the later build was not sent"
                time.sleep(0.01)
        finally:
            engine.request_stop()
            loop.join(timeout=2)
        assert not loop.is_alive(), "stop was not obeyed within 2 s"
        (timed_out,) = engine.outcomes_of(plans[0])
    assert timed_out.kind is OutcomeKind.TIMEOUT
    assert timed_out.reason is not None
    assert timed_out.reason.endswith("not cancelled: hexdbt was stopped first")
    assert "CancelRun" not in {entry["operation"] for entry in emulator.journal()}
