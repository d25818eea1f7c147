"""dbt Cloud as a way in, piece by piece: its settings, the Admin API client against the
emulator's dbt Cloud (faults included), and the webhook endpoint over real HTTP with a real
ledger, bad deliveries first."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dbt_shapes import manifest_document, model, run_results_document, write_json
from test_metrics import samples, value

from hexdbt.cli import main
from hexdbt.clock import ManualClock
from hexdbt.dbt.cloud import DbtCloudClient
from hexdbt.emulator.dbt_cloud import DBT_CLOUD_TOKEN, RUNNING, EmulatedRun
from hexdbt.emulator.pytest_plugin import EmulatorFactory
from hexdbt.emulator.scenario import CUSTOMER_HEALTH_ID
from hexdbt.emulator.server import HexEmulator
from hexdbt.engine import EngineSettings
from hexdbt.errors import ConfigError, DbtCloudError
from hexdbt.feeders.daemon import daemon_engine
from hexdbt.feeders.dbt_cloud import (
    DEFAULT_GIVE_UP_S,
    RETRY_CAP_S,
    RETRY_FIRST_S,
    CloudPlan,
    DbtCloudFeeder,
    DbtCloudOptions,
    load_job_mappings,
    plan_cloud_run,
)
from hexdbt.feeders.dbt_cloud_webhook import MAX_BODY_BYTES, PATH, WebhookEndpoint
from hexdbt.hex.client import HexClient
from hexdbt.ledger import DbtCloudEvent, DbtCloudRunRecord, Ledger
from hexdbt.logs import MemoryEventLog
from hexdbt.mapping.templates import is_secret_variable
from hexdbt.metrics import DaemonMetrics
from hexdbt.settings import (
    DbtCloudSettings,
    StateLocation,
    normalize_dbt_cloud_url,
    parse_state_url,
    resolve_dbt_cloud,
)
from hexdbt.web import HttpServer, build_app

SECRET = "whsec-hexdbt-test-secret-4f2a"
HEX_TOKEN = "hxtp_dbt_cloud_test_token"


# -- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("cloud.getdbt.com", "https://cloud.getdbt.com/api"),
        ("https://emea.dbt.com", "https://emea.dbt.com/api"),
        ("https://ab123.us1.dbt.com/api/", "https://ab123.us1.dbt.com/api"),
        ("https://ab123.us1.dbt.com/api/v2", "https://ab123.us1.dbt.com/api"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/api"),
        ("http://localhost:9/api", "http://localhost:9/api"),
    ],
)
def test_dbt_cloud_host_is_a_host_or_a_base_url_with_or_without_api(
    given: str, expected: str
) -> None:
    assert normalize_dbt_cloud_url(given) == expected


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("http://cloud.getdbt.com", "refusing to send the dbt Cloud token over plain http to"),
        ("ftp://cloud.getdbt.com", "is not a host name or an http\\(s\\) URL"),
        ("https://cloud.getdbt.com:99999", "is not a host name or an http\\(s\\) URL"),
        ("https://cloud getdbt.com", "is not a host name or an http\\(s\\) URL"),
    ],
)
def test_a_bad_dbt_cloud_host_is_a_config_error(given: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        normalize_dbt_cloud_url(given)


def test_the_settings_come_from_the_environment_and_show_no_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resolve_dbt_cloud() is None
    monkeypatch.setenv("DBT_CLOUD_API_TOKEN", "dbtc_token_in_env")
    with pytest.raises(ConfigError, match="set DBT_CLOUD_ACCOUNT_ID too"):
        resolve_dbt_cloud()
    monkeypatch.setenv("DBT_CLOUD_ACCOUNT_ID", "12x")
    with pytest.raises(ConfigError, match="DBT_CLOUD_ACCOUNT_ID must be a number"):
        resolve_dbt_cloud()
    monkeypatch.setenv("DBT_CLOUD_ACCOUNT_ID", "12")
    monkeypatch.setenv("HEXDBT_DBT_CLOUD_WEBHOOK_SECRET", SECRET)
    settings = resolve_dbt_cloud()
    assert settings is not None
    assert (settings.api_url, settings.account_id) == ("https://cloud.getdbt.com/api", "12")
    assert "dbtc_token_in_env" not in repr(settings)
    assert SECRET not in repr(settings)


def test_templates_may_not_read_the_dbt_cloud_token_or_the_webhook_secret() -> None:
    assert is_secret_variable("DBT_CLOUD_API_TOKEN")
    assert is_secret_variable("HEXDBT_DBT_CLOUD_WEBHOOK_SECRET")


@pytest.mark.parametrize(
    ("environment", "args", "message"),
    [
        ({}, [], "Error: hexdbt serve has nothing to serve"),
        ({"DBT_CLOUD_ACCOUNT_ID": "1"}, [], "Error: no dbt Cloud token: set DBT_CLOUD_API_TOKEN"),
        (
            {"DBT_CLOUD_ACCOUNT_ID": "1", "DBT_CLOUD_API_TOKEN": "dbtc_x"},
            [],
            "Error: hexdbt serve would hear of no dbt Cloud run",
        ),
        (
            {"DBT_CLOUD_ACCOUNT_ID": "1", "DBT_CLOUD_API_TOKEN": "dbtc_x"},
            ["--dbt-cloud-poll", "--dbt-cloud-jobs", "12,ab"],
            "Error: --dbt-cloud-jobs '12,ab': expected dbt Cloud job ids",
        ),
        (
            {"DBT_CLOUD_ACCOUNT_ID": "1", "DBT_CLOUD_API_TOKEN": "dbtc_x"},
            ["--dbt-cloud-poll", "--dbt-cloud-give-up-hours", "0"],
            "Error: Invalid value for '--dbt-cloud-give-up-hours'",
        ),
        (
            {"DBT_CLOUD_ACCOUNT_ID": "1", "DBT_CLOUD_API_TOKEN": "dbtc_x"},
            ["--dbt-cloud-poll", "--dbt-cloud-host", "http://example.com"],
            "Error: refusing to send the dbt Cloud token over plain http to example.com",
        ),
    ],
)
def test_serve_without_what_it_needs_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], args: list[str], message: str
) -> None:
    for name, setting in environment.items():
        monkeypatch.setenv(name, setting)
    result = CliRunner().invoke(main, ["serve", *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert errors, result.output
    assert errors[0].startswith(message), result.output
    assert "dbtc_x" not in result.output


# -- the Admin API client against the emulator's dbt Cloud ------------------------------------


@pytest.fixture
def cloud(hex_emulator: HexEmulator, tmp_path: Path) -> tuple[HexEmulator, EmulatedRun]:
    """The emulator's dbt Cloud with one job and one run of a clone step and a dbt step."""
    step = tmp_path / "step-run"
    step.mkdir()
    write_json(step / "manifest.json", manifest_document([model("customers")]))
    write_json(
        step / "run_results.json",
        run_results_document({"model.shop.customers": "success"}, invocation_id="inv-run"),
    )
    dbt_cloud = hex_emulator.dbt_cloud
    dbt_cloud.add_job(12, environment_id=7)
    run = dbt_cloud.add_run(
        12, [("Clone git repository", None), ("Invoke dbt with `dbt run`", step)]
    )
    return hex_emulator, run


