"""examples/ tried for real: the cron wrapper, the GitHub Actions steps, the Paradime schedule
commands and the Python API script run against the emulator and a copy of the sample project;
the Airflow DAG (Airflow is not installed here) is compiled and its commands checked; every
`hexdbt ...` line in examples/ names a real command and real options."""

from __future__ import annotations

import fcntl
import os
import py_compile
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
import yaml

from hexdbt.cli import main
from hexdbt.emulator import HexEmulator

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent
TOKEN = "hxtp_examples_secret"
TIME_SCALE = 600  # a 25 s Hex run takes 40 ms
MAPPED = 4  # hex_mappings.yml's three projects and the sample project's exposure

EmulatorFactory = Callable[..., HexEmulator]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The sample dbt project with the repository's mapping at its root, as a user's repo."""
    copy = tmp_path / "analytics"
    shutil.copytree(
        ROOT / "sample_dbt_project",
        copy,
        ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", ".user.yml"),
    )
    dbt_project = copy / "dbt_project.yml"
    dbt_project.write_text(
        dbt_project.read_text().replace("slow_model_seconds: 5", "slow_model_seconds: 0")
    )
    shutil.copy(ROOT / "hex_mappings.yml", copy / "hex_mappings.yml")
    return copy


@pytest.fixture
def emulator(hex_emulator_factory: EmulatorFactory) -> HexEmulator:
    return hex_emulator_factory(time_scale=TIME_SCALE)


def environment(emulator: HexEmulator, project: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("HEX_", "DBT_"))}
    return {
        **keep,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "HEX_API_TOKEN": TOKEN,
        "HEX_BASE_URL": emulator.url,
        "HEXDBT_TIME_SCALE": str(TIME_SCALE),
        "DBT_PROFILES_DIR": str(project),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        **extra,
    }


def run_shell(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert TOKEN not in done.stdout + done.stderr
    return done


def started_projects(emulator: HexEmulator) -> set[str]:
    return {run.project_id for run in emulator.runs()}


# ----------------------------------------------------------------------------------------------
# cron


def cron_wrapper(
    project: Path, env: dict[str, str], *dbt_args: str, lock: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env_file = project.parent / "hexdbt.env"
    env_file.write_text(f"HEX_API_TOKEN={TOKEN}\n")
    env_file.chmod(0o600)
    wrapper_env = {k: v for k, v in env.items() if k != "HEX_API_TOKEN"}
    wrapper_env.update(
        DBT_PROJECT_DIR=str(project),
        BIN_DIR=str(BIN),
        HEXDBT_ENV_FILE=str(env_file),
        HEXDBT_LOCK=str(lock or project.parent / "nightly.lock"),
    )
    command = [str(EXAMPLES / "cron" / "hexdbt-nightly.sh"), *dbt_args]
    return run_shell(shlex.join(command), project, wrapper_env)


@pytest.mark.dbt
def test_cron_wrapper_builds_then_refreshes_every_mapped_app(
    emulator: HexEmulator, project: Path
) -> None:
    done = cron_wrapper(project, environment(emulator, project))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{MAPPED} mapped Hex projects: {MAPPED} completed" in done.stdout
    assert "done: dbt exit 0, hexdbt exit 0" in done.stdout
    assert len(started_projects(emulator)) == MAPPED
    report = ET.parse(project / "target" / "hexdbt.xml").getroot()
    assert report.get("tests") == str(MAPPED)
    assert report.get("failures") == "0"


@pytest.mark.dbt
def test_cron_wrapper_after_a_failed_model_refreshes_the_rest_and_exits_as_dbt(
    emulator: HexEmulator, project: Path
) -> None:
    done = cron_wrapper(project, environment(emulator, project), "--vars", "{fail_model: orders}")
    assert done.returncode == 1, done.stdout[-3000:]
    assert "done: dbt exit 1, hexdbt exit 0" in done.stdout
    # customer_health reads customers only; the finance and KPI apps read orders' descendants.
    assert "5a8591dd-4039-49df-9202-96385ba3eff8" in started_projects(emulator)
    assert 0 < len(started_projects(emulator)) < MAPPED


def test_cron_wrapper_skips_while_the_previous_run_holds_the_lock(
    emulator: HexEmulator, project: Path
) -> None:
    lock = project.parent / "nightly.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        done = cron_wrapper(project, environment(emulator, project), lock=lock)
    assert done.returncode == 0
    assert f"the previous run still holds {lock}: skipping this one" in done.stdout
    assert "dbt build" not in done.stdout
    assert emulator.journal() == []


def test_cron_wrapper_without_a_project_dir_says_so(tmp_path: Path) -> None:
    done = run_shell(
        str(EXAMPLES / "cron" / "hexdbt-nightly.sh"), tmp_path, {"PATH": "/usr/bin:/bin"}
    )
    assert done.returncode != 0
    assert "set DBT_PROJECT_DIR to the dbt project folder" in done.stderr


def test_crontab_line_calls_the_wrapper_with_five_schedule_fields() -> None:
    entries = [
        line
        for line in (EXAMPLES / "cron" / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(entries) == 1
    fields = entries[0].split()
    schedule, command = fields[:5], fields[5:]
    assert all(re.fullmatch(r"[\d*/,-]+", field) for field in schedule)
    assert any(part.endswith("examples/cron/hexdbt-nightly.sh") for part in command)
    assert "DBT_PROJECT_DIR=" in entries[0]
    assert "BIN_DIR=" in entries[0]


# ----------------------------------------------------------------------------------------------
# GitHub Actions


def workflow_steps(job: str) -> dict[str, str]:
    workflow = yaml.safe_load((EXAMPLES / "github-actions" / "hexdbt.yml").read_text())
    return {step["id"]: step["run"] for step in workflow["jobs"][job]["steps"] if "id" in step}


@pytest.mark.dbt
def test_github_actions_build_job_steps_run_as_written(
    emulator: HexEmulator, project: Path, postgres_state_url: str
) -> None:
    """On a fresh runner: the state in PostgreSQL, as the workflow's HEXDBT_STATE_URL says."""
    steps = workflow_steps("build")
    # GitHub gives every step a file to append its summary to.
    summary = project / "step_summary.md"
    env = environment(
        emulator,
        project,
        GITHUB_STEP_SUMMARY=str(summary),
        HEXDBT_STATE_URL=postgres_state_url,
    )
    for step_id in ("state", "dbt", "hex"):
        done = run_shell(steps[step_id], project, env)
        assert done.returncode == 0, (step_id, done.stdout[-3000:], done.stderr[-3000:])
    assert len(started_projects(emulator)) == MAPPED
    assert summary.read_text().count(f"{emulator.url}/app/") == MAPPED
    assert ET.parse(project / "reports" / "hexdbt.xml").getroot().get("tests") == str(MAPPED)


