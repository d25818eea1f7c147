"""One place that resolves options: flag > environment > mapping-file defaults > built-in default.

Only the environment variables below are read, and only here:

    HEX_API_TOKEN       the Hex API token (never printed, logged or stored)
    HEX_BASE_URL        Hex's address, default https://app.hex.tech
    HEXDBT_STATE_DIR    the folder of the ledger and the shared rate budget (SQLite files)
    HEXDBT_STATE_URL    where the state lives instead: ``postgresql://user:password@host/db``
                        (tables in the schema ``hexdbt``, or ``?schema=NAME``) to share it between
                        machines, or ``sqlite:///folder``; the password is never printed
    HEXDBT_MAPPINGS     the mapping file, when no --mappings is given
    HEXDBT_BUDGET       Hex's rate limits when a workspace has others, e.g.
                        ``run_project=20/60,60/3600;other=30/60`` (calls/seconds)
    HEXDBT_CONNECT_TIMEOUT_S, HEXDBT_READ_TIMEOUT_S
                        the time limits of one HTTP attempt to Hex (10 s and 30 s)
    HEXDBT_WINDOW_MARGIN_S
                        how long after a RunProject's read deadline Hex may still create its run
                        (60 s; docs/exactly-once.md)
    HEXDBT_LEASE_TTL_S  how long a process's lease on the triggers it sends lasts unless renewed
                        (60 s); it must outlast the longest RunProject (connect + read timeouts)
    HEXDBT_HOST_NAME    the host name a process's lease gives (the machine's by default): set it
                        per container when containers share a state folder and a host name
    HEXDBT_TIME_SCALE   run hexdbt's clock this many times faster than real time; only for use
                        with `hexdbt emulator --time-scale` at the same factor (demos, benchmarks).
                        Without a state named by HEXDBT_STATE_DIR or a state URL, the ledger and
                        the budget are then a folder of their own (``scaled_state_folder``)
    HEXDBT_TIME_ORIGIN  with HEXDBT_TIME_SCALE: the real moment (epoch s) at which the scaled clock
                        reads real time. Processes that share a ledger and a budget need one
                        origin; without it each clock starts from its own process's start
    DBT_PROJECT_DIR     the dbt project folder, as dbt itself reads it
    DBT_TARGET_PATH     dbt's target folder, as dbt itself reads it
    HEXDBT_CRASH_AT     crash tests only: exit hard at a named point (``hexdbt.crashpoints``)
    HEXDBT_STOP_AT      stall tests only: SIGSTOP the process at a named point (the same points)
    HEXDBT_UNFENCED     stall tests only: send without arming, as hexdbt did before fenced sends,
                        to show that the stall tests fail without the fence
    HEXDBT_PAGE_TOKEN, HEXDBT_PAGE_PASSWORD
                        what opens the status page and /metrics when set: a bearer token, or
                        a basic-auth password (``hexdbt.page.access``); never printed
    DBT_CLOUD_HOST      dbt Cloud's address for ``hexdbt serve``: a host name (cloud.getdbt.com,
                        emea.dbt.com, an account's own cell host) or a base URL, with or without
                        ``/api``; ``http://`` only to this machine
    DBT_CLOUD_ACCOUNT_ID, DBT_CLOUD_API_TOKEN
                        the dbt Cloud account and its service token (never printed or logged)
    HEXDBT_DBT_CLOUD_WEBHOOK_SECRET
                        the webhook subscription's secret: with it, ``serve`` takes dbt Cloud's
                        webhooks (never printed or logged)

A template's ``env_var`` reads the environment too (the user's own variables, as dbt's does).
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from hexdbt.clock import Clock, ScaledClock, SystemClock
from hexdbt.errors import ConfigError, StateError

DEFAULT_BASE_URL = "https://app.hex.tech"
TOKEN_ENV = "HEX_API_TOKEN"
BASE_URL_ENV = "HEX_BASE_URL"
STATE_DIR_ENV = "HEXDBT_STATE_DIR"
STATE_URL_ENV = "HEXDBT_STATE_URL"
TIME_SCALE_ENV = "HEXDBT_TIME_SCALE"
TIME_ORIGIN_ENV = "HEXDBT_TIME_ORIGIN"
WINDOW_MARGIN_ENV = "HEXDBT_WINDOW_MARGIN_S"
BUDGET_ENV = "HEXDBT_BUDGET"
CONNECT_TIMEOUT_ENV = "HEXDBT_CONNECT_TIMEOUT_S"
READ_TIMEOUT_ENV = "HEXDBT_READ_TIMEOUT_S"
MAPPINGS_ENV = "HEXDBT_MAPPINGS"
CRASH_AT_ENV = "HEXDBT_CRASH_AT"
STOP_AT_ENV = "HEXDBT_STOP_AT"
UNFENCED_ENV = "HEXDBT_UNFENCED"
LEASE_TTL_ENV = "HEXDBT_LEASE_TTL_S"
HOST_NAME_ENV = "HEXDBT_HOST_NAME"
DBT_CLOUD_HOST_ENV = "DBT_CLOUD_HOST"
DBT_CLOUD_ACCOUNT_ENV = "DBT_CLOUD_ACCOUNT_ID"
DBT_CLOUD_TOKEN_ENV = "DBT_CLOUD_API_TOKEN"
DBT_CLOUD_SECRET_ENV = "HEXDBT_DBT_CLOUD_WEBHOOK_SECRET"
DEFAULT_DBT_CLOUD_HOST = "cloud.getdbt.com"
DBT_PROJECT_DIR_ENV = "DBT_PROJECT_DIR"
DBT_TARGET_PATH_ENV = "DBT_TARGET_PATH"
PAGE_TOKEN_ENV = "HEXDBT_PAGE_TOKEN"
PAGE_PASSWORD_ENV = "HEXDBT_PAGE_PASSWORD"


def resolve_page_access(
    token: str | None = None, password: str | None = None
) -> tuple[str | None, str | None]:
    """The status page's bearer token and basic-auth password: the flags, else
    ``HEXDBT_PAGE_TOKEN`` and ``HEXDBT_PAGE_PASSWORD`` (None: not set)."""
    return (
        token or os.environ.get(PAGE_TOKEN_ENV) or None,
        password or os.environ.get(PAGE_PASSWORD_ENV) or None,
    )


def resolve_token(flag_value: str | None = None) -> str:
    """The Hex token from a flag or ``HEX_API_TOKEN``; a missing one is a usage error."""
    token = flag_value or os.environ.get(TOKEN_ENV, "")
    token = token.strip()
    if not token:
        raise ConfigError(
            f"no Hex API token: set {TOKEN_ENV}",
            hint="create a token in Hex under Settings > API keys, then export HEX_API_TOKEN=...",
        )
    return token


def resolve_base_url(flag_value: str | None = None) -> str:
    return (flag_value or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).strip()


def resolve_state_dir(flag_value: str | Path | None = None) -> Path:
    """The folder for the ledger and the budget store, created if missing: the one named, else
    the user's state folder, or with a scaled clock a folder of its own inside it."""
    if flag_value:
        path = Path(flag_value)
    elif os.environ.get(STATE_DIR_ENV):
        path = Path(os.environ[STATE_DIR_ENV])
    else:
        # platformdirs is only needed here, and is cheap to import.
        from platformdirs import user_state_dir

        path = Path(user_state_dir("hexdbt", appauthor=False))
        scale = resolve_time_scale()
        if scale is not None:
            path = scaled_state_folder(path, scale)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot create the state folder {path}: {exc.strerror}",
            hint=f"point {STATE_DIR_ENV} at a writable folder",
        ) from exc
    return path


