"""Fenced sends: a process that stalls past its lease never starts a second run.

Two hosts share one state (a SQLite folder, or a PostgreSQL schema), told apart by
``HEXDBT_HOST_NAME`` as two containers with a shared volume would be. Host A plans a build's
triggers and is stopped with SIGSTOP at a named point (``HEXDBT_STOP_AT``): after its claim and
before its arm, or after a slow first POST with its other triggers still claimed. It stays stopped
until its lease has lapsed on the leases' clock (PostgreSQL's own, or the machine's); host B then
takes the build over, sends what A had not, adopts the run A had started, and exits. A is let go
with SIGCONT: it must start nothing more, and overwrite nothing. Over every round, the emulator's
journal shows each project started once per build, and every run in Hex is a trigger's run in
the ledger: no second run, no run nobody follows.

With ``HEXDBT_UNFENCED=1`` (A sends on its claim alone, as hexdbt did before the fence) the same
round starts second runs: the test shows that it can fail.

The lives are forked from one warm process (``warm_lives``), with short leases and timeouts,
and the rounds are played at once, each with hosts of its own: their leases lapse together.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
import yaml
from engine_helpers import project_id, scenario, started_runs, write_project
from warm_lives import Life, WarmLives

from hexdbt.clock import SystemClock
from hexdbt.emulator import HexEmulator
from hexdbt.ledger import Ledger
from hexdbt.settings import parse_state_url

pytestmark = pytest.mark.slow  # real processes and signals

PROJECTS = 3
ROUNDS = 10  # of each way to stall, on each backend: 20 rounds per backend
BATCH = 10  # rounds played at once
EmulatorFactory = Callable[..., HexEmulator]

# A lease of 1 s, renewed every third of it; a POST takes at most 0.2 + 0.6 s, so an armed
# lease outlasts it; Hex may create a run up to 0.3 s after the read timeout.
TIMINGS = {
    "HEXDBT_LEASE_TTL_S": "1",
    "HEXDBT_CONNECT_TIMEOUT_S": "0.2",
    "HEXDBT_READ_TIMEOUT_S": "0.6",
    "HEXDBT_WINDOW_MARGIN_S": "0.3",
    "HEXDBT_BUDGET": "run_project=10000/60,100000/3600;other=10000/60",
}


@dataclass
class Hosts:
    lives: WarmLives
    emulator: HexEmulator
    state_url: str
    folder: Path

    def env(self, host: str, **extra: str) -> dict[str, str]:
        state = (
            {"HEXDBT_STATE_URL": self.state_url}
            if self.state_url.startswith("postgresql")
            else {"HEXDBT_STATE_DIR": self.state_url.removeprefix("sqlite://")}
        )
        return {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", str(self.folder)),
            "HEX_API_TOKEN": "hxtp_fenced_sends",
            "HEX_BASE_URL": self.emulator.url,
            "HEXDBT_HOST_NAME": host,
            **state,
            **TIMINGS,
            **extra,
        }


@pytest.fixture
def hosts(state_url: str, hex_emulator_factory: EmulatorFactory, tmp_path: Path) -> Iterator[Hosts]:
    emulator = hex_emulator_factory(
        scenario=scenario(PROJECTS * BATCH, limits_enabled=False), clock=SystemClock()
    )
    with WarmLives(tmp_path) as lives:
        yield Hosts(lives, emulator, state_url, tmp_path)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll a process's state or the ledger (an event, not a guess) for up to 30 s."""
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def _lease_lapsed(ledger: Ledger, host: str) -> bool:
    """Whether ``host`` holds no live lease, judged on the leases' clock."""
    if ledger.store.backend == "postgresql":
        now_sql, params = "extract(epoch FROM clock_timestamp())", ()
    else:
        now_sql, params = "?", (time.time(),)
    rows = ledger.store.read(
        lambda session: (
            session.execute(
                f"SELECT count(*) AS live FROM leases WHERE host = ? AND expires_at > {now_sql}",
                (host, *params),
            ).rows
        )
    )
    return int(rows[0]["live"]) == 0


def _own_projects(mappings: Path, place: int) -> None:
    """The rounds played at once start Hex projects of their own: a lost answer's look-up in
    Hex's run list must not meet another round's runs."""
    document = yaml.safe_load(mappings.read_text())
    for index, entry in enumerate(document["projects"]):
        entry["project_id"] = project_id(place * PROJECTS + index)
    mappings.write_text(yaml.safe_dump(document))


@dataclass
class Stall:
    """One build played: host A stalled, host B took over, A went on."""

    a: Life
    exit_a: int
    exit_b: int


