"""The ledger's state machine: every move it allows works, every other one is refused and changes
nothing, and a row it cannot read is a StateError. On both backends (a real SQLite file, a real
PostgreSQL schema), with a ManualClock."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from hexdbt.clock import ManualClock
from hexdbt.errors import StateError
from hexdbt.ledger import (
    ALLOWED_MOVES,
    Ledger,
    Move,
    NewTrigger,
    TriggerOptions,
    TriggerRecord,
    TriggerState,
)
from hexdbt.settings import StateLocation

KEY = "inv-1/p-1/3f2a"


def _fence(ledger: Ledger, key: str) -> int:
    """The fence a sender holds: the row's, as its claim or arm left it."""
    return ledger.get(key).fence


# How each move is asked of the ledger, as the dispatcher asks it.
MAKE: dict[Move, Callable[[Ledger, str], object]] = {
    Move.CLAIM_FOR_SENDING: lambda ledger, key: ledger.claim_for_sending(key),
    Move.TAKE_OVER_ORPHAN: lambda ledger, key: ledger.take_over_orphan(key),
    Move.MARK_STARTED: lambda ledger, key: ledger.mark_started(
        key, fence=_fence(ledger, key), run_id="r-1", run_url="http://hex/r-1", trace_id="t-1"
    ),
    Move.MARK_STATUS: lambda ledger, key: ledger.mark_status(key, "RUNNING"),
    Move.MARK_ENDED: lambda ledger, key: ledger.mark_ended(key, hex_status="COMPLETED"),
    Move.MARK_FAILED: lambda ledger, key: ledger.mark_failed(
        key, fence=_fence(ledger, key), reason="HTTP 422"
    ),
    Move.MARK_AMBIGUOUS: lambda ledger, key: ledger.mark_ambiguous(
        key, fence=_fence(ledger, key), reason="answer lost"
    ),
    Move.MARK_QUEUED: lambda ledger, key: ledger.mark_queued(
        key, deadline_at=9000.0, reason="budget spent"
    ),
    Move.MARK_EXPIRED: lambda ledger, key: ledger.mark_expired(key, reason="deadline passed"),
    Move.SUPERSEDE: lambda ledger, key: ledger.supersede(
        key, by="inv-2/p-1/3f2a", reason="superseded by dbt invocation inv-2"
    ),
    Move.RELEASE: lambda ledger, key: ledger.release(
        key, fence=_fence(ledger, key), reason="interrupted"
    ),
    Move.REOPEN_AMBIGUOUS: lambda ledger, key: ledger.reopen_ambiguous(key),
}

# The moves that answer None (else the record), not an error, when the row is not theirs: another process holds it.
ANSWERING_FALSE = {Move.CLAIM_FOR_SENDING, Move.TAKE_OVER_ORPHAN}

# A way to each state through allowed moves, from planned.
ROUTE: dict[TriggerState, tuple[Move, ...]] = {
    TriggerState.PLANNED: (),
    TriggerState.QUEUED: (Move.MARK_QUEUED,),
    TriggerState.SENDING: (Move.CLAIM_FOR_SENDING,),
    TriggerState.STARTED: (Move.CLAIM_FOR_SENDING, Move.MARK_STARTED),
    TriggerState.ENDED: (Move.CLAIM_FOR_SENDING, Move.MARK_STARTED, Move.MARK_ENDED),
    TriggerState.FAILED: (Move.CLAIM_FOR_SENDING, Move.MARK_FAILED),
    TriggerState.AMBIGUOUS: (Move.CLAIM_FOR_SENDING, Move.MARK_AMBIGUOUS),
    TriggerState.EXPIRED: (Move.MARK_EXPIRED,),
    TriggerState.SUPERSEDED: (Move.SUPERSEDE,),
}

ALLOWED = [
    (move, source) for move, transition in ALLOWED_MOVES.items() for source in transition.sources
]
REFUSED = [
    (move, state)
    for move, transition in ALLOWED_MOVES.items()
    for state in TriggerState
    if state not in transition.sources
]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1000.0)


