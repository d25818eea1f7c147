"""Several real processes share one budget against the emulator without a single 429, with the
state in a SQLite folder or in PostgreSQL.

The processes stand for hosts: each is its own interpreter, and all they share is the state URL
and Hex. Time runs scaled (HEXDBT_TIME_SCALE): every process, and the emulator, reads one clock
from one origin (HEXDBT_TIME_ORIGIN), so an hour of Hex's limits passes in half a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import pytest

from hexdbt.clock import ScaledClock, from_iso
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import CUSTOMER_HEALTH_ID
from hexdbt.hex.budget import BUDGET_FILE, Limit, budget_scope
from hexdbt.settings import (
    STATE_URL_ENV,
    TIME_ORIGIN_ENV,
    TIME_SCALE_ENV,
    TOKEN_ENV,
    StateLocation,
    parse_state_url,
)
from hexdbt.store import open_store

pytestmark = pytest.mark.slow  # real processes: left out of make test-fast

TOKEN = "hxtp_shared_budget_secret"
PROCESSES = 3
CHILD_TIMEOUT_S = 120

# Each child reads the token and the state URL (with its password) from its environment, never
# from its command line, where any user of the machine could read them.
GET_PROJECT_CHILD = """
import os, sys
from hexdbt.hex.budget import BudgetLimits, SharedBudget
from hexdbt.hex.client import HexClient
from hexdbt.settings import parse_state_url, resolve_clock, resolve_token

url, calls, project, margin_s = sys.argv[1:5]
clock = resolve_clock()
token = resolve_token()
budget = SharedBudget.open(
    parse_state_url(os.environ["HEXDBT_STATE_URL"]), token, url, clock=clock,
    limits=BudgetLimits(margin_s=float(margin_s)),
)
with HexClient(url, token, clock=clock, budget=budget, get_attempts=1) as client:
    for _ in range(int(calls)):
        client.get_project(project)
"""

# What `hexdbt trigger --wait` does (direct_plan, open_engine, run_direct), with the budget's
# margin made to fit the scaled clock (see RUN_MARGIN_S).
TRIGGER_CHILD = """
import json, os, sys
from hexdbt.engine import EngineSettings
from hexdbt.factory import open_client, open_engine
from hexdbt.feeders.direct import direct_plan, run_direct
from hexdbt.hex.budget import BudgetLimits, SharedBudget
from hexdbt.hex.models import RunRequest
from hexdbt.settings import parse_state_url, resolve_token

margin_s, *project_ids = sys.argv[1:]
state = parse_state_url(os.environ["HEXDBT_STATE_URL"])
with open_client(shared_budget=False) as client:
    client.budget = SharedBudget.open(
        state, resolve_token(), client.base_url, clock=client.clock,
        limits=BudgetLimits(margin_s=float(margin_s)),
    )
    plan = direct_plan(
        project_ids, RunRequest(), idempotency_key=None, timeout_minutes=60,
        cancel_on_timeout=True,
    )
    with open_engine(client, settings=EngineSettings(wait=True), state=state) as engine:
        outcomes = run_direct(engine, plan)
print(json.dumps([outcome.to_json() for outcome in outcomes]))
"""


def child_environment(
    emulator: HexEmulator, state_url: str, scale: float, origin: float
) -> dict[str, str]:
    """The environment of a child: this one's without Hex's or hexdbt's settings, plus the token,
    Hex's address, the state URL and the clock that the emulator runs on."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("HEX_", "HEXDBT_", "PG"))
    }
    env.update(
        {
            TOKEN_ENV: TOKEN,
            "HEX_BASE_URL": emulator.url,
            STATE_URL_ENV: state_url,
            TIME_SCALE_ENV: repr(scale),
            TIME_ORIGIN_ENV: repr(origin),
        }
    )
    return env


