"""`hexdbt serve` end to end against the emulator's dbt Cloud, whose runs' steps serve the
artifacts of real dbt builds of the sample project: signed webhooks, retries, polling, a kill
between the answer and the plan, two processes on one PostgreSQL state, and a real job's shape."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from daemon_helpers import Daemon
from dbt_runs import dbt_in_process
from postgres_server import PostgresServer
from test_hook_relay import _copy_with_hook
from test_metrics import samples

from hexdbt.clock import ScaledClock, from_iso
from hexdbt.crashpoints import CRASH_EXIT_CODE
from hexdbt.dbt.artifacts import load_run_results
from hexdbt.dbt.cloud import DbtCloudClient
from hexdbt.emulator.dbt_cloud import CANCELLED, DBT_CLOUD_TOKEN, ERROR
from hexdbt.emulator.pytest_plugin import EmulatorFactory
from hexdbt.emulator.scenario import (
    CUSTOMER_HEALTH_ID,
    EXECUTIVE_KPIS_ID,
    FINANCE_OVERVIEW_ID,
    MARKETING_ATTRIBUTION_ID,
)
from hexdbt.emulator.server import HexEmulator
from hexdbt.feeders.dbt_cloud import CloudPlan, MappingsByRun, NothingToPlan, plan_cloud_run
from hexdbt.ledger import Ledger
from hexdbt.settings import DbtCloudSettings, resolve_state_location

pytestmark = [pytest.mark.dbt, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = REPO_ROOT / "hex_mappings.yml"
HEX_TOKEN = "hxtp_serve_test_token"
SECRET = "whsec-serve-test-secret-9c1d"
JOB, CI_JOB, DEV_JOB = 12, 13, 14
EVERY_APP = (CUSTOMER_HEALTH_ID, FINANCE_OVERVIEW_ID, MARKETING_ATTRIBUTION_ID, EXECUTIVE_KPIS_ID)
SCALE = 10.0


@dataclass(frozen=True)
class Steps:
    """The folders of a real job's dbt steps: seed, run, test."""

    seed: Path
    run: Path
    test: Path

    def job(self, *, with_tests: bool = True) -> list[tuple[str, Path | None]]:
        """A real job's steps: clone, profile and deps (no artifacts), then dbt's."""
        steps: list[tuple[str, Path | None]] = [
            ("Clone git repository", None),
            ("Create profile from connection DuckDB", None),
            ("Invoke dbt with `dbt deps`", None),
            ("Invoke dbt with `dbt seed`", self.seed),
            ("Invoke dbt with `dbt run`", self.run),
        ]
        if with_tests:
            steps.append(("Invoke dbt with `dbt test`", self.test))
        return steps


@pytest.fixture(scope="module")
def steps(tmp_path_factory: pytest.TempPathFactory) -> Steps:
    project = tmp_path_factory.mktemp("cloud") / "sample_dbt_project"
    shutil.copytree(
        REPO_ROOT / "sample_dbt_project",
        project,
        ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", ".user.yml"),
    )

    def dbt(name: str, *arguments: str) -> Path:
        return dbt_in_process(
            project, [name, *arguments], project / f"target_{name}", must_succeed=True
        )

    return Steps(dbt("seed"), dbt("run", "--vars", "{slow_model_seconds: 0}"), dbt("test"))