@pytest.mark.dbt
def test_github_actions_validate_job_steps_pass_on_the_sample_project(
    emulator: HexEmulator, project: Path
) -> None:
    steps = workflow_steps("validate")
    env = environment(emulator, project)
    for step_id in ("parse", "validate"):
        done = run_shell(steps[step_id], project, env)
        assert done.returncode == 0, (step_id, done.stdout[-3000:], done.stderr[-3000:])
    assert done.stdout.strip() == (
        f"{MAPPED} mapped Hex projects (3 in hex_mappings.yml, 1 from dbt exposures):"
        " no problems found"
    )
    assert emulator.runs() == []  # validate only dry-runs


def test_github_actions_workflow_has_the_triggers_and_secret_it_documents() -> None:
    text = (EXAMPLES / "github-actions" / "hexdbt.yml").read_text()
    workflow = yaml.safe_load(text)
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"schedule", "workflow_dispatch", "pull_request"}
    assert workflow["env"]["HEX_API_TOKEN"] == "${{ secrets.HEX_API_TOKEN }}"
    assert workflow["env"]["HEXDBT_STATE_URL"] == "${{ secrets.HEXDBT_STATE_URL }}"
    (dbt_step,) = [step for step in workflow["jobs"]["build"]["steps"] if step.get("id") == "dbt"]
    assert dbt_step["continue-on-error"] is True


