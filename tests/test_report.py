"""Outcomes from real ledger rows, and the reports made of them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hexdbt.clock import ManualClock
from hexdbt.engine import outcome_of
from hexdbt.errors import EXIT_SIGINT, ConfigError
from hexdbt.ledger import Ledger, NewTrigger, TriggerOptions
from hexdbt.outcomes import Outcome, OutcomeKind, exit_code_of
from hexdbt.report import render_table, summary_line, write_junit
from hexdbt.settings import SqliteState
from hexdbt.wording import counted, display_width

RUN_URL = "http://127.0.0.1:9/app/p-1/runs/0f6a1c2e-3b4d-4e5f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger.open(SqliteState(tmp_path), clock=ManualClock(start=100.0))


def _row(ledger: Ledger, key: str, *, claim: bool = True) -> None:
    trigger = NewTrigger(
        trigger_key=key,
        name=key,
        project_id="p-1",
        base_url="http://127.0.0.1:9",
        request={"inputParams": {"region": "EMEA"}},
        options=TriggerOptions(),
    )
    ledger.plan_and_claim("inv", "build", "run", [trigger], ())
    if claim:  # claimed and armed: its fence is 1
        assert ledger.claim_for_sending(key)


@pytest.mark.parametrize(
    ("hex_status", "timed_out", "kind", "code"),
    [
        ("COMPLETED", False, OutcomeKind.COMPLETED, 0),
        ("ERRORED", False, OutcomeKind.ERRORED, 5),
        ("KILLED", False, OutcomeKind.KILLED, 5),
        ("UNABLE_TO_ALLOCATE_KERNEL", False, OutcomeKind.UNABLE_TO_ALLOCATE_KERNEL, 5),
        ("SOMETHING_NEW", False, OutcomeKind.UNKNOWN_STATUS, 5),
        ("KILLED", True, OutcomeKind.TIMEOUT, 6),
    ],
)
def test_an_ended_run_maps_to_its_outcome_and_exit_code(
    ledger: Ledger, hex_status: str, timed_out: bool, kind: OutcomeKind, code: int
) -> None:
    _row(ledger, "k")
    ledger.mark_started("k", fence=1, run_id="r", run_url=RUN_URL, trace_id="t")
    outcome = outcome_of(ledger.mark_ended("k", hex_status=hex_status, timed_out=timed_out))
    assert (outcome.kind, outcome.exit_code) == (kind, code)
    assert outcome.input_params == {"region": "EMEA"}


def test_rows_that_never_started_map_to_their_own_outcomes(ledger: Ledger) -> None:
    for key in ("failed", "ambiguous", "sending"):
        _row(ledger, key)
    for key in ("expired", "queued", "planned"):  # never claimed: only a planned row expires
        _row(ledger, key, claim=False)
    kinds = {
        "failed": outcome_of(ledger.mark_failed("failed", fence=1, reason="HTTP 422")).kind,
        "ambiguous": outcome_of(ledger.mark_ambiguous("ambiguous", fence=1, reason="lost")).kind,
        "expired": outcome_of(ledger.mark_expired("expired", reason="deadline")).kind,
        "queued": outcome_of(ledger.mark_queued("queued", deadline_at=1, reason="budget")).kind,
        "sending": outcome_of(ledger.get("sending")).kind,
        "planned": outcome_of(ledger.get("planned")).kind,
    }
    assert kinds == {
        "failed": OutcomeKind.FAILED_TO_START,
        "ambiguous": OutcomeKind.AMBIGUOUS,
        "expired": OutcomeKind.EXPIRED,
        "queued": OutcomeKind.QUEUED,
        "sending": OutcomeKind.IN_PROGRESS_ELSEWHERE,
        "planned": OutcomeKind.QUEUED,
    }


def test_the_exit_code_is_the_worst_outcome() -> None:
    outcomes = [
        Outcome("a", "p", OutcomeKind.COMPLETED),
        Outcome("b", "p", OutcomeKind.ERRORED),
        Outcome("c", "p", OutcomeKind.TIMEOUT),
        Outcome("d", "p", OutcomeKind.SKIPPED, reason="no mapped model ran"),
    ]
    assert exit_code_of(outcomes) == 6
    assert exit_code_of(outcomes[:1] + outcomes[3:]) == 0
    assert exit_code_of([]) == 0
    interrupted = Outcome("e", "p", OutcomeKind.INTERRUPTED, reason="interrupted: cancelled")
    assert exit_code_of([*outcomes, interrupted]) == EXIT_SIGINT == 130


def test_the_table_keeps_urls_whole_and_shows_reasons() -> None:
    table = render_table(
        [
            Outcome(
                "customer_health",
                "p",
                OutcomeKind.COMPLETED,
                run_url=RUN_URL,
                hex_status="COMPLETED",
            ),
            Outcome("finance", "p", OutcomeKind.SKIPPED, reason="orders failed"),
        ]
    )
    assert RUN_URL in table
    assert "orders failed" in table
    assert (
        summary_line([Outcome("a", "p", OutcomeKind.COMPLETED)])
        == "1 mapped Hex project: 1 completed"
    )


def test_the_plain_table_aligns_names_in_cjk_by_the_columns_a_terminal_gives_them() -> None:
    table = render_table(
        [
            Outcome("顧客ダッシュボード", "p-1", OutcomeKind.COMPLETED, hex_status="COMPLETED"),
            Outcome("sales", "p-2", OutcomeKind.SKIPPED, reason="orders failed"),
        ]
    ).splitlines()
    # A CJK character takes two columns: the name column is 18 wide, then two spaces.
    assert table == [
        "PROJECT             OUTCOME    STATUS     RUN URL / REASON",
        "顧客ダッシュボード  completed  COMPLETED  ",
        "sales               skipped    -          orders failed",
    ]
    assert display_width("顧客ダッシュボード") == 18
    assert display_width("e\u0301") == 1  # a combining accent takes no column


def test_counts_name_their_noun_in_the_right_number() -> None:
    assert [counted(count, "entry", "entries") for count in (0, 1, 2)] == [
        "0 entries",
        "1 entry",
        "2 entries",
    ]
    outcomes = [Outcome("a", "p", OutcomeKind.COMPLETED)]
    assert summary_line(outcomes, mapped=False) == "1 Hex project: 1 completed"
    assert summary_line([], mapped=False) == "no Hex projects"


def test_junit_has_one_case_per_project_with_failures_marked(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "hex.xml"
    write_junit(
        [
            Outcome("ok", "p1", OutcomeKind.COMPLETED, run_url=RUN_URL),
            Outcome("bad", "p2", OutcomeKind.ERRORED, hex_status="ERRORED"),
            Outcome("slow", "p3", OutcomeKind.TIMEOUT, reason="timed out after 60 min"),
            Outcome("idle", "p4", OutcomeKind.SKIPPED, reason="no mapped model ran"),
        ],
        path,
        suite_name="run",
    )
    suite = ET.parse(path).getroot()
    assert (
        suite.get("tests"),
        suite.get("failures"),
        suite.get("errors"),
        suite.get("skipped"),
    ) == (
        "4",
        "1",
        "1",
        "1",
    )
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["bad"].find("failure") is not None
    assert cases["slow"].find("error") is not None
    assert cases["idle"].find("skipped") is not None
    assert RUN_URL in (cases["ok"].findtext("system-out") or "")


def test_an_unwritable_junit_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot write the JUnit report") as caught:
        write_junit([], blocker / "hex.xml", suite_name="run")
    assert caught.value.exit_code == 2