@dataclass
class Cloud:
    emulator: HexEmulator
    env: dict[str, str]
    root: Path

    def serve(self, *args: str, env: dict[str, str] | None = None) -> Daemon:
        daemon = Daemon(
            ["--port", "0", "--mappings", str(MAPPINGS), *args],
            env or self.env,
            self.root,
            command="serve",
        )
        daemon.wait_for("serving")
        return daemon

    def posts(self) -> Counter[str]:
        """RunProject requests Hex received, per project id."""
        return Counter(
            entry["path"].split("/")[4]
            for entry in self.emulator.journal()
            if entry["operation"] == "RunProject"
        )

    def wait_for_posts(
        self,
        expected: Counter[str],
        *daemons: Daemon,
        polls: int = 0,
        env: dict[str, str] | None = None,
        timeout_s: float = 30,
    ) -> None:
        """Until Hex has had ``expected`` RunProject requests, and then until the point after
        which no more could come: each request answered and its run followed by a daemon,
        every dbt Cloud run settled in the ledger (none left to plan), and ``polls`` more polls
        of each daemon (each found nothing new). Then nothing more has come."""
        _wait_until(lambda: self.posts() == expected, f"RunProject {expected}", daemons, timeout_s)
        total = sum(expected.values())
        _wait_until(
            lambda: sum(len(daemon.events("run_followed")) for daemon in daemons) >= total,
            f"{total} runs followed",
            daemons,
        )
        state = resolve_state_location((env or self.env).get("HEXDBT_STATE_URL"))
        with Ledger.open(state) as ledger:
            _wait_until(
                lambda: not ledger.dbt_cloud_runs(unsettled_only=True),
                "every dbt Cloud run settled",
                daemons,
            )
        more_polls(daemons, polls)
        assert self.posts() == expected


def _wait_until(
    condition: Callable[[], bool], what: str, daemons: tuple[Daemon, ...], timeout_s: float = 30
) -> None:
    """Until ``condition`` (a read of the journal, the ledger, the logs or the metrics) holds;
    a daemon that ends first fails the test with its output."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        for daemon in daemons:
            assert daemon.process.poll() is None, "\n".join(daemon.lines)
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def polls_made(daemon: Daemon) -> float:
    """How many polls of dbt Cloud's runs ``daemon`` has finished, by its metrics."""
    with urllib.request.urlopen(daemon.events("serving")[0]["metrics"], timeout=5) as answer:
        found = samples(answer.read().decode())
    return sum(
        count for (name, _), count in found.items() if name == "hexdbt_dbt_cloud_polls_total"
    )


def more_polls(daemons: tuple[Daemon, ...], count: int) -> None:
    """Until each daemon has finished ``count`` more polls: at least ``count - 1`` of them
    started after this call, and listed what was there by then."""
    if not count:
        return
    before = [polls_made(daemon) for daemon in daemons]
    _wait_until(
        lambda: all(polls_made(d) >= n + count for d, n in zip(daemons, before, strict=True)),
        f"{count} more polls",
        daemons,
    )


@pytest.fixture
def cloud(hex_emulator_factory: EmulatorFactory, tmp_path: Path) -> Cloud:
    """The emulator (Hex and dbt Cloud) and `serve` on one clock ten times faster than real."""
    origin = time.time()
    emulator = hex_emulator_factory(clock=ScaledClock.since(origin, SCALE))
    dbt_cloud = emulator.dbt_cloud
    dbt_cloud.add_environment(7, "deployment")
    dbt_cloud.add_environment(8, "development")
    dbt_cloud.add_job(JOB, environment_id=7)
    dbt_cloud.add_job(CI_JOB, environment_id=7, job_type="ci")
    dbt_cloud.add_job(DEV_JOB, environment_id=8)
    env = {
        **os.environ,
        "HEX_API_TOKEN": HEX_TOKEN,
        "HEX_BASE_URL": emulator.url,
        "HEXDBT_TIME_SCALE": str(SCALE),
        "HEXDBT_TIME_ORIGIN": repr(origin),
        "DBT_CLOUD_HOST": emulator.url,
        "DBT_CLOUD_ACCOUNT_ID": "1",
        "DBT_CLOUD_API_TOKEN": DBT_CLOUD_TOKEN,
        "HEXDBT_DBT_CLOUD_WEBHOOK_SECRET": SECRET,
    }
    return Cloud(emulator, env, tmp_path)


def _subscribe(cloud: Cloud, daemon: Daemon, **options: Any) -> None:
    url = daemon.events("serving")[0]["webhook"]
    cloud.emulator.dbt_cloud.subscribe(url, secret=SECRET, **options)