# ----------------------------------------------------------------------------------------------
# Paradime


@pytest.mark.dbt
def test_paradime_schedule_commands_run_in_order(emulator: HexEmulator, project: Path) -> None:
    document = yaml.safe_load((EXAMPLES / "paradime" / "paradime_schedules.yml").read_text())
    env = environment(emulator, project)
    for schedule in document["schedules"]:
        # The base fields of Paradime's configuration reference, and a cron schedule.
        for key in ("name", "description", "owner_email", "git_branch", "environment"):
            assert schedule[key], (schedule["name"], key)
        assert len(schedule["schedule"].split()) == 5
        for command in schedule["commands"]:
            done = run_shell(command, project, env)
            assert done.returncode == 0, (command, done.stdout[-3000:], done.stderr[-3000:])
    assert len(started_projects(emulator)) == MAPPED


# ----------------------------------------------------------------------------------------------
# Airflow and the Python API


def test_airflow_dag_compiles_and_chains_build_then_refresh(tmp_path: Path) -> None:
    dag = EXAMPLES / "airflow" / "dbt_hex_dag.py"
    py_compile.compile(str(dag), cfile=str(tmp_path / "dag.pyc"), doraise=True)
    text = dag.read_text()
    assert "dbt_build >> hex_refresh" in text
    assert 'trigger_rule="all_done"' in text
    assert '"HEX_API_TOKEN": "{{ var.value.hex_api_token }}"' in text
    assert '"HEXDBT_STATE_URL": "{{ conn.hexdbt_state.get_uri() }}"' in text


