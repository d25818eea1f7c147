"""trigger, list-projects and runs, driven through click against the emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hexdbt.cli import main
from hexdbt.clock import SystemClock
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import (
    CUSTOMER_HEALTH_ID,
    ERRORS_ID,
    FLAKY_ID,
    SCHEDULED_ID,
    UNPUBLISHED_ID,
    default_scenario_document,
)

TOKEN = "hxtp_cli_secret_abcdef123456"
Factory = Callable[..., HexEmulator]


def _invoke(emu: HexEmulator | None, args: list[str], *, token: str | None = TOKEN) -> Result:
    env = {"HEX_BASE_URL": emu.url if emu else "http://127.0.0.1:9"}
    if token:
        env["HEX_API_TOKEN"] = token
    obj = {"clock": emu.clock} if emu else None
    result = CliRunner().invoke(main, args, env=env, obj=obj)
    assert TOKEN not in result.output
    assert TOKEN not in result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _json(result: Result) -> Any:
    """stdout holds exactly one JSON document."""
    return json.loads(result.stdout)


def _bodies(emu: HexEmulator, operation: str) -> list[dict[str, Any]]:
    return [entry for entry in emu.journal() if entry["operation"] == operation]


def test_trigger_prints_one_run_document(hex_emulator: HexEmulator) -> None:
    result = _invoke(hex_emulator, ["trigger", CUSTOMER_HEALTH_ID, "--json"])
    assert result.exit_code == 0
    document = _json(result)
    (run,) = document["runs"]
    assert run["projectId"] == CUSTOMER_HEALTH_ID
    assert run["status"] == "TRIGGERED"
    assert run["runUrl"].endswith(run["runId"])
    assert run["traceId"]
    assert "elapsedTime" in run
    assert "error" not in run
    (post,) = _bodies(hex_emulator, "RunProject")
    assert post["body"]["updatePublishedResults"] is True


def test_trigger_wait_judges_each_project_on_its_own(hex_emulator: HexEmulator) -> None:
    result = _invoke(
        hex_emulator,
        ["trigger", f"{CUSTOMER_HEALTH_ID},{ERRORS_ID}", "no-such-project", "--wait", "--json"],
    )
    assert result.exit_code == 5  # the highest of 0 (completed), 5 (errored) and 4 (not found)
    document = _json(result)
    completed, errored, missing = document["runs"]
    assert completed["status"] == "COMPLETED"
    assert completed["elapsedTime"] == 25_000
    assert "error" not in completed
    assert errored["status"] == "ERRORED"
    assert errored["error"]["type"] == "RunFailedError"
    assert missing["error"]["type"] == "HexNotFoundError"
    assert missing["error"]["httpStatus"] == 404
    assert missing["traceId"]
    assert "Error:" in result.stderr


def test_trigger_wait_human_output_never_truncates(hex_emulator: HexEmulator) -> None:
    result = _invoke(hex_emulator, ["trigger", CUSTOMER_HEALTH_ID, "--wait"])
    assert result.exit_code == 0
    (run,) = hex_emulator.runs(CUSTOMER_HEALTH_ID)
    assert f"{CUSTOMER_HEALTH_ID}: run {run.run_id} COMPLETED in 0m25s" in result.stdout
    assert f"/runs/{run.run_id}" in result.stdout
    assert " RUNNING after " in result.stderr  # progress lines go to stderr


def test_input_params_keep_json_types_and_turn_publishing_off(hex_emulator: HexEmulator) -> None:
    args = ["trigger", FLAKY_ID, "--input-param", "horizon_days=3", "--input-param", "flag=true"]
    args += ["--input-param", "ids=[1,2]", "--input-param", "as_of=2024-01-01", "--json"]
    result = _invoke(hex_emulator, args)
    assert result.exit_code == 0
    (post,) = _bodies(hex_emulator, "RunProject")
    assert post["body"]["inputParams"] == {
        "horizon_days": 3,
        "flag": True,
        "ids": [1, 2],
        "as_of": "2024-01-01",
    }
    assert post["body"]["updatePublishedResults"] is False
    assert "updatePublishedResults=false" in result.stderr
    assert _json(result)["updatePublishedResults"] is False


@pytest.mark.parametrize("as_json", [False, True])
def test_update_published_with_input_params_is_a_usage_error(
    hex_emulator: HexEmulator, as_json: bool
) -> None:
    args = ["trigger", FLAKY_ID, "--input-param", "n=1", "--update-published"]
    result = _invoke(hex_emulator, args + (["--json"] if as_json else []))
    assert result.exit_code == 2
    assert "Hex ignores input params when updatePublishedResults is true" in result.stderr
    if as_json:
        assert _json(result)["error"]["type"] == "ConfigError"
    assert not _bodies(hex_emulator, "RunProject")


@pytest.mark.parametrize("as_json", [False, True])
def test_bad_input_param_names_the_value(hex_emulator: HexEmulator, as_json: bool) -> None:
    result = _invoke(
        hex_emulator,
        ["trigger", FLAKY_ID, "--input-param", "novalue"] + (["--json"] if as_json else []),
    )
    assert result.exit_code == 2
    assert "--input-param 'novalue': expected KEY=VALUE" in result.stderr
    if as_json:
        assert "KEY=VALUE" in _json(result)["error"]["message"]


@pytest.mark.parametrize(
    "args",
    [["trigger", CUSTOMER_HEALTH_ID], ["list-projects"], ["runs", "status", "p", "r"]],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_missing_token_exits_2_naming_hex_api_token(args: list[str], as_json: bool) -> None:
    result = _invoke(None, args + (["--json"] if as_json else []), token=None)
    assert result.exit_code == 2
    assert "HEX_API_TOKEN" in result.stderr
    if as_json:
        assert "HEX_API_TOKEN" in _json(result)["error"]["message"]
    else:
        assert result.stdout == ""


def test_plain_http_to_another_host_is_refused() -> None:
    result = CliRunner().invoke(
        main,
        ["list-projects", "--json"],
        env={"HEX_API_TOKEN": TOKEN, "HEX_BASE_URL": "http://hex.example.com"},
    )
    assert result.exit_code == 2
    assert "--allow-insecure-http" in result.stderr
    assert TOKEN not in result.output
    assert _json(result)["error"]["type"] == "ConfigError"


@pytest.mark.parametrize(
    ("token_spec", "project_id", "status"),
    [
        ({"token": "hxtp_someone_else"}, CUSTOMER_HEALTH_ID, 401),
        ({"token": TOKEN, "scopes": ["read"]}, CUSTOMER_HEALTH_ID, 403),
        ({"token": TOKEN}, "no-such-project", 404),
        ({"token": TOKEN}, UNPUBLISHED_ID, 422),
    ],
)
def test_api_errors_on_trigger_exit_4_with_status_and_trace_id(
    hex_emulator_factory: Factory, token_spec: dict[str, Any], project_id: str, status: int
) -> None:
    document = default_scenario_document()
    document["tokens"] = [token_spec]
    emu = hex_emulator_factory(scenario=document)
    human = _invoke(emu, ["trigger", project_id])
    assert human.exit_code == 4
    assert f"HTTP {status}" in human.stderr
    assert "traceId" in human.stderr
    result = _invoke(emu, ["trigger", project_id, "--wait", "--json"])
    assert result.exit_code == 4
    (run,) = _json(result)["runs"]
    assert run["error"]["httpStatus"] == status
    assert run["error"]["traceId"]


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_on_trigger_and_poll_are_waited_out(
    hex_emulator: HexEmulator, status: int
) -> None:
    hex_emulator.inject_faults("RunProject", sequence=[{"kind": "error", "status": status}])
    hex_emulator.inject_faults("GetRunStatus", sequence=[{"kind": "error", "status": status}])
    result = _invoke(hex_emulator, ["trigger", CUSTOMER_HEALTH_ID, "--wait", "--json"])
    assert result.exit_code == 0
    assert _json(result)["runs"][0]["status"] == "COMPLETED"
    assert len(hex_emulator.runs(CUSTOMER_HEALTH_ID)) == 1


def test_poll_auth_failure_exits_4(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults("GetRunStatus", sequence=[{"kind": "error", "status": 401}] * 3)
    result = _invoke(hex_emulator, ["trigger", SCHEDULED_ID, "--wait", "--json"])
    assert result.exit_code == 4
    (run,) = _json(result)["runs"]
    assert run["outcome"] == "LOST"
    assert run["error"]["httpStatus"] == 401


def test_lost_trigger_answer_is_reconciled_not_doubled(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults("RunProject", sequence=[{"kind": "lost_reset"}])
    result = _invoke(hex_emulator, ["trigger", CUSTOMER_HEALTH_ID, "--json"])
    assert result.exit_code == 0
    (record,) = hex_emulator.runs(CUSTOMER_HEALTH_ID)
    assert _json(result)["runs"][0]["runId"] == record.run_id


@pytest.mark.parametrize(
    ("cancel_flag", "final"), [([], "KILLED"), (["--no-cancel-on-timeout"], "RUNNING")]
)
def test_timeout_exits_6_and_cancels_unless_told_not_to(
    hex_emulator: HexEmulator, cancel_flag: list[str], final: str
) -> None:
    args = ["trigger", SCHEDULED_ID, "--wait", "--timeout-minutes", "2", "--json", *cancel_flag]
    result = _invoke(hex_emulator, args)
    assert result.exit_code == 6
    (run,) = _json(result)["runs"]
    assert run["outcome"] == "TIMED_OUT"
    assert run["error"]["type"] == "RunTimeoutError"
    (record,) = hex_emulator.runs(SCHEDULED_ID)
    status = _invoke(hex_emulator, ["runs", "status", SCHEDULED_ID, record.run_id, "--json"])
    assert _json(status)["status"] == final


def test_seed_schedule_polls_every_ten_seconds(hex_emulator: HexEmulator) -> None:
    result = _invoke(
        hex_emulator, ["trigger", CUSTOMER_HEALTH_ID, "--wait", "--poll-interval", "10"]
    )
    assert result.exit_code == 0
    assert len(_bodies(hex_emulator, "GetRunStatus")) == 3
    assert not _bodies(hex_emulator, "GetProjectRuns")


def test_dry_run_starts_nothing(hex_emulator: HexEmulator) -> None:
    result = _invoke(hex_emulator, ["trigger", CUSTOMER_HEALTH_ID, "--dry-run", "--wait", "--json"])
    assert result.exit_code == 0
    assert _json(result)["runs"][0]["status"] == "DRY_RUN"
    assert hex_emulator.runs(CUSTOMER_HEALTH_ID) == []
    assert _bodies(hex_emulator, "RunProject")[0]["body"]["dryRun"] is True


def test_list_projects_follows_pages_to_the_limit(hex_emulator_factory: Factory) -> None:
    document = {
        "projects": [
            {"id": f"p-{number:03d}", "title": f"Project {number}"} for number in range(150)
        ]
    }
    emu = hex_emulator_factory(scenario=document)
    result = _invoke(emu, ["list-projects", "--limit", "120", "--json"])
    assert result.exit_code == 0
    projects = _json(result)
    assert len(projects) == 120
    assert len({item["projectId"] for item in projects}) == 120
    assert set(projects[0]) >= {
        "projectId",
        "title",
        "status",
        "lastPublishedAt",
        "archived",
        "trashed",
    }
    assert len(_bodies(emu, "ListProjects")) == 2


def test_list_projects_human_shows_whole_ids(hex_emulator: HexEmulator) -> None:
    result = _invoke(hex_emulator, ["list-projects", "--include-archived"])
    assert result.exit_code == 0
    assert f"{CUSTOMER_HEALTH_ID}  published  Customer health" in result.stdout
    assert "archived  2024 board deck" in result.stdout
    assert "project(s)" in result.stderr


def test_runs_list_status_and_cancel(hex_emulator: HexEmulator) -> None:
    run_id = _json(_invoke(hex_emulator, ["trigger", SCHEDULED_ID, "--json"]))["runs"][0]["runId"]
    listed = _json(
        _invoke(hex_emulator, ["runs", "list", SCHEDULED_ID, "--trigger", "API", "--json"])
    )
    assert [run["runId"] for run in listed["runs"]] == [run_id]
    cancelled = _invoke(hex_emulator, ["runs", "cancel", SCHEDULED_ID, run_id, "--json"])
    assert _json(cancelled) == {"projectId": SCHEDULED_ID, "runId": run_id, "cancelled": True}
    human = _invoke(hex_emulator, ["runs", "status", SCHEDULED_ID, run_id])
    assert f"{run_id}  KILLED  API" in human.stdout
    again = _invoke(hex_emulator, ["runs", "cancel", SCHEDULED_ID, run_id, "--json"])
    assert again.exit_code == 4
    assert _json(again)["error"]["httpStatus"] == 422
    history = _invoke(hex_emulator, ["runs", "list", SCHEDULED_ID, "--status", "COMPLETED"])
    assert history.stdout.count("COMPLETED") == 2


def test_runs_status_of_an_unknown_run_is_one_json_error(hex_emulator: HexEmulator) -> None:
    result = _invoke(hex_emulator, ["runs", "status", CUSTOMER_HEALTH_ID, "nope", "--json"])
    assert result.exit_code == 4
    assert _json(result)["error"]["type"] == "HexNotFoundError"


def test_click_usage_errors_also_print_json(hex_emulator: HexEmulator) -> None:
    result = _invoke(hex_emulator, ["list-projects", "--limit", "many", "--json"])
    assert result.exit_code == 2
    assert _json(result)["error"]["type"] == "UsageError"
    assert "many" in _json(result)["error"]["message"]


def _subprocess_env(emu: HexEmulator) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HEX_", "DBT_"))}
    env.update(HEX_API_TOKEN=TOKEN, HEX_BASE_URL=emu.url)
    return env


def test_list_projects_in_a_real_process(hex_emulator_factory: Factory) -> None:
    emu = hex_emulator_factory(clock=SystemClock())
    done = subprocess.run(
        [sys.executable, "-m", "hexdbt", "list-projects", "--limit", "5", "--json"],
        env=_subprocess_env(emu),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 5
    assert TOKEN not in done.stdout + done.stderr


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_wait_cancels_the_run_and_exits(
    hex_emulator_factory: Factory, signum: int, code: int
) -> None:
    emu = hex_emulator_factory(clock=SystemClock())
    process = subprocess.Popen(
        [sys.executable, "-m", "hexdbt", "trigger", SCHEDULED_ID, "--wait", "--json"],
        env=_subprocess_env(emu),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not any(entry["operation"] == "GetProjectRuns" for entry in emu.journal()):
            assert time.monotonic() < deadline, "the command never started waiting"
            time.sleep(0.05)
        time.sleep(0.3)
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, stderr
    (run,) = json.loads(stdout)["runs"]
    assert run["outcome"] == "INTERRUPTED"
    assert run["cancel"] == "cancelled"
    (record,) = emu.runs(SCHEDULED_ID)
    assert [entry["status"] for entry in emu.journal() if entry["operation"] == "CancelRun"] == [
        204
    ]
    assert record.run_id == run["runId"]
    assert TOKEN not in stdout + stderr