def _no_secret_anywhere(*daemons: Daemon) -> None:
    for daemon in daemons:
        text = "\n".join(daemon.lines)
        assert SECRET not in text
        assert DBT_CLOUD_TOKEN not in text
        assert HEX_TOKEN not in text
        assert "Traceback" not in text


# -- planning a run, in this process ----------------------------------------------------------


def _client(emulator: HexEmulator) -> DbtCloudClient:
    settings = DbtCloudSettings(f"{emulator.url}/api", "1", DBT_CLOUD_TOKEN, None)
    return DbtCloudClient(settings, clock=emulator.clock)


def test_a_run_of_run_then_test_is_planned_as_one_unit_with_require_tests_across_steps(
    cloud: Cloud, steps: Steps
) -> None:
    dbt_cloud = cloud.emulator.dbt_cloud
    client = _client(cloud.emulator)
    with_tests = dbt_cloud.add_run(JOB, steps.job(), notify=False)
    planned = plan_cloud_run(client, str(with_tests.run_id), MappingsByRun(MAPPINGS))
    assert isinstance(planned, CloudPlan)
    plan = planned.plan
    assert plan.invocation_id == f"dbt-cloud:{with_tests.run_id}"
    assert sorted(trigger.project_id for trigger in plan.triggers) == sorted(EVERY_APP)
    # The handled steps are the dbt steps with run_results.json (seed, run, test), in order.
    assert [index for _, _, index in planned.steps] == [4, 5, 6]
    test_invocation = planned.steps[-1][0]
    kpis = next(t for t in plan.triggers if t.project_id == EXECUTIVE_KPIS_ID)
    # Templates see the last dbt step as `invocation`.
    assert kpis.input_params["dbt_invocation_id"] == test_invocation

    without_tests = dbt_cloud.add_run(JOB, steps.job(with_tests=False), notify=False)
    planned = plan_cloud_run(client, str(without_tests.run_id), MappingsByRun(MAPPINGS))
    assert isinstance(planned, CloudPlan)
    skipped = {item.project_id: item.reason for item in planned.plan.skipped}
    assert FINANCE_OVERVIEW_ID in skipped
    assert "test" in skipped[FINANCE_OVERVIEW_ID]


def test_a_real_job_s_shape_cancelled_and_failed_before_dbt_plan_nothing_and_say_why(
    cloud: Cloud, steps: Steps
) -> None:
    dbt_cloud = cloud.emulator.dbt_cloud
    client = _client(cloud.emulator)
    setup_only = steps.job()[:3]
    cases = {
        "cancelled in dbt Cloud": dbt_cloud.add_run(
            JOB, steps.job(), status=CANCELLED, notify=False
        ),
        "failed before any dbt step": dbt_cloud.add_run(
            JOB,
            [*setup_only[:2], ("Invoke dbt with `dbt deps`", None, ERROR)],
            status=ERROR,
            notify=False,
        ),
        "no step wrote run_results.json": dbt_cloud.add_run(JOB, setup_only, notify=False),
    }
    for reason, run in cases.items():
        planned = plan_cloud_run(client, str(run.run_id), MappingsByRun(MAPPINGS))
        assert isinstance(planned, NothingToPlan)
        assert planned.reason.startswith(reason), planned.reason


# -- serve, a real process --------------------------------------------------------------------


