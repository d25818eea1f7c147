"""The shared rate budget: real SQLite files, a ManualClock, several budgets on one file."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hexdbt.clock import ManualClock
from hexdbt.errors import ConfigError, HexRateLimitedError, Interrupted, StateError
from hexdbt.factory import open_client
from hexdbt.hex.budget import (
    BUDGET_FILE,
    BudgetLimits,
    CallKind,
    Limit,
    SharedBudget,
    Slot,
    budget_scope,
    plan_slots,
)
from hexdbt.settings import SqliteState, StateLocation

TOKEN = "hxtp_budget_secret_token"
URL = "http://127.0.0.1:9"


@pytest.fixture
def open_budget(state_location: StateLocation) -> Iterator[Callable[..., SharedBudget]]:
    """Opens budgets on this test's state (SQLite, PostgreSQL), and closes them afterwards."""
    opened: list[SharedBudget] = []

    def open_budget(
        clock: ManualClock, token: str = TOKEN, url: str = URL, **kwargs: Any
    ) -> SharedBudget:
        opened.append(SharedBudget.open(state_location, token, url, clock=clock, **kwargs))
        return opened[-1]

    yield open_budget
    for budget in opened:
        budget.close()


def _rows(budget: SharedBudget, sql: str) -> list[dict[str, Any]]:
    return budget.store.read(lambda session: session.execute(sql).rows)


def _acquire(budget: SharedBudget, kind: CallKind) -> None:
    """Wait as long as it takes for a slot (no deadline, never stopped)."""
    budget.acquire(kind, deadline=float("inf"), stop=threading.Event())


def test_thirty_other_calls_fit_a_minute_and_the_thirty_first_waits_for_the_window(
    open_budget: Callable[..., SharedBudget],
) -> None:
    clock = ManualClock(start=1000.0)
    budget = open_budget(clock)
    for _ in range(30):
        _acquire(budget, CallKind.OTHER)
    assert clock.now() == 1000.0
    _acquire(budget, CallKind.OTHER)
    # The first call ages out after its 60 s window plus the 1 s network margin.
    assert clock.now() == 1061.0


def test_run_project_obeys_both_the_minute_and_the_hour(
    open_budget: Callable[..., SharedBudget],
) -> None:
    clock = ManualClock(start=0.0)
    budget = open_budget(clock)
    started = []
    for _ in range(61):
        _acquire(budget, CallKind.RUN_PROJECT)
        started.append(clock.now())
    # 20 per minute: three bursts of 20, then the hour is full until the first call ages out.
    assert started[19] == 0.0
    assert started[20] == 61.0
    assert started[40] == 122.0
    assert started[60] == 3601.0
    for index in range(len(started)):
        in_minute = [at for at in started if started[index] - 61.0 < at <= started[index]]
        assert len(in_minute) <= 20


def test_two_budgets_on_one_file_share_the_slots(open_budget: Callable[..., SharedBudget]) -> None:
    clock = ManualClock(start=0.0)
    first, second = open_budget(clock), open_budget(clock)
    for _ in range(15):
        _acquire(first, CallKind.OTHER)
        _acquire(second, CallKind.OTHER)
    assert first.next_slot_at(CallKind.OTHER) == 61.0
    assert second.next_slot_at(CallKind.OTHER) == 61.0


def test_another_token_or_host_has_its_own_budget(open_budget: Callable[..., SharedBudget]) -> None:
    clock = ManualClock(start=0.0)
    mine = open_budget(clock)
    for _ in range(30):
        _acquire(mine, CallKind.OTHER)
    other_token = open_budget(clock, token="hxtp_another")
    other_host = open_budget(clock, url="https://eu.hex.tech")
    assert other_token.next_slot_at(CallKind.OTHER) == 0.0
    assert other_host.next_slot_at(CallKind.OTHER) == 0.0


def test_the_store_holds_a_hash_of_the_token_never_the_token(
    open_budget: Callable[..., SharedBudget], state_location: StateLocation
) -> None:
    budget = open_budget(ManualClock())
    _acquire(budget, CallKind.RUN_PROJECT)
    budget.note_rate_limited(CallKind.OTHER, 5)
    stored = repr(_rows(budget, "SELECT * FROM calls") + _rows(budget, "SELECT * FROM blocks"))
    assert TOKEN not in stored
    assert stored.count(budget_scope(TOKEN, URL)) == 2
    if isinstance(state_location, SqliteState):
        # The store is in WAL mode: recent writes are in the -wal file beside it.
        files = state_location.folder.glob(f"{BUDGET_FILE}*")
        raw = b"".join(path.read_bytes() for path in files)
        assert TOKEN.encode() not in raw
        assert budget_scope(TOKEN, URL).encode() in raw
    assert TOKEN not in repr(budget)


def test_a_429_blocks_the_kind_until_retry_after(open_budget: Callable[..., SharedBudget]) -> None:
    clock = ManualClock(start=0.0)
    budget = open_budget(clock)
    budget.note_rate_limited(CallKind.OTHER, 42.0)
    assert budget.next_slot_at(CallKind.OTHER) == 42.0
    assert budget.next_slot_at(CallKind.RUN_PROJECT) == 0.0
    _acquire(budget, CallKind.OTHER)
    assert clock.now() == 42.0


