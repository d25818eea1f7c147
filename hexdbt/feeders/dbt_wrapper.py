"""`hexdbt dbt ...`: run the user's dbt as a subprocess and dispatch Hex projects from its events.

dbt runs with ``--log-format json --log-level debug`` put before the user's arguments (so
``NodeStart``/``NodeFinished`` reach stdout), in its own process group (so a Ctrl-C in the
terminal reaches dbt once, through hexdbt, not twice). Each event's human message is printed as
dbt would have printed it with the user's own ``--log-format``/``--log-level``/``--quiet``, which
are taken out of the arguments given to dbt; the log file keeps the user's settings because
hexdbt passes them explicitly as ``--log-format-file``/``--log-level-file`` (dbt otherwise lets
the console flags decide the file's format too).

Threads: the caller's thread runs the engine's loop (sending and polling); one reader thread
reads dbt's stdout, echoes it and feeds ``StreamDispatch``, whose submissions wake the loop at
once; SIGINT/SIGTERM are forwarded to dbt and stop the engine, which then treats started Hex runs
as ``hexdbt run`` does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hexdbt.dbt.artifacts import Invocation, Manifest, load_manifest
from hexdbt.dbt.events import DbtEvent, EchoFormat, human_line, parse_log_line
from hexdbt.dbt.locate import ArtifactPaths
from hexdbt.errors import ArtifactError, ConfigError
from hexdbt.planner.stream import Settlement, StreamPlanner, load_final_invocation
from hexdbt.signals import Signals

if TYPE_CHECKING:
    from hexdbt.engine import Engine

Log = Callable[[str], None]

# dbt's subcommands: the first of these among the arguments names the command. `docs generate`
# and `source freshness` keep dbt's own `which` (generate, freshness): neither refreshes data.
DBT_COMMANDS = frozenset(
    {
        "build", "clean", "clone", "compile", "debug", "deps", "docs", "init", "list", "ls",
        "parse", "retry", "run", "run-operation", "seed", "show", "snapshot", "source", "test",
    }
)  # fmt: skip
_SUBCOMMANDS = {"docs": {"generate", "serve"}, "source": {"freshness"}}

# Options that take a value (so their value is not mistaken for the command).
_VALUED_GLOBAL_OPTIONS = frozenset(
    {
        "--log-format", "--log-format-file", "--log-level", "--log-level-file", "--log-path",
        "--profiles-dir", "--project-dir", "--target-path", "--printer-width",
        "--log-file-max-bytes", "--warn-error-options", "--record-timing-info", "-r",
        "--invocation-env", "--vars", "--target", "-t", "--profile", "--threads",
    }
)  # fmt: skip

LEVEL_CHOICES = ("debug", "info", "warn", "error", "none")
FORMAT_CHOICES = ("text", "debug", "json", "default")


@dataclass(frozen=True, slots=True)
class DbtArgs:
    """The user's dbt command line, and what hexdbt reads from it."""

    passed: tuple[str, ...]  # what is given to dbt after hexdbt's own flags
    command: str
    project_dir: str | None
    target_path: str | None
    vars: Mapping[str, Any]
    echo: EchoFormat
    file_flags: tuple[str, ...] = ()

    def command_line(self, executable: str) -> list[str]:
        forced = ["--log-format", "json", "--log-level", "debug", "--no-quiet", *self.file_flags]
        return [executable, *forced, *self.passed]


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "t", "yes", "y")


def _option_value(args: Sequence[str], index: int, name: str) -> tuple[str, int]:
    """The value of ``name`` at ``args[index]`` (``--x v`` or ``--x=v``) and the next index."""
    item = args[index]
    if item.startswith(name + "="):
        return item.split("=", 1)[1], index + 1
    if index + 1 >= len(args):
        raise ConfigError(f"dbt option {name} needs a value")
    return args[index + 1], index + 2


def _parse_vars(text: str) -> dict[str, Any]:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--vars {text!r}: not YAML: {exc}") from exc
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"--vars {text!r}: must be a YAML mapping, like '{{key: value}}'")
    return value


