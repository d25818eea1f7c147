"""Fault injection: error bodies, drops, slow answers, lost answers; scripted and by seeded rate."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from emulator_helpers import CUSTOMER_HEALTH, HexApi

from hexdbt.emulator import Fault, FaultError, FaultRule, HexEmulator


@pytest.mark.parametrize("status", [500, 502, 503])
def test_error_faults_answer_json_and_start_nothing(hex_emulator: HexEmulator, status: int) -> None:
    hex_emulator.inject_faults("RunProject", sequence=[{"kind": "error", "status": status}])
    response = HexApi(hex_emulator).run(CUSTOMER_HEALTH)
    assert response.status_code == status
    body = response.json()
    assert body["traceId"]
    assert "injected fault" in body["message"]
    assert hex_emulator.runs() == []
    assert hex_emulator.journal()[-1]["fault"] == {
        "kind": "error",
        "status": status,
        "body": "json",
    }
    assert hex_emulator.journal()[-1]["status"] == status


def test_error_faults_can_answer_an_html_page(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults(
        "GetProject", sequence=[{"kind": "error", "status": 502, "body": "html"}]
    )
    response = HexApi(hex_emulator).get(f"/projects/{CUSTOMER_HEALTH}")
    assert response.status_code == 502
    assert response.headers["Content-Type"] == "text/html"
    assert "<h1>502 Bad Gateway</h1>" in response.text


def test_error_faults_can_answer_an_empty_body(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults(
        "ListProjects", sequence=[{"kind": "error", "status": 503, "body": "empty"}]
    )
    response = HexApi(hex_emulator).get("/projects")
    assert response.status_code == 503
    assert response.content == b""


def test_a_dropped_connection_answers_nothing_and_starts_nothing(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults("RunProject", sequence=["drop"])
    with pytest.raises(requests.ConnectionError):
        HexApi(hex_emulator).run(CUSTOMER_HEALTH)
    assert hex_emulator.runs() == []
    entry = hex_emulator.journal()[-1]
    assert entry["status"] is None
    assert entry["fault"] == {"kind": "drop"}


def test_a_slow_answer_arrives_late_but_whole(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults("GetProject", sequence=[{"kind": "slow", "delay_s": 0.2}])
    api = HexApi(hex_emulator)
    with pytest.raises(requests.Timeout):
        api.get(f"/projects/{CUSTOMER_HEALTH}", timeout=0.05)
    hex_emulator.inject_faults("GetProject", sequence=[{"kind": "slow", "delay_s": 0.05}])
    response = api.get(f"/projects/{CUSTOMER_HEALTH}", timeout=10)
    assert response.status_code == 200
    assert response.json()["id"] == CUSTOMER_HEALTH
    assert hex_emulator.journal()[-1]["fault"] == {"kind": "slow", "delay_s": 0.05}


def test_created_but_answer_lost_by_reset(hex_emulator: HexEmulator) -> None:
    """The run exists although the client saw only a reset: what exactly-once must survive."""
    hex_emulator.inject_faults("RunProject", sequence=["lost_reset"])
    api = HexApi(hex_emulator)
    with pytest.raises(requests.ConnectionError):
        api.run(CUSTOMER_HEALTH, {"inputParams": {"region": "EU"}})
    (run,) = hex_emulator.runs(CUSTOMER_HEALTH)
    assert run.input_params == {"region": "EU"}
    entry = hex_emulator.journal()[-1]
    assert entry["status"] is None
    assert entry["runId"] == run.run_id
    listed = api.get(f"/projects/{CUSTOMER_HEALTH}/runs").json()["runs"]
    assert [r["runId"] for r in listed] == [run.run_id]


def test_created_but_answer_lost_by_timeout(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults("RunProject", sequence=[{"kind": "lost_timeout", "delay_s": 30}])
    with pytest.raises(requests.Timeout):
        HexApi(hex_emulator).post(f"/projects/{CUSTOMER_HEALTH}/runs", json={}, timeout=0.2)
    assert len(hex_emulator.runs(CUSTOMER_HEALTH)) == 1
    entry = hex_emulator.journal()[-1]
    assert entry["status"] == 201
    assert entry["fault"] == {"kind": "lost_timeout", "delay_s": 30}
    # Stopping the emulator must not wait out the 30 s the answer is held.


def test_a_sequence_is_played_in_order_then_spent(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults(
        "GetProject",
        sequence=[{"kind": "error", "status": 500}, None, {"kind": "error", "status": 502}],
    )
    api = HexApi(hex_emulator)
    statuses = [api.get(f"/projects/{CUSTOMER_HEALTH}").status_code for _ in range(5)]
    assert statuses == [500, 200, 502, 200, 200]
    assert api.get("/projects").status_code == 200  # other endpoints untouched


def test_a_star_rule_applies_to_every_endpoint(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults("*", sequence=[{"kind": "error", "status": 503}] * 2)
    api = HexApi(hex_emulator)
    assert api.get("/projects").status_code == 503
    assert api.run(CUSTOMER_HEALTH).status_code == 503
    assert api.get("/projects").status_code == 200


def _pattern(emulator: HexEmulator, count: int) -> list[int]:
    api = HexApi(emulator)
    return [api.get(f"/projects/{CUSTOMER_HEALTH}").status_code for _ in range(count)]


def test_faults_by_rate_are_reproducible_from_their_seed(hex_emulator_factory: Any) -> None:
    patterns = []
    for _ in range(2):
        emulator = hex_emulator_factory(scenario=_no_limits())
        emulator.inject_faults(
            "GetProject", rate=0.3, fault={"kind": "error", "status": 500}, seed=42
        )
        patterns.append(_pattern(emulator, 40))
    assert patterns[0] == patterns[1]
    assert 500 in patterns[0]
    assert 200 in patterns[0]
    other = hex_emulator_factory(scenario=_no_limits())
    other.inject_faults("GetProject", rate=0.3, fault={"kind": "error", "status": 500}, seed=7)
    assert _pattern(other, 40) != patterns[0]


def test_a_rate_of_one_always_strikes_and_clear_faults_stops_it(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults("GetProject", rate=1.0, fault={"kind": "error", "status": 502})
    assert _pattern(hex_emulator, 3) == [502, 502, 502]
    hex_emulator.clear_faults()
    assert _pattern(hex_emulator, 1) == [200]


def test_reset_forgets_faults(hex_emulator: HexEmulator) -> None:
    hex_emulator.inject_faults("GetProject", rate=1.0, fault="drop")
    hex_emulator.reset()
    assert _pattern(hex_emulator, 1) == [200]


def test_faults_over_http_for_other_processes(hex_emulator: HexEmulator) -> None:
    admin = hex_emulator.url + "/_emulator/faults"
    rule = {
        "endpoint": "GetProject",
        "sequence": [{"kind": "error", "status": 502, "body": "html"}, "ok"],
    }
    added = requests.post(admin, json=rule, timeout=10)
    assert added.status_code == 200
    assert added.json() == [
        {
            "endpoint": "GetProject",
            "sequence": [{"kind": "error", "status": 502, "body": "html"}, None],
        }
    ]
    rate_rule = {
        "endpoint": "ListProjects",
        "rate": 1.0,
        "seed": 3,
        "fault": {"kind": "error", "status": 500},
    }
    assert requests.post(admin, json=[rate_rule], timeout=10).status_code == 200
    assert len(requests.get(admin, timeout=10).json()) == 2
    api = HexApi(hex_emulator)
    assert api.get(f"/projects/{CUSTOMER_HEALTH}").status_code == 502
    assert api.get("/projects").status_code == 500
    assert requests.delete(admin, timeout=10).json() == []
    assert api.get("/projects").status_code == 200


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"endpoint": "Nope", "sequence": ["drop"]}, "fault endpoint 'Nope' is not one of"),
        ({"endpoint": "GetProject"}, "needs either a sequence or a rate"),
        (
            {"endpoint": "GetProject", "sequence": [{"kind": "explode"}]},
            "sequence[0]: fault kind 'explode'",
        ),
        (
            {"endpoint": "GetProject", "sequence": [{"kind": "error", "status": 200}]},
            "not an HTTP error status",
        ),
        (
            {"endpoint": "GetProject", "sequence": [{"kind": "error", "body": "xml"}]},
            "fault body 'xml'",
        ),
        ({"endpoint": "GetProject", "rate": 2, "fault": "drop"}, "between 0 and 1"),
        ({"endpoint": "GetProject", "rate": 0.5}, "needs a fault"),
        ({"endpoint": "GetProject", "sequence": "drop"}, "sequence must be a list"),
        ({"endpoint": "GetProject", "sequence": [], "colour": 1}, "unknown key 'colour'"),
    ],
)
def test_bad_fault_rules_are_400_with_the_reason(
    hex_emulator: HexEmulator, rule: dict[str, Any], message: str
) -> None:
    response = requests.post(hex_emulator.url + "/_emulator/faults", json=rule, timeout=10)
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.parametrize("delay", ["1e308", "-1", "NaN", "Infinity"])
def test_a_delay_no_thread_can_wait_is_400_and_the_next_run_is_answered(
    hex_emulator: HexEmulator, delay: str
) -> None:
    """1e308 s was taken, and the next RunProject's wait failed: its connection dropped."""
    body = f'{{"endpoint": "RunProject", "sequence": [{{"kind": "slow", "delay_s": {delay}}}]}}'
    response = requests.post(
        hex_emulator.url + "/_emulator/faults",
        data=body,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    assert "delay_s must be between 0 and 86400 seconds" in response.json()["error"]
    assert HexApi(hex_emulator).run(CUSTOMER_HEALTH).status_code == 201


def test_fault_objects_check_themselves() -> None:
    with pytest.raises(FaultError, match="delay_s must be between 0 and 86400 seconds, got -1"):
        Fault("slow", delay_s=-1)
    with pytest.raises(FaultError, match="a fault rule with a rate needs a fault"):
        FaultRule("GetProject", rate=0.1)
    assert Fault.coerce("lost_timeout").delay_s == 30.0


def _no_limits() -> dict[str, Any]:
    return {
        "projects": [{"id": CUSTOMER_HEALTH, "title": "Customer health"}],
        "settings": {"limits_enabled": False},
    }
