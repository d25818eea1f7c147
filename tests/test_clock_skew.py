"""hexdbt's clock ahead of Hex's and a RunProject whose answer is lost: `hexdbt trigger` and
`hexdbt run` each start the project once, and follow the run the lost POST created."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from engine_helpers import project_id, scenario, started_runs, write_project

from hexdbt.cli import main
from hexdbt.clock import ManualClock
from hexdbt.emulator import HexEmulator

TOKEN = "hxtp_clock_skew_secret"
EmulatorFactory = Callable[..., HexEmulator]


def _invoke(emulator: HexEmulator, clock: ManualClock, args: list[str]) -> dict[str, object]:
    """The command on hexdbt's own clock (not Hex's): one JSON document back."""
    result = CliRunner().invoke(
        main,
        [*args, "--json"],
        env={"HEX_BASE_URL": emulator.url, "HEX_API_TOKEN": TOKEN},
        obj={"clock": clock},
    )
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    document: dict[str, object] = json.loads(result.stdout)
    return document


@pytest.mark.parametrize("ahead_s", [5.0, 50.0, 90.0, 300.0])
@pytest.mark.parametrize("command", ["trigger", "run"])
def test_a_lost_answer_with_hexdbt_s_clock_ahead_starts_the_project_once(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path, command: str, ahead_s: float
) -> None:
    # Started at once (no pending): Hex reports a start time, earlier than hexdbt's intent reads.
    document = scenario(1)
    document["projects"][0]["runs"]["pending_s"] = 0
    emulator = hex_emulator_factory(scenario=document, clock=ManualClock())
    emulator.inject_faults("RunProject", sequence=["lost_reset"])  # run created, answer lost
    ahead = ManualClock(emulator.clock.now() + ahead_s)
    if command == "trigger":
        args = ["trigger", project_id(0)]
    else:
        target, mappings = write_project(tmp_path, 1)
        args = ["run", "--project-dir", str(tmp_path), "--mappings", str(mappings), "--no-wait"]
        assert target.is_dir()
    report = _invoke(emulator, ahead, args)
    (run,) = emulator.runs(project_id(0))
    assert run.start_time is not None
    assert started_runs(emulator.journal()) == {project_id(0): 1}
    (project,) = report["projects"]  # type: ignore[misc]
    assert (project["outcome"], project["runId"]) == ("started", run.run_id)
