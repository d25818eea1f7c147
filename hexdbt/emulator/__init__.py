"""A local Hex API emulator: Hex's seven endpoints, its limits and failures, on a clock you control.

    from hexdbt.emulator import HexEmulator
    with HexEmulator() as emu:      # the default scenario on a free port
        emu.url                     # "http://127.0.0.1:PORT"; the API is under emu.url + "/api/v1"

See docs/emulator.md for scenarios, settings, faults and the admin API.
"""

from __future__ import annotations

from hexdbt.emulator.exchange import token_fingerprint
from hexdbt.emulator.faults import Fault, FaultError, FaultRule
from hexdbt.emulator.runs import RunRecord
from hexdbt.emulator.scenario import (
    HistoryRun,
    ProjectSpec,
    RunBehaviour,
    Scenario,
    ScenarioError,
    Settings,
    TokenSpec,
    default_scenario,
)
from hexdbt.emulator.server import HexEmulator

__all__ = [
    "Fault",
    "FaultError",
    "FaultRule",
    "HexEmulator",
    "HistoryRun",
    "ProjectSpec",
    "RunBehaviour",
    "RunRecord",
    "Scenario",
    "ScenarioError",
    "Settings",
    "TokenSpec",
    "default_scenario",
    "token_fingerprint",
]
