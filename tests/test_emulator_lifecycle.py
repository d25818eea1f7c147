"""Run lifecycles on the emulator's clock: each outcome, sequences, scaled and shared clocks."""

from __future__ import annotations

from typing import Any

import pytest
from emulator_helpers import CUSTOMER_HEALTH, HexApi

from hexdbt.clock import ManualClock, ScaledClock
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import ERRORS_ID, FLAKY_ID, KILLED_ID, NO_KERNEL_ID


def _statuses_over_time(emulator: HexEmulator, project_id: str, steps: list[float]) -> list[str]:
    api = HexApi(emulator)
    run_id = api.run(project_id).json()["runId"]
    seen = [api.status(project_id, run_id)["status"]]
    for step in steps:
        emulator.advance(step)
        seen.append(api.status(project_id, run_id)["status"])
    return seen


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("COMPLETED", ["PENDING", "PENDING", "RUNNING", "RUNNING", "COMPLETED"]),
        ("ERRORED", ["PENDING", "PENDING", "RUNNING", "RUNNING", "ERRORED"]),
        ("KILLED", ["PENDING", "PENDING", "RUNNING", "RUNNING", "KILLED"]),
        (
            "UNABLE_TO_ALLOCATE_KERNEL",
            [
                "PENDING",
                "PENDING",
                "UNABLE_TO_ALLOCATE_KERNEL",
                "UNABLE_TO_ALLOCATE_KERNEL",
                "UNABLE_TO_ALLOCATE_KERNEL",
            ],
        ),
    ],
)
def test_each_outcome_follows_its_lifecycle(
    hex_emulator_factory: Any, outcome: str, expected: list[str]
) -> None:
    emulator = hex_emulator_factory(
        scenario={
            "projects": [
                {
                    "id": "p",
                    "title": "P",
                    "runs": {"pending_s": 5, "running_s": 10, "outcome": outcome},
                }
            ]
        }
    )
    # t = 0, 4.9, 5, 14.9, 15
    assert _statuses_over_time(emulator, "p", [4.9, 0.1, 9.9, 0.1]) == expected


def test_an_unallocated_kernel_has_no_start_time(hex_emulator: HexEmulator) -> None:
    api = HexApi(hex_emulator)
    run_id = api.run(NO_KERNEL_ID).json()["runId"]
    hex_emulator.advance(10)
    run = api.status(NO_KERNEL_ID, run_id)
    assert run["status"] == "UNABLE_TO_ALLOCATE_KERNEL"
    assert run["startTime"] is None
    assert run["elapsedTime"] is None
    assert run["endTime"] is not None


@pytest.mark.parametrize(
    ("project_id", "outcome"),
    [
        (CUSTOMER_HEALTH, "COMPLETED"),
        (ERRORS_ID, "ERRORED"),
        (KILLED_ID, "KILLED"),
        (NO_KERNEL_ID, "UNABLE_TO_ALLOCATE_KERNEL"),
    ],
)
def test_the_default_scenario_has_a_project_for_each_outcome(
    hex_emulator: HexEmulator, project_id: str, outcome: str
) -> None:
    assert _statuses_over_time(hex_emulator, project_id, [3600])[-1] == outcome


def test_a_sequence_gives_successive_runs_successive_outcomes_and_the_last_repeats(
    hex_emulator: HexEmulator,
) -> None:
    outcomes = [_statuses_over_time(hex_emulator, FLAKY_ID, [3600])[-1] for _ in range(3)]
    assert outcomes == ["ERRORED", "COMPLETED", "COMPLETED"]


def test_reset_starts_sequences_again(hex_emulator: HexEmulator) -> None:
    assert _statuses_over_time(hex_emulator, FLAKY_ID, [3600])[-1] == "ERRORED"
    hex_emulator.reset()
    assert hex_emulator.runs() == []
    assert _statuses_over_time(hex_emulator, FLAKY_ID, [3600])[-1] == "ERRORED"


def test_a_shared_manual_clock_moves_the_emulator_when_the_client_sleeps(
    hex_emulator_factory: Any,
) -> None:
    clock = ManualClock()
    emulator = hex_emulator_factory(clock=clock)
    assert emulator.clock is clock
    api = HexApi(emulator)
    run_id = api.run(CUSTOMER_HEALTH).json()["runId"]
    clock.sleep(3600)
    assert api.status(CUSTOMER_HEALTH, run_id)["status"] == "COMPLETED"


def test_a_time_scale_makes_emulated_time_pass_faster(hex_emulator_factory: Any) -> None:
    emulator = hex_emulator_factory(
        scenario={
            "projects": [{"id": "p", "title": "P", "runs": {"pending_s": 1, "running_s": 1}}]
        },
        time_scale=2000.0,
    )
    assert isinstance(emulator.clock, ScaledClock)
    api = HexApi(emulator)
    run_id = api.run("p").json()["runId"]
    emulator.clock.sleep(5)  # 2.5 ms of real time
    assert api.status("p", run_id)["status"] == "COMPLETED"


def test_advance_refuses_a_real_clock(hex_emulator_factory: Any) -> None:
    from hexdbt.emulator import ScenarioError

    emulator = hex_emulator_factory(time_scale=10.0)
    with pytest.raises(ScenarioError, match="needs a ManualClock"):
        emulator.advance(1)


def test_a_clock_and_a_time_scale_together_are_refused() -> None:
    from hexdbt.emulator import ScenarioError

    with pytest.raises(ScenarioError, match="either a clock or a time scale"):
        HexEmulator(clock=ManualClock(), time_scale=2.0)
    with pytest.raises(ScenarioError, match="must be above 0"):
        HexEmulator(time_scale=0)


def test_runs_reports_status_and_inputs_for_exactly_once_checks(hex_emulator: HexEmulator) -> None:
    api = HexApi(hex_emulator)
    api.run(CUSTOMER_HEALTH, {"inputParams": {"as_of": "2026-01-31"}})
    hex_emulator.advance(3600)
    (run,) = hex_emulator.runs(CUSTOMER_HEALTH)
    assert run.status == "COMPLETED"
    assert run.input_params == {"as_of": "2026-01-31"}
    assert run.run_trigger == "API"
    assert hex_emulator.runs("another-project") == []