@pytest.fixture
def ledger(state_location: StateLocation, clock: ManualClock) -> Iterator[Ledger]:
    with Ledger.open(state_location, clock=clock) as ledger:
        yield ledger


def _plan(ledger: Ledger, key: str = KEY) -> None:
    trigger = NewTrigger(
        trigger_key=key,
        name="app_3",
        project_id="p-1",
        base_url="http://127.0.0.1:1",
        request={"inputParams": {"as_of": "2026-01-01"}},
        options=TriggerOptions(wait=True),
    )
    ledger.plan_and_claim("inv-1", "build", "run", [trigger], ())


def _row_in(ledger: Ledger, clock: ManualClock, state: TriggerState) -> TriggerRecord:
    """A planned row taken to ``state`` through allowed moves, the clock moved on since."""
    _plan(ledger)
    for move in ROUTE[state]:
        MAKE[move](ledger, KEY)
    clock.advance(5)
    record = ledger.get(KEY)
    assert record.state is state
    return record


def _refusal(ledger: Ledger, source: TriggerState, move: Move) -> str:
    transition = ALLOWED_MOVES[move]
    sources = " or ".join(sorted(transition.sources))
    return (
        f"the ledger {ledger.where} refuses to move trigger app_3 ({KEY}) from {source} to"
        f" {transition.target} ({move} moves only {sources} triggers)"
    )


def test_every_move_has_a_way_to_be_asked_and_every_state_a_route() -> None:
    assert set(MAKE) == set(Move) == set(ALLOWED_MOVES)
    assert set(ROUTE) == set(TriggerState)


@pytest.mark.parametrize(("move", "source"), ALLOWED)
def test_every_allowed_move_works(
    ledger: Ledger, clock: ManualClock, move: Move, source: TriggerState
) -> None:
    _row_in(ledger, clock, source)
    answer = MAKE[move](ledger, KEY)
    record = ledger.get(KEY)
    assert record.state is ALLOWED_MOVES[move].target
    assert record.updated_at == clock.now()
    if move in ANSWERING_FALSE:
        assert answer == record
    else:
        assert answer == record


@pytest.mark.parametrize(("move", "state"), REFUSED)
def test_every_other_move_is_refused_and_changes_nothing(
    ledger: Ledger, clock: ManualClock, move: Move, state: TriggerState
) -> None:
    before = _row_in(ledger, clock, state)
    if move in ANSWERING_FALSE:
        assert MAKE[move](ledger, KEY) is None
    else:
        with pytest.raises(StateError) as caught:
            MAKE[move](ledger, KEY)
        assert str(caught.value) == _refusal(ledger, state, move)
        assert caught.value.exit_code == 7
    assert ledger.get(KEY) == before


def test_an_ended_trigger_cannot_be_started_again(ledger: Ledger, clock: ManualClock) -> None:
    before = _row_in(ledger, clock, TriggerState.ENDED)
    with pytest.raises(StateError) as caught:
        ledger.mark_started(
            KEY, fence=_fence(ledger, KEY), run_id="r-2", run_url=None, trace_id=None
        )
    assert str(caught.value) == (
        f"the ledger {ledger.where} refuses to move trigger app_3 ({KEY}) from ended to started"
        " (mark_started moves only sending triggers)"
    )
    assert caught.value.hint is not None
    assert "another hexdbt process" in caught.value.hint
    assert ledger.get(KEY) == before


def test_an_ended_trigger_keeps_the_first_end_recorded(ledger: Ledger, clock: ManualClock) -> None:
    """Two processes polling one run: the second to see it end may not rewrite the first's end."""
    before = _row_in(ledger, clock, TriggerState.ENDED)
    with pytest.raises(StateError, match="from ended to ended"):
        ledger.mark_ended(KEY, hex_status="KILLED", timed_out=True)
    assert (ledger.get(KEY).hex_status, ledger.get(KEY).timed_out) == ("COMPLETED", False)
    assert ledger.get(KEY) == before


