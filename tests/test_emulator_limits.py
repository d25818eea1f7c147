"""Rate limits in fixed windows, their headers, the 25-kernel cap: all on the manual clock."""

from __future__ import annotations

from typing import Any

import pytest
from emulator_helpers import CUSTOMER_HEALTH, HexApi

from hexdbt.emulator import HexEmulator, default_scenario


def _small_limits(**settings: Any) -> dict[str, Any]:
    return {
        "projects": [{"id": "p-1", "title": "One", "runs": {"pending_s": 1, "running_s": 1000}}],
        "settings": {"rate_limit_headers": True, **settings},
    }


def test_rate_limit_headers_are_off_by_default_and_retry_after_stays(
    hex_emulator_factory: Any,
) -> None:
    """Hex names no rate-limit headers: X-RateLimit-* is a guess, sent only when a scenario asks."""
    scenario = _small_limits(run_project_per_minute=1)
    del scenario["settings"]["rate_limit_headers"]
    api = HexApi(hex_emulator_factory(scenario=scenario))
    admitted = api.run("p-1")
    limited = api.run("p-1")
    assert (admitted.status_code, limited.status_code) == (201, 429)
    for response in (admitted, limited):
        assert not [name for name in response.headers if name.lower().startswith("x-ratelimit")]
    assert limited.headers["Retry-After"] == "60"


def test_run_project_allows_20_a_minute_then_429_with_headers(hex_emulator: HexEmulator) -> None:
    hex_emulator.load_scenario(default_scenario().with_settings(rate_limit_headers=True))
    api = HexApi(hex_emulator)
    remaining = []
    for _ in range(20):
        response = api.run(CUSTOMER_HEALTH)
        assert response.status_code == 201
        remaining.append(int(response.headers["X-RateLimit-Remaining"]))
        assert response.headers["X-RateLimit-Limit"] == "20"
    assert remaining == list(range(19, -1, -1))
    hex_emulator.advance(15)
    limited = api.run(CUSTOMER_HEALTH)
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "45"
    assert limited.headers["X-RateLimit-Limit"] == "20"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert limited.headers["X-RateLimit-Reset"] == "45"
    body = limited.json()
    assert body["code"] == "TOO_MANY_REQUESTS"
    assert body["traceId"]
    assert len(hex_emulator.runs()) == 20


def test_the_minute_window_resets_60_seconds_after_its_first_request(
    hex_emulator_factory: Any,
) -> None:
    emulator = hex_emulator_factory(scenario=_small_limits(run_project_per_minute=2))
    api = HexApi(emulator)
    assert api.run("p-1").status_code == 201
    emulator.advance(59)
    assert api.run("p-1").status_code == 201
    assert api.run("p-1").status_code == 429
    emulator.advance(1)
    fresh = api.run("p-1")
    assert fresh.status_code == 201
    assert fresh.headers["X-RateLimit-Remaining"] == "1"
    assert fresh.headers["X-RateLimit-Reset"] == "60"


def test_run_project_allows_60_an_hour(hex_emulator_factory: Any) -> None:
    emulator = hex_emulator_factory(scenario=_small_limits(max_live_runs=1000))
    api = HexApi(emulator)
    for minute in range(3):
        for _ in range(20):
            assert api.run("p-1").status_code == 201
        emulator.advance(60)
        del minute
    limited = api.run("p-1")
    assert limited.status_code == 429
    assert limited.headers["X-RateLimit-Limit"] == "60"
    assert limited.headers["Retry-After"] == str(3600 - 180)
    emulator.advance(3600 - 180)
    assert api.run("p-1").status_code == 201


def test_other_endpoints_share_30_a_minute_and_polls_count(hex_emulator: HexEmulator) -> None:
    hex_emulator.load_scenario(default_scenario().with_settings(rate_limit_headers=True))
    api = HexApi(hex_emulator)
    run_id = api.run(CUSTOMER_HEALTH).json()["runId"]
    for i in range(30):
        path = "/projects" if i % 2 else f"/projects/{CUSTOMER_HEALTH}/runs/{run_id}"
        response = api.get(path)
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "30"
    limited = api.get(f"/projects/{CUSTOMER_HEALTH}")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "60"
    listed = api.get("/projects")
    assert listed.status_code == 429
    assert set(listed.json()) == {"reason", "traceId"}  # ListProjects keeps the older shape
    assert api.run(CUSTOMER_HEALTH).status_code == 201  # RunProject has a budget of its own


