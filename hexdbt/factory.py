"""One place that wires settings into the working parts: client, budget, ledger, engine.

Every command and the Python API get their parts here, so a flag, an environment variable and a
default mean the same thing everywhere (``hexdbt.settings`` reads the environment).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import requests

from hexdbt.clock import Clock
from hexdbt.engine import Engine, EngineSettings, Log
from hexdbt.hex.budget import BudgetLimits, SharedBudget
from hexdbt.hex.client import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, HexClient
from hexdbt.hex.polls import Polls, PollSchedule, Progress
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
            stop=client.stop,
        )
    return client


def open_ledger(client: HexClient, state: StateLocation | None = None) -> Ledger:
    """The ledger in ``state`` (else where the environment says), on the client's clock."""
    return Ledger.open(state or resolve_state_location(), clock=client.clock, stop=client.stop)


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