def test_a_failed_trigger_is_not_queued_again(ledger: Ledger, clock: ManualClock) -> None:
    _row_in(ledger, clock, TriggerState.FAILED)
    with pytest.raises(StateError, match=r"from failed to queued \(mark_queued moves only"):
        ledger.mark_queued(KEY, deadline_at=9000.0, reason="budget spent")
    with pytest.raises(StateError, match=r"from failed to queued \(release moves only sending"):
        ledger.release(KEY, fence=_fence(ledger, KEY), reason="interrupted")
    assert ledger.get(KEY).state is TriggerState.FAILED


def test_a_started_trigger_is_neither_claimed_nor_released(
    ledger: Ledger, clock: ManualClock
) -> None:
    """Releasing a started row would queue its run to be sent a second time."""
    before = _row_in(ledger, clock, TriggerState.STARTED)
    assert not ledger.claim_for_sending(KEY)
    with pytest.raises(StateError, match="from started to queued"):
        ledger.release(KEY, fence=_fence(ledger, KEY), reason="interrupted")
    assert ledger.get(KEY) == before


def test_a_trigger_taken_by_another_process_is_not_queued_or_expired(
    ledger: Ledger, clock: ManualClock
) -> None:
    """A queue decision taken on a stale record does not undo another process's send."""
    _row_in(ledger, clock, TriggerState.SENDING)
    with pytest.raises(StateError, match="from sending to queued"):
        ledger.mark_queued(KEY, deadline_at=9000.0, reason="budget spent")
    with pytest.raises(StateError, match="from sending to expired"):
        ledger.mark_expired(KEY, reason="deadline passed")
    assert ledger.get(KEY).state is TriggerState.SENDING


def test_an_ambiguous_trigger_is_sent_again_only_once_reopened(
    ledger: Ledger, clock: ManualClock
) -> None:
    _row_in(ledger, clock, TriggerState.AMBIGUOUS)
    assert not ledger.claim_for_sending(KEY)
    reopened = ledger.reopen_ambiguous(KEY)
    assert (reopened.state, reopened.reason, reopened.ended_at, reopened.owner_lease) == (
        TriggerState.PLANNED,
        None,
        None,
        None,
    )
    assert ledger.claim_for_sending(KEY)
    started = ledger.mark_started(
        KEY, fence=_fence(ledger, KEY), run_id="r-2", run_url=None, trace_id=None
    )
    assert (started.state, started.run_id, started.intent_at) == (
        TriggerState.STARTED,
        "r-2",
        clock.now(),
    )


def test_releasing_a_claim_forgets_the_intent(ledger: Ledger, clock: ManualClock) -> None:
    _row_in(ledger, clock, TriggerState.SENDING)
    released = ledger.release(KEY, fence=_fence(ledger, KEY), reason="HTTP 503: no free kernel")
    assert (released.state, released.owner_lease, released.intent_at, released.reason) == (
        TriggerState.QUEUED,
        None,
        None,
        "HTTP 503: no free kernel",
    )


def test_only_ended_failed_expired_and_superseded_are_final() -> None:
    final = {state for state in TriggerState if state.is_final}
    assert final == {
        TriggerState.ENDED,
        TriggerState.FAILED,
        TriggerState.EXPIRED,
        TriggerState.SUPERSEDED,
    }


@pytest.mark.parametrize("move", list(Move))
def test_a_move_of_an_unknown_trigger_is_a_state_error(ledger: Ledger, move: Move) -> None:
    with pytest.raises(StateError) as caught:
        MAKE[move](ledger, "nope")
    assert str(caught.value) == f"the ledger {ledger.where} has no trigger nope"


# -- rows that cannot be read --------------------------------------------------------------------


def _spoil(ledger: Ledger, column: str, value: str, key: str = KEY) -> None:
    """Write a value into a row behind the ledger's back, as a bug or a hand edit would."""
    ledger.store.write(
        lambda session: session.execute(
            f"UPDATE triggers SET {column} = ? WHERE trigger_key = ?", (value, key)
        )
    )


