"""`hexdbt dbt build` on the real sample project against the emulator: projects start mid-build.

Real dbt runs cost ~6-10 s each, so there are few of them; each uses the same project copy.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hexdbt.cli import main
from hexdbt.clock import ScaledClock, from_iso
from hexdbt.emulator.server import HexEmulator
from hexdbt.ledger import LEDGER_FILENAME, Ledger, TriggerState
from hexdbt.settings import SqliteState

REPO_ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = str(REPO_ROOT / "hex_mappings.yml")
TIME_SCALE = 30.0
PROJECT_IDS = {
    "customer_health": "5a8591dd-4039-49df-9202-96385ba3eff8",
    "finance_overview": "7c2e4b10-9d8a-4f3e-b6a1-2f0c3d9e8a11",
    "marketing_attribution": "b3d9f6a2-1e47-4c85-9a30-6e2f7d1c5b42",
    "executive_kpis": "e8a41c7d-3b52-4f96-8d07-9c1a2b3e4f53",
}
NAMES = {project_id: name for name, project_id in PROJECT_IDS.items()}

pytestmark = pytest.mark.dbt


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("wrapped") / "sample_dbt_project"
    shutil.copytree(
        REPO_ROOT / "sample_dbt_project",
        copy,
        ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", ".user.yml"),
    )
    return copy


@pytest.fixture
def emulator(hex_emulator_factory: Callable[..., HexEmulator]) -> HexEmulator:
    # Scaled time: Hex runs of 20-45 s end within a couple of real seconds; the journal's times
    # are real, so they compare with dbt's.
    return hex_emulator_factory(time_scale=TIME_SCALE)


def run_projects(emulator: HexEmulator) -> list[tuple[str, float]]:
    """(project name, real arrival time) of every RunProject, in order."""
    return [
        (NAMES.get(entry["path"].split("/")[4], entry["path"]), from_iso(entry["time"]))
        for entry in emulator.journal()
        if entry["operation"] == "RunProject"
    ]


def wrap(
    emulator: HexEmulator,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    *argv: str,
    mappings: str = MAPPINGS,
) -> tuple[int, dict[str, Any]]:
    monkeypatch.chdir(project)
    monkeypatch.setenv("HEX_API_TOKEN", "hxtp_test")
    monkeypatch.setenv("HEX_BASE_URL", emulator.url)
    result = CliRunner().invoke(
        main,
        ["dbt", "--mappings", mappings, "--json", *argv, "--profiles-dir", "."],
        obj={"clock": ScaledClock(TIME_SCALE)},
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    report = json.loads(result.stdout)
    return result.exit_code, report


def test_projects_start_during_the_build_each_once(
    emulator: HexEmulator, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exit_code, report = wrap(
        emulator, project, monkeypatch, "build", "--vars", "{slow_model_seconds: 4}"
    )
    assert exit_code == 0, report
    outcomes = {p["name"]: p["outcome"] for p in report["projects"]}
    assert outcomes == dict.fromkeys(PROJECT_IDS, "completed")
    started = dict(run_projects(emulator))
    assert len(run_projects(emulator)) == 4  # each once
    run_results = json.loads((project / "target" / "run_results.json").read_text())
    dbt_end = from_iso(run_results["metadata"]["generated_at"])
    slow = next(
        r for r in run_results["results"] if r["unique_id"].endswith("marketing_touchpoints")
    )
    slow_end = from_iso(slow["timing"][-1]["completed_at"])
    # customer_health, finance_overview and executive_kpis read nothing the slow model feeds:
    # they start while it still runs, seconds before dbt ends.
    for name in ("customer_health", "finance_overview", "executive_kpis"):
        assert started[name] < slow_end - 1.0, (name, started[name], slow_end)
        assert started[name] < dbt_end - 2.0
    assert started["marketing_attribution"] > slow_end
    assert all(p["decidedAt"] for p in report["projects"])  # all decided while streaming


def test_a_failing_model_keeps_its_projects_from_starting_and_dbts_code_wins(
    emulator: HexEmulator, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exit_code, report = wrap(
        emulator, project, monkeypatch, "--no-wait", "build",
        "--vars", "{slow_model_seconds: 0, fail_model: orders}",
    )  # fmt: skip
    assert exit_code == 1  # dbt's
    assert report["dbtExitCode"] == 1
    assert sorted(name for name, _ in run_projects(emulator)) == [
        "customer_health",
        "marketing_attribution",
    ]
    reasons = {p["name"]: p["reason"] for p in report["projects"] if p["outcome"] == "skipped"}
    # decided the moment orders failed, before revenue_daily was even skipped
    assert reasons == {"finance_overview": "orders failed", "executive_kpis": "orders failed"}


def test_a_selection_that_leaves_out_a_mapped_branch_starts_nothing_for_it(
    emulator: HexEmulator, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exit_code, report = wrap(
        emulator, project, monkeypatch, "--no-wait", "build", "--select", "customers",
        "--vars", "{slow_model_seconds: 0}",
    )  # fmt: skip
    assert exit_code == 0, report
    assert [name for name, _ in run_projects(emulator)] == ["customer_health"]
    outcomes = {p["name"]: (p["outcome"], p["reason"]) for p in report["projects"]}
    assert outcomes["finance_overview"] == ("skipped", "no mapped model ran")
    assert outcomes["marketing_attribution"] == ("skipped", "no mapped model ran")
    assert outcomes["executive_kpis"][0] == "skipped"
    assert "did not refresh" in outcomes["executive_kpis"][1]


def test_tests_after_uncounted_unit_tests_trigger_and_run_starts_nothing_more(
    emulator: HexEmulator, project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue 26's shape: the unit tests of customers start without being counted, before it, and
    its tests start last. The project waiting for those tests is triggered; `hexdbt run` on the
    same build then plans the same triggers and starts nothing."""
    mappings = tmp_path / "hex_mappings.yml"
    mappings.write_text(
        "version: 1\nprojects:\n"
        f"  - {{name: customer_360, project_id: {PROJECT_IDS['customer_health']},"
        " models: [customers], require_tests: true}\n"
        f"  - {{name: finance, project_id: {PROJECT_IDS['finance_overview']},"
        " models: ['tag:finance']}\n",
        encoding="utf-8",
    )
    exit_code, report = wrap(
        emulator, project, monkeypatch, "--no-wait", "build", "--select", "+customers", "+orders",
        "--vars", "{slow_model_seconds: 0}", mappings=str(mappings),
    )  # fmt: skip
    assert exit_code == 0, report
    projects = {p["name"]: p for p in report["projects"]}
    assert projects["customer_360"]["outcome"] == "started"
    assert projects["finance"]["outcome"] == "started"
    # revenue_daily was not selected: known once every counted node had started
    assert projects["executive_kpis"]["reason"] == (
        "trigger is all, and revenue_daily did not refresh"
    )
    assert projects["customer_360"]["decidedAt"]  # decided while dbt ran
    started = sorted(name for name, _ in run_projects(emulator))
    assert started == ["customer_health", "finance_overview"]

    after = CliRunner().invoke(
        main, ["run", "--mappings", str(mappings), "--json", "--no-wait"],
        obj={"clock": ScaledClock(TIME_SCALE)},
    )  # fmt: skip
    assert after.exit_code == 0, after.output
    assert "was handled before: nothing new is started" in after.stderr
    rerun = {p["name"]: p for p in json.loads(after.stdout)["projects"]}
    assert rerun["customer_360"]["runId"] == projects["customer_360"]["runId"]
    assert rerun["finance"]["runId"] == projects["finance"]["runId"]
    assert rerun["executive_kpis"]["outcome"] == "skipped"
    assert len(run_projects(emulator)) == 2  # nothing sent again