def run_children(script: str, arguments: Sequence[Sequence[str]], env: dict[str, str]) -> list[str]:
    """Start one child per argument list at once, wait for every one to exit, and return their
    standard outputs; a child that fails fails the test with its stderr."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, *each],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for each in arguments
    ]
    outputs = [child.communicate(timeout=CHILD_TIMEOUT_S) for child in children]
    for child, (stdout, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0, stderr
        assert TOKEN not in stdout + stderr
    return [stdout for stdout, _stderr in outputs]


def budget_scopes(location: StateLocation) -> set[str]:
    """The keys of every call recorded in the budget at ``location``."""
    store = open_store(location, BUDGET_FILE, what="budget store")
    try:
        rows = store.read(lambda session: session.execute("SELECT scope FROM calls").rows)
    finally:
        store.close()
    return {row["scope"] for row in rows}


def test_processes_sharing_a_token_share_one_budget(
    hex_emulator_factory: Callable[..., HexEmulator], state_url: str
) -> None:
    """60 GetProject calls from three processes against 30 a minute: they wait for each other."""
    scale = 30.0  # one emulated minute is two real seconds
    calls_each = 20
    # 5 emulated seconds cover ~170 ms of real network and scheduling delay at this scale.
    margin_s = 5.0
    origin = time.time()
    emu = hex_emulator_factory(clock=ScaledClock.since(origin, scale))
    run_children(
        GET_PROJECT_CHILD,
        [[emu.url, str(calls_each), CUSTOMER_HEALTH_ID, repr(margin_s)]] * PROCESSES,
        child_environment(emu, state_url, scale, origin),
    )
    statuses = [entry["status"] for entry in emu.journal() if entry["operation"] == "GetProject"]
    assert len(statuses) == PROCESSES * calls_each
    assert 429 not in statuses
    # One budget for the three, keyed by a hash of the token, never the token.
    assert budget_scopes(parse_state_url(state_url)) == {budget_scope(TOKEN, emu.url)}


# Hex's real limits on RunProject, per user behind the token (the emulator's defaults too).
RUN_PROJECT_LIMITS = (Limit(20, 60.0), Limit(60, 3600.0))
TRIGGERS = 90
# An hour of Hex in 15 real seconds: the whole round fits in ~20 s of real time.
RUN_SCALE = 240.0
# The budget's margin stands for the delay between its clock reading and Hex's; here that delay
# is real (scheduling, loopback, the state's commits) and multiplied by the scale: 20 emulated
# seconds are 83 real ms. The default (1 s, i.e. 4 real ms) is meant for real time.
RUN_MARGIN_S = 20.0
MAKESPAN_SLACK = 1.1


def makespan_lower_bound_s(calls: int, limits: Sequence[Limit]) -> float:
    """The least time from the first to the last of ``calls`` calls that keeps every interval of
    each limit's window within its number of calls (sliding windows, which is what hexdbt's budget
    keeps, and what "20 a minute" means whatever the phase of Hex's own windows).

    Call i (0-based) cannot come before call i - n of every limit n/w has left its window:
    t[i] >= t[i - n] + w. Sending each call as early as that allows is optimal (by induction,
    no schedule has an earlier call i), so the greedy schedule's last call is the bound. For 90
    calls at 20/60 s and 60/3600 s: calls 1-20 at 0 s, 21-40 at 60 s, 41-60 at 120 s; call 61
    waits for call 1 to leave the hour, so calls 61-80 go at 3600 s, and calls 81-90 wait for
    both call 61's minute and call 21's hour: 3660 s.
    """
    times: list[float] = []
    for index in range(calls):
        earliest = times[-1] if times else 0.0
        for limit in limits:
            if index >= limit.calls:
                earliest = max(earliest, times[index - limit.calls] + limit.window_s)
        times.append(earliest)
    return times[-1]


def test_bound_of_ninety_triggers_at_hex_limits_is_an_hour_and_a_minute() -> None:
    assert makespan_lower_bound_s(TRIGGERS, RUN_PROJECT_LIMITS) == 3660.0
    assert makespan_lower_bound_s(60, RUN_PROJECT_LIMITS) == 120.0
    assert makespan_lower_bound_s(61, RUN_PROJECT_LIMITS) == 3600.0


def project_id(number: int) -> str:
    return f"00000000-0000-4000-8000-{number:012d}"


def test_ninety_triggers_from_three_processes_keep_hex_limits_without_a_429(
    hex_emulator_factory: Callable[..., HexEmulator], postgres_state_url: str
) -> None:
    """Three "hosts" each trigger 30 projects (as `hexdbt trigger --wait`) through one token and
    one state in PostgreSQL (the budget's SQL is the same on SQLite, which the test above runs):
    Hex answers no 429, and the last run starts within 10% of the limits' bound."""
    state_url = postgres_state_url
    ids = [project_id(number) for number in range(TRIGGERS)]
    # Runs of 23 s: at 20 starts a minute no more than 20 are live, under Hex's 25 kernels.
    scenario = {
        "projects": [
            {"id": each, "title": f"Project {n}", "runs": [{"pending_s": 3, "running_s": 20}]}
            for n, each in enumerate(ids)
        ]
    }
    origin = time.time()
    emu = hex_emulator_factory(scenario=scenario, clock=ScaledClock.since(origin, RUN_SCALE))
    share = TRIGGERS // PROCESSES
    outputs = run_children(
        TRIGGER_CHILD,
        [[repr(RUN_MARGIN_S), *ids[n * share : (n + 1) * share]] for n in range(PROCESSES)],
        child_environment(emu, state_url, RUN_SCALE, origin),
    )

    outcomes = [outcome for stdout in outputs for outcome in json.loads(stdout)]
    assert sorted(outcome["projectId"] for outcome in outcomes) == sorted(ids)
    assert {outcome["outcome"] for outcome in outcomes} == {"completed"}
    journal = emu.journal()
    assert [entry for entry in journal if entry["status"] == 429] == []
    run_projects = [entry for entry in journal if entry["operation"] == "RunProject"]
    assert [entry["status"] for entry in run_projects] == [201] * TRIGGERS
    runs = emu.runs()
    assert sorted(run.project_id for run in runs) == sorted(ids)  # each started exactly once
    started = sorted(from_iso(run.created_at) for run in runs)
    makespan_s = started[-1] - started[0]
    bound_s = makespan_lower_bound_s(TRIGGERS, RUN_PROJECT_LIMITS)
    assert bound_s <= makespan_s <= MAKESPAN_SLACK * bound_s, (makespan_s, bound_s)