def test_a_signed_webhook_starts_each_app_once_and_five_retries_beside_polling_add_nothing(
    cloud: Cloud, steps: Steps
) -> None:
    daemon = cloud.serve("--dbt-cloud-poll", "1")
    try:
        _subscribe(cloud, daemon)
        run = cloud.emulator.dbt_cloud.add_run(JOB, steps.job())
        cloud.wait_for_posts(Counter(dict.fromkeys(EVERY_APP, 1)), daemon)
        # dbt Cloud delivers the same event again (an answer it took for lost), five times.
        cloud.emulator.dbt_cloud.wait_for_deliveries()
        delivered = [
            item.event_id
            for item in cloud.emulator.dbt_cloud.deliveries()
            if item.event_type == "job.run.completed"
        ]
        body = cloud.emulator.dbt_cloud.event_body(run, "job.run.completed", delivered[0])
        for _ in range(5):
            assert _deliver(daemon, body, SECRET) == 200  # answered once recorded: a duplicate
        more_polls((daemon,), 2)
        assert cloud.posts() == Counter(dict.fromkeys(EVERY_APP, 1))
        submitted = daemon.events("invocation_submitted")
        assert [event["run_id"] for event in submitted] == [str(run.run_id)]
        serving = daemon.events("serving")[0]
        with urllib.request.urlopen(serving["health"], timeout=5) as health:
            assert health.read() == b"ok\n"
        with urllib.request.urlopen(serving["metrics"], timeout=5) as metrics:
            text = metrics.read().decode()
        webhooks = [line for line in text.splitlines() if line.startswith("hexdbt_webhooks_total")]
        assert 'hexdbt_webhooks_total{result="duplicate"} 5.0' in webhooks, webhooks
        assert 'hexdbt_daemon_info{daemon="serve"' in text
    finally:
        assert daemon.stop() == 0
    _no_secret_anywhere(daemon)
    # Each dbt step's invocation is handled: the hook's relay, seeing them, starts nothing.
    with Ledger.open(resolve_state_location()) as ledger:
        for folder in (steps.seed, steps.run, steps.test):
            invocation_id = load_run_results(folder / "run_results.json").invocation_id
            assert ledger.has_invocation(invocation_id)
        assert [(r.run_id, r.outcome) for r in ledger.dbt_cloud_runs()] == [
            (str(run.run_id), "planned")
        ]


def _deliver(daemon: Daemon, body: bytes, secret: str) -> int:
    url = daemon.events("serving")[0]["webhook"]
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Authorization": signature}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return int(answer.status)


def test_a_serve_killed_after_its_200_and_before_planning_plans_the_run_once_when_restarted(
    cloud: Cloud, steps: Steps
) -> None:
    crashing = cloud.serve(env={**cloud.env, "HEXDBT_CRASH_AT": "dbt-cloud-before-plan"})
    _subscribe(cloud, crashing)
    cloud.emulator.dbt_cloud.add_run(JOB, steps.job())
    assert crashing.wait_for_exit() == CRASH_EXIT_CODE
    deliveries = cloud.emulator.dbt_cloud.deliveries()
    completed = [item for item in deliveries if item.event_type == "job.run.completed"]
    assert [item.status for item in completed][:1] == [200]  # answered before the kill
    assert cloud.posts() == Counter()
    cloud.emulator.dbt_cloud.unsubscribe_all()
    restarted = cloud.serve()
    try:
        cloud.wait_for_posts(Counter(dict.fromkeys(EVERY_APP, 1)), restarted)
    finally:
        assert restarted.stop() == 0
    _no_secret_anywhere(crashing, restarted)


def test_jobs_not_of_a_deployment_environment_start_nothing_and_say_why(
    cloud: Cloud, steps: Steps
) -> None:
    daemon = cloud.serve()
    try:
        _subscribe(cloud, daemon)
        for job in (CI_JOB, DEV_JOB):
            cloud.emulator.dbt_cloud.add_run(job, steps.job())
        daemon.wait_for("dbt_cloud_run_not_planned", count=2)
        reasons = sorted(event["reason"] for event in daemon.events("dbt_cloud_run_not_planned"))
        assert reasons[0].startswith(f"job {CI_JOB} is a ci job")
        assert reasons[1].startswith(f"job {DEV_JOB} runs in a development environment")
        assert cloud.posts() == Counter()
    finally:
        assert daemon.stop() == 0


