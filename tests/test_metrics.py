"""The daemons' metrics: what the engine's progress counts, /metrics and /healthz over real HTTP,
and a running `hexdbt watch` whose counters move after a build."""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from daemon_helpers import Daemon
from dbt_shapes import manifest_document, model, run_results_document, write_json
from prometheus_client.parser import text_string_to_metric_families

from hexdbt.cli import main
from hexdbt.clock import ScaledClock
from hexdbt.emulator.pytest_plugin import EmulatorFactory
from hexdbt.emulator.scenario import CUSTOMER_HEALTH_ID, FINANCE_OVERVIEW_ID
from hexdbt.errors import ConfigError
from hexdbt.hex.polls import NoProgress, RunView, WaitCause, WatchedRun
from hexdbt.metrics import DaemonMetrics
from hexdbt.outcomes import Outcome, OutcomeKind
from hexdbt.web import HttpServer, build_app

TOKEN = "hxtp_metrics_secret"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, read by prometheus-client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def get(url: str) -> tuple[int, str, str]:
    """Status, content type and body of a GET (an error status is an answer too)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read().decode()


def _run(run_id: str, started_at: float) -> WatchedRun:
    return WatchedRun(project_id="p-1", run_id=run_id, started_at=started_at, label="health")


def test_the_progress_it_observes_counts_triggers_live_runs_waits_and_dispatches() -> None:
    metrics = DaemonMetrics("watch")
    progress = metrics.observe(NoProgress())
    first, second = _run("r-1", 1000.0), _run("r-2", 1010.0)
    progress.changed(RunView(first, None, None, 0), 1001.0)
    progress.changed(RunView(second, None, None, 0), 1011.0)
    progress.changed(RunView(first, "RUNNING", None, 1), 1020.0)
    found = samples(metrics.exposition().decode())
    assert value(found, "hexdbt_live_runs") == 2
    assert value(found, "hexdbt_last_dispatch_timestamp_seconds") == 1010.0

    progress.changed(RunView(first, "COMPLETED", OutcomeKind.COMPLETED, 2), 1030.0)
    progress.changed(RunView(first, "COMPLETED", OutcomeKind.COMPLETED, 2), 1030.0)  # told twice
    progress.settled(Outcome("draft", "p-2", OutcomeKind.FAILED_TO_START), 1031.0)
    progress.settled(Outcome("fire", "p-3", OutcomeKind.STARTED, run_id="r-3"), 1032.0)
    progress.waiting([("a", "p-a"), ("b", "p-b")], WaitCause.BUDGET, 1033.0)
    progress.waiting([("c", "p-c")], WaitCause.PLACES, 1033.0)
    metrics.invocation_seen("submitted")
    metrics.invocation_seen("skipped")

    found = samples(metrics.exposition().decode())
    assert value(found, "hexdbt_live_runs") == 1
    assert value(found, "hexdbt_triggers_total", outcome="completed") == 1
    assert value(found, "hexdbt_triggers_total", outcome="failed_to_start") == 1
    assert value(found, "hexdbt_triggers_total", outcome="started") == 1
    assert value(found, "hexdbt_triggers_total", outcome="errored") == 0
    assert value(found, "hexdbt_budget_waits_total") == 2
    assert value(found, "hexdbt_last_dispatch_timestamp_seconds") == 1032.0
    assert value(found, "hexdbt_invocations_total", result="submitted") == 1
    assert value(found, "hexdbt_invocations_total", result="skipped") == 1
    assert value(found, "hexdbt_invocations_total", result="failed") == 0
    assert value(found, "hexdbt_daemon_info", daemon="watch", version=_version()) == 1


def _version() -> str:
    from hexdbt._version import __version__

    return __version__


def test_two_daemons_in_one_process_keep_their_own_counters() -> None:
    watch, relay = DaemonMetrics("watch"), DaemonMetrics("relay")
    watch.invocation_seen("submitted")
    for metrics, submitted in ((watch, 1), (relay, 0)):
        found = samples(metrics.exposition().decode())
        assert value(found, "hexdbt_invocations_total", result="submitted") == submitted


def test_it_serves_metrics_and_health_over_http() -> None:
    metrics = DaemonMetrics("watch")
    with HttpServer(build_app(metrics), "127.0.0.1", 0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert get(f"{server.url}/healthz")[::2] == (503, "not running\n")
        metrics.set_healthy(True)
        assert get(f"{server.url}/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
        status, content_type, body = get(f"{server.url}/metrics")
        assert status == 200
        assert content_type.startswith("text/plain; version=")
        assert value(samples(body), "hexdbt_live_runs") == 0
        assert get(f"{server.url}/")[0] == 404
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{server.url}/healthz", timeout=2)


def test_a_port_in_use_is_a_config_error_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=rf"cannot serve metrics on 127.0.0.1:{port}: "):
            HttpServer(build_app(DaemonMetrics("watch")), "127.0.0.1", port)


def test_watch_with_a_port_in_use_exits_2_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEX_API_TOKEN", TOKEN)
    monkeypatch.setenv("HEX_BASE_URL", "http://127.0.0.1:9")
    (tmp_path / "target").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(
            main,
            ["watch", "--target-path", str(tmp_path / "target"), "--metrics-port", str(port)],
        )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert errors == [f"Error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"]


# -- a running hexdbt watch -----------------------------------------------------------------------


@pytest.fixture
def watch_env(hex_emulator_factory: EmulatorFactory) -> dict[str, str]:
    """The emulator and hexdbt on one clock 10 times faster than real time; Hex's budget lets one
    RunProject through an hour, so a second trigger waits for it."""
    origin = time.time()
    emulator = hex_emulator_factory(clock=ScaledClock.since(origin, 10.0))
    return {
        **os.environ,
        "HEX_API_TOKEN": TOKEN,
        "HEX_BASE_URL": emulator.url,
        "HEXDBT_TIME_SCALE": "10",
        "HEXDBT_TIME_ORIGIN": repr(origin),
        "HEXDBT_BUDGET": "run_project=1/3600",
    }


@pytest.mark.slow
def test_a_running_watch_serves_metrics_that_move_after_a_build(
    tmp_path: Path, watch_env: dict[str, str]
) -> None:
    target = tmp_path / "target"
    target.mkdir()
    write_json(target / "manifest.json", manifest_document([model("customers"), model("orders")]))
    mappings = tmp_path / "hex_mappings.yml"
    mappings.write_text(
        "version: 1\nprojects:\n"
        f"  - {{name: health, project_id: {CUSTOMER_HEALTH_ID}, models: [customers]}}\n"
        f"  - {{name: finance, project_id: {FINANCE_OVERVIEW_ID}, models: [orders]}}\n"
    )
    args = ["--target-path", str(target), "--mappings", str(mappings), "--metrics-port", "0"]
    daemon = Daemon(args, watch_env, tmp_path)
    try:
        serving = daemon.wait_for("metrics_serving")
        assert serving["url"].startswith("http://127.0.0.1:")
        daemon.wait_for("watching")
        assert until_healthy(serving["health"]) == (200, "text/plain; charset=utf-8", "ok\n")
        before = samples(get(serving["url"])[2])
        assert value(before, "hexdbt_invocations_total", result="submitted") == 0
        assert value(before, "hexdbt_last_dispatch_timestamp_seconds") == 0

        both = {"model.shop.customers": "success", "model.shop.orders": "success"}
        write_json(target / "run_results.json", run_results_document(both, invocation_id="i-1"))
        # One trigger is sent, the other waits: the budget lets one RunProject through an hour.
        live = scrape_until(
            serving["url"],
            lambda found: (
                value(found, "hexdbt_live_runs") == 1
                and value(found, "hexdbt_budget_waits_total") == 1
            ),
        )
        assert value(live, "hexdbt_invocations_total", result="submitted") == 1
        assert value(live, "hexdbt_last_dispatch_timestamp_seconds") > 0
        ended = scrape_until(
            serving["url"],
            lambda found: value(found, "hexdbt_triggers_total", outcome="completed") == 1,
        )
        assert value(ended, "hexdbt_live_runs") == 0
    finally:
        code = daemon.stop()
    assert code == 0
    assert all(TOKEN not in line for line in daemon.lines)


def until_healthy(health_url: str) -> tuple[int, str, str]:
    """The daemon serves its metrics before its engine runs: /healthz answers 503 until then, as a
    readiness probe sees it. Ask until it answers 200 (30 s at most) and return that answer."""
    deadline = time.monotonic() + 30
    while True:
        answer = get(health_url)
        if answer[0] != 503:
            return answer
        assert time.monotonic() < deadline, f"{health_url} never became healthy"
        time.sleep(0.02)


def scrape_until(url: str, done: Any) -> Samples:
    """Scrape ``url`` until ``done`` holds of its samples (30 s at most)."""
    deadline = time.monotonic() + 30
    while True:
        found = samples(get(url)[2])
        if done(found):
            return found
        assert time.monotonic() < deadline, f"never true of {url}: {found}"
        time.sleep(0.02)
