"""`hexdbt watch` as users run it: bad options, a real process stopped by SIGTERM, real dbt builds."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dbt_runs import dbt_in_process
from dbt_shapes import manifest_document, model, run_results_document, write_json

from hexdbt.cli import main
from hexdbt.clock import SystemClock
from hexdbt.emulator.scenario import (
    CUSTOMER_HEALTH_ID,
    EXECUTIVE_KPIS_ID,
    FINANCE_OVERVIEW_ID,
    MARKETING_ATTRIBUTION_ID,
)
from hexdbt.ledger import Ledger, TriggerState
from hexdbt.settings import resolve_state_location

pytestmark = pytest.mark.slow  # real processes: left out of make test-fast

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL = SystemClock()
TOKEN = "hxtp_secret_watch_token"
MANIFEST = manifest_document([model("customers"), model("orders")])
BOTH = {"model.shop.customers": "success", "model.shop.orders": "success"}
TWO_PROJECTS = f"""\
version: 1
projects:
  - {{name: health, project_id: {CUSTOMER_HEALTH_ID}, models: [customers]}}
  - {{name: finance, project_id: {FINANCE_OVERVIEW_ID}, models: [orders]}}
"""


def test_unpairable_targets_exit_2_with_one_line(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dbt_project.yml").write_text("name: x\n")
    result = CliRunner().invoke(
        main,
        [
            "watch",
            *("--project-dir", str(tmp_path / "a"), "--project-dir", str(tmp_path / "b")),
            *("--target-path", "t1", "--target-path", "t2", "--target-path", "t3"),
        ],
    )
    assert result.exit_code == 2
    assert "Error: 2 --project-dir and 3 --target-path: cannot tell which" in result.output


def test_a_broken_mapping_file_exits_2_at_start(tmp_path: Path) -> None:
    mappings = tmp_path / "hex_mappings.yml"
    mappings.write_text("version: 1\nprojects: [{name: x}]\n")
    (tmp_path / "target").mkdir()
    result = CliRunner().invoke(
        main, ["watch", "--target-path", str(tmp_path / "target"), "--mappings", str(mappings)]
    )
    assert result.exit_code == 2
    assert result.output.startswith("Error: ")
    assert "hex_mappings.yml" in result.output


def test_a_missing_token_exits_2(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    result = CliRunner().invoke(main, ["watch", "--target-path", str(tmp_path / "target")])
    assert result.exit_code == 2
    assert "Error: no Hex API token: set HEX_API_TOKEN" in result.output


def test_a_missing_project_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["watch", "--project-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "no dbt_project.yml there" in result.output


class Daemon:
    """`hexdbt watch` in a process of its own; its stderr lines collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hexdbt", "watch", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.stdout = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        parsed = [json.loads(line) for line in list(self.lines)]
        return [event for event in parsed if name is None or event["event"] == name]

    def wait_for(self, name: str, count: int = 1, timeout_s: float = 30.0) -> None:
        deadline = REAL.now() + timeout_s
        while len(self.events(name)) < count:
            if self.process.poll() is not None or REAL.now() > deadline:
                raise AssertionError(f"no {name} event; stderr:\n" + "\n".join(self.lines))
            REAL.sleep(0.05)

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.close()

    def close(self) -> int:
        """Wait for the process to end (after a signal), and collect its output."""
        code = self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.stdout = self.process.stdout.read()
        self.process.stdout.close()
        self.process.stderr.close()
        return code


@pytest.fixture
def daemon_env(hex_emulator_factory: Any) -> tuple[Any, dict[str, str]]:
    emulator = hex_emulator_factory(time_scale=20.0)
    env = dict(os.environ)
    env.update({"HEX_API_TOKEN": TOKEN, "HEX_BASE_URL": emulator.url})
    return emulator, env


def _posts(emulator: Any) -> Counter[str]:
    return Counter(
        entry["path"].split("/")[4]
        for entry in emulator.journal()
        if entry["operation"] == "RunProject"
    )