DEFAULT_STATE_SCHEMA = "hexdbt"
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class SqliteState:
    """The state in SQLite files in one folder of this machine (the default)."""

    folder: Path

    def describe(self) -> str:
        return str(self.folder)


@dataclass(frozen=True, slots=True)
class PostgresState:
    """The state in one schema of a PostgreSQL database, shared by every machine that uses it.

    ``url`` is a libpq URL without hexdbt's own ``schema`` parameter; it holds the password, so
    it is never shown: ``describe`` is what messages say."""

    url: str
    schema: str = DEFAULT_STATE_SCHEMA

    def __repr__(self) -> str:
        return f"PostgresState({self.describe()!r})"

    @property
    def password(self) -> str | None:
        """The password, from the user part or libpq's ``password`` parameter."""
        parts = urlsplit(self.url)
        if parts.password:
            return unquote(parts.password)
        return dict(parse_qsl(parts.query)).get("password") or None

    @property
    def address(self) -> str:
        """``host:port`` (or the socket folder), as a message names the server."""
        parts = urlsplit(self.url)
        query = dict(parse_qsl(parts.query))
        host = parts.hostname or query.get("host") or "localhost"
        return f"{host}:{parts.port or query.get('port') or 5432}"

    def describe(self) -> str:
        """The URL with its password masked, and the schema."""
        parts = urlsplit(self.url)
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            netloc = f"{user.partition(':')[0]}:***@{host}"
        query = urlencode([(k, "***" if k == "password" else v) for k, v in parse_qsl(parts.query)])
        return f"{_url(parts.scheme, netloc, parts.path, query)} (schema {self.schema})"