def _client(emulator: HexEmulator, *, token: str = DBT_CLOUD_TOKEN) -> DbtCloudClient:
    settings = DbtCloudSettings(f"{emulator.url}/api", "1", token, None)
    return DbtCloudClient(settings, clock=emulator.clock)


def _operations(emulator: HexEmulator, operation: str) -> list[int | None]:
    return [entry["status"] for entry in emulator.journal() if entry["operation"] == operation]


def test_the_client_lists_runs_reads_steps_and_each_step_s_artifacts(
    cloud: tuple[HexEmulator, EmulatedRun],
) -> None:
    emulator, run = cloud
    client = _client(emulator)
    listed = client.runs("12")
    assert [item.run_id for item in listed] == [str(run.run_id)]
    assert client.runs("13") == []
    detailed = client.run(str(run.run_id))
    assert [(step.index, step.name) for step in detailed.steps] == [
        (1, "Clone git repository"),
        (2, "Invoke dbt with `dbt run`"),
    ]
    assert (detailed.job_id, detailed.environment_id, detailed.status) == ("12", "7", 10)
    assert client.artifact(str(run.run_id), "run_results.json", step=1) is None  # the clone
    raw = client.artifact(str(run.run_id), "run_results.json", step=2)
    assert raw is not None
    assert json.loads(raw)["metadata"]["invocation_id"] == "inv-run"
    assert client.job("12").environment_id == "7"
    assert client.environment_type("7") == "deployment"


