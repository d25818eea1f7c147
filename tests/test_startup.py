"""`hexdbt --help` and `hexdbt <command> --help` stay fast: no dbt, emulator, watchdog, rich or
prometheus-client import.

Each check runs in a fresh interpreter (this test process has imported everything already). An
import hook in that interpreter records where a forbidden module was first imported from, so a
failure names the hexdbt file and line to fix instead of just the module.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest
from terminal_helpers import run_in_a_terminal

# Top-level packages whose import costs a --help real time (dbt alone: seconds).
FORBIDDEN = (
    "dbt",
    "watchdog",
    "requests",
    "urllib3",
    "jinja2",
    "duckdb",
    "rich",
    "prometheus_client",
    "starlette",
    "uvicorn",
    "ruamel",
    "starlette",
    "uvicorn",
)
FORBIDDEN_HEXDBT = (
    "hexdbt.emulator",
    "hexdbt.engine",
    "hexdbt.factory",
    "hexdbt.ledger",
    "hexdbt.feeders",
    "hexdbt.page",
)

_PROBE = r"""
import importlib.abc, json, sys, traceback

FORBIDDEN = set(json.loads(sys.argv[1]))
FORBIDDEN_HEXDBT = tuple(json.loads(sys.argv[2]))
ARGS_LIST = json.loads(sys.argv[3])
first_import = {}

class Recorder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        hit = top if top in FORBIDDEN else next(
            (m for m in FORBIDDEN_HEXDBT if name == m or name.startswith(m + ".")), None)
        if hit and hit not in first_import:
            frames = [f for f in traceback.extract_stack()[:-1]
                      if "/hexdbt/" in f.filename.replace("\\", "/")]
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            first_import[hit] = where
        return None

sys.meta_path.insert(0, Recorder())
from hexdbt.cli import main

report = []
for args in ARGS_LIST:
    if args == ["*"]:
        args_list = [[name, "--help"] for name in sorted(main.commands)]
    else:
        args_list = [args]
    for each in args_list:
        before = dict(first_import)
        try:
            main(each, standalone_mode=False)
        except SystemExit:
            pass
        report.append({"args": each, "new": {k: v for k, v in first_import.items() if k not in before}})
print(json.dumps({"imports": first_import, "steps": report}))
"""


def probe(*args_list: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            json.dumps(FORBIDDEN),
            json.dumps(FORBIDDEN_HEXDBT),
            json.dumps(list(args_list)),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.parametrize("args", [["--help"], ["trigger", "--help"], ["--version"]])
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    imports = probe(args)["imports"]
    assert imports == {}, f"hexdbt {' '.join(args)} imported (module: first importer) {imports}"


def test_every_commands_help_imports_nothing_heavy() -> None:
    steps = probe(["*"])["steps"]
    assert len(steps) >= 8  # run, dbt, trigger, watch, emulator, validate, status, ...
    offenders = {" ".join(step["args"]): step["new"] for step in steps if step["new"]}
    assert offenders == {}, f"--help imported (module: first importer) {offenders}"


def test_the_probe_notices_a_heavy_import() -> None:
    """The hook itself works: running a real command (emulator's scenario dump) imports it."""
    steps = probe(["emulator", "--print-default-scenario"])["steps"]
    assert "hexdbt.emulator" in steps[0]["new"]
    assert re.search(r"/hexdbt/cli/emulator_command\.py:\d+$", steps[0]["new"]["hexdbt.emulator"])


def _output_in_a_terminal(args: list[str], environment: dict[str, str]) -> bytes:
    """What a command writes to a real pseudo-terminal (stdout and stderr both on it)."""
    import os

    return run_in_a_terminal(args, {**os.environ, **environment})[1]


@pytest.mark.parametrize("no_color", ["1", ""])
def test_help_in_a_terminal_has_no_escape_sequences(no_color: str) -> None:
    """No command prints colour: help and errors are plain text in a terminal too."""
    for args in (["--help"], ["trigger", "--help"], ["trigger"]):
        output = _output_in_a_terminal(args, {"NO_COLOR": no_color})
        assert output.strip(), args
        assert b"\x1b" not in output, (args, output[:200])
