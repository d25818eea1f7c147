"""trigger, list-projects and runs, driven through click against the emulator."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
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

# Well-formed ids that name nothing: Hex answers 400 to ids that are not UUIDs.
NO_SUCH_PROJECT_ID = "0badc0de-1111-4000-8000-000000000000"
NO_SUCH_RUN_ID = "0badc0de-0000-4000-8000-000000000000"
TOKEN = "hxtp_cli_secret_abcdef123456"
Factory = Callable[..., HexEmulator]


def _invoke(
    emu: HexEmulator | None,
    args: list[str],
    *,
    token: str | None = TOKEN,
    base_url: str | None = None,
) -> Result:
    env = {"HEX_BASE_URL": base_url or (emu.url if emu else "http://127.0.0.1:9")}
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


def _project(result: Result) -> dict[str, Any]:
    """The one project of a ``trigger --json`` document."""
    (project,) = _json(result)["projects"]
    assert isinstance(project, dict)
    return project


def _bodies(emu: HexEmulator, operation: str) -> list[dict[str, Any]]:
    return [entry for entry in emu.journal() if entry["operation"] == operation]


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("Error:")]


def test_trigger_prints_one_run_document(hex_emulator: HexEmulator) -> None:
    result = _invoke(hex_emulator, ["trigger", CUSTOMER_HEALTH_ID, "--json"])
    assert result.exit_code == 0
    document = _json(result)
    assert document["invocation_id"].startswith("trigger:")
    assert (document["dryRun"], document["exitCode"]) == (False, 0)
    (run,) = document["projects"]
    assert run["projectId"] == CUSTOMER_HEALTH_ID
    assert run["outcome"] == "started"
    assert run["status"] is None  # not waited on: Hex's status was never read
    assert run["runUrl"].endswith(run["runId"])
    assert run["traceId"]
    assert run["reason"] is None
    (post,) = _bodies(hex_emulator, "RunProject")
    assert post["body"]["updatePublishedResults"] is True


def test_trigger_wait_judges_each_project_on_its_own(hex_emulator: HexEmulator) -> None:
    result = _invoke(
        hex_emulator,
        ["trigger", f"{CUSTOMER_HEALTH_ID},{ERRORS_ID}", NO_SUCH_PROJECT_ID, "--wait", "--json"],
    )
    assert result.exit_code == 5  # the highest of 0 (completed), 5 (errored) and 4 (not found)
    document = _json(result)
    assert document["exitCode"] == 5
    completed, errored, missing = document["projects"]
    assert (completed["outcome"], completed["status"]) == ("completed", "COMPLETED")
    assert completed["elapsedSeconds"] >= 25  # the run takes 25 s in Hex
    assert completed["reason"] is None
    assert (errored["outcome"], errored["status"]) == ("errored", "ERRORED")
    assert missing["outcome"] == "failed_to_start"
    assert missing["runId"] is None
    assert "HTTP 404" in missing["reason"]
    assert missing["traceId"]
    assert f"{NO_SUCH_PROJECT_ID}: Hex refused the run: " in result.stderr


def test_trigger_wait_human_output_never_truncates(hex_emulator: HexEmulator) -> None:
    result = _invoke(hex_emulator, ["trigger", CUSTOMER_HEALTH_ID, "--wait"])
    assert result.exit_code == 0
    (run,) = hex_emulator.runs(CUSTOMER_HEALTH_ID)
    (row,) = [line for line in result.stdout.splitlines() if line.startswith(CUSTOMER_HEALTH_ID)]
    assert row.split()[1:3] == ["completed", "COMPLETED"]
    assert row.endswith(f"/runs/{run.run_id}")
    assert result.stdout.endswith("\n1 Hex project: 1 completed\n")  # a mapping names none
    assert f"run {run.run_id} RUNNING after " in result.stderr  # progress lines go to stderr


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
    assert _project(result)["inputParams"] == post["body"]["inputParams"]


@pytest.mark.parametrize("as_json", [False, True])
def test_update_published_with_input_params_is_a_usage_error(
    hex_emulator: HexEmulator, as_json: bool
) -> None:
    args = ["trigger", FLAKY_ID, "--input-param", "n=1", "--update-published"]
    result = _invoke(hex_emulator, args + (["--json"] if as_json else []))
    assert result.exit_code == 2
    assert "Hex ignores input params when it writes published results" in result.stderr
    assert "--update-published is true" in result.stderr
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


UNSENDABLE_TOKENS = {
    "line feed": "hxtp_cli_secret\nabcdef123456",
    "carriage return": "hxtp_cli_secret\rabcdef123456",
    "non-ASCII": "hxtp_cli_secrét_abcdef123456",
}


@pytest.mark.parametrize("command", [["list-projects"], ["trigger", CUSTOMER_HEALTH_ID, "--wait"]])
@pytest.mark.parametrize("token", UNSENDABLE_TOKENS.values(), ids=UNSENDABLE_TOKENS.keys())
def test_a_token_that_cannot_be_sent_exits_2_before_any_call(
    hex_emulator: HexEmulator, command: list[str], token: str
) -> None:
    result = _invoke(hex_emulator, command, token=token)
    assert result.exit_code == 2
    (error,) = _error_lines(result.stderr)
    assert "HEX_API_TOKEN" in error
    assert "cannot be sent in an HTTP header" in error
    for piece in ("secret", "abcdef123456"):  # no part of the token is shown
        assert piece not in result.output + result.stderr
    assert hex_emulator.journal() == []


@pytest.mark.parametrize(
    ("base_url", "why"),
    [
        ("http://127.0.0.1:99999", "has a port that is not a number from 1 to 65535"),
        ("http://hex example.com", "has a space in its address"),
    ],
)
@pytest.mark.parametrize("command", [["list-projects"], ["trigger", CUSTOMER_HEALTH_ID, "--wait"]])
def test_a_bad_base_url_exits_2_before_any_call(
    hex_emulator: HexEmulator, command: list[str], base_url: str, why: str
) -> None:
    result = _invoke(hex_emulator, command, base_url=base_url)
    assert result.exit_code == 2
    (error,) = _error_lines(result.stderr)
    assert error == f"Error: HEX_BASE_URL {base_url!r} {why}"
    assert hex_emulator.journal() == []


@pytest.mark.parametrize(
    ("token_spec", "project_id", "status"),
    [
        ({"token": "hxtp_someone_else"}, CUSTOMER_HEALTH_ID, 401),
        ({"token": TOKEN, "scopes": ["read"]}, CUSTOMER_HEALTH_ID, 403),
        ({"token": TOKEN}, NO_SUCH_PROJECT_ID, 404),
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
    (row,) = [line for line in human.stdout.splitlines() if line.startswith(project_id)]
    assert row.split()[1] == "failed_to_start"
    assert f"HTTP {status}" in row
    assert "traceId" in row
    result = _invoke(emu, ["trigger", project_id, "--wait", "--json"])
    assert result.exit_code == 4
    run = _project(result)
    assert run["outcome"] == "failed_to_start"
    assert f"HTTP {status}" in run["reason"]
    assert run["traceId"]


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_on_trigger_and_poll_are_waited_out(
    hex_emulator: HexEmulator, status: int
) -> None:
    hex_emulator.inject_faults("RunProject", sequence=[{"kind": "error", "status": status}])
    hex_emulator.inject_faults("GetRunStatus", sequence=[{"kind": "error", "status": status}])
    result = _invoke(hex_emulator, ["trigger", CUSTOMER_HEALTH_ID, "--wait", "--json"])
    assert result.exit_code == 0
    run = _project(result)
    assert (run["outcome"], run["status"]) == ("completed", "COMPLETED")
    assert len(hex_emulator.runs(CUSTOMER_HEALTH_ID)) == 1
    assert [post["status"] for post in _bodies(hex_emulator, "RunProject")] == [status, 201]


def test_poll_auth_failure_exits_4(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults("GetRunStatus", sequence=[{"kind": "error", "status": 401}] * 3)
    result = _invoke(hex_emulator, ["trigger", SCHEDULED_ID, "--wait", "--json"])
    assert result.exit_code == 4
    run = _project(result)
    assert run["outcome"] == "poll_failed"
    assert "HTTP 401" in run["reason"]
    assert run["runId"]


def test_lost_trigger_answer_is_reconciled_not_doubled(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults("RunProject", sequence=[{"kind": "lost_reset"}])
    result = _invoke(hex_emulator, ["trigger", CUSTOMER_HEALTH_ID, "--json"])
    assert result.exit_code == 0
    (record,) = hex_emulator.runs(CUSTOMER_HEALTH_ID)
    run = _project(result)
    assert (run["outcome"], run["runId"]) == ("started", record.run_id)
    assert len(_bodies(hex_emulator, "RunProject")) == 1
    assert "the answer to RunProject was lost" in result.stderr


@pytest.mark.parametrize(
    ("cancel_flag", "final"), [([], "KILLED"), (["--no-cancel-on-timeout"], "RUNNING")]
)
def test_timeout_exits_6_and_cancels_unless_told_not_to(
    hex_emulator: HexEmulator, cancel_flag: list[str], final: str
) -> None:
    args = ["trigger", SCHEDULED_ID, "--wait", "--timeout-minutes", "2", "--json", *cancel_flag]
    result = _invoke(hex_emulator, args)
    assert result.exit_code == 6
    run = _project(result)
    assert run["outcome"] == "timeout"
    assert "did not end within 2 min" in run["reason"]
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
    assert _json(result)["dryRun"] is True
    assert _project(result)["outcome"] == "dry_run"
    assert hex_emulator.runs(CUSTOMER_HEALTH_ID) == []
    assert _bodies(hex_emulator, "RunProject")[0]["body"]["dryRun"] is True


def test_an_idempotency_key_follows_the_first_run_instead_of_starting_another(
    hex_emulator: HexEmulator,
) -> None:
    args = ["trigger", CUSTOMER_HEALTH_ID, "--idempotency-key", "ci-run-42/attempt", "--wait"]
    first = _invoke(hex_emulator, [*args, "--json"])
    again = _invoke(hex_emulator, [*args, "--json"])
    assert (first.exit_code, again.exit_code) == (0, 0)
    (record,) = hex_emulator.runs(CUSTOMER_HEALTH_ID)
    assert len(_bodies(hex_emulator, "RunProject")) == 1
    for result in (first, again):
        assert _json(result)["invocation_id"] == "trigger:ci-run-42/attempt"
        run = _project(result)
        assert (run["outcome"], run["runId"]) == ("completed", record.run_id)


def test_a_retry_with_wait_of_a_first_try_without_it_waits_for_that_run(
    hex_emulator: HexEmulator,
) -> None:
    args = ["trigger", CUSTOMER_HEALTH_ID, "--idempotency-key", "nightly-7", "--json"]
    first = _invoke(hex_emulator, args)
    again = _invoke(hex_emulator, [*args, "--wait"])
    assert (first.exit_code, again.exit_code) == (0, 0)
    (record,) = hex_emulator.runs(CUSTOMER_HEALTH_ID)
    assert (_project(first)["outcome"], _project(first)["runId"]) == ("started", record.run_id)
    assert (_project(again)["outcome"], _project(again)["runId"]) == ("completed", record.run_id)


@pytest.mark.parametrize("key", ["ci run 42", "-starts-with-a-dash", "x" * 201, "caf\u00e9"])
def test_a_bad_idempotency_key_exits_2_naming_the_option(
    hex_emulator: HexEmulator, key: str
) -> None:
    result = _invoke(hex_emulator, ["trigger", CUSTOMER_HEALTH_ID, f"--idempotency-key={key}"])
    assert result.exit_code == 2
    (error,) = _error_lines(result.stderr)
    assert error.startswith(f"Error: --idempotency-key {key!r}: expected 1 to 200 letters")
    assert "Traceback" not in result.stderr
    assert hex_emulator.journal() == []


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
    assert re.search(r"^\d+ projects$", result.stderr, re.MULTILINE), result.stderr


def test_runs_list_status_and_cancel(hex_emulator: HexEmulator) -> None:
    run_id = _project(_invoke(hex_emulator, ["trigger", SCHEDULED_ID, "--json"]))["runId"]
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
    result = _invoke(hex_emulator, ["runs", "status", CUSTOMER_HEALTH_ID, NO_SUCH_RUN_ID, "--json"])
    assert result.exit_code == 4
    assert _json(result)["error"]["type"] == "HexNotFoundError"


def test_click_usage_errors_also_print_json(hex_emulator: HexEmulator) -> None:
    result = _invoke(hex_emulator, ["list-projects", "--limit", "many", "--json"])
    assert result.exit_code == 2
    assert _json(result)["error"]["type"] == "UsageError"
    assert "many" in _json(result)["error"]["message"]


# -- real processes ---------------------------------------------------------------------------------


def _subprocess_env(url: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HEX_", "DBT_"))}
    env.update(HEX_API_TOKEN=TOKEN, HEX_BASE_URL=url, **extra)
    return env


def _hexdbt(url: str, *args: str, **extra_env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hexdbt", *args],
        env=_subprocess_env(url, **extra_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ledger_states() -> list[str]:
    """The states of the triggers in the ledger the processes share (none before it exists)."""
    path = Path(os.environ["HEXDBT_STATE_DIR"]) / "ledger.sqlite3"
    if not path.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
            return [state for (state,) in db.execute("SELECT state FROM triggers")]
    except sqlite3.OperationalError:  # created but not yet initialised
        return []


def _wait_for_state(process: subprocess.Popen[str], state: str) -> None:
    deadline = time.monotonic() + 30
    while state not in _ledger_states():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no trigger reached {state!r}"
        time.sleep(0.02)


def test_list_projects_in_a_real_process(hex_emulator_factory: Factory) -> None:
    emu = hex_emulator_factory(clock=SystemClock())
    done = subprocess.run(
        [sys.executable, "-m", "hexdbt", "list-projects", "--limit", "5", "--json"],
        env=_subprocess_env(emu.url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)) == 5
    assert TOKEN not in done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_wait_cancels_the_run_and_exits(
    hex_emulator_factory: Factory, signum: int, code: int
) -> None:
    emu = hex_emulator_factory(clock=SystemClock())
    process = _hexdbt(emu.url, "trigger", SCHEDULED_ID, "--wait", "--json")
    try:
        _wait_for_state(process, "started")
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == code, stderr
    document = json.loads(stdout)
    assert document["exitCode"] == code
    (run,) = document["projects"]
    assert run["outcome"] == "interrupted"
    assert run["reason"] == "interrupted: cancelled in Hex"
    (record,) = emu.runs(SCHEDULED_ID)
    assert [entry["status"] for entry in emu.journal() if entry["operation"] == "CancelRun"] == [
        204
    ]
    assert record.run_id == run["runId"]
    assert "Traceback" not in stderr
    assert TOKEN not in stdout + stderr


# A Hex that takes connections and never answers: `hexdbt emulator` in its own process, stopped
# with SIGSTOP (the kernel still completes the handshakes). The documented limits of a call: a
# GET makes GET_ATTEMPTS (3) attempts of at most connect + read timeout each, with backoffs of at
# most 1 s and 2 s between them; a POST makes one attempt.
SHORT_TIMEOUTS = {"HEXDBT_CONNECT_TIMEOUT_S": "0.5", "HEXDBT_READ_TIMEOUT_S": "0.5"}
GET_LIMIT_S = 3 * (0.5 + 0.5) + 1 + 2
# Starting Python on a busy machine and the margin a shared CI box needs: this is a bound that
# catches a call that hangs (30 s reads, retries without end), not a timing measurement.
MARGIN_S = 15.0


@pytest.fixture
def silent_hex() -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "hexdbt", "emulator", "--port", "0", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), process.stderr
        process.send_signal(signal.SIGSTOP)
        yield url
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            # It stops in well under a second when it can; waiting longer buys nothing.
            process.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            # Woken with a backlog of abandoned connections it can take longer to stop than
            # these tests are about: what matters here is that it is gone.
            process.kill()
            process.communicate()


def _wait_until_connected(pid: int, url: str) -> None:
    """Until process ``pid`` holds a connection to ``url``'s port (its request is in flight)."""
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 30
    while not _connected(pid, port):
        assert time.monotonic() < deadline, f"process {pid} never connected to port {port}"
        time.sleep(0.02)


