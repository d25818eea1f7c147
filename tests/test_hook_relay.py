"""The on-run-end hook and `hexdbt relay`, on real dbt builds of the sample project.

The hook is installed with `hexdbt hook install --write` into a copy of the project, which dbt
then builds several ways, on DuckDB and on PostgreSQL (dbt-postgres, a schema of the test's
own). For every build, the relay's plan from the outbox entry equals `hexdbt plan`'s from the
same build's run_results.json and manifest.json. The daemon tests run relays as processes on the
PostgreSQL build (DuckDB allows one process per file) and count RunProject in the journal.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
import yaml
from click.testing import CliRunner, Result
from daemon_helpers import Daemon
from dbt_runs import dbt_in_process
from postgres_server import PostgresServer
from prebuilt import Prebuilds
from test_metrics import get, samples, scrape_until, until_healthy, value

from hexdbt._version import __version__
from hexdbt.cli import main
from hexdbt.clock import ManualClock, ScaledClock
from hexdbt.dbt.artifacts import load_run_results
from hexdbt.dbt.outbox import OutboxEntry, assemble, read_entry
from hexdbt.emulator.scenario import default_scenario_document
from hexdbt.emulator.server import HexEmulator
from hexdbt.errors import ArtifactError
from hexdbt.factory import open_client
from hexdbt.feeders.relay import (
    DbtTarget,
    OutboxNotReady,
    RelayDaemon,
    RelayOptions,
    WarehouseOutbox,
    plan_entry,
)
from hexdbt.ledger import Ledger
from hexdbt.logs import MemoryEventLog
from hexdbt.planner.files import plan_from_files
from hexdbt.settings import SqliteState, parse_state_url, resolve_state_location

REPO_ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = REPO_ROOT / "hex_mappings.yml"
PROJECT_IDS = {
    "5a8591dd-4039-49df-9202-96385ba3eff8": "customer_health",
    "7c2e4b10-9d8a-4f3e-b6a1-2f0c3d9e8a11": "finance_overview",
    "b3d9f6a2-1e47-4c85-9a30-6e2f7d1c5b42": "marketing_attribution",
    "e8a41c7d-3b52-4f96-8d07-9c1a2b3e4f53": "executive_kpis",
}

pytestmark = pytest.mark.dbt

# name -> dbt arguments. A failing test is a generic test on orders added to the copy, failing
# when asked (`fail_test`); the chunked build writes its entry in chunks of 1,000 characters.
BUILDS = {
    "full": ["build", "--vars", "{slow_model_seconds: 0}"],
    "failing_model": ["build", "--vars", "{slow_model_seconds: 0, fail_model: orders}"],
    "failing_test": ["build", "--vars", "{slow_model_seconds: 0, fail_test: true}"],
    "selected": [
        "build", "--select", "customers", "--vars",
        "{slow_model_seconds: 0, hexdbt_outbox_chunk_chars: 1000}",
    ],
    "test_alone": ["test", "--vars", "{slow_model_seconds: 0}"],
    "compile": ["compile", "--vars", "{slow_model_seconds: 0}"],
}  # fmt: skip


@dataclass(frozen=True)
class Built:
    project: Path
    targets: dict[str, Path]  # build name -> its target folder


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "HEX_", "HEXDBT_"))}
    env["DBT_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    env.update(extra)
    return env


def _copy_with_hook(root: Path, profile: dict[str, object] | None = None) -> Path:
    project = root / "sample_dbt_project"
    shutil.copytree(
        REPO_ROOT / "sample_dbt_project",
        project,
        ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", ".user.yml"),
    )
    generic = project / "tests" / "generic"
    generic.mkdir(parents=True)
    (generic / "fails_when_asked.sql").write_text(
        "{% test fails_when_asked(model) %}\n"
        "select 1 as failure where {{ var('fail_test', false) }}\n{% endtest %}\n"
    )
    finance = project / "models" / "marts" / "finance" / "_finance.yml"
    document = yaml.safe_load(finance.read_text())
    document["models"][1]["data_tests"] = ["fails_when_asked"]  # revenue_daily, a leaf
    finance.write_text(yaml.safe_dump(document, sort_keys=False))
    # An absolute path: DuckDB resolves a relative one from the current folder, dbt's and the relay's.
    profile = profile or {"type": "duckdb", "path": str(project / "sample.duckdb"), "threads": 4}
    profiles = yaml.safe_load((project / "profiles.yml").read_text())
    profiles["hexdbt_sample"]["outputs"]["dev"] = profile
    (project / "profiles.yml").write_text(yaml.safe_dump(profiles))
    result = CliRunner().invoke(main, ["hook", "install", "--project-dir", str(project), "--write"])
    assert result.exit_code == 0, result.output
    return project


def _dbt(project: Path, name: str, *, green: bool = False) -> Path:
    """One of BUILDS, in this process: what the tests read is what the builds leave behind, and
    dbt's start-up as a process would double the time of each. The hook never fails a build:
    dbt ends without an error of its own, and with ``green`` the builds not meant to fail
    succeed (on PostgreSQL the Python model fails every full build, as a result)."""
    must_succeed = green and not name.startswith("failing_")
    return dbt_in_process(
        project, BUILDS[name], project / f"target_{name}", must_succeed=must_succeed
    )


def _build_all(project: Path, *, green: bool) -> Built:
    return Built(project, {name: _dbt(project, name, green=green) for name in BUILDS})


def prebuild(folder: Path) -> Built:
    """The DuckDB builds, made beside the tests before this module (tests/prebuilt.py)."""
    folder.mkdir()
    return _build_all(_copy_with_hook(folder), green=True)


@pytest.fixture(scope="module")
def duckdb_built(prebuilt: Prebuilds) -> Built:
    built: Built = prebuilt.result(__name__)
    return built


@pytest.fixture(scope="module")
def postgres_schema(postgres_server: PostgresServer) -> Iterator[str]:
    schema = f"hook_{secrets.token_hex(4)}"
    yield schema
    postgres_server.drop_schema(schema)
    postgres_server.drop_schema(f"{schema}_raw")
    postgres_server.drop_schema(f"{schema}_hexdbt")


@pytest.fixture(scope="module")
def postgres_built(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer, postgres_schema: str
) -> Built:
    profile = {
        "type": "postgres", "host": "127.0.0.1", "port": postgres_server.port, "user": "hexdbt",
        "password": postgres_server.password, "dbname": "hexdbt", "schema": postgres_schema,
        "threads": 4,
    }  # fmt: skip
    return _build_all(_copy_with_hook(tmp_path_factory.mktemp("postgres"), profile), green=False)


def _entries(project: Path) -> dict[str, OutboxEntry]:
    outbox = WarehouseOutbox(DbtTarget(project, profiles_dir=project))
    summaries = outbox.summaries()
    entries, rejected = assemble(
        outbox.chunks([s.invocation_id for s in summaries]), outbox.relation
    )
    assert rejected == []
    return {entry.invocation.invocation_id: entry for entry in entries}


def _compare_plans(built: Built, mappings: Path | None) -> dict[str, dict[str, object]]:
    entries = _entries(built.project)
    relayed = {}
    for name, target in built.targets.items():
        from_files = plan_from_files(
            target / "run_results.json", target / "manifest.json", mappings
        ).plan
        relayed[name] = plan_entry(entries[from_files.invocation_id], mappings).to_json()
        assert relayed[name] == from_files.to_json(), name
    return relayed


def _decisions(plan: dict[str, object]) -> dict[str, str]:
    triggers = plan["triggers"]
    skipped = plan["skipped"]
    assert isinstance(triggers, list)
    assert isinstance(skipped, list)
    return {t["name"]: "trigger" for t in triggers} | {s["name"]: s["reason"] for s in skipped}


def test_relay_plans_equal_hexdbt_plan_on_duckdb(duckdb_built: Built) -> None:
    plans = _compare_plans(duckdb_built, MAPPINGS)
    # The builds cover what the rules tell apart: not only "everything triggers".
    assert set(_decisions(plans["full"]).values()) == {"trigger"}
    assert "orders failed" in _decisions(plans["failing_model"])["finance_overview"]
    assert _decisions(plans["failing_test"])["finance_overview"] == (
        "require_tests: test fails_when_asked_revenue_daily_ on revenue_daily ended fail"
    )
    assert _decisions(plans["selected"])["customer_health"] == "trigger"
    assert (
        _decisions(plans["test_alone"])["customer_health"]
        == "command was test: it refreshes no data"
    )
    assert (
        _decisions(plans["compile"])["customer_health"]
        == "command was compile: it refreshes no data"
    )


def test_relay_plans_equal_hexdbt_plan_with_the_exposure_alone(
    duckdb_built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No mapping file: the Hex app declared as a dbt exposure is the whole mapping."""
    monkeypatch.chdir(tmp_path)
    plans = _compare_plans(duckdb_built, None)
    assert _decisions(plans["full"]) == {"executive_kpis": "trigger"}


