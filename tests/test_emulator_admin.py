"""The journal and the admin API under /_emulator/, and the pytest plugin's fixtures."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from emulator_helpers import CUSTOMER_HEALTH, HexApi

from hexdbt.clock import ManualClock, SystemClock, from_iso
from hexdbt.emulator import HexEmulator


def test_the_journal_lists_every_api_request_oldest_first(hex_emulator: HexEmulator) -> None:
    api = HexApi(hex_emulator, token="hxtp_secret_value")
    api.run(CUSTOMER_HEALTH, {"inputParams": {"region": "EU"}})
    api.get("/projects", params={"limit": 3})
    api.get("/projects/0badc0de-1111-4000-8000-000000000000")
    requests.get(hex_emulator.url + "/_emulator/status", timeout=10)  # admin calls stay out
    journal = requests.get(hex_emulator.url + "/_emulator/requests", timeout=10).json()
    assert journal == hex_emulator.journal()
    assert [(e["method"], e["path"], e["status"]) for e in journal] == [
        ("POST", f"/api/v1/projects/{CUSTOMER_HEALTH}/runs", 201),
        ("GET", "/api/v1/projects?limit=3", 200),
        ("GET", "/api/v1/projects/0badc0de-1111-4000-8000-000000000000", 404),
    ]
    assert journal[0]["body"] == {"inputParams": {"region": "EU"}}
    assert journal[1]["body"] is None
    assert journal[0]["operation"] == "RunProject"
    assert journal[0]["runId"] == hex_emulator.runs()[0].run_id
    for entry in journal:
        assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$", entry["time"])
        assert entry["traceId"]
        assert "authorization" not in {key.lower() for key in entry}
    assert "hxtp_secret_value" not in str(journal)


def test_journal_times_are_real_time_even_on_a_manual_clock(hex_emulator: HexEmulator) -> None:
    HexApi(hex_emulator).get("/projects")
    arrived = from_iso(hex_emulator.journal()[0]["time"])
    assert abs(arrived - SystemClock().now()) < 60
    hex_emulator.advance(86_400)
    HexApi(hex_emulator).get("/projects")
    assert abs(from_iso(hex_emulator.journal()[1]["time"]) - arrived) < 60


def test_a_body_that_is_not_json_is_journaled_as_null(hex_emulator: HexEmulator) -> None:
    HexApi(hex_emulator).post(f"/projects/{CUSTOMER_HEALTH}/runs", data=b"not json")
    entry = hex_emulator.journal()[0]
    assert entry["body"] is None
    assert entry["status"] == 400


def test_post_reset_forgets_runs_and_the_journal(hex_emulator: HexEmulator) -> None:
    HexApi(hex_emulator).run(CUSTOMER_HEALTH)
    response = requests.post(hex_emulator.url + "/_emulator/reset", timeout=10)
    assert response.status_code == 200
    assert hex_emulator.runs() == []
    assert hex_emulator.journal() == []


def test_post_reset_also_resets_rate_windows(hex_emulator_factory: Any) -> None:
    emulator = hex_emulator_factory(
        scenario={"projects": [{"id": "p", "title": "P"}], "settings": {"other_per_minute": 1}}
    )
    api = HexApi(emulator)
    assert api.get("/projects").status_code == 200
    assert api.get("/projects").status_code == 429
    requests.post(emulator.url + "/_emulator/reset", timeout=10)
    assert api.get("/projects").status_code == 200


def test_post_scenario_loads_another_scenario(hex_emulator: HexEmulator) -> None:
    scenario = {"projects": [{"id": "p-new", "title": "Brand new", "inputs": ["x"]}]}
    response = requests.post(hex_emulator.url + "/_emulator/scenario", json=scenario, timeout=10)
    assert response.status_code == 200
    assert response.json() == {"projects": 1}
    api = HexApi(hex_emulator)
    assert api.get("/projects/p-new").json()["title"] == "Brand new"
    assert api.get(f"/projects/{CUSTOMER_HEALTH}").status_code == 404


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"projects": []}, "projects: expected a non-empty list of projects"),
        ({"projects": [{"id": "p"}]}, "projects[0].title: expected a non-empty string"),
        (["not", "a", "mapping"], "expected a mapping, got a list"),
    ],
)
def test_post_scenario_rejects_a_bad_scenario_with_400(
    hex_emulator: HexEmulator, document: Any, message: str
) -> None:
    response = requests.post(hex_emulator.url + "/_emulator/scenario", json=document, timeout=10)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert HexApi(hex_emulator).get(f"/projects/{CUSTOMER_HEALTH}").status_code == 200


def test_post_advance_moves_the_manual_clock(hex_emulator: HexEmulator) -> None:
    api = HexApi(hex_emulator)
    run_id = api.run(CUSTOMER_HEALTH).json()["runId"]
    response = requests.post(
        hex_emulator.url + "/_emulator/advance", json={"seconds": 3600}, timeout=10
    )
    assert response.status_code == 200
    assert response.json() == {"now": "2026-01-01T01:00:00.000Z"}
    assert api.status(CUSTOMER_HEALTH, run_id)["status"] == "COMPLETED"


@pytest.mark.parametrize(
    "document",
    [
        "{}",
        '{"seconds": -1}',
        '{"seconds": "10"}',
        "[10]",
        '{"seconds": 1e308}',
        '{"seconds": NaN}',
    ],
)
def test_post_advance_needs_a_number_of_seconds_a_clock_can_take(
    hex_emulator: HexEmulator, document: str
) -> None:
    response = requests.post(hex_emulator.url + "/_emulator/advance", data=document, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == (
        'expected a JSON body {"seconds": N} with N from 0 to 315360000 (ten years)'
    )
    assert requests.get(hex_emulator.url + "/_emulator/status", timeout=10).status_code == 200


@pytest.mark.parametrize("path", ["/_emulator/faults", "/_emulator/scenario", "/_emulator/advance"])
@pytest.mark.parametrize("depth", [50_000, 65])
def test_a_body_nested_too_deeply_is_400_and_the_emulator_serves_on(
    hex_emulator: HexEmulator, path: str, depth: int
) -> None:
    """50,000 levels overflowed the parser and the request got no answer; 65 parsed, and then
    the journal's copy of it overflowed."""
    response = requests.post(hex_emulator.url + path, data=b"[" * depth + b"]" * depth, timeout=10)
    assert response.status_code == 400
    assert response.json() == {
        "error": "the request body is not valid JSON (or is nested too deeply)"
    }
    deep_run = HexApi(hex_emulator).post(
        f"/projects/{CUSTOMER_HEALTH}/runs", data=b'{"a":' * depth + b"1" + b"}" * depth
    )
    assert deep_run.status_code == 400
    assert deep_run.json()["message"] == "the request body is not valid JSON"
    journal = requests.get(hex_emulator.url + "/_emulator/requests", timeout=10)
    assert journal.status_code == 200
    assert [entry["body"] for entry in journal.json()] == [None]
    assert HexApi(hex_emulator).run(CUSTOMER_HEALTH).status_code == 201