def test_polling_takes_no_old_run_at_first_start_and_a_run_whose_deliveries_all_failed(
    cloud: Cloud, steps: Steps
) -> None:
    dbt_cloud = cloud.emulator.dbt_cloud
    dbt_cloud.add_run(JOB, steps.job(), notify=False)  # before serve ever ran
    daemon = cloud.serve("--dbt-cloud-poll", "1")
    try:
        daemon.wait_for("dbt_cloud_polling_started")
        more_polls((daemon,), 2)  # each listed the old run
        assert daemon.events("dbt_cloud_run_found") == []
        assert cloud.posts() == Counter()
        # Every delivery of this run fails (nothing listens there), five times.
        dbt_cloud.subscribe(
            "http://127.0.0.1:9/webhooks/dbt-cloud", secret=SECRET, retry_delays_s=(0.05,)
        )
        run = dbt_cloud.add_run(JOB, steps.job())
        dbt_cloud.wait_for_deliveries()
        failed = [item for item in dbt_cloud.deliveries() if item.run_id == run.run_id]
        assert [item.status for item in failed if item.event_type == "job.run.completed"] == [
            None
        ] * 5
        cloud.wait_for_posts(Counter(dict.fromkeys(EVERY_APP, 1)), daemon, timeout_s=15)
        found = daemon.events("dbt_cloud_run_found")
        assert [event["run_id"] for event in found] == [str(run.run_id)]
    finally:
        assert daemon.stop() == 0


def test_a_429_while_polling_is_a_cool_down_honoured(cloud: Cloud, steps: Steps) -> None:
    cloud.emulator.inject_faults(
        "DbtCloudListRuns", sequence=[{"kind": "error", "status": 429, "delay_s": 3}]
    )
    daemon = cloud.serve("--dbt-cloud-poll", "1")
    try:
        daemon.wait_for("dbt_cloud_cool_down")
        cloud.emulator.dbt_cloud.add_run(JOB, steps.job(), notify=False)
        cloud.wait_for_posts(Counter(dict.fromkeys(EVERY_APP, 1)), daemon, timeout_s=20)
        lists = [
            from_iso(entry["time"])
            for entry in cloud.emulator.journal()
            if entry["operation"] == "DbtCloudListRuns"
        ]
        # The next poll came after the cool-down (3 s of the scaled clock), not after 1 s: the
        # journal's times are real ones.
        assert lists[1] - lists[0] >= 3 / SCALE
    finally:
        assert daemon.stop() == 0
    assert daemon.events("dbt_cloud_cool_down")[0]["seconds"] >= 3


@pytest.fixture
def shared_postgres(cloud: Cloud, postgres_state_url: str) -> dict[str, str]:
    return {**cloud.env, "HEXDBT_STATE_URL": postgres_state_url}


def test_two_serve_processes_on_one_postgresql_state_start_each_app_once_per_run(
    cloud: Cloud, steps: Steps, shared_postgres: dict[str, str]
) -> None:
    daemons = [
        cloud.serve("--dbt-cloud-poll", "1", "--dbt-cloud-take-old-runs", env=shared_postgres)
        for _ in range(2)
    ]
    try:
        for daemon in daemons:
            _subscribe(cloud, daemon)
        run = cloud.emulator.dbt_cloud.add_run(JOB, steps.job())
        cloud.wait_for_posts(
            Counter(dict.fromkeys(EVERY_APP, 1)), *daemons, polls=2, env=shared_postgres,
            timeout_s=40,
        )  # fmt: skip
        submitted = [event["run_id"] for d in daemons for event in d.events("invocation_submitted")]
        assert submitted == [str(run.run_id)]
    finally:
        for daemon in daemons:
            assert daemon.stop() == 0
    _no_secret_anywhere(*daemons)