def test_relay_plans_equal_hexdbt_plan_on_postgres(
    postgres_built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no hex_mappings.yml here: the exposure alone, below
    exposure_only = _compare_plans(postgres_built, None)
    assert _decisions(exposure_only["full"]) == {"executive_kpis": "trigger"}
    plans = _compare_plans(postgres_built, MAPPINGS)
    assert _decisions(plans["full"])["customer_health"] == "trigger"
    # dbt-postgres runs no Python model: marketing_touchpoints fails, in both plans alike.
    assert "marketing_touchpoints failed" in _decisions(plans["full"])["marketing_attribution"]


def test_a_large_entry_is_written_in_chunks(duckdb_built: Built) -> None:
    outbox = WarehouseOutbox(DbtTarget(duckdb_built.project, profiles_dir=duckdb_built.project))
    counts = sorted(summary.chunk_count for summary in outbox.summaries())
    assert counts[0] == 1
    assert counts[-1] > 5


def test_an_incomplete_entry_waits_for_its_chunks(duckdb_built: Built) -> None:
    outbox = WarehouseOutbox(DbtTarget(duckdb_built.project, profiles_dir=duckdb_built.project))
    chunked = max(outbox.summaries(), key=lambda summary: summary.chunk_count)
    chunks = outbox.chunks([chunked.invocation_id])
    assert assemble(chunks[1:], "outbox") == ([], [])
    entries, rejected = assemble(chunks, "outbox")
    assert (len(entries), rejected) == (1, [])


def test_an_entry_of_another_format_names_the_fix() -> None:
    with pytest.raises(
        ArtifactError, match=r"^outbox: invocation x: outbox format 2: this hexdbt reads format 1$"
    ) as caught:
        read_entry('{"format": 2}', "outbox: invocation x")
    assert caught.value.hint == "install the hook of this hexdbt version again: hexdbt hook install"
    with pytest.raises(
        ArtifactError, match=r"^outbox: not JSON \(Expecting value at character 0\)$"
    ):
        read_entry("", "outbox")


def test_hook_install_without_write_prints_the_line_and_leaves_the_project_file(
    tmp_path: Path,
) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (project / "dbt_project.yml").write_text("name: p\nmacro-paths: [dbt_macros]\n")
    result = CliRunner().invoke(main, ["hook", "install", "--project-dir", str(project)])
    assert result.exit_code == 0, result.output
    assert 'on-run-end: "{{ hexdbt_on_run_end(results) }}"' in result.output
    assert (project / "dbt_macros" / "hexdbt" / "hexdbt_outbox.sql").is_file()
    assert (project / "dbt_project.yml").read_text() == "name: p\nmacro-paths: [dbt_macros]\n"
    written = CliRunner().invoke(
        main, ["hook", "install", "--project-dir", str(project), "--write"]
    )
    again = CliRunner().invoke(main, ["hook", "install", "--project-dir", str(project), "--write"])
    assert written.exit_code == again.exit_code == 0
    assert "dbt_project.yml calls the hook already." in again.output
    assert (project / "dbt_project.yml").read_text().count("hexdbt_on_run_end") == 1


def test_hook_install_write_leaves_an_existing_on_run_end_alone(tmp_path: Path) -> None:
    (tmp_path / "dbt_project.yml").write_text('name: p\non-run-end: ["select 1"]\n')
    result = CliRunner().invoke(
        main, ["hook", "install", "--project-dir", str(tmp_path), "--write"]
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"Error: {tmp_path / 'dbt_project.yml'}: on-run-end is set already, so it is left as it is",
        'Hint: add "{{ hexdbt_on_run_end(results) }}" to its list yourself',
    ]


# -- the relay as a process ----------------------------------------------------------------------

# The emulator and the relays run on one timeline (HEXDBT_TIME_ORIGIN), 60 times faster than real
# time: Hex runs of 20-45 s end within a second, and the relays poll them as often (their first
# poll of a run, 5 clock seconds after its start, would otherwise take 5 real ones). The outbox is
# polled every 30 clock seconds: half a real second.
RELAY_TIME_SCALE = 60.0
OUTBOX_POLL_INTERVAL = str(RELAY_TIME_SCALE / 2)


def _relay_environment(emulator: HexEmulator, state: Path, origin: float) -> dict[str, str]:
    return _environment(
        HEX_API_TOKEN="hxtp_test", HEX_BASE_URL=emulator.url, HEXDBT_STATE_DIR=str(state),
        HEXDBT_TIME_SCALE=str(RELAY_TIME_SCALE), HEXDBT_TIME_ORIGIN=repr(origin),
        PYTHONPATH=str(REPO_ROOT),
    )  # fmt: skip


def _relay(project: Path, environment: dict[str, str], cwd: Path, *extra: str) -> Daemon:
    return Daemon(
        ["--project-dir", str(project), "--profiles-dir", str(project), "--mappings",
         str(MAPPINGS), "--poll-interval", OUTBOX_POLL_INTERVAL, *extra],
        environment, cwd, command="relay",
    )  # fmt: skip


def _started(emulator: HexEmulator) -> list[str]:
    return sorted(
        PROJECT_IDS[entry["path"].split("/")[4]]
        for entry in emulator.journal()
        if entry["operation"] == "RunProject"
    )


def _wait_for(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow
def test_relays_before_the_first_entry_at_once_and_after_a_sigkill_start_each_project_once(
    hex_emulator_factory: Callable[..., HexEmulator],
    postgres_server: PostgresServer,
    tmp_path: Path,
) -> None:
    """Two relays before the outbox exists, one killed, a third started later (serving its
    metrics, scraped before and after the second build): each project starts once per build."""
    schema = f"relay_{secrets.token_hex(4)}"
    profile = {
        "type": "postgres", "host": "127.0.0.1", "port": postgres_server.port, "user": "hexdbt",
        "password": postgres_server.password, "dbname": "hexdbt", "schema": schema, "threads": 4,
    }  # fmt: skip
    origin = time.time()
    emulator = hex_emulator_factory(clock=ScaledClock.since(origin, RELAY_TIME_SCALE))
    environment = _relay_environment(emulator, tmp_path / "state", origin)
    project = _copy_with_hook(tmp_path, profile)
    try:
        # Two relays, polling before the outbox exists.
        with (
            _relay(project, environment, tmp_path) as first,
            _relay(project, environment, tmp_path) as second,
        ):
            first.wait_for("outbox_missing")
            second.wait_for("outbox_missing")
            _dbt(project, "full")
            # dbt-postgres runs no Python model: the marketing app does not start.
            _wait_for(lambda: len(_started(emulator)) == 3)
            # The first relay is killed outright, the second stopped; a new one takes over.
            first.kill()
            assert second.stop() == 0, "\n".join(second.lines)
        with _relay(project, environment, tmp_path, "--metrics-port", "0") as restarted:
            serving = restarted.wait_for("metrics_serving")
            assert until_healthy(serving["health"]) == (200, "text/plain; charset=utf-8", "ok\n")
            before = samples(get(serving["url"])[2])
            assert value(before, "hexdbt_daemon_info", daemon="relay", version=__version__) == 1
            assert value(before, "hexdbt_invocations_total", result="submitted") == 0
            _dbt(project, "failing_model")
            # It also follows to their end the runs of the first build that were still live.
            after = scrape_until(
                serving["url"],
                lambda found: (
                    value(found, "hexdbt_invocations_total", result="submitted") == 1
                    and value(found, "hexdbt_live_runs") == 0
                    and len(_started(emulator)) == 4
                ),
            )
            assert value(after, "hexdbt_triggers_total", outcome="completed") >= 1
            assert value(after, "hexdbt_last_dispatch_timestamp_seconds") > 0
            assert restarted.stop() == 0
        assert _started(emulator) == sorted(
            ["customer_health", "finance_overview", "executive_kpis", "customer_health"]
        )
        once = subprocess.run(
            [sys.executable, "-m", "hexdbt", "relay", "--once", "--retain-days", "0",
             "--project-dir", str(project), "--profiles-dir", str(project),
             "--mappings", str(MAPPINGS), "--log-format", "json"],
            env=environment, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert once.returncode == 0, once.stderr
        assert '"event": "entries_deleted"' in once.stderr
        assert WarehouseOutbox(DbtTarget(project, profiles_dir=project)).summaries() == []
        assert len(_started(emulator)) == 4
    finally:
        for suffix in ("", "_raw", "_hexdbt"):
            postgres_server.drop_schema(schema + suffix)


@pytest.mark.slow
def test_a_duckdb_file_locked_by_dbt_is_try_again_later(
    duckdb_built: Built, hex_emulator_factory: Callable[..., HexEmulator], tmp_path: Path
) -> None:
    """Another process holds the DuckDB file, as a running dbt build does: every poll of the
    relay hands nothing over, the first says so once, and once the file is free the entries go."""
    database = duckdb_built.project / "sample.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb, sys; c = duckdb.connect({str(database)!r}); print('held', flush=True);"
         " sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    emulator = hex_emulator_factory()
    log = MemoryEventLog()
    outbox = WarehouseOutbox(DbtTarget(duckdb_built.project, profiles_dir=duckdb_built.project))
    with (
        open_client("hxtp_test", emulator.url, allow_insecure_http=True) as client,
        Ledger.open(SqliteState(tmp_path / "state"), clock=client.clock) as ledger,
    ):
        relay = RelayDaemon(client, ledger, outbox, RelayOptions(MAPPINGS), log)
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            assert [relay.poll() for _ in range(3)] == [0, 0, 0]
        finally:
            holder.communicate("")
        busy = log.of("warehouse_busy")
        assert len(busy) == 1  # logged once, however many polls
        assert busy[0]["level"] == "info"
        assert relay.poll() == len(BUILDS)  # free again: every entry is handed over
    assert _started(emulator) == []  # handed to an engine that is not running here


def test_a_relay_without_its_state_leaves_the_entries_in_the_outbox_and_says_so_once(
    duckdb_built: Built,
    hex_emulator_factory: Callable[..., HexEmulator],
    postgres_server: PostgresServer,
    postgres_state_url: str,
) -> None:
    """The ledger's PostgreSQL server stops: the relay's polls hand nothing over and say so once
    (no error each poll), and once the server is back every entry goes."""
    log = MemoryEventLog()
    outbox = WarehouseOutbox(DbtTarget(duckdb_built.project, profiles_dir=duckdb_built.project))
    clock = ManualClock()
    with (
        open_client("hxtp_test", hex_emulator_factory().url, allow_insecure_http=True) as client,
        Ledger.open(parse_state_url(postgres_state_url), clock=clock) as ledger,
    ):
        relay = RelayDaemon(client, ledger, outbox, RelayOptions(MAPPINGS), log)
        postgres_server.stop()
        try:
            assert [relay.poll(), relay.poll()] == [0, 0]
        finally:
            postgres_server.start()
        [lost] = log.of("state_unavailable")
        assert lost["detail"].startswith(
            f"lost PostgreSQL at 127.0.0.1:{postgres_server.port} for the ledger: "
        )
        clock.advance(10)  # past the store's next reconnect
        assert relay.poll() == len(BUILDS)
    assert log.of("outbox_failed") == []


def test_a_relay_started_in_another_folder_waits_for_the_duckdb_file_and_never_creates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB reads a relative path in profiles.yml from the current folder, dbt's and the
    relay's: a relay started elsewhere finds no file there, says which, and creates none."""
    project = _copy_with_hook(tmp_path, {"type": "duckdb", "path": "sample.duckdb", "threads": 1})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    outbox = WarehouseOutbox(DbtTarget(project, profiles_dir=project))
    with pytest.raises(OutboxNotReady) as raised:
        outbox.summaries()
    assert raised.value.reason == "outbox_missing"
    assert str(raised.value).startswith(
        f"the DuckDB file {elsewhere / 'sample.duckdb'} does not exist (yet): dbt reads a relative"
    )
    assert list(elsewhere.iterdir()) == []


def test_a_duckdb_file_without_the_outbox_is_logged_in_the_database_s_words(
    tmp_path: Path, hex_emulator_factory: Callable[..., HexEmulator]
) -> None:
    project = _copy_with_hook(tmp_path)
    duckdb.connect(str(project / "sample.duckdb")).close()  # a database dbt has not built yet
    log = MemoryEventLog()
    outbox = WarehouseOutbox(DbtTarget(project, profiles_dir=project))
    with (
        open_client("hxtp_test", hex_emulator_factory().url, allow_insecure_http=True) as client,
        Ledger.open(SqliteState(tmp_path / "state"), clock=client.clock) as ledger,
    ):
        relay = RelayDaemon(client, ledger, outbox, RelayOptions(MAPPINGS), log)
        assert [relay.poll(), relay.poll()] == [0, 0]
    [missing] = log.of("outbox_missing")  # once, however many polls
    assert missing["detail"] == (
        'Catalog Error: Table with name "main_hexdbt.hexdbt_outbox" does not exist because schema'
        ' "main_hexdbt" does not exist.'
    )


def test_a_target_the_profile_lacks_is_exit_2_naming_the_ones_it_has(tmp_path: Path) -> None:
    project = _copy_with_hook(tmp_path)
    result = CliRunner().invoke(
        main,
        ["relay", "--once", "--project-dir", str(project), "--profiles-dir", str(project),
         "--target", "nope"],
        env={"HEX_API_TOKEN": "hxtp_test", "HEXDBT_STATE_DIR": str(tmp_path / "state")},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert (
        f"Error: {project}: dbt cannot load the project and profile: The profile 'hexdbt_sample'"
        " does not have a target named 'nope'. The valid target names for this profile are: dev"
    ) in result.output


# -- no poison pills: an entry that cannot be read is set aside, the rest goes on -----------------

# Damaged entries as a hand, a bug or a half-restored backup leaves them in the outbox: each row
# is (invocation id, chunk index, chunk count, payload), written now.
RELATION = '"sample"."main_hexdbt"."hexdbt_outbox"'
POISON = {
    "bad-json": [(0, 1, "{not json")],
    "null-payload": [(0, 1, None)],
    "wrong-type": [(0, 1, '{"format": 1, "invocation_id": "wrong-type", "results": 5}')],
    "count-zero": [(0, 0, "{}")],
    "count-huge": [(0, 10**9, "{}")],
    "index-minus-one": [(-1, 2, "{"), (1, 2, "}")],
    "repeated-chunk": [(0, 2, "{"), (0, 2, "{"), (1, 2, "}")],
}
POISON_REASONS = {
    "bad-json": '"sample"."main_hexdbt"."hexdbt_outbox": invocation bad-json: not JSON'
    " (Expecting property name enclosed in double quotes at character 1)",
    "null-payload": "a chunk's payload is NULL",
    "wrong-type": '"sample"."main_hexdbt"."hexdbt_outbox": invocation wrong-type: results is not'
    " a list of objects",
    "count-zero": "its chunk count 0 is not between 1 and 1,000,000",
    "count-huge": "its chunk count 1000000000 is not between 1 and 1,000,000",
    "index-minus-one": "its chunk indexes -1, 1 are not 0 to 1",
    "repeated-chunk": "it has 3 chunks for a count of 2",
}


def _poisoned_copy(built: Built, folder: Path) -> Path:
    """The built project with an outbox of its own, where every POISON entry sits among the
    valid ones."""
    project = folder / "project"
    shutil.copytree(built.project, project)
    profiles = yaml.safe_load((project / "profiles.yml").read_text())
    profiles["hexdbt_sample"]["outputs"]["dev"]["path"] = str(project / "sample.duckdb")
    (project / "profiles.yml").write_text(yaml.safe_dump(profiles))
    with duckdb.connect(str(project / "sample.duckdb")) as database:
        # Written long ago (before the tests' manual clock starts): past any --retain-days.
        written_at = "2025-06-01T00:00:00.000000Z"
        for invocation_id, rows in POISON.items():
            for index, count, payload in rows:
                database.execute(
                    "insert into main_hexdbt.hexdbt_outbox values (?, ?, ?, ?, ?)",
                    [invocation_id, index, count, written_at, payload],
                )
    return project


def test_relay_once_sets_aside_each_entry_it_cannot_read_and_relays_the_rest(
    duckdb_built: Built, hex_emulator_factory: Callable[..., HexEmulator], tmp_path: Path
) -> None:
    """Bad JSON, a NULL payload, a wrong type and each chunk anomaly beside the valid entries:
    every valid entry starts its projects once, each bad one is named once (exit 3, as for an
    artifact that cannot be read), and once past --retain-days the bad ones are deleted with the
    rest: nothing is left to delete by hand."""
    project = _poisoned_copy(duckdb_built, tmp_path)
    poisoned = Built(project, duckdb_built.targets)
    emulator = hex_emulator_factory()
    result = _relay_once(poisoned, emulator, "--retain-days", "1")
    assert result.exit_code == 3, result.output
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("Invocation ") and "(dbt" in line] == (
        _heads(duckdb_built)
    )
    set_aside = {
        line.split()[1].rstrip(":"): line.split(": set aside, it cannot be read: ", 1)[1]
        for line in lines
        if "set aside" in line
    }
    assert set_aside == POISON_REASONS
    assert len(_started(emulator)) == 10  # as from the clean outbox
    assert lines[-1] == "24 mapped Hex projects: 10 started, 14 skipped"
    with Ledger.open(resolve_state_location()) as ledger:
        assert ledger.rejected_inputs(f"relay:{RELATION}") == POISON_REASONS
    outbox = WarehouseOutbox(DbtTarget(project, profiles_dir=project))
    left = {summary.invocation_id for summary in outbox.summaries()}
    assert left.isdisjoint(POISON)  # set aside, and older than --retain-days: deleted
    assert len(left) == len(BUILDS)  # the valid ones are kept for --retain-days
    again = _relay_once(poisoned, emulator)
    assert again.exit_code == 0, again.output
    assert "set aside" not in again.stdout  # named once
    assert len(_started(emulator)) == 10


def test_the_relay_daemon_names_each_bad_entry_once_and_relays_the_rest(
    duckdb_built: Built, hex_emulator_factory: Callable[..., HexEmulator], tmp_path: Path
) -> None:
    """The daemon's polls: the first sets every bad entry aside with one error event each and
    hands the valid ones over; the next finds nothing to say."""
    project = _poisoned_copy(duckdb_built, tmp_path)
    emulator = hex_emulator_factory()
    log = MemoryEventLog()
    state = SqliteState(tmp_path / "state")
    target = DbtTarget(project, profiles_dir=project)
    options = RelayOptions(MAPPINGS)
    with (
        open_client(
            token="hxtp_test", base_url=emulator.url, clock=emulator.clock, state=state
        ) as client,
        Ledger.open(state, clock=emulator.clock) as ledger,
    ):
        daemon = RelayDaemon(client, ledger, WarehouseOutbox(target), options, log)
        assert daemon.poll() == len(BUILDS)  # every valid entry handed to the engine
        assert daemon.poll() == 0
    rejected = log.of("outbox_entry_rejected")
    assert {event["invocation_id"]: event["reason"] for event in rejected} == POISON_REASONS
    assert {event["level"] for event in rejected} == {"error"}
    assert not log.of("outbox_failed")


# -- `relay --once`: what it handed over, and with --wait what became of it ----------------------


def _relay_once(built: Built, emulator: HexEmulator, *extra: str) -> Result:
    result = CliRunner().invoke(
        main,
        ["relay", "--once", "--project-dir", str(built.project), "--profiles-dir",
         str(built.project), "--mappings", str(MAPPINGS), *extra],
        env={"HEX_API_TOKEN": "hxtp_relay_once_secret", "HEX_BASE_URL": emulator.url},
        obj={"clock": emulator.clock},
    )  # fmt: skip
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert "hxtp_relay_once_secret" not in result.output + result.stderr
    return result


def _rows(stdout: str) -> list[tuple[str, str]]:
    """(project, outcome) of every table row printed, in order."""
    return [
        (line.split()[0], line.split()[1])
        for line in stdout.splitlines()
        if line.split() and line.split()[0] in PROJECT_IDS.values()
    ]


def _heads(built: Built) -> list[str]:
    """The line ``relay --once`` prints for each build's entry, in the outbox's order."""
    heads = []
    for target in built.targets.values():
        invocation = load_run_results(target / "run_results.json")
        heads.append(
            f"Invocation {invocation.invocation_id} (dbt {invocation.command}, target dev):"
        )
    return heads


def test_relay_once_prints_each_invocation_it_handed_over(
    duckdb_built: Built, hex_emulator_factory: Callable[..., HexEmulator]
) -> None:
    emulator = hex_emulator_factory()
    result = _relay_once(duckdb_built, emulator)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("Invocation ")] == _heads(duckdb_built)
    rows = _rows(result.stdout)
    assert len(rows) == 4 * len(BUILDS)  # every mapped project of every entry
    assert sorted(name for name, outcome in rows if outcome == "started") == _started(emulator)
    assert lines[-1] == "24 mapped Hex projects: 10 started, 14 skipped"
    # The next cron run finds nothing new, says so, and shows the runs the first left live.
    again = _relay_once(duckdb_built, emulator)
    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines()[:3] == [
        'No new dbt invocation in "sample"."main_hexdbt"."hexdbt_outbox".',
        "",
        "From the queue of earlier invocations:",
    ]
    assert [outcome for _, outcome in _rows(again.stdout)] == ["started"] * 10
    assert len(_started(emulator)) == 10


def test_relay_once_wait_follows_its_runs_to_their_end_and_exits_as_run_does(
    duckdb_built: Built, hex_emulator_factory: Callable[..., HexEmulator]
) -> None:
    document = default_scenario_document()
    for project in document["projects"]:
        if PROJECT_IDS.get(project["id"]) == "marketing_attribution":
            project["runs"] = {"pending_s": 2, "running_s": 30, "outcome": "ERRORED"}
    emulator = hex_emulator_factory(scenario=document)
    result = _relay_once(duckdb_built, emulator, "--wait")
    assert result.exit_code == 5, result.output
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("Invocation ")] == _heads(duckdb_built)
    ended = [(name, outcome) for name, outcome in _rows(result.stdout) if outcome != "skipped"]
    assert sorted(ended) == sorted(
        (name, "errored" if name == "marketing_attribution" else "completed")
        for name in _started(emulator)
    )
    assert lines[-1] == "24 mapped Hex projects: 7 completed, 3 errored, 14 skipped"
    assert all(run.status in ("COMPLETED", "ERRORED") for run in emulator.runs())


def test_relay_wait_without_once_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["relay", "--wait", "--project-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: --wait goes with --once: the daemon follows its runs anyway",
        "Hint: hexdbt relay --once --wait",
    ]