def _connected(pid: int, port: int) -> bool:
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            sockets.add(os.readlink(fd))
        except OSError:  # closed meanwhile
            continue
    # /proc/net/tcp: "sl local_address rem_address st ... inode"; 01 is ESTABLISHED.
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[3] == "01" and f"socket:[{fields[9]}]" in sockets:
            return True
    return False


def _run_against(url: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "hexdbt", *args],
        env=_subprocess_env(url, **SHORT_TIMEOUTS),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return done, time.monotonic() - began


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "call"),
    [
        (["list-projects"], "GET /projects"),
        (["runs", "status", CUSTOMER_HEALTH_ID, "run-1"], f"GET /projects/{CUSTOMER_HEALTH_ID}"),
    ],
)
def test_a_silent_hex_ends_a_read_with_exit_4_within_the_documented_limits(
    silent_hex: str, args: list[str], call: str
) -> None:
    done, took_s = _run_against(silent_hex, *args)
    assert done.returncode == 4, done.stderr
    (error,) = _error_lines(done.stderr)
    assert error.startswith(f"Error: {call}")
    assert "no answer from Hex (read timeout after sending)" in error
    assert took_s < GET_LIMIT_S + MARGIN_S
    assert done.stdout == ""
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_silent_hex_leaves_a_trigger_ambiguous_and_exits_4(silent_hex: str) -> None:
    """The POST's answer is lost, so the run may have started; the look-up in Hex's runs gets no
    answer either, so the trigger is ambiguous: never sent again, exit 4."""
    done, took_s = _run_against(silent_hex, "trigger", CUSTOMER_HEALTH_ID, "--wait", "--json")
    assert done.returncode == 4, done.stderr
    assert took_s < (0.5 + 0.5) + GET_LIMIT_S + MARGIN_S
    run = _project_of(done.stdout)
    assert run["outcome"] == "ambiguous"
    assert run["runId"] is None
    assert run["reason"].startswith(
        "RunProject's answer was lost and Hex's run list could not be read:"
        f" GET /projects/{CUSTOMER_HEALTH_ID}/runs: no answer from Hex"
    )
    assert "the answer to RunProject was lost; checking Hex's runs" in done.stderr
    assert "Traceback" not in done.stderr
    assert _ledger_states() == ["ambiguous"]


