"""PostgreSQL lost in the middle of a dispatch: the real server is stopped while runs are live.

The server is stopped and started again from the engine's own log lines, on the engine's thread,
so each happens at a known point of the dispatch: after the last run's start is recorded, and
once every run's end has been seen without the state."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import project_id
from postgres_server import PostgresServer
from test_engine import World

from hexdbt.clock import ManualClock
from hexdbt.emulator import HexEmulator
from hexdbt.engine import Engine
from hexdbt.errors import StateError, StateUnavailable
from hexdbt.hex.budget import ALONE_SHARE, CallKind, SharedBudget
from hexdbt.ledger import Ledger, TriggerRecord, TriggerState
from hexdbt.outcomes import OutcomeKind
from hexdbt.settings import parse_state_url

RUNS = 3


@pytest.fixture
def server(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """The session's server; started again after a test that left it stopped."""
    yield postgres_server
    if not postgres_server.running:
        postgres_server.start()


@pytest.fixture
def world(
    hex_emulator_factory: Callable[..., HexEmulator], postgres_state_url: str, tmp_path: Path
) -> Iterator[World]:
    """Three Hex projects whose runs take 10 s, and a ledger on a schema of the server."""
    made = World(hex_emulator_factory, tmp_path / "w", postgres_state_url, RUNS, running_s=10)
    yield made
    made.ledger.close()


def _operations(journal: list[dict[str, Any]], operation: str) -> int:
    return sum(1 for entry in journal if entry.get("operation") == operation)


class Outage:
    """Stops the server once the engine has logged the start of every run; starts it again once
    ``back_when`` holds of the engine's log lines (never, when None). Notes the emulator's journal
    at both moments."""

    def __init__(
        self,
        server: PostgresServer,
        world: World,
        back_when: Callable[[list[str]], bool] | None,
    ) -> None:
        self.server = server
        self.world = world
        self.back_when = back_when
        self.lines: list[str] = []
        self.journal_at_stop: list[dict[str, Any]] | None = None
        self.journal_at_start: list[dict[str, Any]] | None = None

    def log(self, line: str) -> None:
        self.lines.append(line)
        if ": started run " in line and _count(self.lines, ": started run ") == RUNS:
            self.server.stop()
            self.journal_at_stop = self.world.emulator.journal()
        elif self.back_when and self.journal_at_start is None and self.back_when(self.lines):
            self.journal_at_start = self.world.emulator.journal()
            self.server.start()


def _count(lines: list[str], text: str) -> int:
    return sum(1 for line in lines if text in line)


def _every_end_kept(lines: list[str]) -> bool:
    return _count(lines, "recorded in the ledger once the state is back") == RUNS


def test_runs_are_polled_while_postgresql_is_down_and_their_ends_recorded_once_it_is_back(
    world: World, server: PostgresServer
) -> None:
    outage = Outage(server, world, back_when=_every_end_kept)
    outcomes = world.dispatch(world.plan(), log=outage.log)
    assert [outcome.kind for outcome in outcomes] == [OutcomeKind.COMPLETED] * RUNS
    assert world.started() == {project_id(index): 1 for index in range(RUNS)}
    # Every run was polled to its end while the server was down, and nothing was sent.
    assert outage.journal_at_stop is not None
    assert outage.journal_at_start is not None
    during = outage.journal_at_start[len(outage.journal_at_stop) :]
    assert _operations(during, "GetRunStatus") >= RUNS
    assert _operations(during, "RunProject") == 0
    lost = [line for line in outage.lines if "live runs meanwhile, sending nothing" in line]
    assert len(lost) == 1, "\n".join(outage.lines)
    assert f"lost PostgreSQL at 127.0.0.1:{server.port} for the" in lost[0]
    assert any(line.startswith("the state is back after") for line in outage.lines)
    # The ends seen meanwhile are in the ledger, through the connection made again.
    records = world.ledger.triggers_of("inv-1")
    assert {(r.state, r.hex_status) for r in records} == {(TriggerState.ENDED, "COMPLETED")}
    assert not any(server.password in line for line in outage.lines)


def test_a_command_gives_up_after_a_minute_without_postgresql_and_a_later_one_follows_its_runs(
    world: World, server: PostgresServer
) -> None:
    outage = Outage(server, world, back_when=None)
    with pytest.raises(StateError) as raised:
        world.dispatch(world.plan(), log=outage.log)
    error = raised.value
    assert not isinstance(error, StateUnavailable)
    assert error.exit_code == 7
    assert str(error).startswith("gave up after 60 s without the state: lost PostgreSQL at")
    assert f"127.0.0.1:{server.port}" in str(error)
    assert server.password not in str(error)
    assert error.hint is not None
    assert f"({RUNS} of them ended meanwhile)" in error.hint
    # Its lease cannot be released: it expires, and closing says nothing over the error.
    world.ledger.close()
    # Nothing is lost: once the server is back, the next command takes up the same runs (as
    # `hexdbt run` resumes what earlier processes left live) and records their ends.
    server.start()
    world.ledger = Ledger.open(world.state, clock=world.clock)
    with world.client() as client:
        engine = Engine(client, world.ledger)
        resumed = engine.resume()
        engine.close()
        engine.run()
    assert len(resumed.result(timeout=0)) == RUNS
    records = world.ledger.triggers_of("inv-1")
    assert {(r.state, r.hex_status) for r in records} == {(TriggerState.ENDED, "COMPLETED")}
    assert world.started() == {project_id(index): 1 for index in range(RUNS)}


