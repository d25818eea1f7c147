"""`hexdbt watch` on real files: a real watchdog observer, a real ledger, the emulator over HTTP.

Each test runs the daemon in a thread next to an in-process emulator on a time-scaled clock
(Hex's minutes pass in seconds), writes dbt-shaped artifacts the way dbt writes them, and checks
the emulator's journal: each invocation starts each stale project exactly once.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from dbt_shapes import manifest_document, model, run_results_document, write_json

from hexdbt.clock import ScaledClock, SystemClock
from hexdbt.emulator.scenario import CUSTOMER_HEALTH_ID, FINANCE_OVERVIEW_ID
from hexdbt.engine import EngineSettings
from hexdbt.factory import open_client
from hexdbt.feeders.artifact_watch import WatchOptions
from hexdbt.feeders.watch import WatchDaemon
from hexdbt.feeders.watch_targets import WatchTarget
from hexdbt.ledger import LEDGER_FILENAME, Ledger, TriggerState
from hexdbt.logs import MemoryEventLog
from hexdbt.settings import resolve_state_dir, resolve_state_location

REAL = SystemClock()
# Hex time runs this much faster than real time: the default scenario's 28 s run takes 1.4 s.
TIME_SCALE = 20.0
MAPPINGS = """\
version: 1
defaults:
  timeout_minutes: 30
projects:
  - name: health
    project_id: 5a8591dd-4039-49df-9202-96385ba3eff8
    models: [customers]
  - name: finance
    project_id: 7c2e4b10-9d8a-4f3e-b6a1-2f0c3d9e8a11
    models: [orders]