def parse_dbt_args(args: Sequence[str], environ: Mapping[str, str] | None = None) -> DbtArgs:
    """Read what hexdbt needs from dbt's arguments; take out the console log flags (hexdbt
    honours them itself) and pin the log file's settings to what the user would have had."""
    environ = os.environ if environ is None else environ
    if not args:
        raise ConfigError(
            "no dbt command given", hint="for example: hexdbt dbt build --select marts"
        )
    passed: list[str] = []
    command: str | None = None
    project_dir = target_path = None
    dbt_vars: dict[str, Any] = {}
    log_format = log_level = None
    quiet = _truthy(environ.get("DBT_QUIET"))
    debug = _truthy(environ.get("DBT_DEBUG"))
    given_file_format = given_file_level = False
    index = 0
    while index < len(args):
        item = args[index]
        name = item.split("=", 1)[0]
        if name in ("--log-format", "--log-level"):
            value, index = _option_value(args, index, name)
            choices = FORMAT_CHOICES if name == "--log-format" else LEVEL_CHOICES
            if value not in choices:
                raise ConfigError(
                    f"dbt option {name} {value!r}: choose one of {', '.join(choices)}"
                )
            if name == "--log-format":
                log_format = value
            else:
                log_level = value
            continue
        if item in ("-q", "--quiet", "--no-quiet"):
            quiet = item != "--no-quiet"
            index += 1
            continue
        if item in ("-d", "--debug"):
            debug = True
        elif item == "--no-debug":
            debug = False
        if name in _VALUED_GLOBAL_OPTIONS:
            value, next_index = _option_value(args, index, name)
            if name == "--project-dir":
                project_dir = value
            elif name == "--target-path":
                target_path = value
            elif name == "--vars":
                dbt_vars = _parse_vars(value)
            elif name == "--log-format-file":
                given_file_format = True
            elif name == "--log-level-file":
                given_file_level = True
            passed.extend(args[index:next_index])
            index = next_index
            continue
        if command is None and not item.startswith("-") and item in DBT_COMMANDS:
            command = item
            following = args[index + 1] if index + 1 < len(args) else None
            if item in _SUBCOMMANDS and following in _SUBCOMMANDS[item]:
                command = following
            if item == "ls":
                command = "list"
        passed.append(item)
        index += 1
    if command is None:
        raise ConfigError(
            f"no dbt command in {' '.join(args)!r}",
            hint="hexdbt's own options come first, then the dbt command: hexdbt dbt --no-wait build",
        )
    user_format = log_format or environ.get("DBT_LOG_FORMAT") or "default"
    user_level = log_level or environ.get("DBT_LOG_LEVEL") or "info"
    if debug:
        user_level = "debug"
    if quiet and user_level != "none":
        user_level = "error"
    file_flags: list[str] = []
    if not given_file_format and not environ.get("DBT_LOG_FORMAT_FILE"):
        file_flags += ["--log-format-file", log_format or environ.get("DBT_LOG_FORMAT") or "debug"]
    if not given_file_level and not environ.get("DBT_LOG_LEVEL_FILE"):
        file_flags += ["--log-level-file", log_level or environ.get("DBT_LOG_LEVEL") or "debug"]
    return DbtArgs(
        passed=tuple(passed),
        command=command,
        project_dir=project_dir,
        target_path=target_path,
        vars=dbt_vars,
        echo=EchoFormat(log_format=user_format, log_level=user_level),
        file_flags=tuple(file_flags),
    )


def find_dbt_executable(environ: Mapping[str, str] | None = None) -> str:
    """``dbt`` on PATH, else next to this Python (a virtualenv that was not activated)."""
    environ = os.environ if environ is None else environ
    found = shutil.which("dbt", path=environ.get("PATH"))
    if found:
        return found
    beside = Path(sys.executable).parent / "dbt"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise ConfigError(
        "dbt not found on PATH or next to this Python",
        hint="install dbt-core and your adapter (e.g. pip install dbt-core dbt-duckdb)",
    )


# ----------------------------------------------------------------------------------------------
# The planner and the engine together