def test_a_wrong_token_is_one_error_without_the_token(
    cloud: tuple[HexEmulator, EmulatedRun],
) -> None:
    emulator, _ = cloud
    with pytest.raises(DbtCloudError) as caught:
        _client(emulator, token="dbtc_wrong_token_value").runs("12")
    assert caught.value.status == 401
    assert "dbtc_wrong_token_value" not in str(caught.value)
    assert str(caught.value).startswith("dbt Cloud answered /v2/accounts/1/runs/ with HTTP 401")


def test_a_429_starts_a_cool_down_that_asks_nothing_until_it_ends(
    cloud: tuple[HexEmulator, EmulatedRun],
) -> None:
    emulator, _ = cloud
    emulator.inject_faults(
        "DbtCloudListRuns", sequence=[{"kind": "error", "status": 429, "delay_s": 30}]
    )
    client = _client(emulator)
    for _ in range(2):
        with pytest.raises(DbtCloudError) as caught:
            client.runs("12")
        assert caught.value.status == 429
        assert caught.value.retry_after_s is not None
        assert caught.value.retry_after_s <= 30
    assert _operations(emulator, "DbtCloudListRuns") == [429]  # the second was never sent
    emulator.advance(31)
    assert len(client.runs("12")) == 1


def test_a_5xx_and_a_404_artifact_are_told_apart(cloud: tuple[HexEmulator, EmulatedRun]) -> None:
    emulator, run = cloud
    emulator.inject_faults(
        "DbtCloudGetArtifact", sequence=[{"kind": "error", "status": 502, "body": "html"}]
    )
    client = _client(emulator)
    with pytest.raises(DbtCloudError, match="HTTP 502") as caught:
        client.artifact(str(run.run_id), "run_results.json", step=2)
    assert caught.value.status == 502
    assert client.artifact(str(run.run_id), "run_results.json", step=2) is not None


# -- the webhook endpoint ---------------------------------------------------------------------


class Endpoint:
    """The webhook route of a feeder (its worker not started) on a real server and ledger."""

    def __init__(
        self,
        emulator: HexEmulator,
        state: Path,
        *,
        clock: ManualClock | None = None,
        give_up_after_s: float = DEFAULT_GIVE_UP_S,
    ) -> None:
        self.clock = clock or ManualClock()
        self.client = HexClient(emulator.url, HEX_TOKEN, clock=self.clock)
        self.ledger = Ledger.open(parse_state_url(f"sqlite:///{state}"), clock=self.clock)
        self.log = MemoryEventLog()
        self.metrics = DaemonMetrics("serve")
        engine = daemon_engine(self.client, self.ledger, self.log, EngineSettings(daemon=True))
        self.cloud = _client(emulator)
        self.feeder = DbtCloudFeeder(
            engine,
            self.ledger,
            self.cloud,
            DbtCloudOptions(
                account_id="1", job_ids=frozenset({"12"}), give_up_after_s=give_up_after_s
            ),
            self.log,
            clock=self.clock,
            metrics=self.metrics,
        )
        self.endpoint = WebhookEndpoint(self.feeder, SECRET, self.log, None)
        app = build_app(self.metrics, routes=self.endpoint.routes)
        self.server = HttpServer(app, "127.0.0.1", 0)
        self.url = self.server.url + PATH

    def post(self, body: bytes, signature: str | None) -> tuple[int, str]:
        headers = {"Content-Type": "application/json"}
        if signature is not None:
            headers["Authorization"] = signature
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.read().decode()

    def post_declared(self, size: int, signature: str) -> tuple[int, str]:
        """A POST that declares a body of ``size`` bytes and waits for the answer before
        sending it, as a server that refuses by Content-Length answers at once."""
        host, port = self.server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as connection:
            connection.sendall(
                (
                    f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                    f"Authorization: {signature}\r\nContent-Length: {size}\r\n\r\n"
                ).encode()
            )
            answer = connection.recv(65536).decode()
        head, _, text = answer.partition("\r\n\r\n")
        return int(head.split()[1]), text

    def close(self) -> None:
        self.server.close()
        self.endpoint.close()
        self.cloud.close()
        self.ledger.close()
        self.client.close()