"""
MANIFEST = manifest_document([model("customers"), model("orders"), model("stg_orders")])
BOTH = {"model.shop.customers": "success", "model.shop.orders": "success"}


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "") -> None:
    deadline = REAL.now() + timeout_s
    while not condition():
        if REAL.now() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        REAL.sleep(0.02)


def write_in_place(path: Path, document: dict[str, Any] | str) -> None:
    """As dbt does: truncate, stream the JSON in pieces (each visible), close."""
    import json

    text = document if isinstance(document, str) else json.dumps(document)
    with path.open("w", encoding="utf-8") as handle:
        handle.flush()
        REAL.sleep(0.03)
        handle.write(text[: len(text) // 2])
        handle.flush()
        REAL.sleep(0.03)
        handle.write(text[len(text) // 2 :])
        handle.flush()


@dataclass
class Harness:
    tmp_path: Path
    emulator: Any
    clock: ScaledClock
    mappings: Path
    daemons: list[tuple[WatchDaemon, threading.Thread]] = field(default_factory=list)

    def target(self, name: str = "target") -> WatchTarget:
        folder = self.tmp_path / name.split("/")[0] / "target"
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "manifest.json", MANIFEST)
        return WatchTarget(folder)

    def start(
        self, *targets: WatchTarget, settings: EngineSettings | None = None, **options: Any
    ) -> tuple[WatchDaemon, MemoryEventLog]:
        log = MemoryEventLog()
        client = open_client(token="hxtp_watch_test", base_url=self.emulator.url, clock=self.clock)
        ledger = Ledger.open(resolve_state_location(), clock=self.clock)
        daemon = WatchDaemon(
            client,
            ledger,
            WatchOptions(targets=targets, mappings_file=self.mappings, debounce_s=0.05, **options),
            log,
            settings=settings or EngineSettings(cancel_on_interrupt=False),
        )
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        wait_for(lambda: len(log.of("watching")) == len(targets), what="the watch to start")
        self.daemons.append((daemon, thread))
        return daemon, log

    def stop(self, daemon: WatchDaemon) -> None:
        for item in list(self.daemons):
            if item[0] is daemon:
                self._stop(item)
                self.daemons.remove(item)

    @staticmethod
    def _stop(item: tuple[WatchDaemon, threading.Thread]) -> None:
        daemon, thread = item
        daemon.stop()
        thread.join(timeout=8)
        assert not thread.is_alive(), "the daemon did not stop within 8 s"
        daemon.ledger.close()
        daemon.client.close()

    def posts(self) -> Counter[str]:
        """RunProject requests the emulator received, per project id."""
        return Counter(
            entry["path"].split("/")[4]
            for entry in self.emulator.journal()
            if entry["operation"] == "RunProject"
        )

    def expect_posts(self, expected: dict[str, int], settle_s: float = 0.4) -> None:
        wait_for(lambda: self.posts() == Counter(expected), what=f"posts {expected}")
        REAL.sleep(settle_s)  # nothing more arrives
        assert self.posts() == Counter(expected)


@pytest.fixture
def harness(tmp_path: Path, hex_emulator_factory: Any) -> Iterator[Harness]:
    clock = ScaledClock(TIME_SCALE)
    emulator = hex_emulator_factory(clock=clock)
    mappings = tmp_path / "hex_mappings.yml"
    mappings.write_text(MAPPINGS, encoding="utf-8")
    result = Harness(tmp_path, emulator, clock, mappings)
    yield result
    for item in result.daemons:
        Harness._stop(item)


def _no_errors(log: MemoryEventLog) -> None:
    errors = [event for event in log.events if event["level"] == "error"]
    assert errors == []


def test_a_dbt_style_in_place_write_triggers_each_stale_project_once(harness: Harness) -> None:
    target = harness.target()
    _, log = harness.start(target)
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-1"))
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1})
    assert [e["invocation_id"] for e in log.of("invocation_submitted")] == ["inv-1"]
    assert sorted(log.of("invocation_submitted")[0]["triggers"]) == ["finance", "health"]
    assert log.of("invocation_submitted")[0]["results"] == len(BOTH)
    _no_errors(log)


def test_the_same_file_rewritten_by_a_later_invocation_triggers_again(harness: Harness) -> None:
    target = harness.target()
    _, log = harness.start(target)
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-1"))
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1}, settle_s=0)
    only_customers = {"model.shop.customers": "success", "model.shop.orders": "error"}
    write_in_place(target.run_results, run_results_document(only_customers, invocation_id="inv-2"))
    harness.expect_posts({CUSTOMER_HEALTH_ID: 2, FINANCE_OVERVIEW_ID: 1})
    assert [e["invocation_id"] for e in log.of("invocation_submitted")] == ["inv-1", "inv-2"]
    skipped = log.of("invocation_submitted")[1]["skipped"]
    assert [s["name"] for s in skipped] == ["finance"]


def test_a_compile_overwriting_run_results_triggers_nothing(harness: Harness) -> None:
    target = harness.target()
    _, log = harness.start(target)
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-1"))
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1}, settle_s=0)
    compiled = run_results_document(BOTH, invocation_id="inv-compile", command="compile")
    write_in_place(target.run_results, compiled)
    wait_for(lambda: log.of("invocation_skipped"), what="the compile to be skipped")
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1})
    (skipped,) = log.of("invocation_skipped")
    assert skipped["invocation_id"] == "inv-compile"
    assert skipped["reason"] == "dbt compile refreshes no model"
    # Not recorded: a compile can start nothing, and would crowd `hexdbt status`.
    with Ledger.open(resolve_state_location()) as ledger:
        assert not ledger.has_invocation("inv-compile")
        assert ledger.has_invocation("inv-1")


def test_the_target_folder_deleted_and_recreated_is_watched_again(harness: Harness) -> None:
    target = harness.target()
    _, log = harness.start(target)
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-1"))
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1}, settle_s=0)
    shutil.rmtree(target.target_dir)  # dbt clean
    REAL.sleep(0.1)
    target.target_dir.mkdir()
    write_json(target.manifest, MANIFEST)
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-2"))
    harness.expect_posts({CUSTOMER_HEALTH_ID: 2, FINANCE_OVERVIEW_ID: 2})
    assert [e["invocation_id"] for e in log.of("invocation_submitted")] == ["inv-1", "inv-2"]
    assert log.of("target_rearmed")
    _no_errors(log)


def test_a_folder_recreated_and_written_at_once_is_not_missed(harness: Harness) -> None:
    """`dbt clean && dbt build` may write run_results.json before the new folder is watched."""
    target = harness.target()
    harness.start(target)
    shutil.rmtree(target.target_dir)
    target.target_dir.mkdir()
    write_json(target.manifest, MANIFEST)
    write_json(target.run_results, run_results_document(BOTH, invocation_id="inv-fast"))
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1})


def test_two_projects_are_watched_at_once(harness: Harness) -> None:
    first, second = harness.target("one"), harness.target("two")
    _, log = harness.start(first, second)
    customers = {"model.shop.customers": "success"}
    orders = {"model.shop.orders": "success"}
    writers = [
        threading.Thread(
            target=write_in_place,
            args=(first.run_results, run_results_document(customers, invocation_id="inv-a")),
        ),
        threading.Thread(
            target=write_in_place,
            args=(second.run_results, run_results_document(orders, invocation_id="inv-b")),
        ),
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1})
    by_target = {e["target"]: e["invocation_id"] for e in log.of("invocation_submitted")}
    assert by_target == {str(first.target_dir): "inv-a", str(second.target_dir): "inv-b"}


def test_a_corrupt_file_is_reported_once_and_a_good_one_after_it_triggers(
    harness: Harness,
) -> None:
    target = harness.target()
    _, log = harness.start(target)
    write_in_place(target.run_results, '{"metadata": oops, "results": []}')
    wait_for(lambda: log.of("file_error"), what="the bad file to be reported")
    REAL.sleep(0.3)
    (error,) = log.of("file_error")
    assert error["path"] == str(target.run_results)
    assert "run_results.json is not JSON" in error["error"]
    assert harness.posts() == Counter()
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-good"))
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1})
    assert len(log.of("file_error")) == 1


def test_a_bad_mapping_is_logged_and_the_daemon_goes_on(harness: Harness) -> None:
    target = harness.target()
    _, log = harness.start(target)
    good = harness.mappings.read_text(encoding="utf-8")
    harness.mappings.write_text("version: 1\nprojects: [{name: x}]\n", encoding="utf-8")
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-1"))
    wait_for(lambda: log.of("invocation_failed"), what="the planning error")
    (failed,) = log.of("invocation_failed")
    assert failed["invocation_id"] == "inv-1"
    assert "hex_mappings.yml" in failed["error"]
    harness.mappings.write_text(good, encoding="utf-8")
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-2"))
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1})


def test_a_ledger_write_that_fails_is_logged_and_retried_and_nothing_is_lost(
    harness: Harness,
) -> None:
    """As on a full disk: the invocation is not recorded, nothing is sent, the daemon says why
    and submits it again later."""
    target = harness.target()
    settings = EngineSettings(cancel_on_interrupt=False, submit_retry_s=40.0)  # 2 s of real time
    _, log = harness.start(target, settings=settings)
    ledger_path = resolve_state_dir() / LEDGER_FILENAME
    with closing(sqlite3.connect(ledger_path)) as db:
        schema = [
            sql
            for (sql,) in db.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'triggers' AND sql IS NOT NULL"
            )
        ]
        db.execute("DROP TABLE triggers")
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-1"))

    def failed_writes() -> list[str]:
        return [
            event["message"]
            for event in log.of("dispatch")
            if event["message"].startswith("cannot record dbt invocation inv-1")
        ]

    wait_for(lambda: bool(failed_writes()), what="the failed write")
    failed = failed_writes()[0]
    # The first use of the ledger for a plan reads the demand on the budget, then writes.
    assert re.search(r"cannot (read|write) the ledger .*: no such table: triggers", failed)
    assert failed.endswith("; trying again in 40 s")
    assert not log.of("invocation_failed")  # not given up: it is tried again
    assert harness.posts() == Counter()
    with closing(sqlite3.connect(ledger_path)) as db:
        for sql in schema:
            db.execute(sql)
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1})
    (submitted,) = log.of("invocation_submitted")
    assert submitted["invocation_id"] == "inv-1"
    assert len(failed_writes()) == 1  # the table was back in time for the second attempt


def test_a_ledger_write_failing_after_a_post_restarts_the_dispatcher_and_nothing_doubles(
    harness: Harness,
) -> None:
    """The run id cannot be recorded (as on a full disk): the dispatcher stops with the cause
    logged, starts afresh from the ledger, and finds the run its POST started instead of posting
    again; the trigger it had not sent yet goes out once."""
    target = harness.target()
    _, log = harness.start(target)
    ledger_path = resolve_state_dir() / LEDGER_FILENAME
    with closing(sqlite3.connect(ledger_path)) as db:
        db.execute(
            "CREATE TRIGGER no_run_ids BEFORE UPDATE OF run_id ON triggers"
            " WHEN NEW.run_id IS NOT NULL BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-1"))

    def dispatch_errors() -> list[str]:
        messages = [event["message"] for event in log.of("dispatch")]
        return [message for message in messages if message.startswith("dispatching failed")]

    wait_for(lambda: bool(dispatch_errors()), what="the engine's failure")
    error = dispatch_errors()[0]
    assert "database or disk is full" in error
    assert error.endswith("starting afresh from the ledger in 2 s")
    assert sum(harness.posts().values()) == 1
    with closing(sqlite3.connect(ledger_path)) as db:
        db.execute("DROP TRIGGER no_run_ids")
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1})
    found = [e for e in log.of("dispatch") if "the one started after its intent" in e["message"]]
    assert len(found) == 1
    ledger = harness.daemons[0][0].ledger
    wait_for(
        lambda: all(record.run_id for record in ledger.triggers_of("inv-1")),
        what="both run ids recorded",
    )
    assert len(dispatch_errors()) == 1


def test_a_hex_outage_on_one_invocation_is_retried_and_nothing_doubles(harness: Harness) -> None:
    target = harness.target()
    _, log = harness.start(target)
    # The first POST answers 502 with an HTML page (nothing started), the second is lost after
    # the run was created: the dispatcher must reconcile, not post again.
    harness.emulator.inject_faults(
        "RunProject", sequence=[{"kind": "error", "status": 503, "body": "html"}, "lost_reset"]
    )
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-1"))
    wait_for(
        lambda: (
            len(harness.emulator.runs(CUSTOMER_HEALTH_ID)) == 1
            and len(harness.emulator.runs(FINANCE_OVERVIEW_ID)) == 1
        ),
        timeout_s=15,
        what="one run of each project",
    )
    REAL.sleep(0.4)
    assert len(harness.emulator.runs(CUSTOMER_HEALTH_ID)) == 1
    assert len(harness.emulator.runs(FINANCE_OVERVIEW_ID)) == 1
    _no_errors(log)


def test_a_file_there_before_the_start_is_ignored_unless_replay_latest(harness: Harness) -> None:
    target = harness.target()
    write_json(target.run_results, run_results_document(BOTH, invocation_id="inv-old"))
    daemon, log = harness.start(target)
    wait_for(lambda: log.of("invocation_skipped"), what="the old file to be skipped")
    assert "before the watcher started" in log.of("invocation_skipped")[0]["reason"]
    REAL.sleep(0.3)
    assert harness.posts() == Counter()
    harness.stop(daemon)

    _, log = harness.start(target, replay_latest=True)
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1}, settle_s=0)
    wait_for(lambda: log.of("invocation_submitted"), what="the replay")
    assert log.of("invocation_submitted")[0]["invocation_id"] == "inv-old"


def test_an_invocation_in_the_ledger_is_not_triggered_again(harness: Harness) -> None:
    target = harness.target()
    write_json(target.run_results, run_results_document(BOTH, invocation_id="inv-1"))
    with Ledger.open(resolve_state_location()) as ledger:
        ledger.plan_and_claim("inv-1", "build", "run", [], ())
    _, log = harness.start(target, replay_latest=True)
    wait_for(lambda: log.of("invocation_skipped"), what="the ledger check")
    assert "already in the ledger" in log.of("invocation_skipped")[0]["reason"]
    REAL.sleep(0.3)
    assert harness.posts() == Counter()


def test_a_write_never_closed_is_found_by_the_check_and_read(harness: Harness) -> None:
    """With close events the writes themselves are not watched: a writer that keeps the file
    open is found by the check every rearm_check_s and read close_fallback_s later."""
    import json

    target = harness.target()
    _, log = harness.start(target, rearm_check_s=0.1, close_fallback_s=0.3)
    assert log.of("watching")[0]["mode"] == "close events"
    text = json.dumps(run_results_document(BOTH, invocation_id="inv-open"))
    with target.run_results.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1})
    assert [e["invocation_id"] for e in log.of("invocation_submitted")] == ["inv-open"]
    _no_errors(log)


def test_polling_mode_reads_a_file_once_it_is_stable(harness: Harness) -> None:
    target = harness.target()
    _, log = harness.start(target, polling=True, polling_interval_s=0.05)
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-poll"))
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1})
    assert log.of("watching")[0]["mode"] == "polling"
    _no_errors(log)


def test_a_restart_with_runs_live_in_hex_re_attaches_and_never_re_posts(
    harness: Harness,
) -> None:
    target = harness.target()
    first, _ = harness.start(target)
    write_in_place(target.run_results, run_results_document(BOTH, invocation_id="inv-1"))
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1}, settle_s=0)
    harness.stop(first)
    # Stopping left the runs running: no CancelRun, and the ledger still has them started.
    assert not [e for e in harness.emulator.journal() if e["operation"] == "CancelRun"]
    with Ledger.open(resolve_state_location()) as ledger:
        states = {r.name: r.state for r in ledger.triggers_of("inv-1")}
    assert states == {"health": TriggerState.STARTED, "finance": TriggerState.STARTED}
    live = {run.run_id for run in harness.emulator.runs(CUSTOMER_HEALTH_ID)}
    assert all(
        run.status in ("PENDING", "RUNNING") for run in harness.emulator.runs(CUSTOMER_HEALTH_ID)
    )

    _, log = harness.start(target)
    wait_for(lambda: log.of("resumed"), what="the second daemon to resume")
    assert log.of("resumed")[0]["triggers"] == 2

    def ended() -> bool:
        with Ledger.open(resolve_state_location()) as ledger:
            return all(r.state is TriggerState.ENDED for r in ledger.triggers_of("inv-1"))

    wait_for(ended, timeout_s=15, what="the re-attached runs to end")
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1, FINANCE_OVERVIEW_ID: 1}, settle_s=0)
    polled = {
        e["path"].split("/")[-1]
        for e in harness.emulator.journal()
        if e["operation"] == "GetRunStatus"
    }
    assert live <= polled
    assert {e["name"] for e in log.of("run_ended")} == {"health", "finance"}


def test_a_file_written_while_no_watcher_ran_counts_only_in_a_target_watched_before(
    harness: Harness,
) -> None:
    """The ledger decides what a restarted watcher finds: an invocation it has not seen, in a
    target it took invocations from, was written after them and is handled; in a target it has
    nothing from, the file predates every watcher and stays the baseline."""
    watched, new = harness.target("one"), harness.target("two")
    customers = {"model.shop.customers": "success"}
    daemon, _ = harness.start(watched, new)
    write_in_place(watched.run_results, run_results_document(customers, invocation_id="inv-a"))
    harness.expect_posts({CUSTOMER_HEALTH_ID: 1}, settle_s=0)
    harness.stop(daemon)
    write_json(watched.run_results, run_results_document(customers, invocation_id="inv-a2"))
    orders = {"model.shop.orders": "success"}
    write_json(new.run_results, run_results_document(orders, invocation_id="inv-b"))

    _, log = harness.start(watched, new)
    harness.expect_posts({CUSTOMER_HEALTH_ID: 2})
    (missed,) = log.of("invocation_missed")
    assert (missed["target"], missed["invocation_id"]) == (str(watched.target_dir), "inv-a2")
    assert [e["invocation_id"] for e in log.of("invocation_submitted")] == ["inv-a2"]
    (skipped,) = log.of("invocation_skipped")
    assert skipped["invocation_id"] == "inv-b"
    assert "before the watcher started" in skipped["reason"]
    with Ledger.open(resolve_state_location()) as ledger:
        assert ledger.recent_invocations()[0].source == f"watch {watched.target_dir}"
