"""The waiter against the emulator on a shared ManualClock: outcomes, timeouts, stop, budget."""

from __future__ import annotations

import threading
from pathlib import Path

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
from hexdbt.errors import HexAuthError, RunFailedError, RunTimeoutError
from hexdbt.hex.budget import SharedBudget
from hexdbt.hex.client import HexClient
from hexdbt.hex.progress import LineProgress, TableProgress
from hexdbt.hex.waiter import (
    FixedSchedule,
    Outcome,
    RunResult,
    Waiter,
    WatchedRun,
    cancel_runs,
    expected_duration_s,
)

TOKEN = "hxtp_waiter_secret"


def _client(emu: HexEmulator, tmp_path: Path) -> HexClient:
    assert isinstance(emu.clock, ManualClock)
    budget = SharedBudget(tmp_path / "budget.sqlite3", TOKEN, emu.url, clock=emu.clock)
    return HexClient(emu.url, TOKEN, clock=emu.clock, budget=budget)


def _start(client: HexClient, project_id: str, timeout_s: float | None = 3600.0) -> WatchedRun:
    started = client.clock.now()
    run = client.run_project(project_id)
    return WatchedRun(project_id, run.run_id, started, run_url=run.run_url, timeout_s=timeout_s)


@pytest.mark.parametrize(
    ("project_id", "outcome", "status"),
    [
        (CUSTOMER_HEALTH_ID, Outcome.COMPLETED, "COMPLETED"),
        (ERRORS_ID, Outcome.FAILED, "ERRORED"),
        (KILLED_ID, Outcome.FAILED, "KILLED"),
        (NO_KERNEL_ID, Outcome.FAILED, "UNABLE_TO_ALLOCATE_KERNEL"),
    ],
)
def test_each_terminal_status_is_its_own_outcome(
    hex_emulator: HexEmulator, tmp_path: Path, project_id: str, outcome: Outcome, status: str
) -> None:
    client = _client(hex_emulator, tmp_path)
    (result,) = Waiter(client).wait([_start(client, project_id)])
    assert result.outcome is outcome
    assert result.status == status
    if outcome is Outcome.COMPLETED:
        assert result.error is None
    else:
        assert isinstance(result.error, RunFailedError)
        assert result.error.exit_code == 5
        assert status in str(result.error)
        assert result.run.run_url
        assert result.run.run_url in (result.error.hint or "")


