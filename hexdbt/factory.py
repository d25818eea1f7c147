"""One place that wires settings into the working parts: client, budget, ledger, engine.

Every command and the Python API get their parts here, so a flag, an environment variable and a
default mean the same thing everywhere (``hexdbt.settings`` reads the environment).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass

import requests

from hexdbt.clock import Clock
from hexdbt.engine import Engine, EngineSettings, Log
from hexdbt.errors import StateError
from hexdbt.hex.budget import BUDGET_FILE, BudgetLimits, SharedBudget
from hexdbt.hex.budget import SCHEMA_VERSION as BUDGET_SCHEMA_VERSION
from hexdbt.hex.client import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, HexClient
from hexdbt.hex.polls import Polls, PollSchedule, Progress
from hexdbt.ledger import SCHEMA_VERSION as LEDGER_SCHEMA_VERSION
from hexdbt.ledger import Ledger
from hexdbt.settings import (
    CONNECT_TIMEOUT_ENV,
    READ_TIMEOUT_ENV,
    StateLocation,
    resolve_base_url,
    resolve_budget_limits_text,
    resolve_clock,
    resolve_state_location,
    resolve_timeout_s,
    resolve_token,
)
from hexdbt.store import Store, open_store


def open_client(
    token: str | None = None,
    base_url: str | None = None,
    *,
    clock: Clock | None = None,
    session: requests.Session | None = None,
    state: StateLocation | None = None,
    allow_insecure_http: bool = False,
    shared_budget: bool = True,
    stop: threading.Event | None = None,
) -> HexClient:
    """A client from flags or the environment, drawing on the budget shared by all processes
    (in ``state``, else where the environment says). ``stop``: set it (a signal handler does) and
    every wait of the client ends at once."""
    resolved_token = resolve_token(token)
    client = HexClient(
        resolve_base_url(base_url),
        resolved_token,
        session=session,
        clock=clock or resolve_clock(),
        allow_insecure_http=allow_insecure_http,
        connect_timeout_s=resolve_timeout_s(CONNECT_TIMEOUT_ENV, CONNECT_TIMEOUT_S),
        read_timeout_s=resolve_timeout_s(READ_TIMEOUT_ENV, READ_TIMEOUT_S),
        stop=stop,
    )
    if shared_budget:
        limits_text = resolve_budget_limits_text()
        client.budget = SharedBudget.open(
            state or resolve_state_location(),
            resolved_token,
            client.base_url,
            clock=client.clock,
            limits=BudgetLimits.parse(limits_text) if limits_text else BudgetLimits(),
        )
    return client


def open_ledger(client: HexClient, state: StateLocation | None = None) -> Ledger:
    """The ledger in ``state`` (else where the environment says), on the client's clock."""
    return Ledger.open(state or resolve_state_location(), clock=client.clock)


@contextmanager
def open_engine(
    client: HexClient,
    *,
    settings: EngineSettings | None = None,
    progress: Progress | None = None,
    schedule: PollSchedule | None = None,
    log: Log | None = None,
    ledger: Ledger | None = None,
    state: StateLocation | None = None,
) -> Iterator[Engine]:
    """An engine on ``client`` and the ledger in ``state`` (or ``ledger``, left open)."""
    own_ledger = ledger is None
    ledger = ledger or open_ledger(client, state)
    try:
        yield Engine(
            client,
            ledger,
            settings=settings,
            polls=Polls(client, schedule=schedule, progress=progress),
            log=log,
        )
    finally:
        if own_ledger:
            ledger.close()


@dataclass(frozen=True, slots=True)
class StatePart:
    """One part of the state (the ledger, the budget): its schema version and the version this
    hexdbt writes, and why it cannot be written (None: it can)."""

    name: str
    schema_version: int
    known_version: int
    cannot_write: str | None


def check_state(state: StateLocation | None = None) -> tuple[StateLocation, list[StatePart]]:
    """``hexdbt state check``: open the ledger and the budget where the state lives (creating or
    migrating their tables as any first use would) and try one write to each. A StateError
    (exit 7) when the state cannot be opened: the server unreachable, a newer schema."""
    location = state or resolve_state_location()
    with Ledger.open(location) as ledger:
        ledger_part = _check_part("ledger", ledger.store, LEDGER_SCHEMA_VERSION)
    with closing(open_store(location, BUDGET_FILE, what="budget store")) as store:
        SharedBudget.prepare(store)
        budget_part = _check_part("budget", store, BUDGET_SCHEMA_VERSION)
    return location, [ledger_part, budget_part]


def _check_part(name: str, store: Store, known_version: int) -> StatePart:
    try:
        store.check_writable(name)
    except StateError as exc:
        return StatePart(name, store.schema_version(name), known_version, str(exc))
    return StatePart(name, store.schema_version(name), known_version, None)
