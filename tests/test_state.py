"""Where the state lives: ``--state-url`` / ``HEXDBT_STATE_URL``, ``hexdbt state check``, a real
PostgreSQL server that is unreachable, refuses a password, cuts connections or is read-only, and a
SQLite ledger written by the hexdbt before leases."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from engine_helpers import project_id
from postgres_server import PostgresServer
from test_engine import World

from hexdbt.cli import main
from hexdbt.emulator import HexEmulator
from hexdbt.ledger import LEDGER_FILENAME, Ledger, TriggerState
from hexdbt.outcomes import OutcomeKind
from hexdbt.settings import PostgresState, SqliteState, parse_state_url, resolve_state_dir

PROJECT = "5a8591dd-4039-49df-9202-96385ba3eff8"


def _check(*args: str) -> Any:
    return CliRunner().invoke(main, ["state", "check", *args])


def test_state_check_on_the_default_folder_says_sqlite_and_its_versions() -> None:
    result = _check()
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Backend: sqlite",
        f"Where:   {resolve_state_dir()}",
        "Ledger   schema version 4, writable",
        "Budget   schema version 1, writable",
    ]


def test_state_check_on_postgresql_creates_the_schema_and_never_shows_the_password(
    postgres_server: PostgresServer, postgres_state_url: str
) -> None:
    result = _check("--state-url", postgres_state_url, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    location = parse_state_url(postgres_state_url)
    assert isinstance(location, PostgresState)
    assert document["backend"] == "postgresql"
    assert document["where"] == (
        f"postgresql://hexdbt:***@127.0.0.1:{postgres_server.port}/hexdbt"
        f" (schema {location.schema})"
    )
    assert document["ledger"] == {
        "schemaVersion": 4,
        "knownVersion": 4,
        "writable": True,
        "problem": None,
    }
    assert document["budget"]["schemaVersion"] == 1
    assert postgres_server.password not in result.output
    with postgres_server.admin_connect() as admin:
        rows = admin.execute(
            f'SELECT component, version FROM "{location.schema}".schema_versions ORDER BY 1'
        )
        assert rows.fetchall() == [("budget", 1), ("ledger", 4)]


def test_hosts_starting_at_once_on_a_fresh_schema_migrate_it_once(
    postgres_state_url: str,
) -> None:
    """Four processes open the same new schema together: the migration lock lets one create it,
    the others find it made; none fails."""
    checks = [
        subprocess.Popen(
            [sys.executable, "-m", "hexdbt", "state", "check", "--state-url", postgres_state_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for check in checks:
        stdout, stderr = check.communicate(timeout=60)
        assert check.returncode == 0, stderr
        assert "Ledger   schema version 4, writable" in stdout


def test_a_server_that_is_not_there_is_exit_7_naming_host_and_cause(
    postgres_server: PostgresServer,
) -> None:
    url = f"postgresql://hexdbt:{postgres_server.password}@127.0.0.1:1/hexdbt"
    for args in (["state", "check", "--state-url", url], ["status", "--state-url", url]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 7, result.output
        assert result.stderr.splitlines()[0] == (
            "Error: cannot reach PostgreSQL at 127.0.0.1:1 for the ledger: connection failed:"
            ' connection to server at "127.0.0.1", port 1 failed: Connection refused'
        )
        assert postgres_server.password not in result.output


def test_a_wrong_password_is_exit_7_and_is_not_shown(postgres_server: PostgresServer) -> None:
    url = f"postgresql://hexdbt:not-the-password@127.0.0.1:{postgres_server.port}/hexdbt"
    result = CliRunner().invoke(
        main,
        ["trigger", PROJECT, "--allow-insecure-http", "--state-url", url],
        env={"HEX_API_TOKEN": "hxtp_state_test", "HEX_BASE_URL": "http://127.0.0.1:1"},
    )
    assert result.exit_code == 7, result.output
    assert 'password authentication failed for user "hexdbt"' in result.stderr
    assert "not-the-password" not in result.output


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "mysql://user:secret@db/analytics",
            "Error: the state URL's scheme 'mysql' is neither postgresql:// nor sqlite:///",
        ),
        (
            "user:secret@db/analytics",
            "Error: the state URL has no scheme: it is neither postgresql:// nor sqlite:///",
        ),
        (
            "postgresql://user:secret@db:54x/analytics",
            "Error: the state URL postgresql://user:***@db:54x/analytics (schema hexdbt) has a"
            " port that is not a number",
        ),
        (
            "postgresql://user:secret@db/analytics?schema=hex-dbt",
            "Error: the state URL's schema 'hex-dbt' is not a plain PostgreSQL name",
        ),
        (
            "sqlite://relative/folder",
            "Error: a sqlite state URL names a folder by its absolute path: sqlite:///path",
        ),
    ],
)
def test_a_state_url_that_cannot_be_read_is_exit_2_naming_it(url: str, message: str) -> None:
    for args in (["state", "check", "--state-url", url], ["status"]):
        result = CliRunner().invoke(main, args, env={"HEXDBT_STATE_URL": url})
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines()[0] == message
        assert "secret" not in result.output


def test_a_postgresql_url_without_psycopg_names_the_extra(tmp_path: Path) -> None:
    """An install without the extra: psycopg cannot be imported (None in sys.modules is how
    Python spells "not installed" for one import)."""
    program = (
        "import sys; sys.modules['psycopg'] = None; from hexdbt.cli import main;"
        " main(['state', 'check', '--state-url', 'postgresql://u:secret@127.0.0.1:1/db'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "Error: a postgresql:// state URL needs psycopg, which is not installed",
        "Hint: pip install 'hexdbt[postgres]'",
    ]


def test_a_read_only_role_is_told_the_state_cannot_be_written(
    postgres_server: PostgresServer, postgres_state_url: str
) -> None:
    assert _check("--state-url", postgres_state_url).exit_code == 0  # the owner creates it
    schema = postgres_state_url.rpartition("schema=")[2]
    with postgres_server.admin_connect() as admin:
        admin.execute("DROP ROLE IF EXISTS reader")
        admin.execute("CREATE ROLE reader LOGIN PASSWORD 'reader-secret'")
        admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO reader')
        admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO reader')
    try:
        url = f"postgresql://reader:reader-secret@127.0.0.1:{postgres_server.port}/hexdbt"
        result = _check("--state-url", f"{url}?schema={schema}")
        assert result.exit_code == 7, result.output
        assert "Ledger   schema version 4, NOT writable" in result.stdout
        assert "permission denied for table schema_versions" in result.stderr
        assert "reader-secret" not in result.output
    finally:
        with postgres_server.admin_connect() as admin:
            admin.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM reader')
            admin.execute(f'REVOKE ALL ON SCHEMA "{schema}" FROM reader')
            admin.execute("DROP ROLE reader")


def test_a_schema_from_a_newer_hexdbt_is_refused(
    postgres_server: PostgresServer, postgres_state_url: str
) -> None:
    assert _check("--state-url", postgres_state_url).exit_code == 0
    schema = postgres_state_url.rpartition("schema=")[2]
    with postgres_server.admin_connect() as admin:
        admin.execute(
            f"UPDATE \"{schema}\".schema_versions SET version = 9 WHERE component = 'ledger'"
        )
    result = _check("--state-url", postgres_state_url)
    assert result.exit_code == 7
    assert "has schema version 9, newer than this hexdbt knows (4)" in result.stderr


def test_a_ledger_from_before_leases_is_migrated_and_its_sending_row_is_an_orphan(
    tmp_path: Path,
) -> None:
    """A version 1 ledger (owners were pids) is taken to the newest version on first use; a row
    its process left ``sending`` has no lease, so it is reconciled, not waited on for ever, and
    its entry and models are unknown (it never coalesces)."""
    path = tmp_path / LEDGER_FILENAME
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE invocations (invocation_id TEXT PRIMARY KEY, command TEXT NOT NULL,
                source TEXT NOT NULL, first_seen_at REAL NOT NULL);
            CREATE TABLE triggers (trigger_key TEXT PRIMARY KEY, invocation_id TEXT NOT NULL
                REFERENCES invocations(invocation_id), name TEXT NOT NULL, project_id TEXT NOT
                NULL, base_url TEXT NOT NULL, request_json TEXT NOT NULL, options_json TEXT NOT
                NULL, state TEXT NOT NULL, owner_pid INTEGER, deadline_at REAL, intent_at REAL,
                run_id TEXT, run_url TEXT, hex_status TEXT, timed_out INTEGER NOT NULL DEFAULT 0,
                trace_id TEXT, reason TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL,
                ended_at REAL);
            INSERT INTO invocations VALUES ('inv-1', 'build', 'run', 10);
            INSERT INTO triggers (trigger_key, invocation_id, name, project_id, base_url,
                request_json, options_json, state, owner_pid, intent_at, created_at, updated_at)
                VALUES ('k1', 'inv-1', 'app', 'p-1', 'http://x', '{}', '{}', 'sending', 99999999,
                11, 10, 11);
            PRAGMA user_version = 1;
            """
        )
    with Ledger.open(SqliteState(tmp_path)) as ledger:
        record = ledger.get("k1")
        assert (record.state, record.owner_lease, record.intent_at) == (
            TriggerState.SENDING,
            None,
            11.0,
        )
        assert (record.entry_key, record.coalesce, record.models) == (None, False, ())
        assert record.unserved_since == record.created_at == 10.0
        assert ledger.take_over_orphan("k1")
        assert ledger.recent_invocations()[0].project_dir is None
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (4,)