def _signed(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def endpoint(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> Iterator[tuple[Endpoint, HexEmulator]]:
    emulator = hex_emulator_factory()
    emulator.dbt_cloud.add_job(12, environment_id=7)
    made = Endpoint(emulator, tmp_path / "state")
    yield made, emulator
    made.close()


def _completed(emulator: HexEmulator, event_id: str = "wev_one") -> bytes:
    run = emulator.dbt_cloud.add_run(12, [("Invoke dbt with `dbt run`", None)], notify=False)
    return emulator.dbt_cloud.event_body(run, "job.run.completed", event_id)


def test_bad_deliveries_get_4xx_record_nothing_and_never_show_the_secret(
    endpoint: tuple[Endpoint, HexEmulator],
) -> None:
    made, emulator = endpoint
    body = _completed(emulator)
    other_account = json.dumps({**json.loads(body), "accountId": 2}).encode()
    cases = [
        ("no signature", body, None, 401),
        ("a wrong one", body, "0" * 64, 401),
        ("signed with another secret", body, _signed(body, "another-secret"), 401),
        ("another account's event", other_account, _signed(other_account), 403),
        ("malformed JSON", b'{"eventId": ', _signed(b'{"eventId": '), 400),
        ("not an event", b'{"eventId": "x"}', _signed(b'{"eventId": "x"}'), 400),
    ]
    for name, payload, signature, status in cases:
        answered, text = made.post(payload, signature)
        assert answered == status, (name, text)
        assert SECRET not in text
    status, text = made.post_declared(10 * 1024 * 1024, _signed(body))
    assert status == 413, text
    assert made.ledger.dbt_cloud_runs() == []
    lines = [json.dumps(event) for event in made.log.events]
    assert all(SECRET not in line and "eventId" not in line for line in lines)
    refusals = [event for event in made.log.events if event["event"] == "webhook_refused"]
    # Once per cause: two 401 causes (missing, wrong) and the 403, 413 and 400s.
    assert sorted(event["status"] for event in refusals) == [400, 400, 401, 401, 403, 413]
    assert MAX_BODY_BYTES < 10 * 1024 * 1024


def test_a_signed_completed_event_is_recorded_before_the_200_and_a_redelivery_does_nothing(
    endpoint: tuple[Endpoint, HexEmulator],
) -> None:
    made, emulator = endpoint
    body = _completed(emulator, "wev_redelivered")
    for attempt in range(5):
        status, text = made.post(body, _signed(body))
        assert status == 200, text
        assert json.loads(text).get("duplicate", False) is (attempt > 0)
        # Recorded by the time the answer came.
        assert len(made.ledger.dbt_cloud_runs(unsettled_only=True)) == 1
    assert [event["event"] for event in made.log.events].count("webhook_received") == 1


def test_a_job_not_listed_is_answered_200_and_ignored(
    endpoint: tuple[Endpoint, HexEmulator],
) -> None:
    made, emulator = endpoint
    emulator.dbt_cloud.add_job(99, environment_id=7)
    run = emulator.dbt_cloud.add_run(99, [("Invoke dbt with `dbt run`", None)], notify=False)
    body = emulator.dbt_cloud.event_body(run, "job.run.completed")
    status, text = made.post(body, _signed(body))
    assert (status, json.loads(text)["ignored"]) == (200, True)
    assert made.ledger.dbt_cloud_runs() == []


def test_the_endpoint_answers_503_when_the_state_cannot_be_written(
    endpoint: tuple[Endpoint, HexEmulator],
) -> None:
    made, emulator = endpoint
    made.ledger.store.close()  # the state is gone from under the process
    body = _completed(emulator)
    status, text = made.post(body, _signed(body))
    assert status == 503, text
    assert [event["event"] for event in made.log.events] == ["webhook_unrecorded"]


# -- the emulator's dbt Cloud admin API (a user's own trial) ----------------------------------


def _admin(emulator: HexEmulator, method: str, path: str, document: object = None) -> Any:
    data = None if document is None else json.dumps(document).encode()
    request = urllib.request.Request(f"{emulator.url}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def test_a_user_sets_up_a_job_a_webhook_and_a_run_through_the_admin_api(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = hex_emulator_factory()
    received: list[tuple[str, bytes]] = []
    listener = _Listener(received)
    try:
        step = tmp_path / "target"
        step.mkdir()
        write_json(step / "run_results.json", run_results_document({"model.shop.a": "success"}))
        assert (
            _admin(emulator, "POST", "/_emulator/dbt-cloud/runs", {"job_id": 5, "steps": []})[0]
            == 404
        )
        assert _admin(emulator, "POST", "/_emulator/dbt-cloud/jobs", {"job_id": 5})[0] == 400
        status, _ = _admin(
            emulator, "POST", "/_emulator/dbt-cloud/jobs", {"job_id": 5, "environment_id": 3}
        )
        assert status == 200
        status, _ = _admin(
            emulator,
            "POST",
            "/_emulator/dbt-cloud/webhooks",
            {"url": listener.url, "secret": SECRET},
        )
        assert status == 200
        status, run = _admin(
            emulator,
            "POST",
            "/_emulator/dbt-cloud/runs",
            {
                "job_id": 5,
                "steps": [{"name": "Invoke dbt with `dbt build`", "artifacts": str(step)}],
            },
        )
        assert status == 200
        assert [item["index"] for item in run["run_steps"]] == [1]
        emulator.dbt_cloud.wait_for_deliveries()
        _, deliveries = _admin(emulator, "GET", "/_emulator/dbt-cloud/deliveries")
        assert [(item["eventType"], item["status"]) for item in deliveries] == [
            ("job.run.started", 200),
            ("job.run.completed", 200),
        ]
        for signature, body in received:
            assert signature == _signed(body)
        assert json.loads(received[1][1])["data"]["runId"] == str(run["id"])
    finally:
        listener.close()


class _Listener:
    """A plain HTTP server that keeps what webhooks it receives (signature, body)."""

    def __init__(self, received: list[tuple[str, bytes]]) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.headers["Authorization"], body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# -- the ledger's dbt Cloud tables, on SQLite and PostgreSQL ----------------------------------


def _event(event_id: str, run_id: str, *, completed: bool = True) -> DbtCloudEvent:
    run = DbtCloudRunRecord(run_id, "12", "7", 10, "webhook", 0.0, None, None)
    kind = "job.run.completed" if completed else "job.run.started"
    return DbtCloudEvent(event_id, kind, run_id, "12", run if completed else None)


def test_events_are_new_once_and_a_completed_one_notes_its_run_once(
    state_location: StateLocation,
) -> None:
    with Ledger.open(state_location, clock=ManualClock()) as ledger:
        answers = ledger.record_dbt_cloud_events(
            [_event("e1", "100", completed=False), _event("e2", "100"), _event("e2", "100")]
        )
        assert answers == [True, True, False]  # the same event twice in one commit: new once
        assert ledger.record_dbt_cloud_events([_event("e2", "100"), _event("e3", "100")]) == [
            False,
            True,  # another event of the same run: new, and the run noted once
        ]
        runs = ledger.dbt_cloud_runs(unsettled_only=True)
        assert [(run.run_id, run.seen_via) for run in runs] == [("100", "webhook")]
        polled = DbtCloudRunRecord("100", "12", "7", 10, "poll", 0.0, None, None)
        assert not ledger.note_dbt_cloud_run(polled)
        assert ledger.known_dbt_cloud_runs(["100", "101"]) == {"100"}
        assert ledger.settle_dbt_cloud_run("100", "planned")
        assert not ledger.settle_dbt_cloud_run("100", "cancelled")  # settled once
        assert ledger.dbt_cloud_runs(unsettled_only=True) == []
        assert [run.outcome for run in ledger.dbt_cloud_runs()] == ["planned"]


def test_a_step_invocation_another_way_in_recorded_first_is_named(
    state_location: StateLocation,
) -> None:
    with Ledger.open(state_location, clock=ManualClock()) as ledger:
        ledger.plan_and_claim("inv-hook", "build", "relay:outbox", [], [])
        steps = [("inv-seed", "seed", 4), ("inv-hook", "build", 5)]
        assert ledger.handle_dbt_cloud_steps("100", "dbt-cloud:1", steps) == ["inv-hook"]
        assert ledger.has_invocation("inv-seed")
        # The run's own steps, recorded again (a restart), are not another way in's.
        assert ledger.handle_dbt_cloud_steps("100", "dbt-cloud:1", steps[:1]) == []
        assert ledger.handle_dbt_cloud_steps("200", "dbt-cloud:1", steps[:1]) == ["inv-seed"]


def test_polling_starts_once_per_account(state_location: StateLocation) -> None:
    clock = ManualClock()
    with Ledger.open(state_location, clock=clock) as ledger:
        since, first = ledger.dbt_cloud_polling_since("1")
        clock.advance(60)
        assert ledger.dbt_cloud_polling_since("1") == (since, False)
        assert first
        assert ledger.dbt_cloud_polling_since("2") == (since + 60, True)


# -- --dbt-cloud-config: mapping files by job or project --------------------------------------


def test_a_run_is_planned_with_its_job_s_mapping_file_else_its_project_s_else_the_default(
    cloud: tuple[HexEmulator, EmulatedRun], tmp_path: Path
) -> None:
    emulator, run = cloud
    for name in ("job", "project", "default"):
        (tmp_path / f"{name}.yml").write_text(
            f"version: 1\nprojects:\n  - {{name: {name}, project_id: {CUSTOMER_HEALTH_ID},"
            " models: [customers]}\n"
        )
    config = tmp_path / "dbt_cloud.yml"
    client = _client(emulator)
    default = tmp_path / "default.yml"
    for text, expected in (
        ("jobs: {12: job.yml}\nprojects: {70: project.yml}\n", "job"),
        ("jobs: {13: job.yml}\nprojects: {70: project.yml}\n", "project"),
        ("projects: {71: project.yml}\n", "default"),
    ):
        config.write_text(text)
        planned = plan_cloud_run(client, str(run.run_id), load_job_mappings(config, default))
        assert isinstance(planned, CloudPlan)
        assert [trigger.name for trigger in planned.plan.triggers] == [expected]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jobs: [1, 2]\n", "jobs: expected ids mapped to mapping files"),
        ("jobs: {abc: a.yml}\n", "jobs: 'abc': expected a dbt Cloud id and a mapping file"),
        ("workers: {}\n", "expected a mapping with jobs: and/or projects:"),
        ("jobs: {1: [\n", "not YAML"),
        ("jobs: {1: missing.yml}\n", "missing.yml"),
    ],
)
def test_a_broken_dbt_cloud_config_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, message: str
) -> None:
    monkeypatch.setenv("DBT_CLOUD_ACCOUNT_ID", "1")
    monkeypatch.setenv("DBT_CLOUD_API_TOKEN", "dbtc_x")
    config = tmp_path / "dbt_cloud.yml"
    config.write_text(text)
    result = CliRunner().invoke(
        main, ["serve", "--dbt-cloud-poll", "--dbt-cloud-config", str(config)]
    )
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    assert message in errors[0]