def test_a_429_without_retry_after_blocks_a_whole_window(
    open_budget: Callable[..., SharedBudget],
) -> None:
    clock = ManualClock(start=0.0)
    budget = open_budget(clock)
    budget.note_rate_limited(CallKind.RUN_PROJECT, None)
    assert budget.next_slot_at(CallKind.RUN_PROJECT) == 60.0


def test_acquire_past_the_deadline_raises_rate_limited(
    open_budget: Callable[..., SharedBudget],
) -> None:
    clock = ManualClock(start=0.0)
    budget = open_budget(clock)
    for _ in range(30):
        _acquire(budget, CallKind.OTHER)
    with pytest.raises(HexRateLimitedError, match="no slot before the deadline") as caught:
        budget.acquire(CallKind.OTHER, deadline=30.0, stop=threading.Event())
    assert caught.value.retry_after_s == 61.0
    assert clock.now() == 0.0


def test_a_set_stop_event_ends_the_wait_for_a_slot_at_once(
    open_budget: Callable[..., SharedBudget],
) -> None:
    clock = ManualClock(start=0.0)
    budget = open_budget(clock)
    for _ in range(30):
        _acquire(budget, CallKind.OTHER)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted, match="stopped while waiting for Hex's rate budget"):
        budget.acquire(CallKind.OTHER, deadline=float("inf"), stop=stop)
    assert clock.now() == 0.0
    assert budget.next_slot_at(CallKind.OTHER) == 61.0  # nothing was taken


def test_non_blocking_queries_plan_without_taking(open_budget: Callable[..., SharedBudget]) -> None:
    clock = ManualClock(start=0.0)
    budget = open_budget(clock)
    slots = budget.slots_for(CallKind.RUN_PROJECT, 61)
    assert slots[:20] == (0.0,) * 20
    assert slots[59] == 122.0  # three minutes of 20: the hour's 60 fit within it
    assert slots[60] == 3601.0
    # Asking took nothing.
    assert budget.next_slot_at(CallKind.RUN_PROJECT) == 0.0


def test_take_now_takes_what_fits_and_never_waits(open_budget: Callable[..., SharedBudget]) -> None:
    clock = ManualClock(start=0.0)
    budget, other_process = open_budget(clock), open_budget(clock)
    for _ in range(18):
        _acquire(other_process, CallKind.RUN_PROJECT)
    taken = budget.take_now(CallKind.RUN_PROJECT, 5)
    assert taken == (Slot(CallKind.RUN_PROJECT, 0.0),) * 2  # 20 a minute: two were left
    assert budget.take_now(CallKind.RUN_PROJECT, 1) == ()
    assert other_process.next_slot_at(CallKind.RUN_PROJECT) == 61.0
    assert clock.now() == 0.0


def test_take_now_takes_exactly_what_the_plan_puts_at_now(
    open_budget: Callable[..., SharedBudget],
) -> None:
    """take_now counts the windows in the store while everything asked for fits, and reads the
    call log otherwise: either way it takes what slots_for plans at now, as the two windows fill
    and empty and while a 429 blocks."""
    clock = ManualClock(start=0.0)
    limits = BudgetLimits(run_project=(Limit(3, 10.0), Limit(5, 60.0)), margin_s=1.0)
    budget = open_budget(clock, limits=limits)
    asked_and_taken: list[tuple[int, int]] = []
    for step, calls in [(0, 2), (1, 2), (2, 1), (9, 1), (0.5, 2), (3, 3), (20, 1), (45, 3)] * 3:
        clock.advance(step)
        if clock.now() == 80.5:  # once: windows with room, the block alone holds calls back
            budget.note_rate_limited(CallKind.RUN_PROJECT, 30.0)
        planned = budget.slots_for(CallKind.RUN_PROJECT, calls)
        expected = sum(1 for slot in planned if slot <= clock.now())
        taken = budget.take_now(CallKind.RUN_PROJECT, calls)
        assert len(taken) == expected, f"at {clock.now()}: took {len(taken)} of {calls}"
        asked_and_taken.append((calls, len(taken)))
    # Both ways were taken: everything asked for, and less than that.
    assert any(asked == taken for asked, taken in asked_and_taken)
    assert any(asked > taken for asked, taken in asked_and_taken)


def test_slots_given_back_count_no_more(open_budget: Callable[..., SharedBudget]) -> None:
    clock = ManualClock(start=0.0)
    budget, other_process = open_budget(clock), open_budget(clock)
    taken = budget.take_now(CallKind.RUN_PROJECT, 20)
    assert other_process.next_slot_at(CallKind.RUN_PROJECT) == 61.0
    budget.give_back(taken[:3])
    assert other_process.take_now(CallKind.RUN_PROJECT, 5) == (Slot(CallKind.RUN_PROJECT, 0.0),) * 3
    budget.give_back(())
    assert budget.next_slot_at(CallKind.RUN_PROJECT) == 61.0