StateLocation = SqliteState | PostgresState


def _url(scheme: str, netloc: str, path: str, query: str) -> str:
    """A URL from its parts; unlike ``urlunsplit``, an empty host keeps its ``//``
    (``postgresql:///db`` is libpq's local socket)."""
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def resolve_state_location(flag_url: str | None = None) -> StateLocation:
    """Where the ledger and the budget live: ``--state-url`` > ``HEXDBT_STATE_URL`` > the state
    folder (``HEXDBT_STATE_DIR``, else the user's state folder)."""
    text = (flag_url or os.environ.get(STATE_URL_ENV, "")).strip()
    if not text:
        return SqliteState(resolve_state_dir())
    return parse_state_url(text)


def parse_state_url(text: str) -> StateLocation:
    """A state URL: ``postgresql://...`` (or ``postgres://``) or ``sqlite:///folder``."""
    scheme, _, rest = text.partition("://")
    if scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ConfigError(
                "a sqlite state URL names a folder by its absolute path: sqlite:///path"
            )
        return SqliteState(resolve_state_dir(unquote(rest)))
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(text)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for key, value in query if key == "schema"]
        schema = schemas[-1] if schemas else DEFAULT_STATE_SCHEMA
        libpq_query = urlencode([(key, value) for key, value in query if key != "schema"])
        location = PostgresState(_url(parts.scheme, parts.netloc, parts.path, libpq_query), schema)
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(
                f"the state URL's schema {schema!r} is not a plain PostgreSQL name",
                hint="use letters, digits and _ (at most 63), starting with a letter or _",
            )
        try:
            parts.port  # noqa: B018 (reading it checks it)
        except ValueError:
            raise ConfigError(
                f"the state URL {location.describe()} has a port that is not a number"
            ) from None
        return location
    # Only the scheme is shown: the rest of what was meant as a URL may hold a password.
    what = f"'s scheme {scheme!r} is" if rest else " has no scheme: it is"
    raise ConfigError(
        f"the state URL{what} neither postgresql:// nor sqlite:///",
        hint="e.g. postgresql://hexdbt@db.internal/analytics or sqlite:///var/lib/hexdbt",
    )


@dataclass(frozen=True, slots=True)
class TimeScale:
    """A demo clock: ``factor`` times faster than real time, from ``origin`` (epoch s) when one
    is given, else from the start of each process."""

    factor: float
    origin: float | None


def resolve_time_scale() -> TimeScale | None:
    """``HEXDBT_TIME_SCALE`` and ``HEXDBT_TIME_ORIGIN``; None on real time."""
    factor = _positive_number(TIME_SCALE_ENV, "a positive number")
    if factor is None:
        return None
    origin_text = os.environ.get(TIME_ORIGIN_ENV, "").strip()
    if not origin_text:
        return TimeScale(factor, None)
    try:
        origin = float(origin_text)
    except ValueError:
        origin = math.nan
    if not math.isfinite(origin):
        raise ConfigError(
            f"{TIME_ORIGIN_ENV} must be a moment in seconds since the epoch, got {origin_text!r}"
        )
    return TimeScale(factor, origin)


def resolve_clock() -> Clock:
    """The system clock, or a scaled one when ``HEXDBT_TIME_SCALE`` is set (emulator demos), from
    ``HEXDBT_TIME_ORIGIN`` when that is set too."""
    scale = resolve_time_scale()
    if scale is None:
        return SystemClock()
    if scale.origin is None:
        return ScaledClock(scale.factor)
    return ScaledClock.since(scale.origin, scale.factor)