def test_the_other_hourly_budget_is_a_setting(hex_emulator_factory: Any) -> None:
    emulator = hex_emulator_factory(scenario=_small_limits(other_per_minute=100, other_per_hour=3))
    api = HexApi(emulator)
    for _ in range(3):
        assert api.get("/projects").status_code == 200
    limited = api.get("/projects")
    assert limited.status_code == 429
    assert limited.headers["X-RateLimit-Limit"] == "3"
    assert limited.headers["Retry-After"] == "3600"


def test_limits_are_per_token_unless_tokens_share_a_user(hex_emulator_factory: Any) -> None:
    scenario = _small_limits(other_per_minute=1)
    scenario["tokens"] = [
        {"token": "hxtw_a", "user": "ana"},
        {"token": "hxtw_b", "user": "ana"},
        {"token": "hxtw_c"},
    ]
    emulator = hex_emulator_factory(scenario=scenario)
    assert HexApi(emulator, "hxtw_a").get("/projects").status_code == 200
    assert HexApi(emulator, "hxtw_b").get("/projects").status_code == 429
    assert HexApi(emulator, "hxtw_c").get("/projects").status_code == 200


def test_rejected_requests_do_not_use_up_the_budget(hex_emulator_factory: Any) -> None:
    emulator = hex_emulator_factory(scenario=_small_limits(other_per_minute=2))
    api = HexApi(emulator)
    assert api.get("/projects").status_code == 200
    assert api.get("/projects").status_code == 200
    for _ in range(5):
        assert api.get("/projects").status_code == 429
    emulator.advance(60)
    assert api.get("/projects").headers["X-RateLimit-Remaining"] == "1"


def test_limits_switched_off_send_no_headers_and_never_429(hex_emulator_factory: Any) -> None:
    emulator = hex_emulator_factory(scenario=default_scenario().with_settings(limits_enabled=False))
    api = HexApi(emulator)
    for _ in range(40):
        response = api.run(CUSTOMER_HEALTH)
        assert response.status_code == 201
        assert "X-RateLimit-Limit" not in response.headers
    assert len(emulator.runs()) == 40


def test_the_26th_live_run_is_503_and_starts_nothing(hex_emulator_factory: Any) -> None:
    emulator = hex_emulator_factory(
        scenario=_small_limits(run_project_per_minute=100, run_project_per_hour=100)
    )
    api = HexApi(emulator)
    for _ in range(25):
        assert api.run("p-1").status_code == 201
    refused = api.run("p-1")
    assert refused.status_code == 503
    body = refused.json()
    assert body["code"] == "SERVICE_UNAVAILABLE"
    assert "no run was started" in body["message"]
    assert len(emulator.runs()) == 25
    first = emulator.runs()[0].run_id
    assert api.delete(f"/projects/p-1/runs/{first}").status_code == 204
    assert api.run("p-1").status_code == 201
    assert len(emulator.runs()) == 26


def test_ended_runs_free_their_kernels(hex_emulator_factory: Any) -> None:
    emulator = hex_emulator_factory(
        scenario=_small_limits(
            max_live_runs=2, run_project_per_minute=100, run_project_per_hour=100
        )
    )
    api = HexApi(emulator)
    assert api.run("p-1").status_code == 201
    assert api.run("p-1").status_code == 201
    assert api.run("p-1").status_code == 503
    emulator.advance(1001)
    assert api.run("p-1").status_code == 201


def test_dry_runs_do_not_take_a_kernel(hex_emulator_factory: Any) -> None:
    emulator = hex_emulator_factory(scenario=_small_limits(max_live_runs=1))
    api = HexApi(emulator)
    assert api.run("p-1").status_code == 201
    assert api.run("p-1", {"dryRun": True}).status_code == 201
    assert api.run("p-1").status_code == 503


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"run_project_per_minute": -1},
            "settings.run_project_per_minute: expected a whole number >= 0",
        ),
        ({"minute_window_s": 0}, "settings.minute_window_s: must be above 0"),
        ({"limits_enabled": "no"}, "settings.limits_enabled: expected true or false"),
        (
            {"unknown_inputs": "maybe"},
            "settings.unknown_inputs: 'maybe' is not one of ignore, reject",
        ),
        ({"rate": 3}, "settings.rate: unknown key"),
    ],
)
def test_bad_limit_settings_are_named(settings: dict[str, Any], message: str) -> None:
    from hexdbt.emulator import Scenario, ScenarioError

    with pytest.raises(ScenarioError) as caught:
        Scenario.from_dict(_small_limits(**settings), source="limits.yml")
    assert str(caught.value).startswith("limits.yml: ")
    assert message in str(caught.value)