def test_a_slot_used_a_while_after_it_was_taken_counts_from_its_use(
    open_budget: Callable[..., SharedBudget],
) -> None:
    clock = ManualClock(start=0.0)
    budget = open_budget(clock)
    first, *others = budget.take_now(CallKind.RUN_PROJECT, 20)
    budget.use(others[0])  # at once: it keeps its time
    clock.advance(5)
    budget.use(first)  # sent 5 s late, behind other sends: Hex counts it from now
    clock.advance(56.5)  # 61.5 s: the other 19 have aged out of the minute (plus margin)
    assert len(budget.take_now(CallKind.RUN_PROJECT, 20)) == 19
    assert budget.next_slot_at(CallKind.RUN_PROJECT) == 66.0


def test_a_slot_used_after_its_record_was_forgotten_is_recorded_again(
    open_budget: Callable[..., SharedBudget], tmp_path: Path
) -> None:
    clock = ManualClock(start=0.0)
    budget = open_budget(clock)
    (slot,) = budget.take_now(CallKind.RUN_PROJECT, 1)
    clock.advance(4000)
    _acquire(budget, CallKind.OTHER)  # forgets the calls older than every window

    def calls() -> list[tuple[str, float]]:
        rows = _rows(budget, "SELECT kind, at FROM calls ORDER BY kind")
        return [(row["kind"], row["at"]) for row in rows]

    assert calls() == [("other", 4000.0)]
    budget.use(slot)
    assert calls() == [("other", 4000.0), ("run_project", 4000.0)]


def test_plan_slots_is_pure_and_respects_a_block() -> None:
    limits = (Limit(2, 10.0),)
    assert plan_slots([0.0, 1.0], limits, 0.0, 5.0, 0.0, 3) == (10.0, 11.0, 20.0)
    assert plan_slots([], limits, 0.0, 5.0, 7.5, 1) == (7.5,)


def test_old_calls_are_forgotten(open_budget: Callable[..., SharedBudget]) -> None:
    clock = ManualClock(start=0.0)
    budget = open_budget(clock)
    for _ in range(5):
        _acquire(budget, CallKind.OTHER)
    clock.advance(7200)
    _acquire(budget, CallKind.OTHER)
    assert _rows(budget, "SELECT count(*) AS calls FROM calls") == [{"calls": 1}]


def test_a_call_of_one_kind_forgets_the_old_calls_of_every_kind(
    open_budget: Callable[..., SharedBudget],
) -> None:
    clock = ManualClock(start=0.0)
    budget = open_budget(clock)
    _acquire(budget, CallKind.RUN_PROJECT)
    _acquire(budget, CallKind.OTHER)
    clock.advance(7200)
    _acquire(budget, CallKind.OTHER)
    assert _rows(budget, "SELECT kind, at FROM calls") == [{"kind": "other", "at": 7200.0}]


def test_a_budget_store_that_cannot_be_used_is_a_state_error_naming_it(
    open_budget: Callable[..., SharedBudget],
) -> None:
    budget = open_budget(ManualClock(start=0.0))
    budget.store.write(lambda session: session.execute("DROP TABLE calls"))
    where = re.escape(budget.store.describe())
    with pytest.raises(
        StateError, match=f"budget store (at )?{where}.*(no such table|does not ex)"
    ):
        budget.next_slot_at(CallKind.RUN_PROJECT)


def test_a_file_that_is_no_database_is_a_state_error_naming_it(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage" / BUDGET_FILE
    garbage.parent.mkdir()
    garbage.write_bytes(b"not a database, not at all" * 100)
    with pytest.raises(StateError, match=f"budget store {garbage}") as caught:
        SharedBudget.open(SqliteState(garbage.parent), "tok", "http://127.0.0.1:1")
    assert caught.value.exit_code == 7


def test_limits_parse_from_text_and_name_the_bad_part() -> None:
    limits = BudgetLimits.parse("run_project=10/60,30/3600; other=60/60")
    assert limits.run_project == (Limit(10, 60.0), Limit(30, 3600.0))
    assert limits.other == (Limit(60, 60.0),)
    assert BudgetLimits.parse("other=5/1").run_project == BudgetLimits().run_project
    with pytest.raises(ConfigError, match="HEXDBT_BUDGET: 'ten/60' is not calls/seconds"):
        BudgetLimits.parse("other=ten/60")
    with pytest.raises(ConfigError, match="cannot read 'runs=1/1'"):
        BudgetLimits.parse("runs=1/1")


def test_the_client_s_budget_takes_its_limits_from_hexdbt_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEXDBT_BUDGET", "other=5/10")
    with open_client(TOKEN, URL, allow_insecure_http=True, state=SqliteState(tmp_path)) as client:
        assert isinstance(client.budget, SharedBudget)
        assert client.budget.limits.other == (Limit(5, 10.0),)
        assert client.budget.limits.run_project == BudgetLimits().run_project
    monkeypatch.setenv("HEXDBT_BUDGET", "other=ten/60")
    with pytest.raises(ConfigError, match="HEXDBT_BUDGET: 'ten/60' is not calls/seconds"):
        open_client(TOKEN, URL, allow_insecure_http=True, state=SqliteState(tmp_path))
