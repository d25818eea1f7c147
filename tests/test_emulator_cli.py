"""`hexdbt emulator` as a real process, and scenario files: good ones, bad ones, the default."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner
from emulator_helpers import (
    CUSTOMER_HEALTH,
    EXECUTIVE_KPIS,
    FINANCE_OVERVIEW,
    MARKETING_ATTRIBUTION,
)

from hexdbt.cli import main
from hexdbt.clock import ScaledClock, from_iso
from hexdbt.emulator import Scenario, ScenarioError, Settings, default_scenario
from hexdbt.emulator.scenario import _PROJECT_KEYS


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hexdbt", "emulator", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.fixture
def served() -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = _start("--manual-clock")
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    yield process, url
    if process.poll() is None:
        process.kill()
        process.communicate(timeout=10)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_command_prints_its_url_first_serves_and_exits_0_on_a_signal(
    sig: signal.Signals,
) -> None:
    process = _start("--manual-clock")
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    try:
        assert url.startswith("http://127.0.0.1:")
        headers = {"Authorization": "Bearer hxtp_cli_test"}
        run = requests.post(
            f"{url}/api/v1/projects/{CUSTOMER_HEALTH}/runs", json={}, headers=headers, timeout=10
        )
        assert run.status_code == 201
        advanced = requests.post(f"{url}/_emulator/advance", json={"seconds": 3600}, timeout=10)
        assert advanced.status_code == 200
        status = requests.get(run.json()["runStatusUrl"], headers=headers, timeout=10)
        assert status.json()["status"] == "COMPLETED"
    finally:
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stdout == ""  # nothing but the URL goes to stdout
    assert f"POST /api/v1/projects/{CUSTOMER_HEALTH}/runs -> 201" in stderr
    assert "hxtp_cli_test" not in stderr


def test_the_command_serves_a_scenario_file_on_a_scaled_clock(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.yml"
    scenario.write_text(
        "projects:\n  - id: p-1\n    title: From a file\n    runs: {pending_s: 1, running_s: 1}\n",
        encoding="utf-8",
    )
    process = _start("--scenario", str(scenario), "--time-scale", "100000", "--quiet")
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    try:
        headers = {"Authorization": "Bearer t"}
        project = requests.get(f"{url}/api/v1/projects/p-1", headers=headers, timeout=10)
        assert project.json()["title"] == "From a file"
        run = requests.post(
            f"{url}/api/v1/project/p-1/run", json={}, headers=headers, timeout=10
        ).json()
        # 100,000x: the 2 emulated seconds pass within the time it takes to send the next request.
        status = requests.get(run["runStatusUrl"], headers=headers, timeout=10).json()
        assert status["status"] in {"RUNNING", "COMPLETED"}
        manual = requests.post(f"{url}/_emulator/advance", json={"seconds": 1}, timeout=10)
        assert manual.status_code == 409
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert stderr == ""


def test_the_command_on_a_time_origin_reads_the_time_of_hexdbt_s_scaled_clock() -> None:
    """`--time-origin` puts the emulator on the timeline HEXDBT_TIME_ORIGIN gives hexdbt, however
    late it started: two real minutes after the origin, both read two hours later."""
    origin = time.time() - 120
    process = _start("--time-scale", "60", "--time-origin", repr(origin), "--quiet")
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    try:
        now = requests.get(f"{url}/_emulator/status", timeout=10).json()["now"]
        hexdbt_now = ScaledClock.since(origin, 60).now()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
    assert process.returncode == 0
    assert from_iso(now) == pytest.approx(hexdbt_now, abs=30)  # half a real second at 60x
    assert from_iso(now) > time.time() + 7000


def test_a_second_process_can_drive_the_served_emulator(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    _, url = served
    rule = {"endpoint": "RunProject", "sequence": ["lost_reset"]}
    assert requests.post(f"{url}/_emulator/faults", json=rule, timeout=10).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.post(
            f"{url}/api/v1/projects/{CUSTOMER_HEALTH}/runs",
            json={},
            headers={"Authorization": "Bearer t"},
            timeout=10,
        )
    runs = requests.get(f"{url}/_emulator/runs", timeout=10).json()
    assert len(runs) == 1
    journal = requests.get(f"{url}/_emulator/requests", timeout=10).json()
    assert journal[0]["status"] is None
    assert journal[0]["runId"] == runs[0]["runId"]


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(main, ["emulator", *args])


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("projects: [\n", "bad.yml", "bad.yml: not valid YAML"),
        ("{", "bad.json", "bad.json: not valid JSON"),
        (
            "projects:\n  - id: p\n",
            "s.yml",
            "s.yml: projects[0].title: expected a non-empty string",
        ),
        (
            "projects:\n  - id: p\n    title: P\n    runs: {outcome: DONE}\n",
            "s.yml",
            "s.yml: projects[0].runs.outcome: 'DONE' is not one of COMPLETED, ERRORED, KILLED, UNABLE_TO_ALLOCATE_KERNEL",
        ),
        (
            "projects:\n  - id: p\n    title: P\n    runs: [{pending_s: -2}]\n",
            "s.yml",
            "s.yml: projects[0].runs[0].pending_s: must be at least 0, got -2",
        ),
        (
            "projects:\n  - {id: p, title: P}\n  - {id: p, title: Q}\n",
            "s.yml",
            "projects[1].id: duplicate project id 'p'",
        ),
        (
            "projects:\n  - {id: p, title: P, colour: red}\n",
            "s.yml",
            "projects[0].colour: unknown key",
        ),
        (
            "projects:\n  - {id: p, title: P}\ntokens:\n  - {token: t, scopes: [admin]}\n",
            "s.yml",
            "tokens[0].scopes[0]: 'admin' is not one of read, run",
        ),
        (
            "projects:\n  - {id: p, title: P, published: yes please}\n",
            "s.yml",
            "projects[0].published: expected true or false",
        ),
        (
            "projects:\n  - {id: p, title: P, created_at: yesterday}\n",
            "s.yml",
            "projects[0].created_at: expected an ISO-8601 time",
        ),
        ("- just a list\n", "s.yml", "s.yml: expected a mapping, got a list"),
        (
            "projects:\n  - {id: p, title: P, schedules: [{cadence: YEARLY}]}\n",
            "s.yml",
            "projects[0].schedules[0].cadence: 'YEARLY' is not one of HOURLY, DAILY, WEEKLY,",
        ),
        (
            "projects:\n  - {id: p, title: P, schedules: [{cadence: DAILY, hour: 24}]}\n",
            "s.yml",
            "projects[0].schedules[0].hour: expected a whole number from 0 to 23, got 24",
        ),
        (
            "projects:\n  - {id: p, title: P, schedules: [{cadence: HOURLY, cron: x}]}\n",
            "s.yml",
            "projects[0].schedules[0].cron: unknown key",
        ),
        (
            "projects:\n  - {id: p, title: P, sharing: {workspace: ADMIN}}\n",
            "s.yml",
            "projects[0].sharing.workspace: 'ADMIN' is not one of NONE, APP_ONLY,",
        ),
        (
            "projects:\n  - {id: p, title: P, sharing: {groups: [{id: g, access: CAN_VIEW}]}}\n",
            "s.yml",
            "s.yml: projects[0].sharing.groups[0].id: no groups entry with id 'g'",
        ),
        (
            "projects:\n  - {id: p, title: P, version: beta}\n",
            "s.yml",
            "projects[0].version: expected a whole number >= 1 or draft, got 'beta'",
        ),
        (
            "projects:\n  - {id: p, title: P, status: ''}\n",
            "s.yml",
            "projects[0].status: expected a status label or null, got ''",
        ),
        (
            "projects:\n  - {id: p, title: P}\nslack_channels:\n  - {id: C1, private: 1}\n",
            "s.yml",
            "s.yml: slack_channels[0].name: expected a non-empty string",
        ),
    ],
)
def test_a_bad_scenario_file_exits_2_with_one_line_naming_file_and_key(
    tmp_path: Path, content: str, name: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    result = _invoke("--scenario", str(path), "--port", "0")
    assert result.exit_code == 2
    assert result.output.startswith("Error: ")
    assert message in result.output
    assert str(path) in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_missing_scenario_file_exits_2(tmp_path: Path) -> None:
    result = _invoke("--scenario", str(tmp_path / "absent.yml"))
    assert result.exit_code == 2
    assert "absent.yml: cannot read" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--manual-clock", "--time-scale", "10"],
            "--manual-clock and --time-scale cannot be used together",
        ),
        (["--time-scale", "0"], "--time-scale must be above 0"),
        (
            ["--time-origin", "1767225600"],
            "--time-origin goes with --time-scale: on real time there is none",
        ),
        (
            ["--time-scale", "60", "--time-origin", "inf"],
            "--time-origin must be seconds since the epoch, got inf",
        ),
    ],
)
def test_contradictory_clock_options_exit_2(args: list[str], message: str) -> None:
    result = _invoke(*args)
    assert result.exit_code == 2
    assert message in result.output


def test_a_port_in_use_exits_2(served: tuple[subprocess.Popen[str], str]) -> None:
    _, url = served
    port = url.rsplit(":", 1)[1]
    result = _invoke("--port", port)
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output


def test_print_default_scenario_round_trips(tmp_path: Path) -> None:
    result = _invoke("--print-default-scenario")
    assert result.exit_code == 0
    path = tmp_path / "default.yml"
    path.write_text(result.output, encoding="utf-8")
    assert Scenario.from_file(path).projects == default_scenario().projects


def test_a_json_scenario_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps({"projects": [{"id": "p", "title": "P", "inputs": ["a"]}]}), encoding="utf-8"
    )
    assert Scenario.from_file(path).projects[0].inputs == ("a",)


def test_the_default_scenario_holds_the_mapped_projects_and_every_kind() -> None:
    scenario = default_scenario()
    expected_inputs = {
        CUSTOMER_HEALTH: ("as_of", "region"),
        FINANCE_OVERVIEW: ("as_of", "currency"),
        MARKETING_ATTRIBUTION: ("as_of", "window_days"),
        EXECUTIVE_KPIS: ("dbt_invocation_id",),
    }
    for project_id, inputs in expected_inputs.items():
        project = scenario.project(project_id)
        assert project is not None
        assert project.published
        assert project.inputs == inputs
        assert project.behaviour_for(0).outcome == "COMPLETED"
        assert 1 <= project.behaviour_for(0).pending_s <= 10
        assert 10 <= project.behaviour_for(0).running_s <= 60
    assert len(scenario.projects) >= 30
    assert any(not p.published for p in scenario.projects)
    assert any(p.archived for p in scenario.projects)
    assert any(p.trashed for p in scenario.projects)
    outcomes = {p.behaviour_for(0).outcome for p in scenario.projects}
    assert outcomes == {"COMPLETED", "ERRORED", "KILLED", "UNABLE_TO_ALLOCATE_KERNEL"}


def test_yaml_timestamps_and_string_shorthands_are_understood(tmp_path: Path) -> None:
    path = tmp_path / "s.yml"
    document = {
        "projects": [
            {
                "id": "p",
                "title": "P",
                "runs": ["ERRORED", "COMPLETED"],
                "created_at": "2025-01-02T03:04:05Z",
            },
        ],
        "tokens": ["hxtw_plain"],
    }
    path.write_text(
        yaml.safe_dump(document).replace("'2025-01-02T03:04:05Z'", "2025-01-02 03:04:05"),
        encoding="utf-8",
    )
    scenario = Scenario.from_file(path)
    project = scenario.projects[0]
    assert [b.outcome for b in project.runs] == ["ERRORED", "COMPLETED"]
    assert project.created_at == 1_735_787_045.0
    assert scenario.tokens[0].scopes == frozenset({"read", "run"})


def test_with_settings_checks_its_values() -> None:
    with pytest.raises(
        ScenarioError, match="cancel_ended_run: 'sometimes' is not one of reject, accept"
    ):
        default_scenario().with_settings(cancel_ended_run="sometimes")


def test_the_scenario_reference_in_the_docs_loads_and_names_every_key() -> None:
    """docs/emulator.md's example scenario is a valid scenario, and it shows every setting and
    every project key the emulator reads (a key left out is a key a reader cannot find)."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "emulator.md").read_text()
    reference = text.split("## Scenarios", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    document = yaml.safe_load(reference)
    scenario = Scenario.coerce(document)
    assert {field.name for field in dataclasses.fields(Settings)} == set(document["settings"])
    assert set(_PROJECT_KEYS) == set(document["projects"][0])
    (project,) = scenario.projects
    assert [table.connection_name for table in project.queried_tables] == [
        "Warehouse",
        "Finance warehouse",
    ]
