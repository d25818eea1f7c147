"""Several real processes share one budget against the emulator without a single 429."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import CUSTOMER_HEALTH_ID

pytestmark = pytest.mark.slow  # real processes: left out of make test-fast

TOKEN = "hxtp_shared_budget_secret"
SCALE = 30.0  # one emulated minute is two real seconds
PROCESSES = 3
CALLS_EACH = 20  # 60 calls against 30 a minute: the processes must wait for each other

CHILD = """
import sys, time
from pathlib import Path
from hexdbt.clock import ScaledClock
from hexdbt.hex.budget import BudgetLimits, SharedBudget
from hexdbt.hex.client import HexClient

url, token, state, emulated_then, real_then, scale, calls, project = sys.argv[1:9]
# The emulator's clock, reconstructed: same factor, same reading for the same real moment.
clock = ScaledClock(float(scale), start=float(emulated_then) + (time.time() - float(real_then)) * float(scale))
# A margin of 5 emulated seconds covers ~150 ms of real network and scheduling delay.
budget = SharedBudget(Path(state), token, url, clock=clock, limits=BudgetLimits(margin_s=5.0))
client = HexClient(url, token, clock=clock, budget=budget, get_attempts=1)
for _ in range(int(calls)):
    client.get_project(project)
"""


def test_processes_sharing_a_token_share_one_budget(
    hex_emulator_factory: Callable[..., HexEmulator], tmp_path: Path
) -> None:
    emu = hex_emulator_factory(time_scale=SCALE)
    real_then, emulated_then = time.time(), emu.clock.now()
    env = {key: value for key, value in os.environ.items() if not key.startswith("HEX_")}
    state = tmp_path / "budget.sqlite3"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                emu.url,
                TOKEN,
                str(state),
                repr(emulated_then),
                repr(real_then),
                str(SCALE),
                str(CALLS_EACH),
                CUSTOMER_HEALTH_ID,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
        assert TOKEN not in stdout + stderr
    statuses = [entry["status"] for entry in emu.journal() if entry["operation"] == "GetProject"]
    assert len(statuses) == PROCESSES * CALLS_EACH
    assert 429 not in statuses
    assert TOKEN.encode() not in state.read_bytes()