def test_the_daemon_process_triggers_logs_json_and_stops_on_sigterm(
    tmp_path: Path, daemon_env: tuple[Any, dict[str, str]]
) -> None:
    emulator, env = daemon_env
    target = tmp_path / "target"
    target.mkdir()
    write_json(target / "manifest.json", manifest_document([model("customers")]))
    mappings = tmp_path / "hex_mappings.yml"
    mappings.write_text(
        f"version: 1\nprojects:\n  - {{name: health, project_id: {CUSTOMER_HEALTH_ID},"
        " models: [customers]}\n"
    )
    daemon = Daemon(
        ["--target-path", str(target), "--mappings", str(mappings), "--log-format", "json"],
        env,
        tmp_path,
    )
    try:
        daemon.wait_for("watching")
        document = run_results_document({"model.shop.customers": "success"}, invocation_id="i-1")
        write_json(target / "run_results.json", document)
        daemon.wait_for("run_followed")
    finally:
        code = daemon.terminate()
    assert code == 0
    assert _posts(emulator) == Counter({CUSTOMER_HEALTH_ID: 1})
    # Stopping leaves the run to Hex: the next start re-attaches to it.
    assert not [e for e in emulator.journal() if e["operation"] == "CancelRun"]
    names = [event["event"] for event in daemon.events()]
    assert names[:2] == ["started", "watching"]
    assert {"invocation_submitted", "stopping", "stopped"} <= set(names)
    assert all(TOKEN not in line for line in daemon.lines)
    assert daemon.stdout == ""  # logs go to stderr only


@pytest.mark.dbt
def test_two_real_dbt_builds_next_to_the_daemon_start_each_project_once_per_build(
    tmp_path: Path, daemon_env: tuple[Any, dict[str, str]]
) -> None:
    emulator, env = daemon_env
    project = tmp_path / "sample_dbt_project"
    shutil.copytree(
        REPO_ROOT / "sample_dbt_project",
        project,
        ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", ".user.yml"),
    )
    daemon = Daemon(
        [
            *("--project-dir", str(project), "--mappings", str(REPO_ROOT / "hex_mappings.yml")),
            *("--log-format", "json", "--debounce-ms", "50"),
        ],
        env,
        tmp_path,
    )
    invocations = []
    try:
        daemon.wait_for("watching")
        for build in (1, 2):
            # In this process: the daemon sees only the files dbt writes.
            target = dbt_in_process(
                project, ["build", "--vars", "{slow_model_seconds: 0}"], project / "target",
                must_succeed=True,
            )  # fmt: skip
            results = json.loads((target / "run_results.json").read_text())
            invocations.append(results["metadata"]["invocation_id"])
            daemon.wait_for("invocation_submitted", count=build)
        deadline = REAL.now() + 15
        while sum(_posts(emulator).values()) < 8 and REAL.now() < deadline:
            REAL.sleep(0.05)
        REAL.sleep(0.5)
    finally:
        code = daemon.terminate()
    assert code == 0
    every = (CUSTOMER_HEALTH_ID, FINANCE_OVERVIEW_ID, MARKETING_ATTRIBUTION_ID, EXECUTIVE_KPIS_ID)
    assert _posts(emulator) == Counter({project_id: 2 for project_id in every})
    submitted = [event["invocation_id"] for event in daemon.events("invocation_submitted")]
    assert submitted == invocations
    # Each build's runs were posted with its own invocation's parameters, once.
    kpis = [
        entry["body"]["inputParams"]
        for entry in emulator.journal()
        if entry["operation"] == "RunProject" and EXECUTIVE_KPIS_ID in entry["path"]
    ]
    assert [params.get("dbt_invocation_id") for params in kpis] == invocations


