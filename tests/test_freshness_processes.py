"""Fresh apps with real processes: `hexdbt trigger`, `hexdbt run` and `hexdbt watch` as a user
runs them, on one SQLite state, against the emulator. Hex allows two RunProjects an hour here,
and time runs 720 times faster for every process and the emulator (one origin), so Hex's hour
comes back in five seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from dbt_shapes import manifest_document, model, run_results_document, write_json

from hexdbt.clock import ScaledClock
from hexdbt.emulator import HexEmulator
from hexdbt.ledger import Ledger, TriggerState
from hexdbt.settings import (
    BUDGET_ENV,
    STATE_DIR_ENV,
    TIME_ORIGIN_ENV,
    TIME_SCALE_ENV,
    TOKEN_ENV,
    SqliteState,
)

pytestmark = pytest.mark.slow  # real processes

TOKEN = "hxtp_freshness_processes_secret"
SCALE = 720.0
APPS = {
    "revenue": "00000000-0000-4000-8000-000000000001",
    "churn": "00000000-0000-4000-8000-000000000002",
}


class Shop:
    """A dbt project's target folder and mapping, the emulator, and the environment hexdbt's
    processes share (token, state folder, scaled clock, Hex's hourly limit of two)."""

    def __init__(
        self,
        factory: Callable[..., HexEmulator],
        folder: Path,
        *,
        coalesce: bool | None = None,
        churn_runs: list[str] | None = None,
    ) -> None:
        origin = time.time()
        projects: list[dict[str, Any]] = [
            {"id": APPS["revenue"], "title": "Revenue", "runs": {"pending_s": 2, "running_s": 30}},
            {
                "id": APPS["churn"],
                "title": "Churn",
                "runs": [
                    {"pending_s": 2, "running_s": 30, "outcome": outcome}
                    for outcome in churn_runs or ["COMPLETED"]
                ],
            },
        ]
        self.emulator = factory(
            scenario={"settings": {"run_project_per_hour": 2}, "projects": projects},
            clock=ScaledClock.since(origin, SCALE),
        )
        self.folder = folder
        self.state = folder / "state"
        self.env = {
            **os.environ,
            TOKEN_ENV: TOKEN,
            "HEX_BASE_URL": self.emulator.url,
            STATE_DIR_ENV: str(self.state),
            TIME_SCALE_ENV: str(SCALE),
            TIME_ORIGIN_ENV: str(origin),
            BUDGET_ENV: "run_project=20/60,2/3600",
        }
        entries = [
            {"name": name, "project_id": project_id, "models": ["orders"]}
            for name, project_id in APPS.items()
        ]
        defaults = {} if coalesce is None else {"coalesce": coalesce}
        self.mappings = folder / "hex_mappings.yml"
        self.mappings.write_text(
            yaml.safe_dump({"version": 1, "defaults": defaults, "projects": entries})
        )

    def project(self, name: str) -> Path:
        """A dbt project folder of its own (two builds may be planned from two checkouts)."""
        project = self.folder / name
        (project / "target").mkdir(parents=True, exist_ok=True)
        (project / "dbt_project.yml").write_text("name: shop\nversion: '1.0'\nprofile: shop\n")
        write_json(project / "target" / "manifest.json", manifest_document([model("orders")]))
        return project

    def build(self, project: Path, invocation_id: str) -> None:
        results = run_results_document(
            {"model.shop.orders": "success"}, invocation_id=invocation_id
        )
        write_json(project / "target" / "run_results.json", results)

    def hexdbt(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "hexdbt", *args],
            env=self.env,
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert TOKEN not in done.stdout + done.stderr
        return done

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "hexdbt", *args],
            env=self.env,
            cwd=self.folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, project: Path, *args: str) -> list[str]:
        return ["run", "--project-dir", str(project), "--mappings", str(self.mappings), *args]

    def runs(self) -> Counter[str]:
        """Runs Hex started, by app name."""
        names = {project_id: name for name, project_id in APPS.items()}
        return Counter(names[run.project_id] for run in self.emulator.runs())

    def spend_the_hour(self) -> None:
        done = self.hexdbt("trigger", *APPS.values())
        assert done.returncode == 0, done.stderr
        assert self.runs() == {"revenue": 1, "churn": 1}

    def wait_for_runs(
        self, expected: dict[str, int], recorded: str, process: subprocess.Popen[str]
    ) -> None:
        """Until Hex has started ``expected`` runs (the emulator's record) and the ledger has
        the run ids of the ``recorded`` invocation's triggers, within 60 real s."""
        deadline = time.monotonic() + 60
        sent = {TriggerState.STARTED, TriggerState.ENDED}
        while self.runs() != expected or not set(self.states(recorded).values()) <= sent:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                _, stderr = process.communicate()
                raise AssertionError(f"runs {dict(self.runs())}; stderr:\n{stderr}")
            time.sleep(0.05)

    def states(self, invocation_id: str) -> dict[str, TriggerState]:
        with Ledger.open(SqliteState(self.state)) as ledger:
            return {record.name: record.state for record in ledger.triggers_of(invocation_id)}


