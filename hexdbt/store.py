"""Where hexdbt's state is kept: SQLite files in a folder of this machine, or one schema of a
PostgreSQL database that every machine shares.

The ledger and the budget speak the same SQL to both (``?`` placeholders; ``{rowid}`` in a table's
definition adds the ordering column that SQLite tables have by themselves), through a ``Store``:

- ``write(work)`` runs ``work(session)`` in one transaction. SQLite serialises writers with
  ``BEGIN IMMEDIATE``; PostgreSQL runs at READ COMMITTED, so ``lock_key`` takes a transaction
  advisory lock where a read decides a write (the budget's check-and-take), and the ledger's moves
  are single guarded UPDATEs. ``durable``: the commit is on disk before ``write`` returns
  (SQLite's ``synchronous=FULL``, PostgreSQL's ``synchronous_commit=on``).
- A PostgreSQL connection lost mid-transaction (``pg_terminate_backend``, a restart done) is
  reopened and the transaction run again at once. A commit whose answer was lost may have
  happened: ``session.retried`` tells ``work`` to accept its own earlier write (the ledger checks
  the row's ``updated_at`` and owner). When the server cannot be reached again (a restart under
  way, a fail-over), the call raises ``StateUnavailable`` at once rather than hold its caller:
  the engine has runs to poll meanwhile, and the budget keeps to a local window. Later calls try
  to reconnect with backoff (``RECONNECT_EVERY_S``) and fail at once in between; how long to go
  on without the state is the caller's choice (the engine's ``state_outage_limit_s``).
- Schemas are versioned per component (``ledger``, ``budget``) and migrated on first use inside
  one transaction under a lock, so two hosts starting at once do not race.

Every error of the database libraries becomes a ``StateError`` here, with the password masked.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from hexdbt.clock import Clock, SystemClock
from hexdbt.errors import ConfigError, StateError, StateUnavailable
from hexdbt.settings import PostgresState, SqliteState

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")
Row = dict[str, Any]

CONNECT_TIMEOUT_S = 10
# While the server is lost: a reconnect is tried at most this often (real seconds, after a
# backoff from 0.1 s), each given libpq's shortest connect timeout, so no call waits long.
RECONNECT_EVERY_S = 5.0
RECONNECT_TIMEOUT_S = 2


@dataclass(slots=True)
class Result:
    """The rows a statement returned (none for most writes) and how many rows it changed."""

    rows: list[Row] = field(default_factory=list)
    rowcount: int = 0

    def first(self) -> Row | None:
        return self.rows[0] if self.rows else None


class Session(Protocol):
    """A transaction in progress."""

    @property
    def retried(self) -> bool:
        """Whether an earlier attempt of this transaction was cut off (its commit may stand)."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class Store(Protocol):
    backend: str

    def describe(self) -> str:
        """Where the state is, as messages name it (never with a password)."""
        ...

    def write(
        self, work: Callable[[Session], T], *, durable: bool = True, lock_key: str | None = None
    ) -> T: ...

    def read(self, work: Callable[[Session], T]) -> T: ...

    def migrate(self, component: str, migrations: Sequence[str]) -> None:
        """Bring ``component``'s tables to ``len(migrations)``; ``migrations[n]`` takes version n
        to n+1 (statements separated by ``;``)."""
        ...

    def schema_version(self, component: str) -> int: ...

    def check_writable(self, component: str) -> None:
        """A real write that changes nothing; a StateError when the state cannot be written."""
        ...

    def close(self) -> None: ...


def newer_schema_error(what: str, where: str, version: int, known: int) -> StateError:
    return StateError(
        f"the {what} {where} has schema version {version}, newer than this hexdbt knows ({known})",
        hint="upgrade hexdbt, or point HEXDBT_STATE_DIR or HEXDBT_STATE_URL elsewhere",
    )


def _statements(migration: str, rowid_column: str) -> list[str]:
    text = migration.replace("{rowid}", rowid_column)
    return [statement for statement in text.split(";") if statement.strip()]


# -- SQLite -----------------------------------------------------------------------------------------


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, values, strict=True)}


