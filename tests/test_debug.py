"""`hexdbt debug` through the real command against the emulator: every check OK, and each way a
setup fails (no token, a token Hex refuses, a broken mapping, a state that cannot be used),
with the exit code of the first failure's cause, and never the token in the output."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from emulator_helpers import CUSTOMER_HEALTH
from postgres_server import PostgresServer

from hexdbt.cli import main
from hexdbt.clock import ManualClock
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import UNPUBLISHED_ID, default_scenario_document
from hexdbt.hex.budget import CallKind, SharedBudget
from hexdbt.settings import resolve_state_location

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_BUILD = REPO_ROOT / "tests" / "fixtures" / "sample_build"
TOKEN = "hxtw_debug_secret_0123456789"
Factory = Callable[..., HexEmulator]
CHECKS = [
    "token", "base URL", "read access", "clock", "run access", "state", "dbt project",
    "artifacts", "mapping", "budget",
]  # fmt: skip


def _project(tmp_path: Path) -> Path:
    """The sample project as a build leaves it: dbt_project.yml, target/ and the mapping."""
    project = tmp_path / "project"
    (project / "target").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "sample_dbt_project" / "dbt_project.yml", project)
    shutil.copy(REPO_ROOT / "hex_mappings.yml", project)
    shutil.copy(SAMPLE_BUILD / "manifest.json", project / "target")
    shutil.copy(SAMPLE_BUILD / "run_results_success.json", project / "target" / "run_results.json")
    return project


def _debug(
    emulator: HexEmulator,
    cwd: Path,
    *args: str,
    token: str | None = TOKEN,
    clock: ManualClock | None = None,
    **env: str,
) -> Result:
    environment = {"HEX_BASE_URL": emulator.url, **env}
    if token is not None:
        environment["HEX_API_TOKEN"] = token
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(
            main, ["debug", *args], env=environment, obj={"clock": clock or emulator.clock}
        )
    finally:
        os.chdir(previous)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert TOKEN not in result.output + result.stderr
    assert "Traceback" not in result.output
    return result


def _lines(result: Result) -> dict[str, tuple[str, str]]:
    """Each check's (status, detail), by name, in the order printed."""
    found = {}
    for line in result.stdout.splitlines()[1:-1]:
        name, status, detail = line[:12].strip(), line[12:18].strip(), line[18:]
        found[name] = (status, detail)
    assert list(found) == CHECKS, result.stdout
    return found