def _environment(emulator: HexEmulator, state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "HEX_", "HEXDBT_"))}
    env.update(
        HEX_API_TOKEN="hxtp_test",
        HEX_BASE_URL=emulator.url,
        HEXDBT_STATE_DIR=str(state_dir),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    return env


def _recorded_runs(state_dir: Path) -> list[str]:
    """The run ids the wrapper's ledger has recorded so far."""
    if not (state_dir / LEDGER_FILENAME).exists():
        return []
    with Ledger.open(SqliteState(state_dir)) as ledger:
        return [r.run_id for r in ledger.in_state(TriggerState.STARTED) if r.run_id]


def test_ctrl_c_mid_build_goes_to_dbt_cancels_started_runs_and_leaves_a_consistent_ledger(
    hex_emulator_factory: Callable[..., HexEmulator], project: Path, tmp_path: Path
) -> None:
    # Hex's time stands still (a ManualClock): the runs started before the Ctrl-C are still
    # live when the engine winds down, up to a second later, whatever the machine's speed.
    emulator = hex_emulator_factory()
    state_dir = tmp_path / "state"
    wrapper = subprocess.Popen(
        [sys.executable, "-m", "hexdbt", "dbt", "--mappings", MAPPINGS, "--json", "build",
         "--profiles-dir", ".", "--vars", "{slow_model_seconds: 6}"],
        cwd=project, env=_environment(emulator, state_dir),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not _recorded_runs(state_dir) and time.monotonic() < deadline and wrapper.poll() is None:
        time.sleep(0.1)
    # The run id is in the ledger, not only Hex's answer on its way: a Ctrl-C in between would
    # leave the trigger `sending`, for the next process to look up (another test's subject).
    assert _recorded_runs(state_dir), "no project started during the build"
    wrapper.send_signal(signal.SIGINT)
    stdout, stderr = wrapper.communicate(timeout=60)
    assert wrapper.returncode == 130, stderr
    report = json.loads(stdout)
    assert report["interrupted"] is True
    # dbt got the Ctrl-C: it says so, or, when dbt-duckdb's cancel meets a connection that has
    # just closed (a race of its own: "Connection already closed!"), shows the interrupt's
    # traceback instead of its line.
    assert "Exited because of keyboard interrupt" in stderr or "KeyboardInterrupt" in stderr, stderr
    started = {name for name, _ in run_projects(emulator)}
    assert "marketing_attribution" not in started  # its slow model was still running
    with Ledger.open(SqliteState(state_dir)) as ledger:
        records = ledger.triggers_of(report["invocation_id"])
    reasons = {p["name"]: p["reason"] for p in report["projects"]}
    # A project whose POST was on its way at the Ctrl-C (one whose models were done just then):
    # the request is cut short and the row stays `sending`, said so, for a later run to look up
    # in Hex before it sends anything (test_hex_commands: the same Ctrl-C, on purpose).
    in_flight = {record.name for record in records if record.state is TriggerState.SENDING}
    for name in in_flight:
        assert reasons[name] == (
            "interrupted while RunProject was in flight; a later hexdbt run looks it up in Hex's"
            " runs before sending anything"
        )
    for record in records:
        if record.name in in_flight:
            continue
        if record.name in started:  # started here, then cancelled on the interrupt
            assert record.state is TriggerState.ENDED
            assert record.hex_status == "KILLED"
        else:  # decided but not yet sent: queued for a later hexdbt run
            assert record.state in (TriggerState.PLANNED, TriggerState.QUEUED)
    for name in started - in_flight:
        assert [run.status for run in emulator.runs(PROJECT_IDS[name])] == ["KILLED"]
    assert reasons["marketing_attribution"] == (
        "dbt was interrupted before this project's models were done"
    )


CALLBACK_SCRIPT = """
import json, sys
from dbt.cli.main import dbtRunner
from hexdbt.feeders.runner_callback import HexDispatchContext

with HexDispatchContext(mappings=sys.argv[1], wait=False) as hexdbt_events:
    result = dbtRunner(callbacks=[hexdbt_events.callback]).invoke(
        ["build", "--profiles-dir", ".", "--quiet", "--vars", "{slow_model_seconds: 0}"]
    )
plan = hexdbt_events.settlement.plan
print(json.dumps({
    "success": result.success,
    "exit_code": hexdbt_events.exit_code,
    "invocation_id": plan.invocation_id,
    "triggers": {t.name: t.trigger_key for t in plan.triggers},
    "streamed": sorted(hexdbt_events.stream.planner.decided_at),
}))
"""


def test_the_dbtrunner_callback_gives_the_same_triggers(
    emulator: HexEmulator, project: Path, tmp_path: Path
) -> None:
    script = tmp_path / "with_callback.py"
    script.write_text(CALLBACK_SCRIPT)
    completed = subprocess.run(
        [sys.executable, str(script), MAPPINGS],
        cwd=project, env=_environment(emulator, tmp_path / "state"),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    assert outcome["success"] is True
    assert outcome["exit_code"] == 0
    assert outcome["streamed"] == sorted(PROJECT_IDS)  # all decided while dbt ran
    # the same triggers, keys included, as `hexdbt run` plans from run_results.json
    from hexdbt.planner.files import plan_from_files

    planned = plan_from_files(
        project / "target" / "run_results.json", project / "target" / "manifest.json",
        Path(MAPPINGS),
    )  # fmt: skip
    assert planned.plan.invocation_id == outcome["invocation_id"]
    expected = {t.name: t.trigger_key for t in planned.plan.triggers}
    assert outcome["triggers"] == expected
    assert sorted(name for name, _ in run_projects(emulator)) == sorted(PROJECT_IDS)