SPOILED = [
    pytest.param(
        "request_json",
        "{not json",
        "its request_json is not JSON (Expecting property name enclosed in double quotes:"
        " line 1 column 2 (char 1))",
        id="request-not-json",
    ),
    pytest.param(
        "options_json", "", "its options_json is not JSON (Expecting value:", id="options-empty"
    ),
    pytest.param(
        "options_json", "7", "its options_json is not a JSON object", id="options-a-number"
    ),
    pytest.param(
        "request_json", "[1, 2]", "its request_json is not a JSON object", id="request-a-list"
    ),
    pytest.param(
        "options_json",
        '{"priority": "high"}',
        "its options_json has a value of the wrong kind (invalid literal for int()",
        id="options-a-wrong-kind",
    ),
]


@pytest.mark.parametrize(("column", "value", "what"), SPOILED)
def test_a_row_with_bad_json_is_a_state_error_on_every_read(
    ledger: Ledger, column: str, value: str, what: str
) -> None:
    _plan(ledger)
    _spoil(ledger, column, value)
    reads: list[Callable[[], object]] = [
        lambda: ledger.get(KEY),
        lambda: ledger.triggers_of("inv-1"),
        lambda: ledger.in_state(TriggerState.PLANNED),
    ]
    for read in reads:
        with pytest.raises(StateError) as caught:
            read()
        message = str(caught.value)
        assert message.startswith(f"the ledger {ledger.where} has an unreadable trigger {KEY}: ")
        assert what in message
        assert caught.value.hint is not None
        assert f"move {ledger.where} aside to start afresh" in caught.value.hint
        assert caught.value.exit_code == 7


def test_options_a_row_was_written_without_take_their_defaults(ledger: Ledger) -> None:
    """A hexdbt before an option was known wrote no key for it: the row reads, with the default."""
    _plan(ledger)
    _spoil(ledger, "options_json", '{"priority": 3, "wait": false}')
    assert ledger.get(KEY).options == TriggerOptions(wait=False, priority=3)
    _spoil(ledger, "options_json", "{}")
    assert ledger.get(KEY).options == TriggerOptions()
    assert TriggerOptions() == TriggerOptions(
        wait=True, timeout_minutes=60, cancel_on_timeout=True, priority=0
    )


def test_a_row_in_an_unknown_state_is_a_state_error(ledger: Ledger) -> None:
    _plan(ledger)
    _spoil(ledger, "state", "paused")
    expected = (
        f"the ledger {ledger.where} has an unreadable trigger {KEY}: its state 'paused' is none of"
        " planned, queued, sending, started, ended, failed, ambiguous, expired, superseded"
    )
    for read in (lambda: ledger.get(KEY), lambda: ledger.triggers_of("inv-1")):
        with pytest.raises(StateError) as caught:
            read()
        assert str(caught.value) == expected
    with pytest.raises(StateError) as caught:
        ledger.mark_started(
            KEY, fence=_fence(ledger, KEY), run_id="r-1", run_url=None, trace_id=None
        )
    assert str(caught.value) == expected
    assert not ledger.claim_for_sending(KEY)


def test_in_state_lists_a_corrupt_row_of_that_state_as_a_state_error(ledger: Ledger) -> None:
    _plan(ledger, "fine")
    _plan(ledger)
    _spoil(ledger, "request_json", "null", key="fine")  # valid JSON, not an object
    with pytest.raises(StateError, match="unreadable trigger fine: its request_json is not a"):
        ledger.in_state(TriggerState.PLANNED)
    assert ledger.in_state(TriggerState.QUEUED) == []


def test_planning_over_a_corrupt_row_claims_nothing(ledger: Ledger) -> None:
    _plan(ledger)
    _spoil(ledger, "options_json", "{")
    trigger = NewTrigger(KEY, "app_3", "p-1", "http://127.0.0.1:1", {}, TriggerOptions())
    with pytest.raises(StateError, match=f"unreadable trigger {KEY}: its options_json"):
        ledger.plan_and_claim("inv-1", "build", "run", [trigger], [KEY])
    rows = ledger.store.read(
        lambda session: (
            session.execute(
                "SELECT state, owner_lease FROM triggers WHERE trigger_key = ?", (KEY,)
            ).rows
        )
    )
    assert rows == [{"state": "planned", "owner_lease": None}]
