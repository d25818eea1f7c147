"""Every test starts from a clean environment: no HEX_*, HEXDBT_*, DBT_* or libpq's PG* from the
machine.

Tests that need PostgreSQL take `postgres_state_url` (a fresh schema of their own on one server
shared by the session) or `postgres_server` itself; either marks them `postgres`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_server import PostgresServer, PostgresServerError
from prebuilt import Prebuilds

from hexdbt.settings import StateLocation, parse_state_url

REPO_ROOT = Path(__file__).resolve().parent.parent
PREBUILDS = pytest.StashKey[Prebuilds]()


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("HEX_", "HEXDBT_", "DBT_", "PG")):
            monkeypatch.delenv(name)
    state_dir = tmp_path / "hexdbt-state"
    monkeypatch.setenv("HEXDBT_STATE_DIR", str(state_dir))
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("state_url") == "postgresql"
        if on_postgres or "postgres_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


def pytest_collection_finish(session: pytest.Session) -> None:
    """The builds that the selected tests read start now, beside the tests before them."""
    modules = {getattr(item, "module", None) for item in session.items}
    prebuilds = session.config.stash[PREBUILDS] = Prebuilds()
    prebuilds.start(sorted(m.__name__ for m in modules if m is not None and hasattr(m, "prebuild")))


def pytest_sessionfinish(session: pytest.Session) -> None:
    if PREBUILDS in session.config.stash:
        session.config.stash[PREBUILDS].close()


@pytest.fixture(scope="session")
def prebuilt(pytestconfig: pytest.Config) -> Prebuilds:
    """The builds of the modules that define ``prebuild`` (tests/prebuilt.py)."""
    return pytestconfig.stash[PREBUILDS]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server for the whole session; a test that stops it starts it again."""
    try:
        server = PostgresServer.create()
    except PostgresServerError as exc:
        # A missing server is a broken setup, not a reason to skip half of the state tests.
        pytest.fail(str(exc), pytrace=False)
    with server:
        yield server


@pytest.fixture
def postgres_state_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The server's URL naming a schema of this test's own, dropped with its tables afterwards."""
    schema = f"hexdbt_test_{secrets.token_hex(6)}"
    yield f"{postgres_server.url}?schema={schema}"
    postgres_server.drop_schema(schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A state URL of each backend: a SQLite folder of this test, or a PostgreSQL schema of its
    own. Tests of the ledger, the budget and dispatch take it (or ``state_location``) to run on both."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'state'}"
    url: str = request.getfixturevalue("postgres_state_url")
    return url


@pytest.fixture
def state_location(state_url: str) -> StateLocation:
    return parse_state_url(state_url)
