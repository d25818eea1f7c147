"""Latency of a GetRunStatus poll against the emulator, next to a bare stdlib HTTP server.

Both servers run in this process on 127.0.0.1 and are polled over one keep-alive
requests.Session, so the ratio shows what the emulator's own work (routing, auth, limits,
journal, run lifecycle) costs on top of Python's HTTP machinery. Target: median well under 5 ms.

    .venv/bin/python benchmarks/emulator_latency.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

from hexdbt.clock import ManualClock
from hexdbt.emulator import HexEmulator, default_scenario

PROJECT_ID = "5a8591dd-4039-49df-9202-96385ba3eff8"
_FIXED_BODY = (
    b'{"projectId":"5a8591dd-4039-49df-9202-96385ba3eff8","projectVersion":"7",'
    b'"runId":"00000000-0000-0000-0000-000000000001","status":"RUNNING","runTrigger":"API",'
    b'"startTime":"2026-01-01T00:00:03.000Z","endTime":null,"elapsedTime":2000,"traceId":"x"}'
)


class _FixedJson(BaseHTTPRequestHandler):
    """The baseline: the least a stdlib server can do to answer a status poll."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(_FIXED_BODY)))
        self.end_headers()
        self.wfile.write(_FIXED_BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _measure(session: requests.Session, url: str, count: int) -> list[float]:
    for _ in range(50):  # warm the connection and the code paths
        session.get(url, timeout=10).raise_for_status()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        response = session.get(url, timeout=10)
        samples.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"unexpected HTTP {response.status_code} from {url}")
    return samples


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    count = parser.parse_args().requests

    baseline_server = ThreadingHTTPServer(("127.0.0.1", 0), _FixedJson)
    baseline_server.daemon_threads = True
    threading.Thread(target=baseline_server.serve_forever, daemon=True).start()
    baseline_url = f"http://127.0.0.1:{baseline_server.server_address[1]}/status"

    # Limits off: 2,000 polls would otherwise meet the 30-a-minute budget, which is the point of
    # the limit but not of this measurement (a 429 costs the same work plus headers).
    scenario = default_scenario().with_settings(limits_enabled=False)
    with (
        HexEmulator(scenario=scenario, clock=ManualClock()) as emulator,
        requests.Session() as session,
    ):
        session.headers["Authorization"] = "Bearer hxtp_benchmark"
        run = session.post(f"{emulator.url}/api/v1/projects/{PROJECT_ID}/runs", json={}, timeout=10)
        run.raise_for_status()
        emulator.advance(5)  # RUNNING: start time and elapsed time are computed on every poll
        status_url = run.json()["runStatusUrl"]
        with requests.Session() as baseline_session:
            baseline = _measure(baseline_session, baseline_url, count)
        emulated = _measure(session, status_url, count)
        journal_size = len(emulator.journal())
    baseline_server.shutdown()
    baseline_server.server_close()

    rows = [
        ("bare http.server, fixed JSON", baseline),
        ("hexdbt emulator, GetRunStatus", emulated),
    ]
    print(f"GetRunStatus poll latency, {count} requests on one keep-alive session (ms)")
    print(f"{'server':<32} {'median':>8} {'p95':>8} {'max':>8} {'median ratio':>13}")
    base_median = statistics.median(baseline)
    for name, samples in rows:
        median = statistics.median(samples)
        print(
            f"{name:<32} {median:>8.3f} {_p95(samples):>8.3f} {max(samples):>8.3f} "
            f"{median / base_median:>12.2f}x"
        )
    print(f"(emulator journal held {journal_size} entries at the end)")


if __name__ == "__main__":
    main()
