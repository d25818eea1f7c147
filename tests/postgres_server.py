"""A real PostgreSQL server for the tests, in a temporary folder, on 127.0.0.1 on a free port.

The server binaries are Debian's (`apt-get install postgresql`, which `.ci/run` does when they are
missing). PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
`postgres` user that the package creates, and its folder belongs to that user.

Two ways in, each for one kind of client:
- `url`: the login role `hexdbt`, with a random password, over TCP on 127.0.0.1, owner of the
  database `hexdbt`: what hexdbt itself is given.
- `admin_connect()`: the superuser over the unix socket in the server's folder, for tests that
  inspect the server or terminate its connections. The superuser has no password and cannot log in
  over TCP.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

SERVER_BIN_GLOB = "/usr/lib/postgresql/*/bin"
ROLE = "hexdbt"
DATABASE = "hexdbt"
SUPERUSER = "postgres"
# The user Debian's package creates; the server runs as this user when the tests run as root.
SERVER_OS_USER = "postgres"
WAIT_TIMEOUT_S = 30
COMMAND_TIMEOUT_S = 60
INSTALL_HINT = "run .ci/run (as root it installs it) or apt-get install postgresql"

# Only the unix socket, in a folder that only the server's user (and root) can enter, lets the
# superuser in without a password; over TCP every role needs its password.
PG_HBA = f"""\
local   all   {SUPERUSER}                  trust
host    all   all         127.0.0.1/32    scram-sha-256
"""

# fsync is off because a crash of the test machine loses nothing worth keeping; synchronous_commit
# keeps its default (on), since hexdbt's durability before each POST depends on it.
SERVER_SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
fsync = off
full_page_writes = off
"""


class PostgresServerError(RuntimeError):
    """The test server could not be found, started or stopped."""


def find_server_bin_dir(bin_glob: str = SERVER_BIN_GLOB, pg_config: str = "pg_config") -> Path:
    """The newest installed version's folder of initdb, pg_ctl and postgres."""
    candidates = [Path(path) for path in glob.glob(bin_glob)]
    versioned = [path for path in candidates if path.parent.name.isdigit() and has_server(path)]
    if versioned:
        return max(versioned, key=lambda path: int(path.parent.name))
    try:
        reported = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        reported = ""
    if reported and has_server(Path(reported)):
        return Path(reported)
    raise PostgresServerError(
        f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {bin_glob} "
        f"nor in `{pg_config} --bindir`: {INSTALL_HINT}"
    )


def has_server(bin_dir: Path) -> bool:
    return all((bin_dir / name).is_file() for name in ("initdb", "pg_ctl", "postgres"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL server in its own temporary folder; `create()` it, leave the `with` to remove it."""

    def __init__(
        self, bin_dir: Path, root: Path, port: int, server_user: pwd.struct_passwd | None
    ) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.port = port
        self.password = secrets.token_hex(16)
        self.url = f"postgresql://{ROLE}:{self.password}@127.0.0.1:{port}/{DATABASE}"
        self.data_dir = root / "data"
        self.log_file = root / "server.log"
        self.running = False
        self._server_user = server_user

    @classmethod
    def create(cls) -> PostgresServer:
        """Initialise a data folder, start the server and create the `hexdbt` role and database."""
        bin_dir = find_server_bin_dir()
        server_user = server_user_when_root()
        root = Path(tempfile.mkdtemp(prefix="hexdbt-pg-"))
        server = cls(bin_dir, root, free_port(), server_user)
        try:
            if server_user is not None:
                os.chown(root, server_user.pw_uid, server_user.pw_gid)
            server._initdb()
            server.start()
            server._create_role_and_database()
        except BaseException:
            server.destroy()
            raise
        return server

    def start(self) -> None:
        """Start the server on its data folder and port; return once it accepts connections."""
        self._run_as_server_user(
            "pg_ctl", "start", "--wait", f"--timeout={WAIT_TIMEOUT_S}", "--silent",
            f"--pgdata={self.data_dir}", f"--log={self.log_file}",
        )  # fmt: skip
        self.running = True

    def stop(self) -> None:
        """Stop the server (fast: open connections are closed); the data folder stays."""
        self._run_as_server_user(
            "pg_ctl", "stop", "--wait", f"--timeout={WAIT_TIMEOUT_S}", "--silent",
            "--mode=fast", f"--pgdata={self.data_dir}",
        )  # fmt: skip
        self.running = False

    def destroy(self) -> None:
        """Stop the server if it runs and remove its folder."""
        try:
            if self.running:
                self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def admin_connect(self, dbname: str = DATABASE) -> psycopg.Connection[tuple[Any, ...]]:
        """A connection as the superuser over the unix socket, in autocommit mode."""
        return psycopg.connect(
            host=str(self.root),
            port=self.port,
            user=SUPERUSER,
            dbname=dbname,
            autocommit=True,
            connect_timeout=WAIT_TIMEOUT_S,
        )

    def drop_schema(self, schema: str, lock_timeout_s: float = 10) -> None:
        """Drop a schema and everything in it; a transaction still open on it fails the drop after
        `lock_timeout_s` instead of hanging it."""
        with self.admin_connect() as admin:
            admin.execute(
                sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{lock_timeout_s}s"))
            )
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
            )

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.destroy()

    def _initdb(self) -> None:
        self._run_as_server_user(
            "initdb", f"--pgdata={self.data_dir}", f"--username={SUPERUSER}", "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(SERVER_SETTINGS.format(port=self.port, socket_dir=self.root))

    def _create_role_and_database(self) -> None:
        with self.admin_connect(dbname="postgres") as admin:
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(self.password)
                )
            )
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(DATABASE), sql.Identifier(ROLE)
                )
            )

    def _run_as_server_user(self, program: str, *arguments: str) -> None:
        user = self._server_user
        command = program if arguments[0].startswith("-") else f"{program} {arguments[0]}"
        try:
            subprocess.run(
                [str(self.bin_dir / program), *arguments],
                capture_output=True,
                text=True,
                check=True,
                timeout=COMMAND_TIMEOUT_S,
                cwd=self.root,
                # Only what the programs need: no PG* variable of the machine steers them.
                env={"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"},
                user=None if user is None else user.pw_uid,
                group=None if user is None else user.pw_gid,
                extra_groups=None if user is None else [],
            )
        except subprocess.CalledProcessError as exc:
            raise PostgresServerError(
                f"{command} failed with exit code {exc.returncode}: "
                f"{(exc.stderr or exc.stdout).strip()}{self._log_tail()}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise PostgresServerError(
                f"{command} did not finish within {COMMAND_TIMEOUT_S} s{self._log_tail()}"
            ) from exc

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\nserver log ({}):\n{}".format(self.log_file, "\n".join(lines[-20:]))


def server_user_when_root() -> pwd.struct_passwd | None:
    """The user the server runs as when the tests run as root; None runs it as the current user."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        raise PostgresServerError(
            f"the tests run as root, and PostgreSQL refuses to: the user {SERVER_OS_USER!r} to run "
            f"it as does not exist: {INSTALL_HINT}"
        ) from None
