"""`hexdbt run` and `hexdbt status` as a user runs them: exit codes, reports, errors."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from engine_helpers import project_id, scenario, started_runs, write_project

from hexdbt.cli import main
from hexdbt.clock import ManualClock
from hexdbt.emulator import HexEmulator

TOKEN = "hxtp_run_command_secret"
EmulatorFactory = Callable[..., HexEmulator]


class Setup:
    def __init__(self, factory: EmulatorFactory, folder: Path, count: int, **options: Any):
        self.clock = ManualClock()
        self.emulator = factory(scenario=scenario(count, **options), clock=self.clock)
        self.folder = folder
        self.count = count
        self.target, self.mappings = write_project(folder, count)

    def invoke(self, *args: str, env: dict[str, str] | None = None) -> Result:
        environment = {"HEX_API_TOKEN": TOKEN, "HEX_BASE_URL": self.emulator.url, **(env or {})}
        result = CliRunner().invoke(
            main,
            list(args),
            env=environment,
            obj={"clock": self.clock},
            catch_exceptions=False,
        )
        assert TOKEN not in result.output
        assert TOKEN not in result.stderr
        return result

    def run(self, *args: str, env: dict[str, str] | None = None) -> Result:
        return self.invoke(
            "run",
            "--project-dir",
            str(self.folder),
            "--mappings",
            str(self.mappings),
            *args,
            env=env,
        )


@pytest.fixture
def setup(hex_emulator_factory: EmulatorFactory, tmp_path: Path) -> Callable[..., Setup]:
    def make(count: int = 3, **options: Any) -> Setup:
        return Setup(hex_emulator_factory, tmp_path, count, **options)

    return make


def test_run_triggers_waits_and_reports_every_mapping(setup: Callable[..., Setup]) -> None:
    world = setup(3)
    result = world.run()
    assert result.exit_code == 0, result.stderr
    assert "3 mapped Hex projects: 3 completed" in result.stdout
    for index in range(3):
        assert f"app_{index}" in result.stdout
    assert started_runs(world.emulator.journal()) == {project_id(i): 1 for i in range(3)}


def test_run_json_is_one_document_listing_every_mapping(setup: Callable[..., Setup]) -> None:
    world = setup(2)
    result = world.run("--json")
    document = json.loads(result.stdout)
    assert result.exit_code == 0
    assert document["invocation_id"] == "inv-1"
    assert document["exitCode"] == 0
    assert [(p["name"], p["outcome"]) for p in document["projects"]] == [
        ("app_0", "completed"),
        ("app_1", "completed"),
    ]
    assert all(p["runUrl"].startswith(world.emulator.url) for p in document["projects"])


def test_running_twice_starts_nothing_the_second_time(setup: Callable[..., Setup]) -> None:
    world = setup(2)
    first = json.loads(world.run("--json").stdout)
    second_result = world.run("--json")
    second = json.loads(second_result.stdout)
    assert "was handled before" in second_result.stderr
    assert [p["runId"] for p in second["projects"]] == [p["runId"] for p in first["projects"]]
    assert started_runs(world.emulator.journal()) == {project_id(0): 1, project_id(1): 1}


def test_a_failed_run_exits_5_and_the_junit_report_says_which(
    setup: Callable[..., Setup], tmp_path: Path
) -> None:
    world = setup(2)
    world.emulator.load_scenario(
        {
            "projects": [
                {"id": project_id(0), "title": "ok"},
                {"id": project_id(1), "title": "broken", "runs": "ERRORED"},
            ]
        }
    )
    junit = tmp_path / "reports" / "hex.xml"
    result = world.run("--report-junit", str(junit))
    assert result.exit_code == 5
    suite = ET.parse(junit).getroot()
    failed = [
        case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None
    ]
    assert failed == ["app_1"]


def test_no_wait_exits_0_with_the_runs_started(setup: Callable[..., Setup]) -> None:
    world = setup(2, running_s=3600)
    document = json.loads(world.run("--no-wait", "--json").stdout)
    assert {p["outcome"] for p in document["projects"]} == {"started"}


def test_dry_run_records_nothing(setup: Callable[..., Setup]) -> None:
    world = setup(2)
    result = world.run("--dry-run", "--json")
    assert result.exit_code == 0
    assert {p["outcome"] for p in json.loads(result.stdout)["projects"]} == {"dry_run"}
    assert world.emulator.runs() == []
    status = json.loads(world.invoke("status", "--json").stdout)
    assert status["invocations"] == []


def test_status_shows_invocations_their_runs_and_the_queue(setup: Callable[..., Setup]) -> None:
    world = setup(2)
    world.run()
    document = json.loads(world.invoke("status", "--json").stdout)
    (invocation,) = document["invocations"]
    assert invocation["invocation_id"] == "inv-1"
    assert [t["outcome"] for t in invocation["triggers"]] == ["completed", "completed"]
    assert document["queue"] == []
    text = world.invoke("status").stdout
    assert "Invocation inv-1 (dbt build, via run)" in text
    assert "Queue: 0 triggers waiting for the budget; 0 live runs" in text


def test_status_project_dir_shows_only_that_dbt_projects_invocations(
    setup: Callable[..., Setup], tmp_path: Path
) -> None:
    """Each invocation records its dbt project; two projects share one ledger."""
    world = setup(1)
    world.run()
    other = tmp_path / "other"
    _target, mappings = write_project(other, 1, invocation_id="inv-other")
    result = world.invoke("run", "--project-dir", str(other), "--mappings", str(mappings))
    assert result.exit_code == 0, result.stderr
    every = json.loads(world.invoke("status", "--json").stdout)["invocations"]
    assert [i["invocation_id"] for i in every] == ["inv-other", "inv-1"]
    for folder, expected in ((world.folder, "inv-1"), (other, "inv-other")):
        only = world.invoke("status", "--json", "--project-dir", str(folder))
        assert [i["invocation_id"] for i in json.loads(only.stdout)["invocations"]] == [expected]


@pytest.mark.parametrize("limit", ["-5", "0"])
def test_status_refuses_a_limit_below_one_naming_it(limit: str) -> None:
    """`--limit -5` showed every invocation, as if no limit were given."""
    result = CliRunner().invoke(main, ["status", "--limit", limit])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        f"Error: Invalid value for '--limit': {limit} is not in the range x>=1."
    )


def test_a_missing_token_exits_2_naming_the_variable(setup: Callable[..., Setup]) -> None:
    world = setup(1)
    result = world.run("--json", env={"HEX_API_TOKEN": ""})
    assert result.exit_code == 2
    assert "HEX_API_TOKEN" in result.stderr
    assert json.loads(result.stdout)["error"]["type"] == "ConfigError"


def test_a_rejected_token_exits_4(setup: Callable[..., Setup]) -> None:
    world = setup(1)
    world.emulator.load_scenario(
        {**scenario(1), "tokens": [{"token": "hxtp_someone_else", "scopes": ["read", "run"]}]}
    )
    result = world.run("--json")
    assert result.exit_code == 4
    (project,) = json.loads(result.stdout)["projects"]
    assert project["outcome"] == "failed_to_start"
    assert "401" in project["reason"]


def test_missing_artifacts_exit_3_naming_the_file(setup: Callable[..., Setup]) -> None:
    world = setup(1)
    (world.target / "run_results.json").unlink()
    result = world.run()
    assert result.exit_code == 3
    assert "run_results.json" in result.stderr
    assert result.stderr.startswith("Error: ")


def test_a_bad_mapping_exits_2_naming_file_and_key(setup: Callable[..., Setup]) -> None:
    world = setup(1)
    world.mappings.write_text("version: 1\nprojects:\n  - name: a\n    project_idd: x\n")
    result = world.run()
    assert result.exit_code == 2
    assert "hex_mappings.yml" in result.stderr
    assert "project_idd" in result.stderr


def test_a_compile_triggers_nothing(setup: Callable[..., Setup]) -> None:
    world = setup(1)
    document = json.loads((world.target / "run_results.json").read_text())
    document["args"] = {"which": "compile"}
    (world.target / "run_results.json").write_text(json.dumps(document))
    result = world.run("--json")
    assert result.exit_code == 0
    (project,) = json.loads(result.stdout)["projects"]
    assert project["outcome"] == "skipped"
    assert "compile" in project["reason"]
    assert world.emulator.runs() == []
