"""The PostgreSQL server the state tests run against: reachable as hexdbt sees it, and no more."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from postgres_server import PostgresServer, PostgresServerError, find_server_bin_dir


def test_the_hexdbt_role_connects_over_tcp_on_127_0_0_1_with_its_password(
    postgres_server: PostgresServer,
) -> None:
    with psycopg.connect(postgres_server.url) as connection:
        row = connection.execute(
            "SELECT current_user, current_database(), inet_server_addr()::text,"
            " inet_server_port(), current_setting('synchronous_commit')"
        ).fetchone()
    assert row == ("hexdbt", "hexdbt", "127.0.0.1/32", postgres_server.port, "on")


def test_the_url_carries_the_password_and_the_port(postgres_server: PostgresServer) -> None:
    url = urlsplit(postgres_server.url)
    assert (url.scheme, url.username, url.hostname) == ("postgresql", "hexdbt", "127.0.0.1")
    assert (url.password, url.port, url.path) == (
        postgres_server.password,
        postgres_server.port,
        "/hexdbt",
    )
    assert len(postgres_server.password) == 32


def test_a_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(
            host="127.0.0.1",
            port=postgres_server.port,
            user="hexdbt",
            password="not-" + postgres_server.password,
            dbname="hexdbt",
            connect_timeout=10,
        )


def test_the_superuser_cannot_log_in_over_tcp(postgres_server: PostgresServer) -> None:
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(
            host="127.0.0.1", port=postgres_server.port, user="postgres", connect_timeout=10
        )


def test_the_server_runs_as_a_non_root_user_when_the_tests_run_as_root(
    postgres_server: PostgresServer,
) -> None:
    with postgres_server.admin_connect() as admin:
        backend_pid = admin.execute("SELECT pg_backend_pid()").fetchone()
    assert backend_pid is not None
    server_uid = Path(f"/proc/{backend_pid[0]}").stat().st_uid
    if os.geteuid() == 0:
        assert server_uid != 0
    else:
        assert server_uid == os.geteuid()


def test_the_state_url_is_the_servers_with_a_schema_of_the_tests_own(
    postgres_server: PostgresServer, postgres_state_url: str, request: pytest.FixtureRequest
) -> None:
    (schema,) = parse_qs(urlsplit(postgres_state_url).query)["schema"]
    assert re.fullmatch(r"hexdbt_test_[0-9a-f]{12}", schema)
    assert postgres_state_url == f"{postgres_server.url}?schema={schema}"
    assert request.node.get_closest_marker("postgres") is not None


def test_drop_schema_removes_the_schema_and_its_tables(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.url, autocommit=True) as connection:
        connection.execute("CREATE SCHEMA hexdbt_test_dropped")
        connection.execute("CREATE TABLE hexdbt_test_dropped.ledger (id int)")
        postgres_server.drop_schema("hexdbt_test_dropped")
        left = connection.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = 'hexdbt_test_dropped'"
        ).fetchall()
    assert left == []


def test_drop_schema_fails_rather_than_waits_on_a_transaction_left_open(
    postgres_server: PostgresServer,
) -> None:
    with psycopg.connect(postgres_server.url) as connection:
        connection.execute("CREATE SCHEMA hexdbt_test_held")
        connection.execute("CREATE TABLE hexdbt_test_held.ledger (id int)")
        connection.commit()
        connection.execute("SELECT * FROM hexdbt_test_held.ledger")  # the transaction stays open
        with pytest.raises(psycopg.errors.LockNotAvailable):
            postgres_server.drop_schema("hexdbt_test_held", lock_timeout_s=0.2)
        connection.rollback()
    postgres_server.drop_schema("hexdbt_test_held")


def test_stop_refuses_connections_and_start_brings_back_the_same_data() -> None:
    """On a server of its own, so that a failure here leaves the session's server running."""
    with PostgresServer.create() as server:
        with psycopg.connect(server.url) as connection:
            connection.execute("CREATE TABLE survivor (id int)")
            connection.execute("INSERT INTO survivor VALUES (7)")
        server.stop()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(server.url, connect_timeout=10)
        server.start()
        with psycopg.connect(server.url) as connection:
            assert connection.execute("SELECT id FROM survivor").fetchall() == [(7,)]
        root = server.root
    assert not root.exists()


def test_a_start_that_fails_says_why_from_the_servers_log() -> None:
    with PostgresServer.create() as server:
        server.stop()
        with (
            socket.create_server(("127.0.0.1", server.port)),
            pytest.raises(PostgresServerError) as error,
        ):
            server.start()
        message = str(error.value)
        assert message.startswith("pg_ctl start failed with exit code 1: ")
        assert f"server log ({server.log_file}):" in message
        assert "Address already in use" in message
        assert server.password not in message


def test_missing_server_binaries_fail_with_how_to_install_them(tmp_path: Path) -> None:
    with pytest.raises(PostgresServerError) as error:
        find_server_bin_dir(str(tmp_path / "*" / "bin"), pg_config=str(tmp_path / "pg_config"))
    assert str(error.value) == (
        f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {tmp_path}/*/bin nor"
        f" in `{tmp_path}/pg_config --bindir`: run .ci/run (as root it installs it) or"
        " apt-get install postgresql"
    )