def test_a_body_nested_64_deep_is_still_json(hex_emulator: HexEmulator) -> None:
    body = b"[" * 64 + b"]" * 64
    response = requests.post(hex_emulator.url + "/_emulator/faults", data=body, timeout=10)
    assert response.status_code == 400
    assert response.json() == {"error": "a fault rule must be a JSON object"}


def test_post_advance_on_a_real_clock_is_409(hex_emulator_factory: Any) -> None:
    emulator = hex_emulator_factory(time_scale=5.0)
    response = requests.post(emulator.url + "/_emulator/advance", json={"seconds": 1}, timeout=10)
    assert response.status_code == 409
    assert "--manual-clock" in response.json()["error"]


def test_admin_runs_and_status(hex_emulator: HexEmulator) -> None:
    run_id = (
        HexApi(hex_emulator).run(CUSTOMER_HEALTH, {"inputParams": {"region": "EU"}}).json()["runId"]
    )
    runs = requests.get(
        hex_emulator.url + "/_emulator/runs", params={"projectId": CUSTOMER_HEALTH}, timeout=10
    )
    assert [(r["runId"], r["status"], r["inputParams"]) for r in runs.json()] == [
        (run_id, "PENDING", {"region": "EU"})
    ]
    status = requests.get(hex_emulator.url + "/_emulator/status", timeout=10).json()
    assert status["manualClock"] is True
    assert status["runs"] == 1
    assert status["projects"] == 37


def test_unknown_admin_endpoint_is_404(hex_emulator: HexEmulator) -> None:
    response = requests.post(hex_emulator.url + "/_emulator/explode", timeout=10)
    assert response.status_code == 404
    assert "no admin endpoint" in response.json()["error"]


def test_load_scenario_from_python_keeps_the_journal(hex_emulator: HexEmulator) -> None:
    HexApi(hex_emulator).get("/projects")
    hex_emulator.load_scenario({"projects": [{"id": "q", "title": "Q"}]})
    assert len(hex_emulator.journal()) == 1
    assert [p.id for p in hex_emulator.scenario.projects] == ["q"]
    hex_emulator.load_scenario(None)
    assert len(hex_emulator.scenario.projects) == 37


def test_the_plugin_fixture_serves_the_default_scenario_on_a_manual_clock(
    hex_emulator: HexEmulator,
) -> None:
    assert isinstance(hex_emulator.clock, ManualClock)
    assert re.match(r"^http://127\.0\.0\.1:\d+$", hex_emulator.url)
    assert hex_emulator.port > 0
    assert HexApi(hex_emulator).get(f"/projects/{CUSTOMER_HEALTH}").status_code == 200


def test_the_factory_stops_what_it_started(hex_emulator_factory: Any) -> None:
    emulator = hex_emulator_factory()
    url = emulator.url
    emulator.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/_emulator/status", timeout=2)


def test_the_context_manager_serves_and_stops() -> None:
    with HexEmulator(clock=ManualClock()) as emulator:
        url = emulator.url
        assert requests.get(url + "/_emulator/status", timeout=10).status_code == 200
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/_emulator/status", timeout=2)


def test_importing_hexdbt_does_not_import_the_emulator() -> None:
    import subprocess
    import sys

    code = (
        "import sys, hexdbt; print('hexdbt.emulator' in sys.modules, 'http.server' in sys.modules)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.split() == ["False", "False"]
