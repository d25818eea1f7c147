"""--log-format json: every line a long-running command writes on stderr is one JSON event."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from engine_helpers import scenario, write_project

from hexdbt.cli import main
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import CUSTOMER_HEALTH_ID

TOKEN = "hxtp_log_format_secret"


def _events(emulator: HexEmulator, args: list[str]) -> tuple[int, list[dict[str, Any]]]:
    result = CliRunner().invoke(
        main,
        args,
        env={"HEX_API_TOKEN": TOKEN, "HEX_BASE_URL": emulator.url},
        obj={"clock": emulator.clock},
    )
    assert TOKEN not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return result.exit_code, [json.loads(line) for line in lines]


def test_trigger_wait_logs_json_events(hex_emulator: HexEmulator) -> None:
    code, events = _events(
        hex_emulator,
        [
            "trigger",
            CUSTOMER_HEALTH_ID,
            "--input-param",
            "region=EU",
            "--wait",
            "--log-format",
            "json",
        ],
    )
    assert code == 0
    assert events[0]["event"] == "note"
    assert "updatePublishedResults=false" in events[0]["message"]
    (ended,) = [e for e in events if e["event"] == "run_ended"]
    assert (ended["status"], ended["outcome"]) == ("COMPLETED", "completed")
    assert [e["event"] for e in events if e["event"].startswith("run_")] == [
        "run_followed",
        "run_status",
        "run_ended",
    ]
    assert [e["status"] for e in events if e["event"] == "run_status"] == ["RUNNING"]
    assert all({"time", "level", "event"} <= set(event) for event in events)


def test_run_logs_json_events(
    hex_emulator_factory: Callable[..., HexEmulator], tmp_path: Path
) -> None:
    emulator = hex_emulator_factory(scenario=scenario(2))
    _, mappings = write_project(tmp_path, 2)
    args = ["run", "--project-dir", str(tmp_path), "--mappings", str(mappings)]
    code, events = _events(emulator, [*args, "--log-format", "json"])
    assert code == 0
    started = [e["message"] for e in events if e["event"] == "note"]
    assert len(started) == 2
    assert all("started run" in message for message in started)
    ended = [e for e in events if e["event"] == "run_ended" and e["outcome"] == "completed"]
    assert {e["name"] for e in ended} == {"app_0", "app_1"}
