"""The ledger on both backends (a real SQLite file, a real PostgreSQL schema): real processes
racing for the same trigger, owners' leases on one host and across hosts."""

from __future__ import annotations

import multiprocessing
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from hexdbt.clock import ManualClock
from hexdbt.errors import StateError
from hexdbt.ledger import (
    LEASE_TTL_S,
    LEDGER_FILENAME,
    SCHEMA_VERSION,
    Holder,
    Ledger,
    NewTrigger,
    TriggerOptions,
    TriggerState,
)
from hexdbt.settings import SqliteState, StateLocation, parse_state_url
from hexdbt.store import Result, Session, SqliteStore, open_store


def _trigger(key: str) -> NewTrigger:
    return NewTrigger(
        trigger_key=key,
        name="customer_health",
        project_id="p-1",
        base_url="http://127.0.0.1:1",
        request={"inputParams": {"as_of": "2026-01-01"}},
        options=TriggerOptions(wait=True, timeout_minutes=60),
    )


def _plan(ledger: Ledger, key: str = "k1", invocation_id: str = "inv-1") -> None:
    ledger.plan_and_claim(invocation_id, "build", "run", [_trigger(key)], ())


def test_a_trigger_moves_from_planned_to_ended_with_timestamps(
    state_location: StateLocation,
) -> None:
    clock = ManualClock(start=1000.0)
    with Ledger.open(state_location, clock=clock) as ledger:
        _plan(ledger)
        assert ledger.get("k1").state is TriggerState.PLANNED
        armed = ledger.claim_for_sending("k1")
        assert armed is not None
        clock.advance(1)
        record = ledger.mark_started(
            "k1", fence=armed.fence, run_id="r-1", run_url="http://x/r-1", trace_id="t"
        )
        assert (record.state, record.run_id, record.intent_at) == (
            TriggerState.STARTED,
            "r-1",
            1000.0,
        )
        clock.advance(30)
        ended = ledger.mark_ended("k1", hex_status="COMPLETED")
        assert ended.state is TriggerState.ENDED
        assert ended.state.is_final
        assert ended.ended_at == 1031.0
        assert ended.request == {"inputParams": {"as_of": "2026-01-01"}}


def test_planning_the_same_key_twice_keeps_the_first_row(state_location: StateLocation) -> None:
    with Ledger.open(state_location) as ledger:
        _plan(ledger)
        armed = ledger.claim_for_sending("k1")
        assert armed is not None
        ledger.mark_started("k1", fence=armed.fence, run_id="r-1", run_url=None, trace_id=None)
        _plan(ledger)
        assert ledger.get("k1").run_id == "r-1"
        assert len(ledger.triggers_of("inv-1")) == 1


def test_plan_and_claim_claims_without_an_intent_until_the_arm(
    state_location: StateLocation,
) -> None:
    with Ledger.open(state_location, clock=ManualClock(start=1000.0)) as ledger:
        _plan(ledger, "held")
        assert ledger.claim_for_sending("held")  # another sender has it
        records, claimed = ledger.plan_and_claim(
            "inv-1", "build", "run", [_trigger("new"), _trigger("held"), _trigger("later")],
            ["new", "held"],
        )  # fmt: skip
        assert claimed == {"new"}
        assert [(r.trigger_key, r.state) for r in records] == [
            ("new", TriggerState.SENDING),
            ("held", TriggerState.SENDING),
            ("later", TriggerState.PLANNED),
        ]
        assert records[0].intent_at is None  # claimed, not armed: nothing can have been sent
        assert ledger.owner_of(records[0]) == f"{socket.gethostname()} pid {os.getpid()}"
        assert not ledger.claim_for_sending("new")
        armed = ledger.arm("new", fence=records[0].fence, window_s=100.0)
        assert armed is not None
        assert (armed.intent_at, armed.window_closes_at, armed.fence) == (1000.0, 1100.0, 1)
        assert ledger.arm("new", fence=records[0].fence) is None, "armed once per fence"


