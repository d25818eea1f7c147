"""The seed's Python functions: plain dicts, error dicts instead of exceptions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import hexdbt
from hexdbt.clock import ManualClock, from_iso
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import CUSTOMER_HEALTH_ID, ERRORS_ID, FLAKY_ID, SCHEDULED_ID
from hexdbt.hex.budget import SharedBudget
from hexdbt.hex.client import HexClient
from hexdbt.settings import SqliteState

TOKEN = "hxtp_api_secret_987"


def _client(emu: HexEmulator, tmp_path: Path) -> HexClient:
    assert isinstance(emu.clock, ManualClock)
    budget = SharedBudget.open(SqliteState(tmp_path), TOKEN, emu.url, clock=emu.clock)
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
    assert result["outcome"] == "completed"
    assert result["success"] is True
    assert result["updatePublishedResults"] is True
    (run,) = hex_emulator.runs(CUSTOMER_HEALTH_ID)
    assert result["runId"] == run.run_id
    assert result["runUrl"].endswith(run.run_id)
    assert result["traceId"]
    assert "message" not in result


def test_trigger_without_wait_and_a_failed_run(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    client = _client(hex_emulator, tmp_path)
    started = hexdbt.trigger_hex_project(ERRORS_ID, client=client)
    assert (started["status"], started["outcome"]) == ("TRIGGERED", "started")
    assert started["success"] is None  # not waited on: not known yet
    status = hexdbt.get_run_status(ERRORS_ID, started["runId"], client=client)
    assert status["status"] in ("PENDING", "RUNNING")
    failed = hexdbt.trigger_hex_project(ERRORS_ID, wait_for_completion=True, client=client)
    assert (failed["status"], failed["outcome"]) == ("ERRORED", "errored")
    assert failed["success"] is False
    assert f"run {failed['runId']} of project {ERRORS_ID} ended ERRORED" == failed["message"]


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
    assert result["outcome"] == "timeout"
    assert result["status"] == "KILLED"  # cancelled when it timed out
    assert result["success"] is False
    assert (
        f"run {result['runId']} of project {SCHEDULED_ID} did not end within 1 min"
        in (result["message"])
    )


def test_errors_from_hex_are_dicts_without_the_token(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    client = _client(hex_emulator, tmp_path)
    result = hexdbt.get_run_status(
        CUSTOMER_HEALTH_ID, "0badc0de-0000-4000-8000-000000000000", client=client
    )
    assert result["status"] == "error"
    assert result["httpStatus"] == 404
    assert result["traceId"]
    assert TOKEN not in repr(result)
    missing = hexdbt.trigger_hex_project("0badc0de-1111-4000-8000-000000000000", client=client)
    assert (missing["status"], missing["outcome"]) == ("error", "failed_to_start")
    assert "HTTP 404" in missing["message"]
    assert missing["runId"] is None
    assert missing["traceId"]
    assert TOKEN not in repr(missing)


def test_an_idempotency_key_starts_the_project_once(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    client = _client(hex_emulator, tmp_path)
    first = hexdbt.trigger_hex_project(CUSTOMER_HEALTH_ID, idempotency_key="job-17", client=client)
    again = hexdbt.trigger_hex_project(
        CUSTOMER_HEALTH_ID, idempotency_key="job-17", wait_for_completion=True, client=client
    )
    (run,) = hex_emulator.runs(CUSTOMER_HEALTH_ID)
    assert first["runId"] == again["runId"] == run.run_id
    assert first["idempotencyKey"] == again["idempotencyKey"] == "job-17"
    bad = hexdbt.trigger_hex_project(CUSTOMER_HEALTH_ID, idempotency_key="job 17", client=client)
    assert bad["status"] == "error"
    assert bad["message"].startswith("--idempotency-key 'job 17': expected")
    assert len(hex_emulator.runs(CUSTOMER_HEALTH_ID)) == 1


def test_a_lost_answer_with_the_clock_ahead_of_hex_finds_the_run_it_started(
    hex_emulator_factory: Callable[..., HexEmulator], tmp_path: Path
) -> None:
    """Our clock 5 s ahead of Hex's: the run Hex started "before" our intent is still ours."""
    project = {"id": "p-skew", "title": "Skew", "runs": {"pending_s": 0, "running_s": 600}}
    emu = hex_emulator_factory(scenario={"projects": [project]})
    emu.inject_faults("RunProject", sequence=[{"kind": "lost_reset"}])
    ahead = ManualClock(emu.clock.now() + 5)
    budget = SharedBudget.open(SqliteState(tmp_path), TOKEN, emu.url, clock=ahead)
    client = HexClient(emu.url, TOKEN, clock=ahead, budget=budget)
    result = hexdbt.trigger_hex_project("p-skew", client=client)
    (run,) = emu.runs("p-skew")
    assert [entry["operation"] for entry in emu.journal()].count("RunProject") == 1
    assert (result["outcome"], result["runId"]) == ("started", run.run_id)
    # Hex says the run started 5 s before our intent to send it.
    started_at = from_iso(hexdbt.get_run_status("p-skew", run.run_id, client=client)["startTime"])
    assert started_at == pytest.approx(ahead.now() - 5, abs=1)