@dataclass(slots=True)
class _SqliteSession:
    db: sqlite3.Connection
    retried: bool = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        cursor = self.db.execute(sql, tuple(params))
        return Result(cursor.fetchall(), cursor.rowcount)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.db.executemany(sql, rows)


# Each retry first waits for the lock; more than a handful of processes opening one new folder
# together is not a case to wait on without end.
_WAL_SWITCH_ATTEMPTS = 20


def _use_wal(db: sqlite3.Connection) -> None:
    """Puts the file in WAL mode, where readers do not wait for a writer.

    Switching a new file takes its exclusive lock, and SQLite does not wait for a lock when
    waiting could deadlock: of processes opening a new state folder together, some are told
    "database is locked" at once. Such a one waits for the lock (BEGIN EXCLUSIVE waits out the
    busy timeout) and tries again, by when the file is usually in WAL mode already."""
    for attempt in range(1, _WAL_SWITCH_ATTEMPTS + 1):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or attempt == _WAL_SWITCH_ATTEMPTS:
                raise
        db.execute("BEGIN EXCLUSIVE")
        db.execute("COMMIT")


class SqliteStore:
    """One SQLite file; one connection per instance, shared by the threads of a process."""

    backend = "sqlite"

    def __init__(self, path: Path, *, what: str) -> None:
        self.path = path
        self._what = what
        self._lock = threading.RLock()
        self._synchronous: str | None = None  # the connection's PRAGMA synchronous, once set
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), so a writer
            # takes the lock before reading the row it is about to change.
            self._db = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = _dict_row
            _use_wal(self._db)
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute("PRAGMA foreign_keys=ON")
        except (OSError, sqlite3.Error) as exc:
            raise StateError(
                f"cannot open the {what} {path}: {exc}",
                hint="check that HEXDBT_STATE_DIR is writable, or move it elsewhere",
            ) from exc

    @classmethod
    def in_memory(cls, *, what: str) -> SqliteStore:
        """A store of this process alone, gone with it."""
        return cls(Path(":memory:"), what=what)

    def describe(self) -> str:
        return str(self.path)

    def write(
        self, work: Callable[[Session], T], *, durable: bool = True, lock_key: str | None = None
    ) -> T:
        # BEGIN IMMEDIATE serialises every writer of the file: no finer lock is needed.
        with self._lock:
            try:
                synchronous = "FULL" if durable else "NORMAL"
                if synchronous != self._synchronous:  # set only when it changes
                    self._db.execute(f"PRAGMA synchronous={synchronous}")
                    self._synchronous = synchronous
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(_SqliteSession(self._db))
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                raise StateError(f"cannot write the {self._what} {self.path}: {exc}") from exc

    def read(self, work: Callable[[Session], T]) -> T:
        with self._lock:
            try:
                return work(_SqliteSession(self._db))
            except sqlite3.Error as exc:
                raise StateError(f"cannot read the {self._what} {self.path}: {exc}") from exc

    def migrate(self, component: str, migrations: Sequence[str]) -> None:
        def run(session: Session) -> None:
            version = self._user_version()
            if version > len(migrations):
                raise newer_schema_error(self._what, str(self.path), version, len(migrations))
            for step in range(version, len(migrations)):
                # One statement at a time keeps the whole migration inside this transaction.
                for statement in _statements(migrations[step], ""):
                    session.execute(statement)
            if version != len(migrations):
                session.execute(f"PRAGMA user_version={len(migrations)}")

        self.write(run)

    def _user_version(self) -> int:
        version: int = self._db.execute("PRAGMA user_version").fetchone()["user_version"]
        return version

    def schema_version(self, component: str) -> int:
        return self.read(lambda session: self._user_version())

    def check_writable(self, component: str) -> None:
        version = self.schema_version(component)
        self.write(lambda session: session.execute(f"PRAGMA user_version={version}"))

    def close(self) -> None:
        self._db.close()


# -- PostgreSQL -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _PostgresSession:
    connection: psycopg.Connection[Row]
    retried: bool

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        cursor = self.connection.execute(_placeholders(sql), tuple(params))
        rows = cursor.fetchall() if cursor.description is not None else []
        return Result(rows, cursor.rowcount)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(_placeholders(sql), list(rows))


