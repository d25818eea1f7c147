"""pytest fixtures for a local Hex API, registered through the ``pytest11`` entry point.

    def test_my_job(hex_emulator):                  # default scenario, ManualClock
        run_my_job(base_url=hex_emulator.url, clock=hex_emulator.clock)

    def test_flaky(hex_emulator_factory):
        emu = hex_emulator_factory(scenario="my_scenario.yml")

Every emulator a fixture starts is stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hexdbt.clock import ManualClock
from hexdbt.emulator.server import HexEmulator

EmulatorFactory = Callable[..., HexEmulator]


@pytest.fixture
def hex_emulator_factory() -> Iterator[EmulatorFactory]:
    """Start emulators with any ``HexEmulator`` arguments; the clock defaults to a ManualClock."""
    started: list[HexEmulator] = []

    def start(**options: Any) -> HexEmulator:
        if "clock" not in options and options.get("time_scale", 1.0) == 1.0:
            options["clock"] = ManualClock()
        emulator = HexEmulator(**options).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def hex_emulator(hex_emulator_factory: EmulatorFactory) -> HexEmulator:
    """An emulator serving the default scenario on a ManualClock, on a free 127.0.0.1 port."""
    return hex_emulator_factory()