def scaled_state_folder(state_dir: Path, scale: TimeScale) -> Path:
    """The state of a scaled clock left to find its own: a folder per factor and origin inside
    the user's state folder, e.g. ``scaled-60x-from-1767225600``.

    A scaled clock reads ahead of real time (a minute at 60x is an hour), so the calls it records
    in a budget lie in the future of every unscaled process, which would then wait for them, and
    the leases it writes in a ledger outlive their owner by as much. Each timeline therefore keeps
    a ledger and a budget of its own, and the state every unscaled hexdbt on the machine shares is
    never written on a demo's clock. Processes on one timeline share theirs: that needs one
    origin, since clocks started at each process's own start disagree with one another."""
    if scale.origin is None:
        raise ConfigError(
            f"{TIME_SCALE_ENV} without {TIME_ORIGIN_ENV}: each process would run a clock of its "
            f"own, and hexdbt will not keep a ledger and a budget on it in {state_dir}",
            hint=f"export {TIME_ORIGIN_ENV}=$(date +%s) for every process of the demo (the "
            f"emulator's --time-origin too), or name a state of its own with {STATE_DIR_ENV}",
        )
    return state_dir / f"scaled-{_number_text(scale.factor)}x-from-{_number_text(scale.origin)}"


def _number_text(value: float) -> str:
    """A number as written by hand: ``60``, ``0.5``, ``1767225600.25``, whole and exact."""
    return str(int(value)) if value.is_integer() else repr(value)


@dataclass(frozen=True, slots=True)
class DbtEnvironment:
    """Where the environment says dbt's folders are; None where it says nothing."""

    project_dir: str | None = None
    target_path: str | None = None


def dbt_environment() -> DbtEnvironment:
    """``DBT_PROJECT_DIR`` and ``DBT_TARGET_PATH``; an empty one counts as unset, as in dbt."""
    return DbtEnvironment(
        project_dir=os.environ.get(DBT_PROJECT_DIR_ENV) or None,
        target_path=os.environ.get(DBT_TARGET_PATH_ENV) or None,
    )


def resolve_budget_limits_text() -> str:
    """``HEXDBT_BUDGET`` as written (empty: Hex's published limits); the budget parses it."""
    return os.environ.get(BUDGET_ENV, "").strip()


def resolve_timeout_s(name: str, default: float) -> float:
    """An HTTP time limit from the environment (``HEXDBT_CONNECT_TIMEOUT_S``, ...), in seconds."""
    value = _positive_number(name, "a positive number of seconds")
    return default if value is None else value


def _positive_number(name: str, what: str) -> float | None:
    """The environment variable ``name`` as a number above 0; None when unset or empty."""
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"{name} must be {what}, got {text!r}")
    return value


def resolve_window_margin_s() -> float | None:
    """``HEXDBT_WINDOW_MARGIN_S``: how long after a RunProject's read deadline Hex may still
    create its run (None: unset, the default of ``hexdbt.engine.reconcile``)."""
    return _positive_number(WINDOW_MARGIN_ENV, "a number of seconds above 0")


def resolve_lease_ttl_s() -> float | None:
    """``HEXDBT_LEASE_TTL_S``: how long a lease lasts unless renewed (None: the ledger's default)."""
    return _positive_number(LEASE_TTL_ENV, "a number of seconds above 0")


def resolve_host_name() -> str | None:
    """``HEXDBT_HOST_NAME``: the host name leases give, when set (else the machine's)."""
    return os.environ.get(HOST_NAME_ENV, "").strip() or None


def resolve_unfenced() -> bool:
    """``HEXDBT_UNFENCED=1``, for stall tests only: send without arming."""
    return os.environ.get(UNFENCED_ENV, "").strip() == "1"


def resolve_crash_point() -> tuple[str, int] | None:
    """``HEXDBT_CRASH_AT=NAME[:N]`` for crash tests (see ``hexdbt.crashpoints``), or None."""
    return _named_point(CRASH_AT_ENV)


def resolve_stop_point() -> tuple[str, int] | None:
    """``HEXDBT_STOP_AT=NAME[:N]`` for stall tests (see ``hexdbt.crashpoints``), or None."""
    return _named_point(STOP_AT_ENV)


