"""`hexdbt dbt`: reading dbt's arguments, finding dbt, waking the dispatcher, usage errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hexdbt.cli import main
from hexdbt.errors import ConfigError
from hexdbt.feeders.dbt_wrapper import find_dbt_executable, parse_dbt_args

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_common_form_keeps_every_dbt_argument_and_reads_what_hexdbt_needs() -> None:
    args = parse_dbt_args(
        ["build", "--select", "marts", "--target", "prod", "--vars", "{fail_model: orders}",
         "--project-dir", "proj", "--target-path=out"],
        environ={},
    )  # fmt: skip
    assert args.command == "build"
    assert args.project_dir == "proj"
    assert args.target_path == "out"
    assert args.vars == {"fail_model": "orders"}
    assert args.passed[:5] == ("build", "--select", "marts", "--target", "prod")
    line = args.command_line("dbt")
    assert line[:6] == ["dbt", "--log-format", "json", "--log-level", "debug", "--no-quiet"]
    # the log file keeps dbt's defaults, which --log-format json would otherwise change
    assert line[6:10] == ["--log-format-file", "debug", "--log-level-file", "debug"]


def test_the_users_console_flags_are_taken_out_and_honoured_by_the_echo() -> None:
    args = parse_dbt_args(["--log-format", "json", "run", "-q", "--log-level=warn"], environ={})
    assert args.passed == ("run",)
    assert args.echo.log_format == "json"
    assert args.echo.log_level == "error"  # --quiet wins, as in dbt
    assert args.file_flags[:2] == ("--log-format-file", "json")


def test_env_vars_set_the_echo_and_the_file_settings_stay_dbts() -> None:
    args = parse_dbt_args(
        ["seed"], environ={"DBT_LOG_FORMAT": "debug", "DBT_LOG_LEVEL_FILE": "info"}
    )
    assert args.echo.log_format == "debug"
    assert args.file_flags == ("--log-format-file", "debug")


@pytest.mark.parametrize(
    ("argv", "command"),
    [(["docs", "generate"], "generate"), (["source", "freshness"], "freshness"),
     (["ls", "-s", "x"], "list"), (["--debug", "retry"], "retry")],
)  # fmt: skip
def test_the_command_is_dbts_own_name_for_it(argv: list[str], command: str) -> None:
    assert parse_dbt_args(argv, environ={}).command == command


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no dbt command given"),
        (["--select", "x"], "no dbt command in '--select x'"),
        (["build", "--vars"], "dbt option --vars needs a value"),
        (["build", "--vars", "[1, 2]"], "--vars '[1, 2]': must be a YAML mapping"),
        (["build", "--log-level", "loud"], "dbt option --log-level 'loud': choose one of"),
    ],
)
def test_bad_dbt_arguments_are_one_line_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[").replace("(", r"\(")):
        parse_dbt_args(argv, environ={})


def test_dbt_is_found_on_path_else_beside_python(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "dbt"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_dbt_executable({"PATH": str(fake.parent)}) == str(fake)
    assert Path(find_dbt_executable({"PATH": str(tmp_path)})).name == "dbt"  # the venv's


def test_no_dbt_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["dbt", "--no-wait"])
    assert result.exit_code == 2
    assert "Error: no dbt command given" in result.output


def test_no_token_stops_before_dbt_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO_ROOT / "sample_dbt_project")
    result = CliRunner().invoke(
        main, ["dbt", "--mappings", str(REPO_ROOT / "hex_mappings.yml"), "build"]
    )
    assert result.exit_code == 2
    assert "Error: no Hex API token: set HEX_API_TOKEN" in result.output
    assert "Running with dbt" not in result.output


def test_a_broken_mapping_file_stops_before_dbt_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO_ROOT / "sample_dbt_project")
    monkeypatch.setenv("HEX_API_TOKEN", "hxtp_test")
    broken = tmp_path / "broken.yml"
    broken.write_text("version: 1\nprojects: [{name: x}]\n")
    result = CliRunner().invoke(main, ["dbt", "--mappings", str(broken), "--json", "--", "build"])
    assert result.exit_code == 2
    assert str(broken) in result.output
    assert '"exitCode": 2' in result.output
    assert "Running with dbt" not in result.output


def test_outside_a_dbt_project_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["dbt", "build"])
    assert result.exit_code == 2
    assert "Error: no dbt_project.yml in" in result.output
