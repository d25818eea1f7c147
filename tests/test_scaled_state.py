"""A demo clock (HEXDBT_TIME_SCALE) never writes into the state an unscaled hexdbt uses.

A scaled clock reads ahead of real time, so the calls it records in a budget lie in the future of
every unscaled process. Left in the state that every hexdbt of the machine shares by default,
they made the next unscaled command wait for slots an hour away and give up (exit 4, "no slot
before the deadline"). With a scale and no state named, the ledger and the budget are a folder of
their own per scale and origin; a state that is named is used as named. These tests run the real
CLI on the user's default state folder (XDG_STATE_HOME under tmp_path).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner
from emulator_helpers import CUSTOMER_HEALTH

from hexdbt.cli import main
from hexdbt.clock import ManualClock, ScaledClock
from hexdbt.emulator import HexEmulator
from hexdbt.hex.budget import BUDGET_FILE

TOKEN = "hxtp_scaled_state"
SCALE = 60.0
# Two calls a minute besides RunProject: two calls of a scaled process fill the window.
TIGHT_BUDGET = "other=2/60"
EmulatorFactory = Callable[..., HexEmulator]


@pytest.fixture
def default_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user's state folder, as hexdbt finds it when no state is named."""
    monkeypatch.delenv("HEXDBT_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    return tmp_path / "xdg-state" / "hexdbt"


def _hexdbt(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "hexdbt", *args],
        env={**os.environ, "HEX_API_TOKEN": TOKEN, "HEXDBT_BUDGET": TIGHT_BUDGET, **environment},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert TOKEN not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _invocation_sources(status: subprocess.CompletedProcess[str]) -> list[str]:
    """How each invocation in `hexdbt status --json` came in, newest first."""
    assert status.returncode == 0, status.stderr
    return [invocation["source"] for invocation in json.loads(status.stdout)["invocations"]]


def _latest_call(folder: Path) -> float:
    with closing(sqlite3.connect(folder / BUDGET_FILE)) as db:
        (latest,) = db.execute("SELECT max(at) FROM calls").fetchone()
    return float(latest)


def test_a_scaled_process_keeps_its_calls_out_of_the_budget_of_the_unscaled_ones(
    hex_emulator_factory: EmulatorFactory, default_state: Path
) -> None:
    # The demo began two real minutes ago: its clock now reads two hours ahead.
    origin = time.time() - 120
    emulator = hex_emulator_factory(clock=ScaledClock.since(origin, SCALE))
    demo = {
        "HEX_BASE_URL": emulator.url,
        "HEXDBT_TIME_SCALE": repr(SCALE),
        "HEXDBT_TIME_ORIGIN": repr(origin),
    }
    triggered = _hexdbt("trigger", CUSTOMER_HEALTH, "--json", **demo)
    assert triggered.returncode == 0, triggered.stderr
    listed = _hexdbt("list-projects", "--limit", "100", "--json", **demo)
    assert listed.returncode == 0, listed.stderr
    scaled_state = default_state / f"scaled-60x-from-{origin!r}"
    assert _latest_call(scaled_state) > time.time() + 3600

    # The next unscaled command, on the same Hex and token, finds its budget free.
    unscaled = _hexdbt("list-projects", "--limit", "100", "--json", HEX_BASE_URL=emulator.url)
    assert unscaled.returncode == 0, unscaled.stderr
    assert len(json.loads(unscaled.stdout)) == len(json.loads(listed.stdout))
    assert _latest_call(default_state) < time.time() + 1
    # Nor does it see the demo's ledger: what `status` lists is the demo's own.
    status = _hexdbt("status", "--json", HEX_BASE_URL=emulator.url)
    assert _invocation_sources(status) == []
    assert _invocation_sources(_hexdbt("status", "--json", **demo)) == ["trigger"]


@pytest.mark.parametrize(
    ("environment", "where"),
    [
        ({}, ""),
        ({"HEXDBT_TIME_SCALE": "60", "HEXDBT_TIME_ORIGIN": "1767225600"}, "/scaled-60x-from-1767225600"),
        ({"HEXDBT_TIME_SCALE": "0.5", "HEXDBT_TIME_ORIGIN": "1767225600.25"}, "/scaled-0.5x-from-1767225600.25"),
    ],
)  # fmt: skip
def test_the_state_folder_is_the_user_s_or_one_per_scale_and_origin(
    default_state: Path, environment: dict[str, str], where: str
) -> None:
    result = CliRunner().invoke(main, ["state", "check", "--json"], env=environment)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["where"] == f"{default_state}{where}"


def test_a_named_state_is_used_as_named_on_a_scaled_clock(tmp_path: Path) -> None:
    named = tmp_path / "demo-state"
    result = CliRunner().invoke(
        main,
        ["state", "check", "--json"],
        env={"HEXDBT_STATE_DIR": str(named), "HEXDBT_TIME_SCALE": "60"},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["where"] == str(named)


def test_a_scaled_clock_without_an_origin_refuses_the_default_state_in_one_line(
    default_state: Path,
) -> None:
    result = CliRunner().invoke(
        main, ["list-projects"], env={"HEX_API_TOKEN": TOKEN, "HEXDBT_TIME_SCALE": "60"}
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: HEXDBT_TIME_SCALE without HEXDBT_TIME_ORIGIN: each process would run a clock of "
        f"its own, and hexdbt will not keep a ledger and a budget on it in {default_state}",
        "Hint: export HEXDBT_TIME_ORIGIN=$(date +%s) for every process of the demo (the "
        "emulator's --time-origin too), or name a state of its own with HEXDBT_STATE_DIR",
    ]
    assert not default_state.exists() or not any(default_state.iterdir())


def test_a_host_whose_clock_is_merely_ahead_keeps_the_shared_state(
    hex_emulator: HexEmulator, default_state: Path
) -> None:
    """Only HEXDBT_TIME_SCALE moves the state: a host ahead of Hex's time (no NTP, say) writes
    into the one every hexdbt of the machine shares, as it always did."""
    ahead = ManualClock(time.time() + 50)
    result = CliRunner().invoke(
        main,
        ["trigger", CUSTOMER_HEALTH, "--json"],
        env={"HEX_API_TOKEN": TOKEN, "HEX_BASE_URL": hex_emulator.url},
        obj={"clock": ahead},
    )
    assert result.exit_code == 0, result.output
    status = _hexdbt("status", "--json", HEX_BASE_URL=hex_emulator.url)
    assert _invocation_sources(status) == ["trigger"]
    assert sorted(path.name for path in default_state.iterdir()) == [
        BUDGET_FILE,
        "ledger.sqlite3",
    ]