def test_detection_is_prompt_and_polls_are_few(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    client = _client(hex_emulator, tmp_path)
    run = _start(client, SCHEDULED_ID)  # 30 s pending + 600 s running
    waiter = Waiter(client)
    (result,) = waiter.wait([run])
    assert result.outcome is Outcome.COMPLETED
    ended = run.started_at + 630
    assert result.ended_at - ended <= 63
    fixed_polls = 630 // 10
    assert result.polls <= fixed_polls / 2


def test_many_runs_share_one_poller_without_a_429(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    client = _client(hex_emulator, tmp_path)
    runs = [_start(client, filler_project_id(number)) for number in range(1, 21)]
    results = Waiter(client).wait(runs)
    assert {result.outcome for result in results} == {Outcome.COMPLETED}
    assert len(results) == 20
    assert all(entry["status"] != 429 for entry in hex_emulator.journal())


def test_timeout_cancels_the_run_by_default(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    client = _client(hex_emulator, tmp_path)
    run = _start(client, SCHEDULED_ID, timeout_s=120)
    (result,) = Waiter(client).wait([run])
    assert result.outcome is Outcome.TIMED_OUT
    assert result.cancel_sent
    assert isinstance(result.error, RunTimeoutError)
    assert result.error.exit_code == 6
    assert "did not end within 2 min" in str(result.error)
    assert "cancelled" in str(result.error)
    assert result.ended_at - run.started_at == pytest.approx(120, abs=1)
    assert client.get_run_status(SCHEDULED_ID, run.run_id).status == "KILLED"


def test_timeout_without_cancel_leaves_the_run(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    client = _client(hex_emulator, tmp_path)
    run = _start(client, SCHEDULED_ID, timeout_s=120)
    (result,) = Waiter(client, cancel_on_timeout=False).wait([run])
    assert result.outcome is Outcome.TIMED_OUT
    assert not result.cancel_sent
    assert "left running" in str(result.error)
    assert client.get_run_status(SCHEDULED_ID, run.run_id).status == "RUNNING"
    assert not [entry for entry in hex_emulator.journal() if entry["operation"] == "CancelRun"]


def test_a_set_stop_event_interrupts_and_the_caller_cancels(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    client = _client(hex_emulator, tmp_path)
    run = _start(client, SCHEDULED_ID)
    stop = threading.Event()
    seen: list[RunResult] = []

    class StopAfterTwoPolls(LineProgress):
        def changed(self, view, now):  # type: ignore[no-untyped-def]
            super().changed(view, now)
            if view.status == "RUNNING":
                stop.set()

    waiter = Waiter(client, progress=StopAfterTwoPolls(lambda line: None))
    (result,) = waiter.wait([run], stop=stop, on_result=seen.append)
    assert result.outcome is Outcome.INTERRUPTED
    assert seen == [result]
    assert [note for _, note in cancel_runs(client, [result])] == ["cancelled"]
    assert client.get_run_status(SCHEDULED_ID, run.run_id).status == "KILLED"


def test_runs_added_while_waiting_are_waited_on(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    client = _client(hex_emulator, tmp_path)
    waiter = Waiter(client)
    added: list[str] = []

    def add_one_more(result: RunResult) -> None:
        if not added:
            added.append(result.run.run_id)
            waiter.add(_start(client, ERRORS_ID))

    results = waiter.wait([_start(client, CUSTOMER_HEALTH_ID)], on_result=add_one_more)
    assert [result.status for result in results] == ["COMPLETED", "ERRORED"]


def test_polling_that_keeps_failing_loses_the_run(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    client = _client(hex_emulator, tmp_path)
    run = _start(client, SCHEDULED_ID)
    hex_emulator.inject_faults("GetRunStatus", sequence=[{"kind": "error", "status": 401}] * 3)
    (result,) = Waiter(client).wait([run])
    assert result.outcome is Outcome.LOST
    assert isinstance(result.error, HexAuthError)


def test_fixed_schedule_polls_every_ten_seconds(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    client = _client(hex_emulator, tmp_path)
    run = _start(client, CUSTOMER_HEALTH_ID)  # ends after 28 s
    (result,) = Waiter(client, schedule=FixedSchedule(10)).wait([run])
    assert result.polls == 3
    assert result.ended_at - run.started_at == pytest.approx(30, abs=0.5)


def test_expected_duration_comes_from_completed_runs(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    client = _client(hex_emulator, tmp_path)
    assert expected_duration_s(client, SCHEDULED_ID) == pytest.approx(300)  # median of 540 and 60
    assert expected_duration_s(client, "unknown-project") is None


def test_line_progress_prints_changes_and_a_heartbeat(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    client = _client(hex_emulator, tmp_path)
    lines: list[str] = []
    run = _start(client, SCHEDULED_ID)
    Waiter(client, progress=LineProgress(lines.append)).wait([run])
    assert any("PENDING" in line for line in lines)
    assert any(" RUNNING " in line and run.run_url and run.run_url in line for line in lines)
    assert any("COMPLETED" in line for line in lines)
    heartbeats = [line for line in lines if line.startswith("waiting on 1 run(s)")]
    assert len(heartbeats) >= 5  # a 10-minute run, at least one line a minute


def test_table_progress_redraws_in_place(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    client = _client(hex_emulator, tmp_path)
    frames: list[str] = []
    run = _start(client, CUSTOMER_HEALTH_ID)
    Waiter(client, progress=TableProgress(frames.append)).wait([run])
    assert frames[0].startswith("\x1b[2KPROJECT")
    assert frames[-1].startswith("\x1b[2F")
    assert "COMPLETED" in frames[-1]
    assert run.run_url
    assert run.run_url in frames[-1]
