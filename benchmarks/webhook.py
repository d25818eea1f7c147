"""How fast `hexdbt serve` answers dbt Cloud's webhooks, and how soon a delivery starts Hex.

    .venv/bin/python benchmarks/webhook.py [--deliveries 50] [--rounds 5]

For SQLite files and for a real PostgreSQL server on 127.0.0.1 (the tests' ``PostgresServer``,
with fsync on, as ``benchmarks/state.py`` does), one `hexdbt serve` process each:

1. the answer time of ``--deliveries`` signed ``job.run.completed`` deliveries sent at once (each
   recorded durably in the ledger before its 200), p50 / p99 / worst, next to ``GET /healthz``
   under the same load (the HTTP stack alone: the baseline of the ratios). Target: p99 under
   100 ms, far inside dbt Cloud's 10 s;
2. from a delivery to the first RunProject at the emulator, for runs of the sample build's
   artifacts (tests/fixtures/sample_build) behind a clone and a deps step, one round at a time;
   with the share of the Admin API calls (the run with its steps, then every step's artifacts),
   from the first call's arrival at the emulator to the last one's.

The emulator (Hex and dbt Cloud) runs in this process, it and `serve` on one clock 60 times
faster than real time, so that each round's Hex runs end before the next round (a trigger waits
behind its app's live run); the times measured are real.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from postgres_server import PostgresServer, PostgresServerError  # noqa: E402
from state import postgres_for_benchmark  # type: ignore[import-not-found]  # noqa: E402

from hexdbt.clock import ScaledClock, from_iso  # noqa: E402
from hexdbt.emulator.dbt_cloud import DBT_CLOUD_TOKEN  # noqa: E402
from hexdbt.emulator.server import HexEmulator  # noqa: E402

SECRET = "whsec-benchmark"
JOB = 12
SAMPLE = REPO_ROOT / "tests" / "fixtures" / "sample_build"
TARGET_P99_MS = 100.0
SCALE = 60.0


def _steps(root: Path, round_: int) -> list[tuple[str, Path | None]]:
    """A job's steps; its dbt step, the sample build under an invocation id of its own (a
    second run of the same dbt invocation would be handled already, and start nothing)."""
    build = root / f"step-build-{round_}"
    build.mkdir()
    results = json.loads((SAMPLE / "run_results_success.json").read_text())
    results["metadata"]["invocation_id"] = f"benchmark-{round_}-{time.time_ns()}"
    (build / "run_results.json").write_text(json.dumps(results))
    (build / "manifest.json").write_bytes((SAMPLE / "manifest.json").read_bytes())
    return [
        ("Clone git repository", None),
        ("Invoke dbt with `dbt deps`", None),
        ("Invoke dbt with `dbt build`", build),
    ]


class Serve:
    """`hexdbt serve` in a process of its own, webhooks only, its events read as they come."""

    def __init__(self, emulator: HexEmulator, origin: float, state_env: dict[str, str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "HEX_", "HEXDBT_"))}
        env.update(
            PYTHONPATH=str(REPO_ROOT),
            HEX_API_TOKEN="hxtp_benchmark",
            HEX_BASE_URL=emulator.url,
            DBT_CLOUD_HOST=emulator.url,
            DBT_CLOUD_ACCOUNT_ID="1",
            DBT_CLOUD_API_TOKEN=DBT_CLOUD_TOKEN,
            HEXDBT_DBT_CLOUD_WEBHOOK_SECRET=SECRET,
            HEXDBT_TIME_SCALE=str(SCALE),
            HEXDBT_TIME_ORIGIN=repr(origin),
            **state_env,
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hexdbt", "serve", "--port", "0", "--log-format", "json",
             "--dbt-cloud-jobs", str(JOB), "--mappings", str(REPO_ROOT / "hex_mappings.yml")],
            env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        self.events: list[dict[str, object]] = []
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 30
        while not self.of("serving"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start: {self.events}")
            time.sleep(0.05)
        self.url = str(self.of("serving")[0]["url"])

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.events.append(json.loads(line))

    def of(self, name: str) -> list[dict[str, object]]:
        return [event for event in list(self.events) if event["event"] == name]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _deliver(url: str, body: bytes) -> float:
    """Milliseconds until the 200 of one signed delivery."""
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Authorization": signature}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()
        assert answer.status == 200, answer.status
    return (time.perf_counter() - started) * 1000


def _get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as answer:
        answer.read()
    return (time.perf_counter() - started) * 1000


def _at_once(calls: list[Callable[[], float]]) -> list[float]:
    """Every call started together (a barrier), each on a thread; their times."""
    barrier = threading.Barrier(len(calls))
    times: list[float] = []
    lock = threading.Lock()

    def go(call: Callable[[], float]) -> None:
        barrier.wait()
        elapsed = call()
        with lock:
            times.append(elapsed)

    threads = [threading.Thread(target=go, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return times


def _p(times: list[float], q: float) -> float:
    return statistics.quantiles(times, n=100, method="inclusive")[int(q) - 1]


def measure(state_env: dict[str, str], deliveries: int, rounds: int, root: Path) -> list[str]:
    origin = time.time()
    emulator = HexEmulator(clock=ScaledClock.since(origin, SCALE)).start()
    dbt_cloud = emulator.dbt_cloud
    dbt_cloud.add_job(JOB, environment_id=7)
    serve = Serve(emulator, origin, state_env)
    webhook = f"{serve.url}/webhooks/dbt-cloud"
    try:
        # 1. answer times: runs of setup steps only (they plan nothing: the answer path alone).
        setup_only = _steps(root, 0)[:2]
        health = _at_once([lambda: _get(f"{serve.url}/healthz")] * deliveries)
        bodies = [
            dbt_cloud.event_body(
                dbt_cloud.add_run(JOB, setup_only, notify=False), "job.run.completed"
            )
            for _ in range(deliveries)
        ]
        answers = _at_once([lambda body=body: _deliver(webhook, body) for body in bodies])
        # 2. delivery to the first RunProject.
        to_hex, api_share = [], []
        for round_ in range(1, rounds + 1):
            run = dbt_cloud.add_run(JOB, _steps(root, round_), notify=False)
            seen = len(emulator.journal())
            sent = time.time()
            _deliver(webhook, dbt_cloud.event_body(run, "job.run.completed"))
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                journal = emulator.journal()[seen:]
                posts = [e for e in journal if e["operation"] == "RunProject"]
                if posts:
                    break
                time.sleep(0.01)
            else:
                raise SystemExit(f"no RunProject within 30 s; serve said: {serve.events[-3:]}")
            cloud_calls = [e for e in journal if str(e["operation"]).startswith("DbtCloud")]
            first_post = from_iso(str(posts[0]["time"]))
            to_hex.append((first_post - sent) * 1000)
            api_share.append(
                (from_iso(str(cloud_calls[-1]["time"])) - from_iso(str(cloud_calls[0]["time"])))
                * 1000
            )
            time.sleep(3.0)  # the round's Hex runs end (3 min of the clock) before the next
    finally:
        serve.stop()
        emulator.stop()
    base = statistics.median(health)
    rows = [
        f"| GET /healthz ({deliveries} at once) | {statistics.median(health):.1f} ms"
        f" | {_p(health, 99):.1f} ms | {max(health):.1f} ms | 1.00x |",
        f"| webhook, recorded then 200 ({deliveries} at once) | {statistics.median(answers):.1f} ms"
        f" | {_p(answers, 99):.1f} ms | {max(answers):.1f} ms"
        f" | {statistics.median(answers) / base:.2f}x |",
    ]
    median_hex = statistics.median(to_hex)
    share = statistics.median(api_share)
    rows.append(
        f"| delivery to first RunProject ({rounds} runs, one at a time) | {median_hex:.0f} ms"
        f" | - | {max(to_hex):.0f} ms | Admin API calls {share:.0f} ms"
        f" = {share / median_hex:.0%} |"
    )
    verdict = "met" if _p(answers, 99) < TARGET_P99_MS else "MISSED"
    rows.append(f"| target: webhook p99 under {TARGET_P99_MS:.0f} ms | {verdict} | | | |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    try:
        server = PostgresServer.create()
    except PostgresServerError as exc:
        print(f"cannot start PostgreSQL: {exc}", file=sys.stderr)
        return 1
    missed = False
    with server, tempfile.TemporaryDirectory() as folder:
        postgres_for_benchmark(server)
        root = Path(folder)
        for label, state_env in (
            ("SQLite", {"HEXDBT_STATE_DIR": str(root / "state")}),
            ("PostgreSQL", {"HEXDBT_STATE_URL": f"{server.url}?schema=webhook_benchmark"}),
        ):
            artifacts = root / label
            artifacts.mkdir()
            rows = measure(state_env, options.deliveries, options.rounds, artifacts)
            print(f"\nhexdbt serve on {label}")
            print("| what | median | p99 | worst | ratio / share |")
            print("|---|---|---|---|---|")
            print("\n".join(rows))
            missed = missed or "MISSED" in rows[-1]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