def test_a_working_setup_is_ok_on_every_line(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    result = _debug(hex_emulator, _project(tmp_path))
    assert result.exit_code == 0, result.stdout
    lines = _lines(result)
    assert {name: status for name, (status, _) in lines.items()} == dict.fromkeys(CHECKS, "OK") | {
        "run access": "--"
    }
    assert lines["token"][1] == "a workspace token (hxtw_..., 28 characters) from HEX_API_TOKEN"
    assert lines["base URL"][1] == f"{hex_emulator.url}/api/v1"
    assert lines["state"][1] == (
        f"sqlite {tmp_path / 'hexdbt-state'}: ledger schema 4, budget schema 1, writable"
    )
    assert lines["artifacts"][1].startswith("manifest.json (dbt 1.")
    assert "run_results.json (dbt build of " in lines["artifacts"][1]
    assert lines["mapping"][1] == (
        "4 mapped Hex projects (3 in hex_mappings.yml, 1 from dbt exposures): no problems found"
    )
    # The read access check itself took one of the 30 other calls a minute.
    assert lines["budget"][1] == (
        "left now: RunProject 20/20 a minute, 60/60 an hour; other calls 29/30 a minute"
    )
    assert result.stdout.splitlines()[-1] == "All checks passed."
    assert [entry["operation"] for entry in hex_emulator.journal()] == ["ListProjects"]


def test_no_token_is_exit_2_and_hex_is_not_asked(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    result = _debug(hex_emulator, _project(tmp_path), token=None)
    assert result.exit_code == 2
    lines = _lines(result)
    assert lines["token"] == (
        "FAIL",
        "no Hex API token: set HEX_API_TOKEN; create a token in Hex under Settings > API keys,"
        " then export HEX_API_TOKEN=...",
    )
    assert lines["read access"] == ("--", "not checked: the token above")
    assert lines["state"][0] == "OK"
    assert result.stdout.splitlines()[-1] == "1 check failed; exit 2, for the first: token."
    assert hex_emulator.journal() == []


def test_a_token_hex_refuses_is_exit_4_and_never_shown(
    hex_emulator_factory: Factory, tmp_path: Path
) -> None:
    document = {**default_scenario_document(), "tokens": [{"token": "hxtw_the_right_one"}]}
    emulator = hex_emulator_factory(scenario=document)
    result = _debug(emulator, _project(tmp_path))
    assert result.exit_code == 4
    lines = _lines(result)
    assert lines["token"][0] == "OK"  # its shape is fine: Hex is what refuses it
    status, detail = lines["read access"]
    assert status == "FAIL"
    assert detail.startswith("GET /projects: invalid token (HTTP 401, traceId ")
    assert detail.endswith(
        "; check HEX_API_TOKEN: it may be invalid or expired (personal tokens always expire)"
    )
    assert lines["clock"] == ("--", "not checked: Hex did not answer")
    assert result.stdout.splitlines()[-1] == "1 check failed; exit 4, for the first: read access."


def test_a_token_of_another_shape_is_a_warning(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    result = _debug(hex_emulator, _project(tmp_path), token="Bearer-abc")
    assert result.exit_code == 0
    status, detail = _lines(result)["token"]
    assert (status, detail) == (
        "WARN",
        "HEX_API_TOKEN (10 characters) does not start with hxtp_ or hxtw_ as Hex's tokens do;"
        " check that it holds the token alone, as Hex showed it",
    )
    assert "Bearer-abc" not in result.output


def test_a_broken_mapping_is_exit_2_naming_the_first_error(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    project = _project(tmp_path)
    mappings = project / "hex_mappings.yml"
    mappings.write_text(mappings.read_text().replace("models: [customers]", "models: [custmers]"))
    result = _debug(hex_emulator, project)
    assert result.exit_code == 2
    status, detail = _lines(result)["mapping"]
    assert status == "FAIL"
    assert detail == (
        "4 mapped Hex projects (3 in hex_mappings.yml, 1 from dbt exposures): 1 error, 0"
        " warnings, the first: hex_mappings.yml:17: error: customer_health: selector 'custmers'"
        " matches no model (did you mean 'customers'?) [selector-typo]; `hexdbt validate` lists"
        " them"
    )


def test_a_state_that_cannot_be_used_is_exit_7_before_a_later_failure(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    """The state folder cannot be made (a file is in the way) and the mapping is broken too:
    the state comes first, so the exit code is its 7. Hex is still asked."""
    project = _project(tmp_path)
    (tmp_path / "a-file").write_text("")
    (project / "hex_mappings.yml").write_text("version: 1\nprojects: 5\n")
    result = _debug(hex_emulator, project, HEXDBT_STATE_DIR=str(tmp_path / "a-file" / "state"))
    assert result.exit_code == 7
    lines = _lines(result)
    assert lines["state"] == (
        "FAIL",
        f"cannot create the state folder {tmp_path / 'a-file' / 'state'}: Not a directory;"
        " point HEXDBT_STATE_DIR at a writable folder",
    )
    assert lines["read access"][0] == "OK"
    assert lines["mapping"][0] == "FAIL"
    assert lines["budget"] == ("--", "not checked: the state above cannot be used")
    assert result.stdout.splitlines()[-1] == "2 checks failed; exit 7, for the first: state."


def test_dry_run_checks_that_the_token_may_run_a_project(
    hex_emulator_factory: Factory, tmp_path: Path
) -> None:
    document = {
        **default_scenario_document(),
        "tokens": [{"token": TOKEN}, {"token": "hxtp_reads_only", "scopes": ["read"]}],
    }
    emulator = hex_emulator_factory(scenario=document)
    project = _project(tmp_path)
    result = _debug(emulator, project, "--dry-run", CUSTOMER_HEALTH)
    assert result.exit_code == 0, result.stdout
    assert _lines(result)["run access"] == (
        "OK",
        f"Hex accepted a dryRun of {CUSTOMER_HEALTH}: the token may run it",
    )
    (posted,) = [entry for entry in emulator.journal() if entry["operation"] == "RunProject"]
    assert posted["status"] == 201
    assert emulator.runs(CUSTOMER_HEALTH) == []  # a dry run starts nothing
    assert "RunProject 19/20 a minute, 59/60 an hour" in _lines(result)["budget"][1]

    refused = _debug(emulator, project, "--dry-run", CUSTOMER_HEALTH, token="hxtp_reads_only")
    assert refused.exit_code == 4
    status, detail = _lines(refused)["run access"]
    assert status == "FAIL"
    assert detail.startswith(
        f"POST /projects/{CUSTOMER_HEALTH}/runs: this token lacks the 'run projects' scope"
    )
    unpublished = _debug(emulator, project, "--dry-run", UNPUBLISHED_ID)
    assert unpublished.exit_code == 4
    assert _lines(unpublished)["run access"][1].endswith(
        "only published projects run, with inputs the published app has; publish it in Hex"
    )


def test_a_clock_ahead_of_hex_s_is_a_warning_saying_what_to_do(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    ahead = ManualClock(hex_emulator.clock.now() + 100)
    result = _debug(hex_emulator, _project(tmp_path), clock=ahead)
    assert result.exit_code == 0
    status, detail = _lines(result)["clock"]
    assert status == "WARN"
    assert detail.startswith("99.5 s ahead of Hex's (from its Date header); sync this machine's")


def test_a_spent_budget_says_when_the_next_slot_comes(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    """Calls recorded by another process on the same token (here: all 20 of this minute)."""
    with closing(
        SharedBudget.open(
            resolve_state_location(), TOKEN, hex_emulator.url, clock=hex_emulator.clock
        )
    ) as budget:
        assert len(budget.take_now(CallKind.RUN_PROJECT, 20)) == 20
    hex_emulator.clock.advance(15)
    result = _debug(hex_emulator, _project(tmp_path))
    assert result.exit_code == 0
    status, detail = _lines(result)["budget"]
    assert status == "WARN"
    assert detail.startswith(
        "left now: RunProject 0/20 a minute, 40/60 an hour; other calls 29/30 a minute;"
        " the next slot: RunProject in 46 s"
    )


def test_json_holds_every_check_and_the_exit_code(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    project = _project(tmp_path)
    shutil.rmtree(project / "target")
    result = _debug(hex_emulator, project, "--json")
    assert result.exit_code == 0
    document: dict[str, Any] = json.loads(result.stdout)
    assert [check["check"] for check in document["checks"]] == CHECKS
    artifacts = document["checks"][CHECKS.index("artifacts")]
    assert artifacts["status"] == "warn"
    assert artifacts["detail"] == (
        f"no manifest.json or run_results.json in {project / 'target'} yet; run a dbt build (or"
        " `dbt parse` for manifest.json) first"
    )
    assert document["exitCode"] == 0


@pytest.mark.parametrize("broken", ["run_results.json", "manifest.json"])
def test_a_truncated_artifact_is_exit_3_naming_it(
    hex_emulator: HexEmulator, tmp_path: Path, broken: str
) -> None:
    project = _project(tmp_path)
    path = project / "target" / broken
    path.write_text(path.read_text()[:200])
    result = _debug(hex_emulator, project)
    assert result.exit_code == 3
    status, detail = _lines(result)["artifacts"]
    assert status == "FAIL"
    assert detail.startswith(f"{path}: ")


def test_a_postgresql_state_names_the_server_and_schema_versions_without_the_password(
    hex_emulator: HexEmulator,
    tmp_path: Path,
    postgres_server: PostgresServer,
    postgres_state_url: str,
) -> None:
    result = _debug(hex_emulator, _project(tmp_path), "--state-url", postgres_state_url)
    assert result.exit_code == 0, result.stdout
    schema = postgres_state_url.rsplit("schema=", 1)[1]
    assert _lines(result)["state"] == (
        "OK",
        f"postgresql postgresql://hexdbt:***@127.0.0.1:{postgres_server.port}/hexdbt (schema"
        f" {schema}): ledger schema 4, budget schema 1, writable",
    )
    assert postgres_server.password not in result.output