def test_a_watcher_killed_between_dbt_s_write_and_its_record_triggers_it_when_restarted(
    tmp_path: Path, daemon_env: tuple[Any, dict[str, str]]
) -> None:
    """SIGSTOP holds the daemon just as dbt writes run_results.json (the file event waits in the
    kernel, unread), SIGKILL ends it there: the invocation was never recorded. The next daemon
    finds it in the file, not in the ledger, and newer than the last one the ledger has from that
    target: it triggers it, once."""
    emulator, env = daemon_env
    target = tmp_path / "target"
    target.mkdir()
    write_json(target / "manifest.json", manifest_document([model("customers")]))
    mappings = tmp_path / "hex_mappings.yml"
    mappings.write_text(
        f"version: 1\nprojects:\n  - {{name: health, project_id: {CUSTOMER_HEALTH_ID},"
        " models: [customers]}\n"
    )
    args = ["--target-path", str(target), "--mappings", str(mappings), "--log-format", "json"]
    customers = {"model.shop.customers": "success"}
    first = Daemon(args, env, tmp_path)
    try:
        first.wait_for("watching")
        write_json(
            target / "run_results.json", run_results_document(customers, invocation_id="i-1")
        )
        first.wait_for("invocation_submitted")
        first.process.send_signal(signal.SIGSTOP)
        write_json(
            target / "run_results.json", run_results_document(customers, invocation_id="i-2")
        )
    finally:
        first.process.send_signal(signal.SIGKILL)
        first.close()
    assert first.process.returncode == -signal.SIGKILL
    assert _posts(emulator) == Counter({CUSTOMER_HEALTH_ID: 1})
    with Ledger.open(resolve_state_location()) as ledger:
        assert not ledger.has_invocation("i-2")

    second = Daemon(args, env, tmp_path)
    try:
        second.wait_for("invocation_submitted")
    finally:
        assert second.terminate() == 0
    (missed,) = second.events("invocation_missed")
    assert missed["invocation_id"] == "i-2"
    assert "written after i-1" in missed["reason"]
    assert [e["invocation_id"] for e in second.events("invocation_submitted")] == ["i-2"]
    assert _posts(emulator) == Counter({CUSTOMER_HEALTH_ID: 2})
    with Ledger.open(resolve_state_location()) as ledger:
        (record,) = ledger.triggers_of("i-2")
    assert record.run_id is not None


def test_sigterm_while_a_trigger_waits_for_hex_s_hourly_window_exits_at_once_and_leaves_it_queued(
    tmp_path: Path, hex_emulator_factory: Any
) -> None:
    """Hex allows one RunProject an hour here: the second trigger is answered 429 with
    Retry-After 3600 and waits. SIGTERM ends the daemon within 2 s, exit 0, with nothing sent
    after it; the waiting trigger stays queued in the ledger for the next start."""
    emulator = hex_emulator_factory(  # a ManualClock: Hex's hour never passes
        scenario={
            "settings": {"run_project_per_hour": 1},
            "projects": [
                {"id": CUSTOMER_HEALTH_ID, "title": "Customer health"},
                {"id": FINANCE_OVERVIEW_ID, "title": "Finance overview"},
            ],
        }
    )
    env = {**os.environ, "HEX_API_TOKEN": TOKEN, "HEX_BASE_URL": emulator.url}
    target = tmp_path / "target"
    target.mkdir()
    write_json(target / "manifest.json", MANIFEST)
    mappings = tmp_path / "hex_mappings.yml"
    mappings.write_text(TWO_PROJECTS)
    daemon = Daemon(
        ["--target-path", str(target), "--mappings", str(mappings), "--log-format", "json"],
        env,
        tmp_path,
    )
    try:
        daemon.wait_for("watching")
        write_json(target / "run_results.json", run_results_document(BOTH, invocation_id="i-1"))
        daemon.wait_for("dispatch", count=2)  # health started, finance answered 429
        waiting = daemon.events("dispatch")[1]["message"]
        assert waiting.startswith("finance: not started")
        assert "HTTP 429" in waiting
        assert waiting.endswith("trying again in 3600 s")  # Hex's Retry-After
        posts_before = _posts(emulator)
        signalled_at = REAL.now()
    finally:
        code = daemon.terminate()
    assert REAL.now() - signalled_at < 2.0
    assert code == 0
    assert _posts(emulator) == posts_before  # nothing sent after the SIGTERM
    assert daemon.events("stopped")
    with Ledger.open(resolve_state_location()) as ledger:
        states = {record.name: record.state for record in ledger.triggers_of("i-1")}
    assert states == {"health": TriggerState.STARTED, "finance": TriggerState.QUEUED}