def test_one_serve_watches_a_target_folder_beside_dbt_cloud_and_starts_nothing_twice(
    cloud: Cloud, steps: Steps, tmp_path: Path
) -> None:
    """A build seen in a watched folder, and then a dbt Cloud run of that same dbt invocation:
    the watcher's plan stands, the run is handled by another way in and says so."""
    project = tmp_path / "project"
    (project / "target").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: sample\nprofile: sample\n")
    daemon = cloud.serve("--project-dir", str(project))
    try:
        assert daemon.events("serving")[0]["watching"] == [str(project / "target")]
        _subscribe(cloud, daemon)
        daemon.wait_for("watching")
        shutil.copy(steps.run / "manifest.json", project / "target" / "manifest.json")
        shutil.copy(steps.run / "run_results.json", project / "target" / "run_results.json")
        daemon.wait_for("invocation_submitted")
        without_tests = Counter(
            dict.fromkeys((CUSTOMER_HEALTH_ID, MARKETING_ATTRIBUTION_ID, EXECUTIVE_KPIS_ID), 1)
        )
        cloud.wait_for_posts(without_tests, daemon)
        cloud.emulator.dbt_cloud.add_run(JOB, steps.job(with_tests=False))
        daemon.wait_for("dbt_cloud_run_not_planned")
        reason = daemon.events("dbt_cloud_run_not_planned")[0]["reason"]
        run_invocation = load_run_results(steps.run / "run_results.json").invocation_id
        assert reason.startswith("its dbt invocations were handled by another way in")
        assert run_invocation in reason
        assert cloud.posts() == without_tests
    finally:
        assert daemon.stop() == 0


def test_one_serve_relays_the_on_run_end_hook_s_outbox_beside_dbt_cloud(
    cloud: Cloud, tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """`serve --relay-project-dir` reads the hook's outbox, as `hexdbt relay` does, on the same
    engine as dbt Cloud's feeder (a PostgreSQL warehouse: DuckDB's file would stay locked by
    this process's dbt)."""
    profile = {
        "type": "postgres", "host": "127.0.0.1", "port": postgres_server.port, "user": "hexdbt",
        "password": postgres_server.password, "dbname": "hexdbt",
        "schema": f"serve_{secrets.token_hex(4)}", "threads": 4,
    }  # fmt: skip
    project = _copy_with_hook(tmp_path, profile)
    dbt_in_process(
        project, ["build", "--vars", "{slow_model_seconds: 0}"], project / "target",
        must_succeed=False,
    )  # fmt: skip
    daemon = cloud.serve("--relay-project-dir", str(project), "--relay-profiles-dir", str(project))
    try:
        assert daemon.events("serving")[0]["outbox"].endswith('."hexdbt_outbox"')
        # dbt-postgres runs no Python model: the marketing app does not start.
        started = (CUSTOMER_HEALTH_ID, FINANCE_OVERVIEW_ID, EXECUTIVE_KPIS_ID)
        cloud.wait_for_posts(Counter(dict.fromkeys(started, 1)), daemon, timeout_s=60)
        assert [event["command"] for event in daemon.events("invocation_submitted")] == ["build"]
    finally:
        assert daemon.stop() == 0
    _no_secret_anywhere(daemon)


PAGE_TOKEN = "page-token-for-the-serve-test"


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status), answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_serve_shows_the_status_page_behind_its_token_and_leaves_health_and_webhooks_open(
    cloud: Cloud, steps: Steps
) -> None:
    """The one server of `serve` serves the status page at /: with HEXDBT_PAGE_TOKEN set, the
    page and /metrics need it, /healthz and the signed webhook do not; a dbt Cloud run's apps
    show on the page."""
    daemon = cloud.serve(env={**cloud.env, "HEXDBT_PAGE_TOKEN": PAGE_TOKEN})
    try:
        url = daemon.events("serving")[0]["url"]
        assert _get(f"{url}/")[0] == 401
        assert _get(f"{url}/metrics")[0] == 401
        assert _get(f"{url}/healthz") == (200, "ok\n")
        _subscribe(cloud, daemon)
        cloud.emulator.dbt_cloud.add_run(JOB, steps.job())
        cloud.wait_for_posts(Counter(dict.fromkeys(EVERY_APP, 1)), daemon)
        status, page = _get(f"{url}/", PAGE_TOKEN)
        assert status == 200
        for name in ("customer_health", "finance_overview", "executive_kpis"):
            assert name in page
        assert _get(f"{url}/metrics", PAGE_TOKEN)[0] == 200
    finally:
        assert daemon.stop() == 0
    assert PAGE_TOKEN not in "\n".join(daemon.lines)
