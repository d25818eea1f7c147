"""Exactly once under crashes and faults.

`hexdbt run` over 20 mapped projects is killed with SIGKILL at random points (before, during and
after its POSTs), restarted, killed again, and finally run to the end: the emulator's journal must
show every project started exactly once and the last run must report every one of them.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_helpers import project_id, scenario, started_runs, write_project

from hexdbt.clock import ManualClock
from hexdbt.dispatch import Dispatcher, plan_outcomes
from hexdbt.emulator import HexEmulator
from hexdbt.hex.client import connect
from hexdbt.ledger import Ledger, TriggerState
from hexdbt.planner.files import plan_from_files
from hexdbt.report import OutcomeKind
from hexdbt.settings import resolve_state_dir

PROJECTS = 20
KILLS_PER_ROUND = 5
TIME_SCALE = 120.0  # Hex's minutes pass in half a real second, on both sides
EmulatorFactory = Callable[..., HexEmulator]


def _environment(emulator: HexEmulator, state_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HEX_API_TOKEN": "hxtp_crash_test",
        "HEX_BASE_URL": emulator.url,
        "HEXDBT_STATE_DIR": str(state_dir),
        "HEXDBT_TIME_SCALE": str(TIME_SCALE),
    }


ROUNDS = 10


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_sigkill_at_random_points_never_starts_a_project_twice(
    round_number: int, hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    rng = random.Random(round_number)
    emulator = hex_emulator_factory(scenario=scenario(PROJECTS), time_scale=TIME_SCALE)
    # Slow POSTs stretch the sending phase so that kills land during it too.
    emulator.inject_faults("RunProject", rate=1.0, fault={"kind": "slow", "delay_s": 0.03})
    _, mappings = write_project(tmp_path, PROJECTS)
    command = [
        sys.executable,
        "-m",
        "hexdbt",
        "run",
        "--project-dir",
        str(tmp_path),
        "--mappings",
        str(mappings),
        "--json",
    ]
    environment = _environment(emulator, tmp_path / "state")
    for kill in range(KILLS_PER_ROUND):
        process = subprocess.Popen(
            command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        # The 50 kill points are spread over start-up, planning, the POSTs and the wait.
        point = (round_number * KILLS_PER_ROUND + kill) / (ROUNDS * KILLS_PER_ROUND - 1)
        time.sleep(0.15 + 1.3 * point + rng.uniform(0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert max(started_runs(emulator.journal()).values(), default=0) <= 1

    final = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    report = json.loads(final.stdout)
    assert {p["name"]: p["outcome"] for p in report["projects"]} == {
        f"app_{index}": "completed" for index in range(PROJECTS)
    }
    assert started_runs(emulator.journal()) == {project_id(i): 1 for i in range(PROJECTS)}


def test_faults_on_every_endpoint_still_end_each_project_once_with_its_true_status(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    clock = ManualClock()
    count = 12
    outcomes_by_project = {
        project_id(i): "ERRORED" if i % 4 == 3 else "COMPLETED" for i in range(count)
    }
    emulator = hex_emulator_factory(
        scenario={
            "projects": [
                {"id": pid, "title": pid, "runs": {"running_s": 120, "outcome": outcome}}
                for pid, outcome in outcomes_by_project.items()
            ]
        },
        clock=clock,
    )
    for index, fault in enumerate(
        [
            {"kind": "error", "status": 500, "body": "html"},
            {"kind": "error", "status": 502, "body": "empty"},
            {"kind": "error", "status": 503, "body": "json"},
            {"kind": "error", "status": 429},
            {"kind": "drop"},
            {"kind": "slow", "delay_s": 0.01},
            {"kind": "lost_reset"},
        ]
    ):
        emulator.inject_faults("*", rate=0.06, fault=fault, seed=index)
    target, mappings = write_project(tmp_path, count)
    plan = plan_from_files(target / "run_results.json", target / "manifest.json", mappings).plan
    with (
        Ledger.in_state_dir(resolve_state_dir(), clock=clock) as ledger,
        connect(token="hxtp_faults", base_url=emulator.url, clock=clock) as client,
    ):
        dispatcher = Dispatcher(client, ledger)
        dispatcher.submit(plan, source="test")
        dispatcher.close()
        dispatcher.run()
        outcomes = plan_outcomes(plan, dispatcher)
        assert not ledger.in_state(TriggerState.AMBIGUOUS)
    faults_seen = [entry["fault"] for entry in emulator.journal() if entry["fault"]]
    assert len(faults_seen) > 10
    assert started_runs(emulator.journal()) == {pid: 1 for pid in outcomes_by_project}
    expected = {
        f"app_{i}": OutcomeKind.ERRORED if i % 4 == 3 else OutcomeKind.COMPLETED
        for i in range(count)
    }
    assert {outcome.name: outcome.kind for outcome in outcomes} == expected