@dataclass(slots=True)
class _Outage:
    """The server could not be reached since ``since``; the next reconnect at ``retry_at``."""

    since: float
    attempts: int = 0
    retry_at: float = 0.0
    cause: str = ""

    def error(self, server: str, now: float) -> StateUnavailable:
        ago = f" {now - self.since:.0f} s ago" if now - self.since >= 1 else ""
        return StateUnavailable(f"lost {server}{ago}: {self.cause}")


class _ConnectionLost(Exception):
    """A transaction was cut off by the connection (its message says why): run it again."""


def _placeholders(sql: str) -> str:
    return sql.replace("?", "%s")


def _advisory_key(schema: str, lock_key: str) -> int:
    digest = hashlib.sha256(f"{schema}:{lock_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _import_psycopg() -> Any:
    try:
        import psycopg
        from psycopg.rows import dict_row
    except ImportError:
        raise ConfigError(
            "a postgresql:// state URL needs psycopg, which is not installed",
            hint="pip install 'hexdbt[postgres]'",
        ) from None
    return psycopg, dict_row


class PostgresStore:
    """One schema of a PostgreSQL database; one connection per instance, shared by the threads
    of a process, reopened when lost."""

    backend = "postgresql"

    def __init__(self, location: PostgresState, *, what: str, clock: Clock | None = None) -> None:
        self.location = location
        self._what = what
        self._clock = clock or SystemClock()
        self._lock = threading.RLock()
        self._psycopg, self._dict_row = _import_psycopg()
        self._connection: psycopg.Connection[Row] | None = None
        self._outage: _Outage | None = None
        self._server = f"PostgreSQL at {location.address} for the {what}"
        try:  # unreachable at start: fail now, naming the server
            self._open(CONNECT_TIMEOUT_S)
        except self._psycopg.Error as exc:
            raise StateError(
                f"cannot reach {self._server}: {self._masked(exc)}",
                hint="check HEXDBT_STATE_URL (host, port, user, password, database)"
                " and that the server accepts connections from here",
            ) from None

    def describe(self) -> str:
        return self.location.describe()

    def _masked(self, exc: BaseException) -> str:
        """The error's message, first line, with the password masked (libpq's messages do not
        hold it, but a message is not worth a leak)."""
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        password = self.location.password
        return text.replace(password, "***") if password else text

    def _open(self, timeout_s: int) -> psycopg.Connection[Row]:
        """The connection, made when there is none (psycopg's errors pass through)."""
        if self._connection is not None and not self._connection.closed:
            return self._connection
        connection: psycopg.Connection[Row] = self._psycopg.connect(
            self.location.url,
            autocommit=True,  # transactions are explicit: connection.transaction()
            connect_timeout=timeout_s,
            application_name="hexdbt",
            row_factory=self._dict_row,
        )
        connection.execute(f'SET search_path TO "{self.location.schema}"')
        self._connection = connection
        return connection

    def _forget_connection(self) -> None:
        if self._connection is not None:
            # It may be gone already: that is why it is being forgotten.
            with suppress(self._psycopg.Error):
                self._connection.close()
            self._connection = None

    def _transaction(
        self, work: Callable[[Session], T], *, durable: bool, lock_key: str | None
    ) -> T:
        """``work`` in one transaction; run again at once on a new connection when the
        connection was lost; StateUnavailable when the server cannot be reached."""
        with self._lock:
            now = self._clock.now()
            if self._outage is not None and now < self._outage.retry_at:
                raise self._outage.error(self._server, now)  # no reconnect is due yet
            attempts = 1 if self._outage is not None else 2  # a cut connection: reopen at once
            for attempt in range(1, attempts + 1):
                try:
                    result = self._attempt(work, durable, lock_key, retried=attempt > 1)
                    break
                except _ConnectionLost as lost:
                    self._forget_connection()
                    if attempt == attempts:
                        raise self._lost(str(lost)) from None
            self._outage = None
            return result

    def _lost(self, cause: str) -> StateUnavailable:
        """Note that the server cannot be reached, and when to try it again (with backoff)."""
        now = self._clock.now()
        outage = self._outage or _Outage(since=now)
        outage.attempts += 1
        pause_s = min(RECONNECT_EVERY_S, 0.1 * 2 ** min(outage.attempts, 6))
        outage.retry_at = now + self._clock.from_real_s(pause_s)
        outage.cause = cause
        self._outage = outage
        return outage.error(self._server, now)

    def _attempt(
        self, work: Callable[[Session], T], durable: bool, lock_key: str | None, *, retried: bool
    ) -> T:
        try:
            connection = self._open(RECONNECT_TIMEOUT_S)
        except self._psycopg.Error as exc:  # not back yet (at start, __init__ said so)
            raise _ConnectionLost(self._masked(exc)) from None
        try:
            with connection.transaction():
                synchronous = "on" if durable else "off"
                connection.execute(f"SET LOCAL synchronous_commit TO {synchronous}")
                if lock_key is not None:
                    connection.execute(
                        "SELECT pg_advisory_xact_lock(%s)",
                        (_advisory_key(self.location.schema, lock_key),),
                    )
                return work(_PostgresSession(connection, retried=retried))
        except (
            self._psycopg.OperationalError,  # the connection was lost, or the server restarts
            self._psycopg.errors.TransactionRollback,  # a deadlock: run it again
        ) as exc:
            raise _ConnectionLost(self._masked(exc)) from None
        except self._psycopg.Error as exc:
            raise StateError(
                f"the {self._what} at {self.describe()} cannot be used: {self._masked(exc)}"
            ) from None

    def write(
        self, work: Callable[[Session], T], *, durable: bool = True, lock_key: str | None = None
    ) -> T:
        return self._transaction(work, durable=durable, lock_key=lock_key)

    def read(self, work: Callable[[Session], T]) -> T:
        return self._transaction(work, durable=False, lock_key=None)

    def migrate(self, component: str, migrations: Sequence[str]) -> None:
        schema = self.location.schema

        def run(session: Session) -> None:
            version = self._version(session, component)
            if version > len(migrations):
                raise newer_schema_error(self._what, self.describe(), version, len(migrations))
            if version == len(migrations):
                return  # nothing to create: a role that may only read and write gets this far
            session.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            session.execute(
                "CREATE TABLE IF NOT EXISTS schema_versions"
                " (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
            )
            for step in range(version, len(migrations)):
                for statement in _statements(migrations[step], "rowid BIGSERIAL,"):
                    session.execute(statement)
            session.execute(
                "INSERT INTO schema_versions (component, version) VALUES (?, ?)"
                " ON CONFLICT (component) DO UPDATE SET version = excluded.version",
                (component, len(migrations)),
            )

        # One lock for every migration of the schema: the first host migrates, the others wait
        # for it and find the tables in place.
        self.write(run, lock_key="migrate")

    def _version(self, session: Session, component: str) -> int:
        """The component's schema version; 0 before the schema has any."""
        table = f'"{self.location.schema}".schema_versions'
        if session.execute("SELECT to_regclass(?) AS found", (table,)).rows[0]["found"] is None:
            return 0
        row = session.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (component,)
        ).first()
        return int(row["version"]) if row else 0

    def schema_version(self, component: str) -> int:
        return self.read(lambda session: self._version(session, component))

    def check_writable(self, component: str) -> None:
        self.write(
            lambda session: session.execute(
                "UPDATE schema_versions SET version = version WHERE component = ?", (component,)
            )
        )

    def close(self) -> None:
        with self._lock:
            self._forget_connection()


def open_store(
    location: SqliteState | PostgresState,
    filename: str,
    *,
    what: str,
    clock: Clock | None = None,
) -> Store:
    """The store at ``location``: ``filename`` in the SQLite folder, or the PostgreSQL schema."""
    if isinstance(location, PostgresState):
        return PostgresStore(location, what=what, clock=clock)
    return SqliteStore(location.folder / filename, what=what)