def _stall_rounds(
    hosts: Hosts, first: int, count: int, stall_at: str, **a_extra: str
) -> list[Stall]:
    """``count`` builds at once, each with hosts of its own (A stalls at ``stall_at`` past its
    lease, B takes over, then A goes on): the leases lapse together, so rounds cost little more
    than one."""
    if stall_at == "post-answered":  # a slow first POST: every answer comes 0.3 s late
        hosts.emulator.inject_faults(
            "RunProject", rate=1.0, fault={"kind": "lost_timeout", "delay_s": 0.3}
        )
    builds = []
    for number in range(first, first + count):
        folder = hosts.folder / f"round-{number}"
        _, mappings = write_project(folder, PROJECTS, invocation_id=f"inv-{stall_at}-{number}")
        _own_projects(mappings, number % BATCH)
        args = ["run", "--project-dir", str(folder), "--mappings", str(mappings), "--no-wait"]
        env_a = hosts.env(f"host-a{number}", HEXDBT_STOP_AT=f"{stall_at}:1", **a_extra)
        builds.append((number, args, hosts.lives.start(args, env_a)))
    with Ledger.open(parse_state_url(hosts.state_url)) as ledger:
        for number, _, a in builds:
            _wait_until(a.stopped, f"host A of round {number} stopped at {stall_at}")
            lapsed = partial(_lease_lapsed, ledger, f"host-a{number}")
            _wait_until(lapsed, f"host A's lease lapsed in round {number}")
    takers = [hosts.lives.start(args, hosts.env(f"host-b{number}")) for number, args, _ in builds]
    exits_b = [hosts.lives.wait(b) for b in takers]
    for _, _, a in builds:
        os.kill(a.pid, signal.SIGCONT)
    return [
        Stall(a, hosts.lives.wait(a), exit_b)
        for (_, _, a), exit_b in zip(builds, exits_b, strict=True)
    ]


def _runs_nobody_follows(hosts: Hosts) -> set[str]:
    """Runs in Hex that no trigger of the ledger names."""
    in_hex = {run.run_id for run in hosts.emulator.runs()}
    with Ledger.open(parse_state_url(hosts.state_url)) as ledger:
        rows = ledger._read("SELECT run_id FROM triggers WHERE run_id IS NOT NULL")
        assert ledger.stray_runs() == []
    return in_hex - {row["run_id"] for row in rows}


@pytest.mark.parametrize("stall_at", ["planned", "post-answered"])
def test_a_host_stalled_past_its_lease_starts_no_second_run(hosts: Hosts, stall_at: str) -> None:
    for first in range(0, ROUNDS, BATCH):
        for played in _stall_rounds(hosts, first, BATCH, stall_at):
            assert (played.exit_a, played.exit_b) == (0, 0), played.a.errors()
            # It learnt that it had lost its triggers, and said so.
            lost = "took it over while this process was stalled past its lease"
            assert lost in played.a.errors()
    # Each round's projects started once by the round: once per batch in all.
    batches = ROUNDS // BATCH
    assert started_runs(hosts.emulator.journal()) == {
        project_id(i): batches for i in range(PROJECTS * BATCH)
    }
    assert _runs_nobody_follows(hosts) == set()


@pytest.mark.parametrize("state_url", ["postgresql"], indirect=True)  # the fence is one code
@pytest.mark.parametrize("stall_at", ["planned", "post-answered"])
def test_without_the_fence_the_stalled_host_starts_second_runs(hosts: Hosts, stall_at: str) -> None:
    (played,) = _stall_rounds(hosts, 0, 1, stall_at, HEXDBT_UNFENCED="1")
    assert played.exit_b == 0
    runs = started_runs(hosts.emulator.journal())
    assert sum(runs.values()) > PROJECTS, "the round must catch a host that sends on a lapsed claim"


def test_a_slow_queue_of_posts_keeps_its_lease_and_every_project_starts_once(
    postgres_state_url: str, hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """Host A claims four triggers with its plan and sends them one after another; Hex answers
    each POST just after A's read timeout (35 s after a 30 s timeout, here 0.9 s after 0.6 s),
    so A is busy past its lease's length before its last arm, then waits to find each run in
    Hex. Host B runs the same build meanwhile. A's lease is renewed by each arm and, between, on
    its own thread: B follows A's sends instead of taking them over, and every project starts
    once."""
    emulator = hex_emulator_factory(
        scenario=scenario(4, running_s=1, limits_enabled=False), clock=SystemClock()
    )
    emulator.inject_faults("RunProject", rate=1.0, fault={"kind": "lost_timeout", "delay_s": 0.9})
    _, mappings = write_project(tmp_path / "build", 4)
    args = ["run", "--project-dir", str(tmp_path / "build"), "--mappings", str(mappings)]
    with WarmLives(tmp_path) as lives:
        hosts = Hosts(lives, emulator, postgres_state_url, tmp_path)
        a = lives.start([*args, "--no-wait"], hosts.env("host-a"))
        _wait_until(lambda: bool(started_runs(emulator.journal())), "A's first POST in Hex")
        b = lives.start(args, hosts.env("host-b"))
        assert lives.wait(a) == 0, a.errors()
        assert lives.wait(b) == 0, b.errors()
    assert started_runs(emulator.journal()) == {project_id(i): 1 for i in range(4)}
    assert "being sent by host-a" in b.errors()
    assert "took it over" not in a.errors() + b.errors()
    assert _runs_nobody_follows(hosts) == set()
