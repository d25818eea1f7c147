"""Two hosts on one PostgreSQL state, one of them 5 minutes ahead: leases are judged by the
server's clock, so a lapsed lease is taken over when it lapses and a live one is not taken.

The host ahead is a process under libfaketime (Debian's ``faketime``, which ``.ci/run``
installs; ``DONT_FAKE_MONOTONIC=1`` or Python's waits hang). Had each host judged leases by its
own clock, the row of a host ahead that died would stay stuck for 5 minutes, and a host ahead
would take over the rows of a live one at once.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from engine_helpers import project_id, scenario, started_runs, write_project

from hexdbt.clock import SystemClock
from hexdbt.emulator import HexEmulator
from hexdbt.ledger import LEDGER_FILENAME, Holder, Ledger, NewTrigger, TriggerOptions, TriggerState
from hexdbt.settings import parse_state_url
from hexdbt.store import open_store

pytestmark = pytest.mark.postgres

AHEAD_S = 300
PROJECTS = 3


def _ahead() -> list[str]:
    faketime = shutil.which("faketime")
    assert faketime is not None, "libfaketime is missing: apt-get install faketime"
    return [faketime, "-f", f"+{AHEAD_S}s"]


def _env(host: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DONT_FAKE_MONOTONIC": "1",
        "HEXDBT_HOST_NAME": host,
        "HEXDBT_LEASE_TTL_S": "1",
        "HEXDBT_CONNECT_TIMEOUT_S": "0.2",
        "HEXDBT_READ_TIMEOUT_S": "0.6",
        **extra,
    }


def _plan(url: str) -> None:
    with Ledger.open(parse_state_url(url)) as ledger:
        trigger = NewTrigger("k1", "app", "p-1", "http://127.0.0.1:9", {}, TriggerOptions())
        ledger.plan_and_claim("inv-1", "build", "run", [trigger], ())


_CLAIM = (
    "import os, sys, time; from hexdbt.ledger import Ledger; from hexdbt.settings import"
    " parse_state_url; ledger = Ledger.open(parse_state_url(sys.argv[1]));"
    "assert ledger.claim_for_sending('k1'); print(time.time(), flush=True);"
)


def _wait_until(condition: Callable[[], bool], what: str, limit_s: float = 30) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def _lapsed_on_the_server(ledger: Ledger) -> bool:
    rows = ledger._read(
        "SELECT count(*) AS live FROM leases"
        " WHERE expires_at > extract(epoch FROM clock_timestamp())"
    )
    return int(rows[0]["live"]) == 0


def test_the_row_of_a_dead_host_ahead_is_taken_over_once_its_lease_lapses(
    postgres_state_url: str,
) -> None:
    _plan(postgres_state_url)
    died = subprocess.run(
        [*_ahead(), sys.executable, "-c", _CLAIM + "os._exit(0)", postgres_state_url],
        env=_env("host-ahead"), capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert float(died.stdout) > time.time() + AHEAD_S - 30  # its clock was ahead
    store = open_store(parse_state_url(postgres_state_url), LEDGER_FILENAME, what="ledger")
    holder = Holder("host-on-time", os.getpid(), boot_id="boot of host-on-time")
    with Ledger(store, holder=holder) as on_time:
        _wait_until(lambda: on_time.take_over_orphan("k1") is not None, "taken over", 10)
        assert on_time.get("k1").state is TriggerState.SENDING


def test_a_host_ahead_does_not_take_over_the_row_of_a_live_host(
    postgres_state_url: str,
) -> None:
    _plan(postgres_state_url)
    holder = subprocess.Popen(
        [sys.executable, "-c", _CLAIM + "sys.stdin.read()", postgres_state_url],
        env=_env("host-on-time", HEXDBT_LEASE_TTL_S="60"),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline()  # claimed
        taking = subprocess.run(
            [*_ahead(), sys.executable, "-c",
             "import sys, time; from hexdbt.ledger import Ledger; from hexdbt.settings import"
             " parse_state_url; ledger = Ledger.open(parse_state_url(sys.argv[1]));"
             "print(time.time(), ledger.take_over_orphan('k1') is not None)",
             postgres_state_url],
            env=_env("host-ahead"), capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        now, taken = taking.stdout.split()
        assert float(now) > time.time() + AHEAD_S - 30  # its clock was ahead
        assert taken == "False", "a live host's lease is fresh on the server's clock"
    finally:
        holder.communicate("")


def test_a_build_left_by_a_crashed_host_ahead_is_sent_once_by_a_host_on_time(
    postgres_state_url: str, hex_emulator_factory: Callable[..., HexEmulator], tmp_path: Path
) -> None:
    """End to end with ``hexdbt run``: once the crashed host's lease has lapsed on the server's
    clock (a second), the host on time takes the build over at once, not 5 minutes later; every
    project starts once."""
    emulator = hex_emulator_factory(scenario=scenario(PROJECTS), clock=SystemClock())
    _, mappings = write_project(tmp_path, PROJECTS)
    args = ["-m", "hexdbt", "run", "--project-dir", str(tmp_path), "--mappings", str(mappings),
            "--no-wait"]  # fmt: skip
    env = {"HEX_API_TOKEN": "hxtp_skew", "HEX_BASE_URL": emulator.url,
           "HEXDBT_STATE_URL": postgres_state_url}  # fmt: skip
    crashed = subprocess.run(
        [*_ahead(), sys.executable, *args],
        env=_env("host-ahead", HEXDBT_CRASH_AT="planned", **env),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert crashed.returncode == 86, crashed.stderr
    with Ledger.open(parse_state_url(postgres_state_url)) as ledger:
        _wait_until(lambda: _lapsed_on_the_server(ledger), "the crashed host's lease lapsed", 10)
    on_time = subprocess.run(
        [sys.executable, *args], env=_env("host-on-time", **env),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert on_time.returncode == 0, on_time.stderr
    assert started_runs(emulator.journal()) == {project_id(i): 1 for i in range(PROJECTS)}
    with Ledger.open(parse_state_url(postgres_state_url)) as ledger:
        states = {record.state for record in ledger.triggers_of("inv-1")}
    assert states == {TriggerState.STARTED}
