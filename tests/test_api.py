"""The seed's Python functions: plain dicts, error dicts instead of exceptions."""

from __future__ import annotations

from pathlib import Path

import pytest

import hexdbt
from hexdbt.clock import ManualClock
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import CUSTOMER_HEALTH_ID, ERRORS_ID, FLAKY_ID, SCHEDULED_ID
from hexdbt.hex.budget import SharedBudget
from hexdbt.hex.client import HexClient

TOKEN = "hxtp_api_secret_987"


def _client(emu: HexEmulator, tmp_path: Path) -> HexClient:
    assert isinstance(emu.clock, ManualClock)
    budget = SharedBudget(tmp_path / "budget.sqlite3", TOKEN, emu.url, clock=emu.clock)
    return HexClient(emu.url, TOKEN, clock=emu.clock, budget=budget)


def test_list_hex_projects_from_the_environment(
    hex_emulator: HexEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEX_API_TOKEN", TOKEN)
    monkeypatch.setenv("HEX_BASE_URL", hex_emulator.url)
    projects = hexdbt.list_hex_projects(limit=3)
    assert isinstance(projects, list)
    assert len(projects) == 3
    assert all(isinstance(item["projectId"], str) for item in projects)


def test_missing_token_is_an_error_dict() -> None:
    result = hexdbt.list_hex_projects()
    assert isinstance(result, dict)
    assert result["status"] == "error"
    assert "HEX_API_TOKEN" in result["message"]


def test_trigger_and_wait_returns_the_final_run(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    result = hexdbt.trigger_hex_project(
        CUSTOMER_HEALTH_ID, wait_for_completion=True, client=_client(hex_emulator, tmp_path)
    )
    assert result["status"] == "COMPLETED"
    assert result["success"] is True
    assert result["elapsedTime"] == 25_000
    assert result["updatePublishedResults"] is True


def test_trigger_without_wait_and_a_failed_run(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    client = _client(hex_emulator, tmp_path)
    started = hexdbt.trigger_hex_project(ERRORS_ID, client=client)
    assert started["status"] == "TRIGGERED"
    status = hexdbt.get_run_status(ERRORS_ID, started["runId"], client=client)
    assert status["status"] in ("PENDING", "RUNNING")
    failed = hexdbt.trigger_hex_project(ERRORS_ID, wait_for_completion=True, client=client)
    assert failed["status"] == "ERRORED"
    assert failed["success"] is False
    assert "ERRORED" in failed["message"]


def test_input_params_send_update_published_false(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    client = _client(hex_emulator, tmp_path)
    result = hexdbt.trigger_hex_project(FLAKY_ID, input_params={"horizon_days": 7}, client=client)
    assert result["updatePublishedResults"] is False
    refused = hexdbt.trigger_hex_project(
        FLAKY_ID, input_params={"horizon_days": 7}, update_published_results=True, client=client
    )
    assert refused["status"] == "error"
    assert "ignores input params" in refused["message"]
    assert len(hex_emulator.runs(FLAKY_ID)) == 1


def test_timeout_is_an_error_dict(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    result = hexdbt.trigger_hex_project(
        SCHEDULED_ID,
        wait_for_completion=True,
        timeout_minutes=1,
        client=_client(hex_emulator, tmp_path),
    )
    assert result["status"] == "error"
    assert result["errorType"] == "RunTimeoutError"
    assert result["runId"]


def test_errors_from_hex_are_dicts_without_the_token(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    client = _client(hex_emulator, tmp_path)
    result = hexdbt.get_run_status(CUSTOMER_HEALTH_ID, "nope", client=client)
    assert result["status"] == "error"
    assert result["httpStatus"] == 404
    assert result["traceId"]
    assert TOKEN not in repr(result)
    missing = hexdbt.trigger_hex_project("no-such-project", client=client)
    assert missing["errorType"] == "HexNotFoundError"