def test_the_arm_is_synced_to_disk_and_a_plan_or_a_claim_is_not(tmp_path: Path) -> None:
    """PRAGMA synchronous on the ledger's own connection: FULL (2) fsyncs at commit."""
    with Ledger(SqliteStore(tmp_path / "ledger.sqlite3", what="ledger")) as ledger:

        def synchronous() -> int:
            return int(
                ledger.store.read(lambda s: s.execute("PRAGMA synchronous").rows[0]["synchronous"])
            )

        _plan(ledger, "k1", "inv-1")
        assert synchronous() == 1  # NORMAL: a power cut may forget a plan, never an intent
        (claimed,), _ = ledger.plan_and_claim("inv-2", "build", "run", [_trigger("k2")], ["k2"])
        assert synchronous() == 1
        armed = ledger.arm("k2", fence=claimed.fence)
        assert armed is not None
        assert synchronous() == 2
        ledger.mark_started("k2", fence=armed.fence, run_id="r-2", run_url=None, trace_id=None)
        assert synchronous() == 2
        _plan(ledger, "k3", "inv-3")
        assert synchronous() == 1


def test_recording_a_coalescing_trigger_costs_no_more_after_a_long_history(
    tmp_path: Path,
) -> None:
    """A new trigger of a coalescing entry looks for the entry's triggers waiting unsent: it
    reads those, not every trigger the entry ever had. Counted in SQLite's virtual machine
    steps, not in time."""
    store = SqliteStore(tmp_path / "ledger.sqlite3", what="ledger")
    with Ledger(store, clock=ManualClock(start=1000.0)) as ledger:

        def steps_to_record(number: int) -> int:
            """Record (and claim) the entry's next trigger, as the watcher does; start its run."""
            steps = 0

            def count() -> int:
                nonlocal steps
                steps += 1
                return 0  # go on

            key = f"k{number}"
            trigger = replace(_trigger(key), entry_key="health", coalesce=True)
            store._db.set_progress_handler(count, 1)  # the ledger's own connection
            try:
                (claimed,), _ = ledger.plan_and_claim(
                    f"inv-{number}", "build", "watch", [trigger], [key]
                )
            finally:
                store._db.set_progress_handler(None, 1)
            armed = ledger.arm(key, fence=claimed.fence)
            assert armed is not None
            ledger.mark_started(
                key, fence=armed.fence, run_id=f"r-{number}", run_url=None, trace_id=None
            )
            return steps

        costs = [steps_to_record(number) for number in range(400)]
    assert costs[-1] <= costs[20] * 1.1, f"{costs[20]} steps at 20 triggers, {costs[-1]} at 400"


def test_only_a_new_invocation_is_planned_when_asked(state_location: StateLocation) -> None:
    with Ledger.open(state_location) as ledger:
        _plan(ledger, "k1")
        again = [_trigger("k2")]
        assert (
            ledger.plan_and_claim(
                "inv-1", "build", "watch", again, ["k2"], only_new_invocation=True
            )
            is None
        )
        assert [r.trigger_key for r in ledger.triggers_of("inv-1")] == ["k1"]
        planned = ledger.plan_and_claim(
            "inv-2", "build", "watch", again, [], only_new_invocation=True
        )
        assert planned is not None
        assert [r.trigger_key for r in planned[0]] == ["k2"]


def test_a_claimed_trigger_cannot_be_claimed_again(state_location: StateLocation) -> None:
    with Ledger.open(state_location) as ledger:
        _plan(ledger)
        assert ledger.claim_for_sending("k1")
        assert not ledger.claim_for_sending("k1")


def _claim_in_child(state_url: str, results: multiprocessing.Queue[bool]) -> None:
    with Ledger.open(parse_state_url(state_url)) as ledger:
        results.put(ledger.claim_for_sending("k1") is not None)