@pytest.mark.parametrize(("coalesce", "runs_per_app"), [(None, 2), (False, 3)])
def test_two_builds_queued_while_hex_s_hour_is_spent_run_once_for_the_newest_when_it_is_back(
    hex_emulator_factory: Callable[..., HexEmulator],
    tmp_path: Path,
    coalesce: bool | None,
    runs_per_app: int,
) -> None:
    """Hex's hourly budget spent, two `hexdbt run --no-wait` a build apart queue their triggers;
    a `watch` started then sends, once the hour is back, one run per app for the newest build.
    With coalesce: false each build keeps its run."""
    shop = Shop(hex_emulator_factory, tmp_path, coalesce=coalesce)
    project = shop.project("shop")
    shop.spend_the_hour()
    for invocation_id in ("build-1", "build-2"):
        shop.build(project, invocation_id)
        done = shop.hexdbt(*shop.run(project, "--no-wait", "--json"))
        assert done.returncode == 0, done.stderr
        assert {p["outcome"] for p in json.loads(done.stdout)["projects"]} == {"queued"}
    if coalesce is None:
        assert set(shop.states("build-1").values()) == {TriggerState.SUPERSEDED}
        status = json.loads(shop.hexdbt("status", "--json").stdout)
        (older,) = [i for i in status["invocations"] if i["invocation_id"] == "build-1"]
        assert {t["outcome"] for t in older["triggers"]} == {"superseded"}
        assert {t["reason"] for t in older["triggers"]} == {
            "superseded by dbt invocation build-2: its run covers this build too"
        }
    watch = shop.start(
        "watch",
        "--project-dir",
        str(project),
        "--mappings",
        str(shop.mappings),
        "--log-format",
        "json",
    )
    try:
        shop.wait_for_runs({"revenue": runs_per_app, "churn": runs_per_app}, "build-2", watch)
    finally:
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=30) == 0
        watch.communicate()
    sent = {TriggerState.STARTED, TriggerState.ENDED}  # ENDED: watch cancels its runs at stop
    assert set(shop.states("build-2").values()) <= sent
    if coalesce is None:
        assert set(shop.states("build-1").values()) == {TriggerState.SUPERSEDED}
    else:
        assert set(shop.states("build-1").values()) <= sent


def test_a_waiting_run_whose_trigger_another_process_supersedes_exits_with_that_run_s_outcome(
    hex_emulator_factory: Callable[..., HexEmulator], tmp_path: Path
) -> None:
    """`hexdbt run` waits on build 1 while Hex's hour is spent; another checkout's
    `hexdbt run --no-wait` records build 2, which supersedes build 1's triggers. The waiting run
    sends build 2's triggers once the hour is back, follows them, and exits with their outcome:
    churn's run errors, so exit 5, each project "superseded by dbt invocation build-2"."""
    shop = Shop(hex_emulator_factory, tmp_path, churn_runs=["COMPLETED", "ERRORED"])
    first, second = shop.project("checkout-1"), shop.project("checkout-2")
    shop.spend_the_hour()
    shop.build(first, "build-1")
    waiting = shop.start(*shop.run(first, "--json"))
    try:
        deadline = time.monotonic() + 30
        while not (shop.state / "ledger.sqlite3").exists() or not shop.states("build-1"):
            assert time.monotonic() < deadline, "build 1 was not recorded"
            assert waiting.poll() is None, "the waiting run ended early"
            time.sleep(0.05)
        shop.build(second, "build-2")
        done = shop.hexdbt(*shop.run(second, "--no-wait", "--json"))
        assert done.returncode == 0, done.stderr
        stdout, stderr = waiting.communicate(timeout=90)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert TOKEN not in stdout + stderr
    assert waiting.returncode == 5, stderr
    projects = {p["name"]: p for p in json.loads(stdout)["projects"]}
    assert {name: p["outcome"] for name, p in projects.items()} == {
        "revenue": "completed",
        "churn": "errored",
    }
    for report in projects.values():
        assert report["reason"].startswith("superseded by dbt invocation build-2")
    assert shop.runs() == {"revenue": 2, "churn": 2}  # the hour's two, and build 2's
    assert set(shop.states("build-1").values()) == {TriggerState.SUPERSEDED}
    assert set(shop.states("build-2").values()) == {TriggerState.ENDED}