def test_a_daemon_goes_on_without_postgresql_past_the_limit_and_says_so(
    world: World, server: PostgresServer
) -> None:
    def reminded(lines: list[str]) -> bool:
        return _count(lines, "still without the state after") == 1

    outage = Outage(server, world, back_when=reminded)
    outcomes = world.dispatch(world.plan(), log=outage.log, daemon=True)
    assert [outcome.kind for outcome in outcomes] == [OutcomeKind.COMPLETED] * RUNS
    reminder = next(line for line in outage.lines if "still without the state after" in line)
    assert int(reminder.split(" after ")[1].split(" s")[0]) >= 60
    assert world.started() == {project_id(index): 1 for index in range(RUNS)}


def test_plans_handed_over_while_postgresql_is_down_are_recorded_and_sent_once_it_is_back(
    world: World, server: PostgresServer
) -> None:
    """Nothing is sent before its intent is committed: the engine waits for the server, then
    records both plans and starts each of their runs once."""
    lines: list[str] = []
    sent_while_down: list[int] = []

    def log(line: str) -> None:
        lines.append(line)
        if "sending nothing until the state is back" in line:
            sent_while_down.append(_operations(world.emulator.journal(), "RunProject"))
            server.start()

    plans = [world.plan(invocation_id=f"inv-{n}") for n in (1, 2)]
    with world.client() as client:
        engine = Engine(client, world.ledger, log=log)
        server.stop()
        recorded = [engine.submit(plan, source="test") for plan in plans]
        engine.close()
        engine.run()
        assert sent_while_down == [0]
        assert all(len(future.result(timeout=0) or []) == RUNS for future in recorded)
        for plan in plans:
            assert {o.kind for o in engine.outcomes_of(plan)} == {OutcomeKind.COMPLETED}
    assert world.started() == {project_id(index): 2 for index in range(RUNS)}


class LosingLedger(Ledger):
    """The real ledger, whose server is stopped right before the first run id is recorded: the
    POST has started a run that only this process knows of."""

    server: PostgresServer | None = None

    def mark_started(self, trigger_key: str, **fields: Any) -> TriggerRecord:
        if self.server is not None and self.server.running:
            self.server.stop()
            self.server = None  # once
        return super().mark_started(trigger_key, **fields)


def test_a_run_started_as_postgresql_is_lost_is_followed_and_recorded_once_it_is_back(
    world: World, server: PostgresServer
) -> None:
    """Its run id is kept in memory, as the ends are: the run is polled meanwhile, and recorded
    with its end once the state is back (then the others are sent). It is never looked up as a
    lost POST."""
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        if "recorded in the ledger once the state is back" in line:  # the first run's end
            server.start()

    ledger = LosingLedger.open(world.state, clock=world.clock)
    ledger.server = server
    plan = world.plan()
    try:
        with world.client() as client:
            engine = Engine(client, ledger, log=log)
            engine.submit(plan, source="test")
            engine.close()
            engine.run()
            outcomes = engine.outcomes_of(plan)
    finally:
        ledger.close()
    assert [outcome.kind for outcome in outcomes] == [OutcomeKind.COMPLETED] * RUNS
    assert world.started() == {project_id(index): 1 for index in range(RUNS)}
    looked_up = ("answer to RunProject was lost", "the one started after its intent")
    assert not any(text in line for line in lines for text in looked_up), lines
    runs = {run.project_id: run.run_id for run in world.emulator.runs()}
    records = world.ledger.triggers_of(plan.invocation_id)
    assert {(r.state, r.run_id) for r in records} == {
        (TriggerState.ENDED, runs[r.project_id]) for r in records
    }


def test_the_budget_keeps_to_a_third_of_the_limits_on_its_own_while_postgresql_is_down(
    server: PostgresServer, postgres_state_url: str
) -> None:
    clock = ManualClock()
    location = parse_state_url(postgres_state_url)
    budget = SharedBudget.open(location, "hxtp_outage", "http://127.0.0.1:9", clock=clock)
    try:
        assert len(budget.take_now(CallKind.OTHER, 5)) == 5  # shared: recorded in PostgreSQL
        server.stop()
        alone = budget.limits.share(ALONE_SHARE)
        assert [limit.calls for limit in alone.other] == [10]
        assert [limit.calls for limit in alone.run_project] == [6, 20]
        assert len(budget.take_now(CallKind.OTHER, 30)) == 10
        assert len(budget.take_now(CallKind.RUN_PROJECT, 30)) == 6
        assert budget.next_slot_at(CallKind.OTHER) > clock.now()
        # Back: the shared window again, which never saw the calls made alone.
        server.start()
        clock.advance(10)  # past the store's next reconnect
        assert len(budget.take_now(CallKind.OTHER, 30)) == 25
    finally:
        budget.close()