def _named_point(env: str) -> tuple[str, int] | None:
    text = os.environ.get(env, "").strip()
    if not text:
        return None
    name, _, nth = text.partition(":")
    try:
        count = int(nth) if nth else 1
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigError(f"{env} must be NAME or NAME:N with N >= 1, got {text!r}")
    return name, count


def mappings_file_from_env() -> str | None:
    """``HEXDBT_MAPPINGS``, when set and not empty."""
    return os.environ.get(MAPPINGS_ENV, "").strip() or None


@dataclass(frozen=True, slots=True)
class DbtCloudSettings:
    """Where dbt Cloud is and how to prove who we are; ``repr`` shows neither secret."""

    api_url: str  # https://cloud.getdbt.com/api: the v2 and v3 paths go below it
    account_id: str
    token: str | None  # None: no Admin API (webhooks only, with --dbt-cloud-jobs)
    webhook_secret: str | None  # None: the webhook endpoint is off

    def __repr__(self) -> str:
        return (
            f"DbtCloudSettings(api_url={self.api_url!r}, account_id={self.account_id!r},"
            f" token={'***' if self.token else None}, webhook_secret="
            f"{'***' if self.webhook_secret else None})"
        )


def resolve_dbt_cloud(
    *,
    host: str | None = None,
    account_id: str | None = None,
    allow_insecure_http: bool = False,
) -> DbtCloudSettings | None:
    """dbt Cloud's settings from the flags, else the environment; None when neither names an
    account (``serve`` then takes nothing from dbt Cloud)."""
    account = (account_id or os.environ.get(DBT_CLOUD_ACCOUNT_ENV, "")).strip()
    token = os.environ.get(DBT_CLOUD_TOKEN_ENV, "").strip() or None
    secret = os.environ.get(DBT_CLOUD_SECRET_ENV, "") or None
    if not account:
        if token or secret:
            raise ConfigError(
                f"{DBT_CLOUD_TOKEN_ENV if token else DBT_CLOUD_SECRET_ENV} is set but no dbt"
                f" Cloud account: set {DBT_CLOUD_ACCOUNT_ENV} too",
                hint="the account id is the number after /accounts/ in dbt Cloud's URLs",
            )
        return None
    if not account.isdigit():
        raise ConfigError(
            f"{DBT_CLOUD_ACCOUNT_ENV} must be a number, got {account!r}",
            hint="the account id is the number after /accounts/ in dbt Cloud's URLs",
        )
    text = (host or os.environ.get(DBT_CLOUD_HOST_ENV, "") or DEFAULT_DBT_CLOUD_HOST).strip()
    return DbtCloudSettings(
        normalize_dbt_cloud_url(text, allow_insecure_http=allow_insecure_http),
        account,
        token,
        secret,
    )


def normalize_dbt_cloud_url(text: str, *, allow_insecure_http: bool = False) -> str:
    """``emea.dbt.com``, ``https://emea.dbt.com`` and ``https://emea.dbt.com/api`` (and ``/api/v2``)
    all become ``https://emea.dbt.com/api``; plain http only to this machine, as for Hex."""
    shown = text
    if "://" not in text:
        text = "https://" + text
    text = text.rstrip("/")
    parts = urlsplit(text)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or not port_ok
        or any(char.isspace() for char in text)
    ):
        raise ConfigError(
            f"{DBT_CLOUD_HOST_ENV} {shown!r} is not a host name or an http(s) URL",
            hint="use e.g. cloud.getdbt.com, emea.dbt.com or https://ab123.us1.dbt.com",
        )
    refuse_plain_http(parts.scheme, parts.hostname, "the dbt Cloud token", allow_insecure_http)
    path = parts.path
    for suffix in ("/api/v2", "/api/v3", "/api"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return f"{parts.scheme}://{parts.netloc}{path}/api"


def refuse_plain_http(scheme: str, host: str, secret: str, allow_insecure_http: bool) -> None:
    """A secret goes over plain http only to this machine, unless the user said otherwise."""
    if scheme == "http" and not allow_insecure_http and not is_loopback(host):
        raise ConfigError(
            f"refusing to send {secret} over plain http to {host}",
            hint="use https, or pass --allow-insecure-http if this is really what you want",
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (plain http is allowed there)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