def test_connections_cut_mid_dispatch_are_reopened_and_nothing_is_sent_twice(
    hex_emulator_factory: Callable[..., HexEmulator],
    postgres_server: PostgresServer,
    postgres_state_url: str,
    tmp_path: Path,
) -> None:
    """Once Hex has answered the first RunProject, every connection hexdbt holds is terminated
    (``pg_terminate_backend``): the ledger's and the budget's next writes reconnect, each project
    starts once and ends COMPLETED, and the connections left are new ones."""
    killed: list[int] = []

    def cut_after_first_run_project(line: str) -> None:
        if line.startswith("POST ") and "/runs" in line and not killed:
            with postgres_server.admin_connect() as admin:
                rows = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'hexdbt'"
                ).fetchall()
                for (pid,) in rows:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    killed.append(pid)

    world = World(
        hex_emulator_factory, tmp_path / "w", postgres_state_url, 3, log=cut_after_first_run_project
    )
    try:
        outcomes = world.dispatch(world.plan())
        assert {outcome.kind for outcome in outcomes} == {OutcomeKind.COMPLETED}
        assert world.started() == {project_id(index): 1 for index in range(3)}
        assert len(killed) == 2  # the ledger's connection and the budget's
        with postgres_server.admin_connect() as admin:
            alive = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'hexdbt'"
            ).fetchall()
        assert alive, "the ledger is open: it has a connection"
        assert not {pid for (pid,) in alive} & set(killed)
    finally:
        world.ledger.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://hexdbt:s3cr%40t@db.internal:5433/analytics?schema=ops",
            "postgresql://hexdbt:***@db.internal:5433/analytics (schema ops)",
        ),
        (
            "postgres://db.internal/analytics?user=hexdbt&password=s3cr%40t&sslmode=require",
            "postgres://db.internal/analytics?user=hexdbt&password=%2A%2A%2A&sslmode=require"
            " (schema hexdbt)",
        ),
        ("postgresql:///analytics", "postgresql:///analytics (schema hexdbt)"),
    ],
)
def test_a_state_url_is_shown_without_its_password(url: str, shown: str) -> None:
    location = parse_state_url(url)
    assert isinstance(location, PostgresState)
    assert location.describe() == shown
    assert "s3cr" not in repr(location)
    assert location.password in (None, "s3cr@t")
    assert "schema=" not in location.url  # hexdbt's own parameter never reaches libpq


# Released together, four processes race in about one new file in ten.
ROUNDS = 60


def _rounds_of_opens(kind: str, folder: Path, rounds: int, *options: str) -> list[int]:
    """How many openers failed in each round played by tests/sqlite_open_race.py: ``raw`` (the
    switch to WAL alone) or ``store`` (SqliteStore's open)."""
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("sqlite_open_race.py")), kind,
         str(folder), str(rounds), *options],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    failed: list[int] = json.loads(done.stdout)
    return failed


def test_processes_opening_a_new_sqlite_state_together_all_open_it(tmp_path: Path) -> None:
    """Switching a new file to WAL can be refused at once ("database is locked"), unwaited, to a
    process racing another: two relays started together on a new state folder had one fail.
    The race is first hit with the switch alone; then the same races on the store all open."""
    raw = _rounds_of_opens("raw", tmp_path / "raw", 10 * ROUNDS, "--until-one-fails")
    assert raw[-1] > 0, "the race was never hit here"
    failed = _rounds_of_opens("store", tmp_path / "store", ROUNDS)
    assert len(failed) == ROUNDS
    assert sum(failed) == 0