def test_processes_racing_for_one_trigger_let_exactly_one_win(state_url: str) -> None:
    with Ledger.open(parse_state_url(state_url)) as ledger:
        _plan(ledger)
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[bool] = context.Queue()
    children = [
        context.Process(target=_claim_in_child, args=(state_url, results)) for _ in range(6)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    outcomes = [results.get(timeout=5) for _ in children]
    assert outcomes.count(True) == 1


# A child that claims k1 and then dies without a word (its lease stays, unreleased).
_CLAIM_AND_DIE = (
    "import os, sys; from hexdbt.ledger import Ledger; from hexdbt.settings import parse_state_url;"
    "assert Ledger.open(parse_state_url(sys.argv[1])).claim_for_sending('k1'); os._exit(0)"
)


def test_an_orphaned_sending_row_is_taken_over_only_when_its_owner_is_dead(
    state_url: str,
) -> None:
    with Ledger.open(parse_state_url(state_url)) as ledger:
        _plan(ledger)
    # A real process claims the row and dies before recording a run id.
    subprocess.run([sys.executable, "-c", _CLAIM_AND_DIE, state_url], check=True)
    with Ledger.open(parse_state_url(state_url)) as ledger:
        assert ledger.get("k1").state is TriggerState.SENDING
        assert not ledger.claim_for_sending("k1")
        assert ledger.take_over_orphan("k1")


def test_a_live_owner_keeps_its_sending_row(state_url: str) -> None:
    with Ledger.open(parse_state_url(state_url)) as ledger:
        _plan(ledger)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from hexdbt.ledger import Ledger; from hexdbt.settings import"
            " parse_state_url; ledger = Ledger.open(parse_state_url(sys.argv[1]));"
            "assert ledger.claim_for_sending('k1'); print('claimed', flush=True); sys.stdin.read()",
            state_url,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "claimed"
        with Ledger.open(parse_state_url(state_url)) as ledger:
            assert not ledger.take_over_orphan("k1")
            assert ledger.owner_of(ledger.get("k1")).endswith(f"pid {holder.pid}")
    finally:
        holder.communicate("")


def test_a_process_that_closes_its_ledger_releases_its_lease(state_location: StateLocation) -> None:
    with Ledger.open(state_location) as ledger:
        _plan(ledger)
        assert ledger.claim_for_sending("k1")
    with Ledger.open(state_location) as ledger:
        assert ledger.owner_of(ledger.get("k1")) == "a process that has ended"
        assert ledger.take_over_orphan("k1")


def _on_host(state: StateLocation, host: str, clock: ManualClock) -> Ledger:
    """The ledger as a process of another machine opens it (its own host name and boot)."""
    store = open_store(state, LEDGER_FILENAME, what="ledger", clock=clock)
    holder = Holder(host, 4242, boot_id=f"boot of {host}")
    return Ledger(store, clock=clock, holder=holder, lease_clock=clock)


def test_another_host_s_sending_row_is_adopted_only_once_its_lease_expires(
    state_location: StateLocation,
) -> None:
    clock = ManualClock(start=1000.0)
    worker_1 = _on_host(state_location, "worker-1", clock)
    worker_2 = _on_host(state_location, "worker-2", clock)
    try:
        _plan(worker_1)
        assert worker_1.claim_for_sending("k1")
        # A pid of another machine says nothing: only the lease's expiry does.
        assert not worker_2.take_over_orphan("k1")
        clock.advance(LEASE_TTL_S / 2)
        worker_1.renew_lease()
        clock.advance(LEASE_TTL_S / 2 + 1)
        assert not worker_2.take_over_orphan("k1"), "renewed: its owner lives"
        clock.advance(LEASE_TTL_S)  # worker-1 stopped renewing: it died with its machine
        assert worker_2.take_over_orphan("k1")
        assert worker_2.owner_of(worker_2.get("k1")) == "worker-2 pid 4242"
        assert not worker_1.take_over_orphan("k1"), "the new owner's lease is fresh"
    finally:
        worker_1.close()
        worker_2.close()


def test_a_lease_is_renewed_by_a_lease_length_from_now(state_location: StateLocation) -> None:
    clock = ManualClock(start=1000.0)
    with Ledger(
        open_store(state_location, LEDGER_FILENAME, what="ledger"), lease_clock=clock
    ) as ledger:

        def expiries() -> list[float]:
            return [row["expires_at"] for row in ledger._read("SELECT expires_at FROM leases")]

        ledger.renew_lease()
        assert expiries() == []  # nothing claimed: no lease to keep
        _plan(ledger)
        ledger.claim_for_sending("k1")
        assert expiries() == [1000.0 + LEASE_TTL_S]
        clock.advance(25)
        ledger.renew_lease()
        assert expiries() == [1025.0 + LEASE_TTL_S]


def test_postgresql_leases_are_judged_by_the_server_s_clock(postgres_state_url: str) -> None:
    """A host whose clock runs an hour ahead writes its lease on the server's clock: another
    host does not take its row over as long expired."""
    ahead = ManualClock(start=time.time() + 3600)
    location = parse_state_url(postgres_state_url)
    on_time = Ledger.open(location)
    try:
        with Ledger(
            open_store(location, LEDGER_FILENAME, what="ledger"),
            clock=ahead,
            holder=Holder("ahead", 4242, boot_id="boot of ahead"),
        ) as fast:
            _plan(fast)
            assert fast.claim_for_sending("k1")
            (expires_at,) = [
                row["expires_at"] for row in fast._read("SELECT expires_at FROM leases")
            ]
            assert abs(expires_at - (time.time() + LEASE_TTL_S)) < 30
            assert on_time.take_over_orphan("k1") is None, "its lease is fresh on the server"
    finally:
        on_time.close()


def test_queued_triggers_are_listed_with_their_deadline(state_location: StateLocation) -> None:
    with Ledger.open(state_location) as ledger:
        _plan(ledger, key="k1")
        _plan(ledger, key="k2")
        ledger.mark_queued("k2", deadline_at=5000.0, reason="hourly RunProject budget spent")
        queued = ledger.in_state(TriggerState.QUEUED)
        assert [(r.trigger_key, r.deadline_at) for r in queued] == [("k2", 5000.0)]
        armed = ledger.claim_for_sending("k2")
        assert armed is not None
        ledger.release("k2", fence=armed.fence, reason="interrupted before sending")
        assert ledger.get("k2").state is TriggerState.QUEUED


def test_an_invocation_is_recorded_once(state_location: StateLocation) -> None:
    with Ledger.open(state_location) as ledger:
        assert not ledger.has_invocation("inv-1")
        ledger.plan_and_claim("inv-1", "build", "run", [], ())
        ledger.plan_and_claim("inv-1", "build", "watch", [], ())
        assert ledger.has_invocation("inv-1")
        assert [i.invocation_id for i in ledger.recent_invocations()] == ["inv-1"]


def test_a_ledger_from_a_newer_hexdbt_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StateError, match="newer than this hexdbt knows") as caught:
        Ledger.open(SqliteState(tmp_path))
    assert caught.value.exit_code == 7