@dataclass
class StreamDispatch:
    """Feeds events to the planner and its triggers to the engine; settles at the end.

    Shared by the wrapper (events from dbt's stdout) and the dbtRunner callback (events from a
    queue). ``stop_submitting`` (after an interruption) keeps anything new from being sent.
    """

    planner: StreamPlanner
    engine: Engine
    source: str
    stop_submitting: threading.Event = field(default_factory=threading.Event)
    submitted: list[str] = field(default_factory=list)

    def on_event(self, event: DbtEvent) -> None:
        if self.stop_submitting.is_set():
            return
        triggers = self.planner.feed(event)
        if triggers and self.planner.invocation_id is not None:
            self.engine.submit_triggers(
                self.planner.invocation_id, self.planner.command, triggers, source=self.source
            )
            self.submitted.extend(trigger.name for trigger in triggers)

    def finish(
        self, paths: ArtifactPaths | None, *, interrupted: bool, dbt_exit_code: int | None
    ) -> Settlement:
        """Plan what is undecided from the final run_results.json, and submit it."""
        run_results = self.planner.run_results_path or (paths.run_results if paths else None)
        final: Invocation | None = None
        if run_results is not None and self.planner.invocation_id is not None:
            final = load_final_invocation(run_results, self.planner.invocation_id)
        manifest: Manifest | None = self.planner.manifest
        if manifest is None and paths is not None and final is not None:
            try:
                manifest = load_manifest(paths.manifest)
            except ArtifactError:
                manifest = None
        reason = None
        if interrupted:
            reason = "dbt was interrupted before this project's models were done"
        elif final is None:
            reason = (
                f"dbt ended (exit code {dbt_exit_code}) without writing run_results.json"
                if dbt_exit_code is not None
                else "dbt wrote no run_results.json for this invocation"
            )
        settlement = self.planner.settle(final, manifest=manifest, undecided_reason=reason)
        if settlement.new_triggers and not interrupted:
            invocation_id = settlement.plan.invocation_id
            self.engine.submit_triggers(
                invocation_id,
                settlement.plan.command,
                settlement.new_triggers,
                source=self.source,
                skipped=settlement.plan.skipped,
            )
            self.submitted.extend(trigger.name for trigger in settlement.new_triggers)
        return settlement


# ----------------------------------------------------------------------------------------------
# The dbt process


class DbtProcess:
    """The dbt subprocess, once started: where SIGINT and SIGTERM are passed on (every time)."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None

    def forward(self, signum: int) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with suppress(ProcessLookupError):  # it ended meanwhile
                process.send_signal(signum)


def start_dbt(
    command_line: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[str]:
    # stderr is not captured: dbt's own errors (bad flags, crashes) reach the user unchanged.
    # Its own process group: a terminal's Ctrl-C reaches hexdbt, which forwards it once.
    try:
        return subprocess.Popen(
            list(command_line),
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            process_group=0,
        )
    except OSError as exc:
        raise ConfigError(f"cannot start dbt ({command_line[0]}): {exc.strerror}") from exc


def pump_events(
    stdout: IO[str],
    *,
    echo: EchoFormat,
    write: Callable[[str], None],
    on_event: Callable[[DbtEvent], None],
) -> None:
    """Read dbt's JSON log lines: echo each as dbt would have printed it, then act on it."""
    for line in stdout:
        event = parse_log_line(line)
        if event is None:
            if line.strip():
                write(line.rstrip("\n"))
            continue
        shown = human_line(event, echo, raw_line=line)
        if shown is not None:
            write(shown)
        on_event(event)


@dataclass
class WrapperResult:
    dbt_exit_code: int
    interrupted_by: int | None
    settlement: Settlement
    invocation_id: str | None


def run_dbt_and_dispatch(
    args: DbtArgs,
    stream: StreamDispatch,
    *,
    executable: str,
    paths: ArtifactPaths | None,
    write: Callable[[str], None],
    signals: Signals,
    dbt: DbtProcess,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> WrapperResult:
    """Run dbt, dispatching as its nodes finish; return when dbt and every Hex run are done.

    Call from the main thread with ``signals`` installed, forwarding to ``dbt``: the
    engine's loop runs here.
    """
    process = start_dbt(args.command_line(executable), env=env, cwd=cwd)
    dbt.process = process
    failure: list[BaseException] = []
    outcome: dict[str, Any] = {}

    def read() -> None:
        try:
            assert process.stdout is not None
            with process.stdout:
                pump_events(process.stdout, echo=args.echo, write=write, on_event=stream.on_event)
            exit_code = process.wait()
            interrupted = signals.stop.is_set()
            outcome["exit_code"] = exit_code
            outcome["settlement"] = stream.finish(
                paths, interrupted=interrupted, dbt_exit_code=exit_code
            )
        except BaseException as exc:  # re-raised in the caller's thread below
            failure.append(exc)
            if process.poll() is None:
                process.terminate()
        finally:
            stream.engine.close()

    reader = threading.Thread(target=read, name="hexdbt-dbt-reader", daemon=True)
    reader.start()
    try:
        stream.engine.run()
    finally:
        if signals.stop.is_set():
            stream.stop_submitting.set()
        reader.join()
    if failure:
        raise failure[0]
    return WrapperResult(
        dbt_exit_code=int(outcome["exit_code"]),
        interrupted_by=signals.signum,
        settlement=outcome["settlement"],
        invocation_id=stream.planner.invocation_id,
    )
