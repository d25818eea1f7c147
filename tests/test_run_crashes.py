"""Exactly once under crashes and faults.

`hexdbt run` is made to exit hard at each named crash point of the engine (``HEXDBT_CRASH_AT``,
see hexdbt/crashpoints.py), then run again to the end: the emulator's journal must show every
mapped project started exactly once, and the second run must report each one completed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_helpers import project_id, scenario, started_runs, write_project

from hexdbt.clock import ManualClock, ScaledClock
from hexdbt.crashpoints import CRASH_EXIT_CODE, ENGINE_POINTS
from hexdbt.emulator import HexEmulator
from hexdbt.engine import Engine
from hexdbt.factory import open_client
from hexdbt.ledger import Ledger, TriggerState
from hexdbt.outcomes import OutcomeKind
from hexdbt.planner.files import plan_from_files
from hexdbt.settings import resolve_state_location

pytestmark = pytest.mark.slow  # real processes: left out of make test-fast

PROJECTS = 3
# After a crash with a claim committed and no run recorded (every point but the last leaves
# such rows), the next run may conclude "nothing started" only once the POST's window has
# closed: intent + connect and read timeouts (real seconds) + 60 s of clock skew, about 100 s
# of real time with the defaults. The timeouts are cut to 1 + 2 s (as in the soak) and the
# emulator and both processes run 60 times faster than real time on one timeline
# (HEXDBT_TIME_SCALE and HEXDBT_TIME_ORIGIN), so the window passes in 4 s. The shared origin
# matters: clocks scaled from each process's own start would drift apart by 59 clock seconds per
# real second between the starts, and a run started by a POST whose answer was lost is adopted
# only if Hex's start time falls inside that window.
TIME_SCALE = 60.0
EmulatorFactory = Callable[..., HexEmulator]


def _hexdbt_run(
    emulator: HexEmulator, origin: float, folder: Path, mappings: Path, **environment: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hexdbt", "run", "--project-dir", str(folder),
         "--mappings", str(mappings), "--json"],
        env={
            **os.environ,
            "HEX_API_TOKEN": "hxtp_crash_test",
            "HEX_BASE_URL": emulator.url,
            "HEXDBT_TIME_SCALE": str(TIME_SCALE),
            "HEXDBT_TIME_ORIGIN": repr(origin),
            "HEXDBT_CONNECT_TIMEOUT_S": "1",
            "HEXDBT_READ_TIMEOUT_S": "2",
            **environment,
        },
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("point", ENGINE_POINTS)
def test_a_crash_at_each_point_then_a_rerun_starts_every_project_exactly_once(
    point: str, hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    origin = time.time()
    emulator = hex_emulator_factory(
        scenario=scenario(PROJECTS), clock=ScaledClock.since(origin, TIME_SCALE)
    )
    _, mappings = write_project(tmp_path, PROJECTS)

    crashed = _hexdbt_run(emulator, origin, tmp_path, mappings, HEXDBT_CRASH_AT=point)
    assert crashed.returncode == CRASH_EXIT_CODE, crashed.stderr  # the point was reached
    assert crashed.stdout == ""  # no report: it died there
    posted_before_the_crash = started_runs(emulator.journal())
    assert max(posted_before_the_crash.values(), default=0) <= 1

    rerun = _hexdbt_run(emulator, origin, tmp_path, mappings)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert {p["name"]: p["outcome"] for p in report["projects"]} == {
        f"app_{index}": "completed" for index in range(PROJECTS)
    }
    assert started_runs(emulator.journal()) == {project_id(i): 1 for i in range(PROJECTS)}
    for index in range(PROJECTS):
        assert [run.status for run in emulator.runs(project_id(index))] == ["COMPLETED"]
    if point == "post-answered":  # the run its lost answer started was found, not re-sent
        assert posted_before_the_crash == {project_id(0): 1}
        assert "the one started after its intent" in rerun.stderr


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
        Ledger.open(resolve_state_location(), clock=clock) as ledger,
        open_client(token="hxtp_faults", base_url=emulator.url, clock=clock) as client,
    ):
        engine = Engine(client, ledger)
        engine.submit(plan, source="test")
        engine.close()
        engine.run()
        outcomes = engine.outcomes_of(plan)
        assert not ledger.in_state(TriggerState.AMBIGUOUS)
    faults_seen = [entry["fault"] for entry in emulator.journal() if entry["fault"]]
    assert len(faults_seen) > 10
    assert started_runs(emulator.journal()) == {pid: 1 for pid in outcomes_by_project}
    expected = {
        f"app_{i}": OutcomeKind.ERRORED if i % 4 == 3 else OutcomeKind.COMPLETED
        for i in range(count)
    }
    assert {outcome.name: outcome.kind for outcome in outcomes} == expected