def test_relay_options_of_serve_without_its_project_exit_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBT_CLOUD_ACCOUNT_ID", "1")
    monkeypatch.setenv("DBT_CLOUD_API_TOKEN", "dbtc_x")
    result = CliRunner().invoke(main, ["serve", "--dbt-cloud-poll", "--relay-target", "prod"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        "Error: --relay-profiles-dir and --relay-target go with --relay-project-dir"
    )


# -- the worker and polling, in this process on a manual clock --------------------------------


def _noted(made: Endpoint, run: EmulatedRun) -> DbtCloudRunRecord:
    record = DbtCloudRunRecord(str(run.run_id), "12", "7", run.status, "poll", 0.0, None, None)
    assert made.ledger.note_dbt_cloud_run(record)
    return record


def _work_until_settled(made: Endpoint) -> list[float]:
    """The worker's rounds, on the manual clock, until no run waits for a retry: the waits."""
    waits: list[float] = []
    for _ in range(100):
        due = made.feeder.take_due()
        if due is None:
            return waits
        waits.append(due - made.clock.now())
        made.clock.advance(waits[-1])
    raise AssertionError(f"still retrying after 100 rounds: {waits}")


def test_a_run_whose_artifacts_never_come_is_given_up_once_naming_its_step(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """A dbt step's run_results.json 404 for ever: tried again with a growing interval until
    an hour after the first try, then settled as given up, said once, and counted."""
    emulator = hex_emulator_factory()
    emulator.dbt_cloud.add_job(12, environment_id=7)
    made = Endpoint(emulator, tmp_path / "state")
    try:
        run = emulator.dbt_cloud.add_run(
            12, [("Clone git repository", None), ("Invoke dbt with `dbt run`", None)], notify=False
        )
        _noted(made, run)
        started = made.clock.now()
        waits = _work_until_settled(made)
        doubling = [RETRY_FIRST_S * 2**n for n in range(6)]  # 5 ... 160, then the cap
        assert waits == [*doubling, *[RETRY_CAP_S] * 11]
        assert made.clock.now() - started == 3615 >= DEFAULT_GIVE_UP_S
        step_2 = [
            entry
            for entry in emulator.journal()
            if entry["operation"] == "DbtCloudGetArtifact" and "step=2" in entry["path"]
        ]
        assert [entry["status"] for entry in step_2] == [404] * 18  # one try per wait, and one
        [settled] = made.ledger.dbt_cloud_runs()
        assert settled.outcome == (
            "given up after 18 tries in 3615 s: step 2 (Invoke dbt with `dbt run`):"
            " run_results.json not there yet"
        )
        [given_up] = made.log.of("dbt_cloud_run_given_up")
        assert (given_up["level"], given_up["run_id"], given_up["step"]) == (
            "error",
            str(run.run_id),
            2,
        )
        assert given_up["step_name"] == "Invoke dbt with `dbt run`"
        assert "where" not in given_up  # an expected failure: no traceback
        assert [event["event"] for event in made.log.events].count("dbt_cloud_run_waiting") == 1
        found = samples(made.metrics.exposition().decode())
        assert value(found, "hexdbt_dbt_cloud_runs_total", outcome="given_up") == 1
        assert made.feeder.take_due() is None  # settled: never asked for again
        assert len(emulator.journal()) == 3 * 18  # the run, and its two steps, per try
    finally:
        made.close()


def test_the_give_up_time_is_the_option_s_and_a_run_that_comes_in_time_is_planned(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = hex_emulator_factory()
    emulator.dbt_cloud.add_job(12, environment_id=7)
    made = Endpoint(emulator, tmp_path / "state", give_up_after_s=12)
    try:
        emulator.inject_faults("DbtCloudGetRun", sequence=[{"kind": "error", "status": 503}] * 3)
        run = emulator.dbt_cloud.add_run(12, [("Clone git repository", None)], notify=False)
        _noted(made, run)
        _work_until_settled(made)
        [settled] = made.ledger.dbt_cloud_runs()
        # Tries at 0, 5 and 15 s: the third is past 12 s.
        assert settled.outcome is not None
        assert settled.outcome.startswith("given up after 3 tries in 15 s: dbt Cloud answered")
        [given_up] = made.log.of("dbt_cloud_run_given_up")
        assert given_up["step"] is None
        assert given_up["error_type"] == "DbtCloudError"

        in_time = emulator.dbt_cloud.add_run(12, [("Clone git repository", None)], notify=False)
        emulator.inject_faults("DbtCloudGetRun", sequence=[{"kind": "error", "status": 503}])
        _noted(made, in_time)
        _work_until_settled(made)
        outcomes = {record.run_id: record.outcome for record in made.ledger.dbt_cloud_runs()}
        assert outcomes[str(in_time.run_id)] == (
            "no step wrote run_results.json: no dbt command ran"
        )
        assert len(made.log.of("dbt_cloud_run_given_up")) == 1
    finally:
        made.close()


def _list_requests(emulator: HexEmulator) -> int:
    return sum(1 for entry in emulator.journal() if entry["operation"] == "DbtCloudListRuns")


@pytest.fixture
def on_one_clock(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> Iterator[tuple[Endpoint, HexEmulator]]:
    """A feeder (not started) and the emulator's dbt Cloud, with job 12, on one manual clock."""
    clock = ManualClock()
    emulator = hex_emulator_factory(clock=clock)
    emulator.dbt_cloud.add_job(12, environment_id=7)
    made = Endpoint(emulator, tmp_path / "state", clock=clock)
    yield made, emulator
    made.close()


def test_polling_pages_back_to_the_last_poll_when_more_than_a_page_of_runs_ended_since(
    on_one_clock: tuple[Endpoint, HexEmulator],
) -> None:
    """dbt Cloud lists 100 runs a request: 250 runs ended between two polls are all taken, in
    three requests, and a poll with nothing new asks once."""
    made, emulator = on_one_clock
    clock, dbt_cloud = made.clock, emulator.dbt_cloud
    old = dbt_cloud.add_run(12, [], notify=False)  # ended before polling started
    clock.advance(1)
    floor, _ = made.ledger.dbt_cloud_polling_since("1")
    clock.advance(1)
    first = [dbt_cloud.add_run(12, [], notify=False) for _ in range(150)]
    assert made.feeder.poll(floor) == 150
    assert _list_requests(emulator) == 2  # a full page, then the rest: the end of the list
    clock.advance(60)
    busy = [dbt_cloud.add_run(12, [], notify=False) for _ in range(250)]
    assert made.feeder.poll(floor) == 250
    assert _list_requests(emulator) == 2 + 3  # the third page reaches the last poll's runs
    clock.advance(60)
    assert made.feeder.poll(floor) == 0
    assert _list_requests(emulator) == 2 + 3 + 1
    noted = {record.run_id for record in made.ledger.dbt_cloud_runs()}
    assert noted == {str(run.run_id) for run in [*first, *busy]}
    assert str(old.run_id) not in noted


def test_a_run_still_running_at_a_poll_is_taken_when_it_ends_however_many_runs_came_after(
    on_one_clock: tuple[Endpoint, HexEmulator],
) -> None:
    """The next poll pages back to the oldest run the last one saw running, not only to the
    newest run it saw."""
    made, emulator = on_one_clock
    clock, dbt_cloud = made.clock, emulator.dbt_cloud
    floor, _ = made.ledger.dbt_cloud_polling_since("1")
    clock.advance(1)
    long_run = dbt_cloud.add_run(12, [], status=RUNNING, notify=False)
    for _ in range(120):
        dbt_cloud.add_run(12, [], notify=False)
    assert made.feeder.poll(floor) == 120  # not the one running
    clock.advance(60)
    after = [dbt_cloud.add_run(12, [], notify=False) for _ in range(230)]
    dbt_cloud.end_run(long_run, notify=False)
    # The newest run the last poll saw is on the third page; the long run on the fourth.
    assert made.feeder.poll(floor) == 231
    noted = {record.run_id for record in made.ledger.dbt_cloud_runs()}
    assert {str(long_run.run_id), *(str(run.run_id) for run in after)} <= noted
    assert _list_requests(emulator) == 2 + 4