def _project_of(stdout: str) -> dict[str, Any]:
    (project,) = json.loads(stdout)["projects"]
    assert isinstance(project, dict)
    return project


@pytest.mark.slow
def test_sigterm_ends_a_trigger_within_2_s_in_the_middle_of_its_post(silent_hex: str) -> None:
    """With the default 30 s read timeout, SIGTERM cuts the POST short instead of waiting it out."""
    process = _hexdbt(silent_hex, "trigger", CUSTOMER_HEALTH_ID, "--wait", "--json")
    try:
        _wait_for_state(process, "sending")
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 143, stderr
    run = _project_of(stdout)
    assert run["outcome"] == "interrupted"
    assert run["reason"] == (
        "interrupted while RunProject was in flight; a later hexdbt run looks it up in"
        " Hex's runs before sending anything"
    )
    assert "Traceback" not in stderr
    assert _ledger_states() == ["sending"]  # a later process reconciles it before sending


@pytest.mark.slow
def test_ctrl_c_ends_a_listing_that_gets_no_answer_with_exit_130(silent_hex: str) -> None:
    process = _hexdbt(silent_hex, "list-projects")
    try:
        _wait_until_connected(process.pid, silent_hex)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert stdout == ""
    assert stderr.splitlines() == ["Error: interrupted"]
