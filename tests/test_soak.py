"""Soak: three `hexdbt run` processes on one dbt invocation of 25 projects, under faults and kills.

What runs:

- One emulator, in this process, on a free port. Each of the 25 projects' runs ends with a final
  status of its own (COMPLETED, ERRORED, KILLED, UNABLE_TO_ALLOCATE_KERNEL), so what is checked is
  the *true* final status, not only success. Every endpoint (rule ``*``) gets faults at a seeded
  rate each: 500/502/503 and 429 answers, dropped connections, answers lost after the request was
  carried out (reset, or held past the read timeout), and slow answers just under and just over
  the read timeout (a run Hex creates after the client gave up on the POST). The first RunProject
  requests also play a fixed sequence, so each way a POST's answer goes wrong happens at least
  once whatever the rates draw.
- One dbt target folder (one invocation mapping the 25 projects) and one state folder: one
  ledger, one shared rate budget, for three `hexdbt run --json` processes started at once. Each
  process lives several lives: a life is started with ``HEXDBT_CRASH_AT`` at a random named point
  and hit count (hexdbt/crashpoints.py: it exits hard, 86, there), and the next life starts as
  soon as it dies; after one to three such lives, a last life without a crash point runs to its
  end. A life whose point is never reached ends on its own, and is the last.
- Time: the emulator and every life run ``TIME_SCALE`` times faster than real time, on one
  timeline (``HEXDBT_TIME_ORIGIN``: without it each life's clock would start at its own launch,
  19 clock seconds apart per real second between launches, and the shared budget and the
  lost-POST window would compare readings of different clocks). Hex's limits are its defaults
  (RunProject 20 a minute and 60 an hour): the 25 projects take at least one scaled minute and a
  bit. The HTTP time limits are cut to 1 s + 2 s, so the window in which a lost POST may still be
  in flight (intent + 3 s of requests + 60 clock seconds of skew) closes in 6 real seconds.

What must hold: the emulator created exactly one run per project; every process's last report
gives, for every project, that run and its final status (each process waits: none may report a
run still going, another run, or a guess); the ledger has one ``ended`` row per project with
that run; and Hex never answered 429 except where a fault made it (the shared budget held).

The seed is fixed; ``HEXDBT_SOAK_SEED=N`` picks another (the crash points, their hit counts and
the faults all follow from it), for longer rounds by hand.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from engine_helpers import project_id, scenario, started_runs, write_project

from hexdbt.cli import main
from hexdbt.clock import ManualClock, ScaledClock
from hexdbt.crashpoints import CRASH_EXIT_CODE, ENGINE_POINTS
from hexdbt.emulator import HexEmulator
from hexdbt.engine import Engine
from hexdbt.factory import open_client
from hexdbt.ledger import LEDGER_FILENAME, Ledger
from hexdbt.outcomes import OutcomeKind, kind_of_final_status
from hexdbt.planner.files import plan_from_files
from hexdbt.settings import resolve_clock, resolve_state_location

SEED = int(os.environ.get("HEXDBT_SOAK_SEED", "14"))
PROJECTS = 25
PROCESSES = 3
CRASHED_LIVES = (1, 3)  # how many lives of a process are killed, drawn in this range
TIME_SCALE = 20.0
CONNECT_TIMEOUT_S = 1.0
READ_TIMEOUT_S = 2.0
FAULT_RATE = 0.025  # per fault kind below: about one request in five is hit by something
FAULTS: tuple[dict[str, Any], ...] = (
    {"kind": "error", "status": 500, "body": "html"},
    {"kind": "error", "status": 502, "body": "empty"},
    {"kind": "error", "status": 503, "body": "json"},
    {"kind": "error", "status": 429},
    {"kind": "drop"},
    {"kind": "lost_reset"},
    {"kind": "slow", "delay_s": READ_TIMEOUT_S * 0.75},  # answered just in time
    {"kind": "slow", "delay_s": READ_TIMEOUT_S * 1.25},  # carried out after the client gave up
    {"kind": "lost_timeout", "delay_s": READ_TIMEOUT_S * 1.5},
)
# The first RunProject requests meet each way a POST's answer goes wrong at least once, whatever
# the rates draw (sequences come before rates; None lets one through).
RUN_PROJECT_OPENING: tuple[dict[str, Any] | None, ...] = (
    None,
    {"kind": "slow", "delay_s": READ_TIMEOUT_S * 1.25},
    None,
    {"kind": "lost_reset"},
    None,
    {"kind": "error", "status": 502, "body": "html"},
    None,
    {"kind": "lost_timeout", "delay_s": READ_TIMEOUT_S * 1.5},
    {"kind": "drop"},
)
FINAL_STATUSES = ("COMPLETED", "ERRORED", "KILLED", "UNABLE_TO_ALLOCATE_KERNEL", "COMPLETED")
# The whole soak takes 30-45 s on 2 cores; a hang fails it well within pytest's timeout.
SOAK_DEADLINE_S = 180.0
TOKEN = "hxtp_soak_secret"
EmulatorFactory = Callable[..., HexEmulator]


@dataclass(frozen=True, slots=True)
class Life:
    """One process launch: the crash point it was given, how it ended, what it wrote."""

    crash_at: str | None
    exit_code: int
    stdout: str
    stderr: str


def _final_status(index: int) -> str:
    return FINAL_STATUSES[index % len(FINAL_STATUSES)]


def _scenario() -> dict[str, Any]:
    return {
        "projects": [
            {
                "id": project_id(index),
                "title": f"App {index}",
                "inputs": ["as_of"],
                "runs": {
                    "pending_s": 2,
                    "running_s": 0 if _final_status(index) == "UNABLE_TO_ALLOCATE_KERNEL" else 30,
                    "outcome": _final_status(index),
                },
            }
            for index in range(PROJECTS)
        ]
    }


def _crash_points(rng: random.Random) -> list[str | None]:
    """The ``HEXDBT_CRASH_AT`` of each life of one process: some crash points, then none.
    ``planned`` is met once per life (when the plan is recorded); the others once per
    trigger the life sends, so their hit count is drawn."""
    points: list[str | None] = []
    for _ in range(rng.randint(*CRASHED_LIVES)):
        point = rng.choice(ENGINE_POINTS)
        points.append(point if point == "planned" else f"{point}:{rng.randint(1, 4)}")
    return [*points, None]


def _live(crash_points: list[str | None], command: list[str], env: dict[str, str]) -> list[Life]:
    """Run the lives of one process in turn, each as soon as the one before died at its point."""
    lives: list[Life] = []
    deadline = time.monotonic() + SOAK_DEADLINE_S
    for crash_at in crash_points:
        life_env = env if crash_at is None else {**env, "HEXDBT_CRASH_AT": crash_at}
        done = subprocess.run(
            command,
            env=life_env,
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
        )
        lives.append(Life(crash_at, done.returncode, done.stdout, done.stderr))
        if done.returncode != CRASH_EXIT_CODE:
            break  # it ended on its own: its point was never reached
    return lives


@pytest.mark.slow  # real processes: left out of make test-fast
def test_three_processes_killed_again_and_again_under_faults_start_each_project_once(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    origin = time.time()
    emulator = hex_emulator_factory(
        scenario=_scenario(), clock=ScaledClock.since(origin, TIME_SCALE)
    )
    emulator.inject_faults("RunProject", sequence=list(RUN_PROJECT_OPENING))
    for number, fault in enumerate(FAULTS):
        emulator.inject_faults("*", rate=FAULT_RATE, fault=fault, seed=SEED * 100 + number)
    _, mappings = write_project(tmp_path, PROJECTS)
    state_dir = tmp_path / "hexdbt-state"
    command = [
        sys.executable, "-m", "hexdbt", "run", "--project-dir", str(tmp_path),
        "--mappings", str(mappings), "--json",
    ]  # fmt: skip
    env = {
        **os.environ,
        "HEX_API_TOKEN": TOKEN,
        "HEX_BASE_URL": emulator.url,
        "HEXDBT_STATE_DIR": str(state_dir),
        "HEXDBT_TIME_SCALE": str(TIME_SCALE),
        "HEXDBT_TIME_ORIGIN": repr(origin),
        "HEXDBT_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S),
        "HEXDBT_READ_TIMEOUT_S": str(READ_TIMEOUT_S),
    }
    plans = [_crash_points(rng) for _ in range(PROCESSES)]
    with ThreadPoolExecutor(PROCESSES) as pool:
        processes = list(pool.map(lambda plan: _live(plan, command, env), plans))

    described = "\n".join(
        f"process {number}: "
        + ", ".join(f"{life.crash_at or 'no crash point'} -> {life.exit_code}" for life in lives)
        for number, lives in enumerate(processes)
    )
    journal = emulator.journal()
    # Exactly one run of its own per project, which ended as the scenario says.
    runs = {project_id(i): emulator.runs(project_id(i)) for i in range(PROJECTS)}
    assert {pid: len(found) for pid, found in runs.items()} == dict.fromkeys(runs, 1), described
    assert started_runs(journal) == dict.fromkeys(runs, 1), described
    truth = {f"app_{i}": runs[project_id(i)][0] for i in range(PROJECTS)}
    assert {name: run.status for name, run in truth.items()} == {
        f"app_{i}": _final_status(i) for i in range(PROJECTS)
    }
    expected = {
        name: (kind_of_final_status(run.status).value, run.run_id, run.status)
        for name, run in truth.items()
    }

    crashes = 0
    for number, lives in enumerate(processes):
        *crashed, last = lives
        for life in crashed:  # it died at its point, before any report
            assert (life.exit_code, life.stdout) == (CRASH_EXIT_CODE, ""), life.stderr
        crashes += len(crashed)
        report = json.loads(last.stdout)
        reported = {
            project["name"]: (project["outcome"], project["runId"], project["status"])
            for project in report["projects"]
        }
        assert reported == expected, f"process {number}\n{described}\n{last.stderr[-3000:]}"
        assert report["exitCode"] == last.exit_code == 5  # the highest: ERRORED and KILLED runs
        for life in lives:
            assert TOKEN not in life.stdout + life.stderr
    assert crashes >= 1, described  # the points are drawn: a life may never meet its own

    with sqlite3.connect(f"file:{state_dir / LEDGER_FILENAME}?mode=ro", uri=True) as ledger:
        rows = ledger.execute("SELECT name, state, run_id, hex_status FROM triggers").fetchall()
    assert {name: (state, run_id, status) for name, state, run_id, status in rows} == {
        name: ("ended", run.run_id, run.status) for name, run in truth.items()
    }

    faulted = [entry for entry in journal if entry["fault"]]
    assert {entry["fault"]["kind"] for entry in faulted if entry["operation"] == "RunProject"} >= {
        "slow", "lost_reset", "error", "lost_timeout", "drop"
    }  # fmt: skip
    assert "GetRunStatus" in {entry["operation"] for entry in faulted}
    unasked_429 = [entry for entry in journal if entry["status"] == 429 and not entry["fault"]]
    assert unasked_429 == [], described


# What the soak found, pinned down on a manual clock.


@pytest.mark.parametrize(
    ("failed_requests", "kind"),
    [(3, OutcomeKind.COMPLETED), (6, OutcomeKind.AMBIGUOUS)],
    ids=["one-look-up-failed", "two-look-ups-failed"],
)
def test_a_lost_posts_run_list_that_hex_fails_to_give_once_is_looked_up_again(
    failed_requests: int,
    kind: OutcomeKind,
    hex_emulator_factory: EmulatorFactory,
    tmp_path: Path,
) -> None:
    """Three 503s in a row (the client's three attempts) once no longer make the trigger
    ambiguous for good: it stays sending and is looked up again; a second failed look-up does."""
    clock = ManualClock()
    emulator = hex_emulator_factory(scenario=scenario(1), clock=clock)
    emulator.inject_faults("RunProject", sequence=["lost_reset"])
    emulator.inject_faults(
        "GetProjectRuns", sequence=[{"kind": "error", "status": 503}] * failed_requests
    )
    target, mappings = write_project(tmp_path, 1)
    plan = plan_from_files(target / "run_results.json", target / "manifest.json", mappings).plan
    logged: list[str] = []
    with (
        Ledger.open(resolve_state_location(), clock=clock) as ledger,
        open_client(token=TOKEN, base_url=emulator.url, clock=clock) as client,
    ):
        engine = Engine(client, ledger, log=logged.append)
        engine.submit(plan, source="test")
        engine.close()
        engine.run()
        (outcome,) = engine.outcomes_of(plan)
    assert outcome.kind is kind
    assert started_runs(emulator.journal()) == {project_id(0): 1}  # never sent again
    looked_again = [line for line in logged if "run list could not be read" in line]
    assert len(looked_again) == 1  # the second failed look-up is the last
    assert looked_again[0].startswith(
        f"app_0: Hex's run list could not be read (GET /projects/{project_id(0)}/runs:"
        " Service Unavailable (injected fault) (HTTP 503"
    )
    assert looked_again[0].endswith("); looking again")
    if kind is OutcomeKind.AMBIGUOUS:
        assert outcome.reason is not None
        assert outcome.reason.startswith(
            "RunProject's answer was lost and Hex's run list could not be read:"
        )


def test_scaled_clocks_given_one_origin_agree_whenever_they_were_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    origin = time.time() - 30
    monkeypatch.setenv("HEXDBT_TIME_SCALE", "20")
    monkeypatch.setenv("HEXDBT_TIME_ORIGIN", repr(origin))
    first = resolve_clock()
    second = ScaledClock.since(origin, 20)
    assert abs(first.now() - second.now()) < 1.0  # 50 ms of real time apart at most
    assert first.now() - time.time() == pytest.approx(19 * 30, abs=2.0)


def test_a_time_origin_that_is_not_a_number_is_a_one_line_error(tmp_path: Path) -> None:
    _, mappings = write_project(tmp_path, 1)
    result = CliRunner().invoke(
        main,
        ["run", "--project-dir", str(tmp_path), "--mappings", str(mappings)],
        env={
            "HEX_API_TOKEN": TOKEN,
            "HEX_BASE_URL": "http://127.0.0.1:9",
            "HEXDBT_TIME_SCALE": "20",
            "HEXDBT_TIME_ORIGIN": "yesterday",
        },
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: HEXDBT_TIME_ORIGIN must be a moment in seconds since the epoch, got 'yesterday'"
    ]