def test_an_unusable_ledger_path_is_a_state_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be")
    with pytest.raises(StateError, match="cannot open the ledger") as caught:
        Ledger.open(SqliteState(blocker))
    assert caught.value.exit_code == 7


def test_unknown_trigger_is_a_state_error(state_location: StateLocation) -> None:
    with (
        Ledger.open(state_location) as ledger,
        pytest.raises(StateError, match="no trigger"),
    ):
        ledger.mark_failed("nope", fence=0, reason="x")


@dataclass
class _RetriedSession:
    """A transaction run again after its connection was lost (``Session.retried``)."""

    session: Session
    retried: bool = True

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        return self.session.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.session.executemany(sql, rows)


def test_a_claim_whose_commit_stood_is_recognised_when_run_again(
    state_location: StateLocation,
) -> None:
    """The connection died after COMMIT was sent: the store runs the claim again, finds the row
    already ``sending`` and reads its own write there (its lease, its moment): the claim stands
    once, and a first attempt by someone else is still a refusal."""
    clock = ManualClock(start=1000.0)
    with Ledger.open(state_location, clock=clock) as ledger:
        _plan(ledger)
        assert ledger.claim_for_sending("k1")  # the attempt whose answer was lost
        again = ledger.store.write(
            lambda session: ledger._claim(_RetriedSession(session), "k1", 1000.0)
        )
        assert again
        later = ledger.store.write(
            lambda session: ledger._claim(_RetriedSession(session), "k1", 1001.0)
        )
        assert not later, "another moment is not this attempt's write"
    with Ledger.open(state_location, clock=clock) as other:
        assert not other.store.write(
            lambda session: other._claim(_RetriedSession(session), "k1", 1000.0)
        ), "another lease's write is not ours"