def test_python_api_example_against_the_emulator(emulator: HexEmulator, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_api.py")],
        env=environment(emulator, tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 7  # five projects, the run, its status
    assert re.fullmatch(
        r"run [0-9a-f-]{36} ended COMPLETED \(http://127\.0\.0\.1:\d+/app/.+\)", lines[5]
    )
    assert '"status": "COMPLETED"' in lines[6]
    assert len(emulator.runs()) == 1


def test_python_api_example_with_a_bad_token_exits_4(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = hex_emulator_factory(
        scenario={
            "tokens": [{"token": "hxtp_someone_else"}],
            "projects": [{"id": "p-1", "title": "A"}],
        }
    )
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "python_api.py")],
        env=environment(emulator, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 4
    assert done.stderr.startswith("cannot list projects: ")
    assert TOKEN not in done.stderr


# ----------------------------------------------------------------------------------------------
# systemd

SYSTEMD_UNITS = sorted((EXAMPLES / "systemd").glob("*.service"))


def systemd_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Section -> key -> values, continuation lines joined, as systemd reads a unit file."""
    sections: dict[str, dict[str, list[str]]] = {}
    section: dict[str, list[str]] = {}
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        section.setdefault(key, []).append(value)
    return sections


@pytest.mark.parametrize("unit", SYSTEMD_UNITS, ids=lambda unit: unit.name)
def test_systemd_unit_runs_a_real_hexdbt_daemon_and_passes_systemd_s_own_check(
    unit: Path, tmp_path: Path
) -> None:
    service = systemd_unit(unit)["Service"]
    (exec_start,) = service["ExecStart"]
    program, _, arguments = exec_start.partition(" ")
    assert program.endswith("/bin/hexdbt")
    assert _problem_with(arguments) is None
    assert "--log-format json" in arguments  # journald keeps one JSON object per event
    state_dir = "/var/lib/hexdbt"
    assert service["Environment"] == [f"HEXDBT_STATE_DIR={state_dir}"]
    assert service["ReadWritePaths"] == [state_dir]  # the one folder ProtectSystem leaves writable
    assert (service["KillSignal"], service["ProtectSystem"]) == (["SIGTERM"], ["strict"])
    assert service["EnvironmentFile"] == [f"/etc/hexdbt/{unit.stem.removeprefix('hexdbt-')}.env"]
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # systemd checks that the program exists: the unit as installed here, with this hexdbt.
    installed = tmp_path / unit.name
    installed.write_text(unit.read_text().replace(program, str(BIN / "hexdbt")))
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(installed)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (verified.returncode, verified.stderr) == (0, "")


def test_systemd_units_run_the_watcher_and_the_relay_on_one_state() -> None:
    daemons = {
        systemd_unit(unit)["Service"]["ExecStart"][0].split()[1]: unit.name
        for unit in SYSTEMD_UNITS
    }
    assert daemons == {"watch": "hexdbt-watch.service", "relay": "hexdbt-relay.service"}
    readme = (EXAMPLES / "systemd" / "README.md").read_text()
    assert all(name in readme for name in daemons.values())


# ----------------------------------------------------------------------------------------------
# Every command line in examples/


_PROSE = re.compile(r"^\s*(#|//|description:|- name:|name:)")
# Where a command starts: at the beginning of a line (after a YAML "- ", "run: " or a shell
# prompt), after a path ("$BIN_DIR/hexdbt"), a quote, or a shell operator.
_HEXDBT = re.compile(
    r"(?:^\s*(?:-\s+|run:\s+|\$\s+)?|/|[\"']|&&\s+|\|\s+)hexdbt ([a-z][a-z-]*(?: (?:\"\$\w+\"|[^\"'`#\n])*)?)"
)


def _command_lines(path: Path) -> Iterator[str]:
    """Lines that are commands: outside comments, and in Markdown only inside code blocks."""
    in_code = path.suffix != ".md"
    for line in path.read_text(encoding="utf-8").splitlines():
        if path.suffix == ".md" and line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        if in_code and not _PROSE.match(line):
            yield line


def _hexdbt_command_lines() -> Iterator[tuple[str, str]]:
    for path in sorted(EXAMPLES.rglob("*")):
        if not path.is_file() or path.suffix in (".pyc", ".duckdb"):
            continue
        for line in _command_lines(path):
            for match in _HEXDBT.finditer(line):
                yield f"{path.relative_to(ROOT)}: {line.strip()}", match.group(1)


def _problem_with(text: str) -> str | None:
    """Why ``hexdbt <text>`` would be refused by the CLI, or None."""
    words = shlex.split(text.replace("\\", " "))
    command = main.commands.get(words[0])
    if command is None:
        return f"no command {words[0]!r}"
    if words[0] == "dbt":
        return None  # the rest is dbt's own arguments
    # A shell variable stands for a value the reader's environment gives (a name, a path or a
    # number: "1" is each of them).
    arguments = [
        "1" if word.startswith("$") else word
        for word in words[1:]
        if not word.startswith(("&", "|", ">"))
    ]
    try:
        # Under hexdbt's own context, as the CLI parses it (-h among the help options: click
        # caches a command's help option the first time it is built).
        parent = main.make_context("hexdbt", [], resilient_parsing=True)
        command.make_context(words[0], arguments, parent=parent)
    except click.exceptions.Exit:
        pass
    except click.MissingParameter:
        pass  # a placeholder left for the reader, such as <project-id>
    except click.UsageError as exc:
        return exc.format_message()
    return None


def test_every_hexdbt_command_in_examples_exists_with_its_options() -> None:
    lines = list(_hexdbt_command_lines())
    assert len(lines) >= 8
    problems = [f"{where}: {problem}" for where, text in lines if (problem := _problem_with(text))]
    assert problems == []


def test_the_command_check_refuses_what_the_cli_refuses() -> None:
    assert _problem_with("run --report-junit reports/hex.xml") is None
    assert _problem_with("dbt build --anything-dbt-takes") is None
    assert "--report-junitt" in (_problem_with("run --report-junitt x.xml") or "")
    assert _problem_with("runn") == "no command 'runn'"
