"""HexClient against the emulator over HTTP on 127.0.0.1: statuses, errors, faults, retries."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hexdbt.clock import ManualClock, ScaledClock
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import (
    CUSTOMER_HEALTH_ID,
    SCHEDULED_ID,
    UNPUBLISHED_ID,
    default_scenario_document,
)
from hexdbt.engine import EngineSettings
from hexdbt.errors import (
    HexApiError,
    HexAuthError,
    HexNotFoundError,
    HexPermissionError,
    HexRateLimitedError,
    HexRejectedError,
    HexTransportError,
    HexUnavailableError,
    Interrupted,
)
from hexdbt.factory import open_engine
from hexdbt.feeders.direct import direct_plan, run_direct
from hexdbt.hex.budget import SharedBudget
from hexdbt.hex.client import (
    OFFSET_MAX_ERROR_S,
    HexClient,
    HexRunOutcomeUnknownError,
    run_may_have_started,
)
from hexdbt.hex.models import RunRequest
from hexdbt.outcomes import Outcome, OutcomeKind
from hexdbt.settings import SqliteState

TOKEN = "hxtp_client_http_secret_0123456789"
Factory = Callable[..., HexEmulator]
# A well-formed id that names nothing: Hex answers 400 to ids that are not UUIDs.
NO_SUCH_RUN_ID = "0badc0de-0000-4000-8000-000000000000"


def _client(emu: HexEmulator, tmp_path: Path, token: str = TOKEN, **options: Any) -> HexClient:
    assert isinstance(emu.clock, ManualClock)
    budget = SharedBudget.open(SqliteState(tmp_path), token, emu.url, clock=emu.clock)
    options.setdefault("read_timeout_s", 2.0)
    return HexClient(emu.url, token, clock=emu.clock, budget=budget, **options)


def _ops(emu: HexEmulator, operation: str) -> list[dict[str, Any]]:
    return [entry for entry in emu.journal() if entry["operation"] == operation]


def _scenario_with_tokens(tokens: list[dict[str, Any]]) -> dict[str, Any]:
    document = default_scenario_document()
    document["tokens"] = tokens
    return document


def test_a_run_goes_pending_running_completed(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    client = _client(hex_emulator, tmp_path)
    run = client.run_project(CUSTOMER_HEALTH_ID)
    assert run.project_version == 7
    assert run.run_url
    assert run.run_id in run.run_url
    seen = [client.get_run_status(CUSTOMER_HEALTH_ID, run.run_id).status]
    hex_emulator.advance(10)
    seen.append(client.get_run_status(CUSTOMER_HEALTH_ID, run.run_id).status)
    hex_emulator.advance(30)
    final = client.get_run_status(CUSTOMER_HEALTH_ID, run.run_id)
    assert [*seen, final.status] == ["PENDING", "RUNNING", "COMPLETED"]
    assert final.elapsed_time_ms == 25_000
    assert final.project_version == "7"
    assert final.is_success


def test_the_request_carries_bearer_user_agent_and_real_booleans(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    client = _client(hex_emulator, tmp_path, token=TOKEN)
    client.run_project(
        CUSTOMER_HEALTH_ID,
        RunRequest(input_params={"region": "EU", "as_of": None}, update_published_results=False),
    )
    (entry,) = _ops(hex_emulator, "RunProject")
    assert entry["body"] == {
        "dryRun": False,
        "updatePublishedResults": False,
        "useCachedSqlResults": True,
        "inputParams": {"region": "EU"},
    }
    assert TOKEN not in repr(client)
    assert TOKEN not in repr(hex_emulator.journal())


@pytest.mark.parametrize(
    ("token_spec", "error_class", "status"),
    [
        ({"token": "hxtp_other"}, HexAuthError, 401),
        ({"token": TOKEN, "expired": True}, HexAuthError, 401),
        ({"token": TOKEN, "scopes": ["read"]}, HexPermissionError, 403),
        ({"token": TOKEN, "projects": [SCHEDULED_ID]}, HexNotFoundError, 404),
    ],
)
def test_auth_errors_on_trigger_carry_status_message_and_trace_id(
    hex_emulator_factory: Factory,
    tmp_path: Path,
    token_spec: dict[str, Any],
    error_class: type[HexApiError],
    status: int,
) -> None:
    emu = hex_emulator_factory(scenario=_scenario_with_tokens([token_spec]))
    client = _client(emu, tmp_path)
    with pytest.raises(error_class) as caught:
        client.run_project(CUSTOMER_HEALTH_ID)
    error = caught.value
    assert error.status == status
    assert error.trace_id
    assert error.hint
    assert f"HTTP {status}" in str(error)
    assert TOKEN not in str(error) + (error.hint or "")
    assert len(_ops(emu, "RunProject")) == 1  # 4xx is never retried


@pytest.mark.parametrize(
    ("token_spec", "error_class", "status"),
    [
        ({"token": TOKEN, "expired": True}, HexAuthError, 401),
        ({"token": TOKEN, "scopes": ["run"]}, HexPermissionError, 403),
    ],
)
def test_auth_errors_on_poll(
    hex_emulator_factory: Factory,
    tmp_path: Path,
    token_spec: dict[str, Any],
    error_class: type[HexApiError],
    status: int,
) -> None:
    emu = hex_emulator_factory(scenario=_scenario_with_tokens([token_spec]))
    with pytest.raises(error_class) as caught:
        _client(emu, tmp_path).get_run_status(CUSTOMER_HEALTH_ID, NO_SUCH_RUN_ID)
    assert caught.value.status == status
    assert TOKEN not in str(caught.value)


def test_unknown_run_is_not_found(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    with pytest.raises(HexNotFoundError, match="not found") as caught:
        _client(hex_emulator, tmp_path).get_run_status(CUSTOMER_HEALTH_ID, NO_SUCH_RUN_ID)
    assert caught.value.status == 404


def test_unpublished_project_is_rejected_with_a_hint(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    with pytest.raises(HexRejectedError) as caught:
        _client(hex_emulator, tmp_path).run_project(UNPUBLISHED_ID)
    assert caught.value.status == 422
    assert "publish" in (caught.value.hint or "")
    with pytest.raises(HexRejectedError):
        _client(hex_emulator, tmp_path).get_project_runs(UNPUBLISHED_ID)


def test_422_on_poll_is_not_retried(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    hex_emulator.inject_faults("GetRunStatus", sequence=[{"kind": "error", "status": 422}])
    with pytest.raises(HexRejectedError):
        _client(hex_emulator, tmp_path).get_run_status(CUSTOMER_HEALTH_ID, "r")
    assert len(_ops(hex_emulator, "GetRunStatus")) == 1


@pytest.mark.parametrize(
    ("status", "error_class"), [(429, HexRateLimitedError), (503, HexUnavailableError)]
)
def test_429_and_503_on_trigger_are_sent_once_and_started_nothing(
    hex_emulator: HexEmulator, tmp_path: Path, status: int, error_class: type[HexApiError]
) -> None:
    """The client never re-sends a POST: the engine requeues it (test_hex_commands waits them
    out end to end)."""
    hex_emulator.inject_faults("RunProject", sequence=[{"kind": "error", "status": status}] * 2)
    with pytest.raises(error_class) as caught:
        _client(hex_emulator, tmp_path).run_project(CUSTOMER_HEALTH_ID)
    assert caught.value.status == status
    assert not run_may_have_started(caught.value)
    assert [entry["status"] for entry in _ops(hex_emulator, "RunProject")] == [status]
    assert hex_emulator.runs(CUSTOMER_HEALTH_ID) == []


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_5xx_and_429_on_poll_are_retried(
    hex_emulator: HexEmulator, tmp_path: Path, status: int
) -> None:
    client = _client(hex_emulator, tmp_path)
    run = client.run_project(CUSTOMER_HEALTH_ID)
    hex_emulator.inject_faults("GetRunStatus", sequence=[{"kind": "error", "status": status}] * 2)
    before = hex_emulator.clock.now()
    assert client.get_run_status(CUSTOMER_HEALTH_ID, run.run_id).run_id == run.run_id
    statuses = [entry["status"] for entry in _ops(hex_emulator, "GetRunStatus")]
    assert statuses == [status, status, 200]
    assert hex_emulator.clock.now() > before  # it backed off (on the shared clock)


def test_a_poll_that_keeps_failing_surfaces_the_last_error(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    hex_emulator.inject_faults(
        "GetRunStatus", sequence=[{"kind": "error", "status": 503, "body": "html"}] * 9
    )
    with pytest.raises(HexUnavailableError, match="HTML page") as caught:
        _client(hex_emulator, tmp_path, get_attempts=3).get_run_status(CUSTOMER_HEALTH_ID, "r")
    assert caught.value.status == 503
    assert len(_ops(hex_emulator, "GetRunStatus")) == 3


def test_429_that_outlasts_the_attempts_is_rate_limited(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    hex_emulator.inject_faults("GetProject", sequence=[{"kind": "error", "status": 429}] * 5)
    with pytest.raises(HexRateLimitedError):
        _client(hex_emulator, tmp_path, get_attempts=2).get_project(CUSTOMER_HEALTH_ID)


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "error", "status": 500, "body": "json"},
        {"kind": "error", "status": 502, "body": "html"},
        {"kind": "error", "status": 504, "body": "empty"},
        {"kind": "drop"},
        {"kind": "slow", "delay_s": 0.2},
        {"kind": "lost_reset"},
        {"kind": "lost_timeout", "delay_s": 1.0},
    ],
)
def test_every_fault_on_trigger_starts_exactly_one_run(
    hex_emulator: HexEmulator, tmp_path: Path, fault: dict[str, Any]
) -> None:
    hex_emulator.inject_faults("RunProject", sequence=[fault])
    client = _client(hex_emulator, tmp_path, read_timeout_s=0.5)
    if fault["kind"] != "slow":
        # The client never re-sends a POST that may have reached Hex.
        with pytest.raises(HexApiError) as caught:
            client.run_project(CUSTOMER_HEALTH_ID)
        assert run_may_have_started(caught.value)
        assert len(_ops(hex_emulator, "RunProject")) == 1
        hex_emulator.reset()
        hex_emulator.inject_faults("RunProject", sequence=[fault])
    # The engine looks the run up in Hex before it sends again, if it sends again at all.
    (outcome,) = _trigger_through_the_engine(client, CUSTOMER_HEALTH_ID)
    assert outcome.kind is OutcomeKind.STARTED
    runs = hex_emulator.runs(CUSTOMER_HEALTH_ID)
    assert [record.run_id for record in runs] == [outcome.run_id]


def _trigger_through_the_engine(client: HexClient, project_id: str) -> list[Outcome]:
    plan = direct_plan(
        [project_id],
        RunRequest(),
        idempotency_key=None,
        timeout_minutes=60,
        cancel_on_timeout=True,
    )
    with open_engine(client, settings=EngineSettings(wait=False)) as engine:
        return run_direct(engine, plan)


def test_lost_answer_raises_transport_error_that_may_have_been_sent(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    hex_emulator.inject_faults("RunProject", sequence=[{"kind": "lost_timeout", "delay_s": 1.0}])
    client = _client(hex_emulator, tmp_path, read_timeout_s=0.3)
    since = hex_emulator.clock.now()
    with pytest.raises(HexTransportError, match="read timeout") as caught:
        client.run_project(CUSTOMER_HEALTH_ID)
    assert caught.value.request_may_have_been_sent
    (found,) = client.find_api_runs_since(CUSTOMER_HEALTH_ID, since)
    assert [record.run_id for record in hex_emulator.runs(CUSTOMER_HEALTH_ID)] == [found.run_id]


def test_500_on_trigger_is_an_unknown_outcome_not_retried(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    hex_emulator.inject_faults("RunProject", sequence=[{"kind": "error", "status": 500}])
    with pytest.raises(HexRunOutcomeUnknownError) as caught:
        _client(hex_emulator, tmp_path).run_project(CUSTOMER_HEALTH_ID)
    assert caught.value.status == 500
    assert caught.value.trace_id


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "error", "status": 500, "body": "json"},
        {"kind": "error", "status": 502, "body": "html"},
        {"kind": "error", "status": 503, "body": "empty"},
        {"kind": "drop"},
        {"kind": "slow", "delay_s": 0.2},
        {"kind": "lost_reset"},
        {"kind": "lost_timeout", "delay_s": 1.0},
    ],
)
def test_every_fault_on_poll_is_retried_to_an_answer(
    hex_emulator: HexEmulator, tmp_path: Path, fault: dict[str, Any]
) -> None:
    client = _client(hex_emulator, tmp_path, read_timeout_s=0.5)
    run = client.run_project(CUSTOMER_HEALTH_ID)
    hex_emulator.inject_faults("GetRunStatus", sequence=[fault])
    assert client.get_run_status(CUSTOMER_HEALTH_ID, run.run_id).run_id == run.run_id
    expected = 1 if fault["kind"] == "slow" else 2
    assert len(_ops(hex_emulator, "GetRunStatus")) == expected


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_netrc_entry_for_the_host_does_not_replace_the_token(
    hex_emulator: HexEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password not-the-token\n", encoding="utf-8")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    _client(hex_emulator, tmp_path).run_project(CUSTOMER_HEALTH_ID)
    (entry,) = _ops(hex_emulator, "RunProject")
    assert entry["status"] == 201


def test_the_proxy_settings_of_the_environment_are_honoured(
    hex_emulator: HexEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for scheme in ("http", "https", "all", "no"):
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_free_port()}")  # nothing listens
    with pytest.raises(HexTransportError, match="no answer from Hex"):
        _client(hex_emulator, tmp_path, get_attempts=1).get_project(CUSTOMER_HEALTH_ID)
    assert _ops(hex_emulator, "GetProject") == []
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    project = _client(hex_emulator, tmp_path).get_project(CUSTOMER_HEALTH_ID)
    assert project.id == CUSTOMER_HEALTH_ID


def test_connect_error_is_never_sent_and_only_reads_are_retried(tmp_path: Path) -> None:
    port = _free_port()
    clock = ManualClock()
    client = HexClient(f"http://127.0.0.1:{port}", TOKEN, clock=clock, get_attempts=3)
    with pytest.raises(HexTransportError, match="connection refused") as caught:
        client.run_project(CUSTOMER_HEALTH_ID)
    assert not caught.value.request_may_have_been_sent
    assert clock.sleeps == []  # a POST is sent once: the engine decides when to send it again
    with pytest.raises(HexTransportError, match="connection refused"):
        client.get_project(CUSTOMER_HEALTH_ID)
    assert len(clock.sleeps) == 2  # three attempts, two backoffs
    assert TOKEN not in str(caught.value)


def test_cancel_makes_a_live_run_killed_and_an_ended_one_is_rejected(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    client = _client(hex_emulator, tmp_path)
    run = client.run_project(SCHEDULED_ID)
    client.cancel_run(SCHEDULED_ID, run.run_id)
    assert client.get_run_status(SCHEDULED_ID, run.run_id).status == "KILLED"
    with pytest.raises(HexRejectedError, match="already ended"):
        client.cancel_run(SCHEDULED_ID, run.run_id)


def test_projects_are_paged_until_the_limit(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    client = _client(hex_emulator, tmp_path)
    projects = list(client.iter_projects(limit=25, page_size=10))
    assert len(projects) == 25
    assert len({project.id for project in projects}) == 25
    calls = _ops(hex_emulator, "ListProjects")
    assert len(calls) == 3
    assert "after=" in calls[1]["path"]
    everything = list(
        client.iter_projects(
            limit=None,
            page_size=7,
            include_archived=True,
            include_trashed=True,
            include_components=True,
        )
    )
    assert len(everything) == len(hex_emulator.scenario.projects)
    project = client.get_project(CUSTOMER_HEALTH_ID)
    assert project.title == "Customer health"
    assert project.published


def test_project_runs_filter_by_status_and_trigger(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    client = _client(hex_emulator, tmp_path)
    page = client.get_project_runs(SCHEDULED_ID, status_filter="COMPLETED")
    assert {run.status for run in page.runs} == {"COMPLETED"}
    assert len(page.runs) == 2
    assert client.get_project_runs(SCHEDULED_ID, run_trigger_filter="API").runs == ()


def test_a_lost_answer_with_several_candidate_runs_is_ambiguous_not_adopted(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    """Someone else started the project too: hexdbt cannot tell which run is its own."""
    client = _client(hex_emulator, tmp_path)
    client.run_project(CUSTOMER_HEALTH_ID)
    hex_emulator.inject_faults("RunProject", sequence=["lost_reset"])
    (outcome,) = _trigger_through_the_engine(client, CUSTOMER_HEALTH_ID)
    assert outcome.kind is OutcomeKind.AMBIGUOUS
    assert outcome.exit_code == 4
    assert outcome.run_id is None
    assert outcome.reason is not None
    assert "2 API runs" in outcome.reason
    for record in hex_emulator.runs(CUSTOMER_HEALTH_ID):
        assert f"/runs/{record.run_id}" in outcome.reason
    assert len(hex_emulator.runs(CUSTOMER_HEALTH_ID)) == 2
    assert len(_ops(hex_emulator, "RunProject")) == 2


def test_a_run_project_is_never_sent_once_stop_is_set(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    """A signal that lands between the engine's decision to send and the request itself."""
    client = _client(hex_emulator, tmp_path)
    client.stop.set()
    with pytest.raises(Interrupted, match="before RunProject was sent"):
        client.run_project(CUSTOMER_HEALTH_ID)
    assert hex_emulator.journal() == []
    # Other calls still go: winding down cancels the runs this process started.
    assert client.get_project(CUSTOMER_HEALTH_ID).id == CUSTOMER_HEALTH_ID


def test_a_slow_answer_does_not_move_what_the_client_knows_of_hex_s_clock(
    hex_emulator_factory: Factory,
) -> None:
    """A reading of Hex's clock is off by up to half the exchange: an answer held 0.4 s (8 s of a
    clock 20 times faster) would put Hex's clock about 4 s ahead of where it is, and a run Hex
    created just after a lost POST's intent would then seem to have started before it. The
    closest reading stands; without a close one, none is used."""
    origin = time.time()
    emulator = hex_emulator_factory(clock=ScaledClock.since(origin, 20.0))
    clock = ScaledClock.since(origin, 20.0)
    with HexClient(emulator.url, TOKEN, clock=clock) as client:
        emulator.inject_faults("ListProjects", sequence=[{"kind": "slow", "delay_s": 0.4}])
        client.list_projects(limit=1)
        assert client.hex_clock_offset_s is None, "a reading off by 4 s is not used"
        client.list_projects(limit=1)
        close = client.hex_clock_offset_s
        assert close is not None
        assert abs(close) <= OFFSET_MAX_ERROR_S
        emulator.inject_faults("ListProjects", sequence=[{"kind": "slow", "delay_s": 0.4}])
        client.list_projects(limit=1)
        assert client.hex_clock_offset_s == close
