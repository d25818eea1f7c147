"""Fresh apps, not a backlog: a later build's trigger supersedes one that waits unsent, the budget
goes by priority and Hex's views, min_interval spaces an app's runs, and ``status --apps`` says
how far behind each app is. The engine against the emulator over HTTP, on a shared ManualClock,
with a real ledger on each backend."""

from __future__ import annotations

import io
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from engine_helpers import project_id, scenario, started_runs, write_project

from hexdbt.cli import main
from hexdbt.clock import ManualClock, SystemClock, from_iso
from hexdbt.emulator import HexEmulator
from hexdbt.engine import Engine, EngineSettings, new_trigger
from hexdbt.engine.send_order import send_rank
from hexdbt.factory import open_client
from hexdbt.freshness import apps_freshness
from hexdbt.hex.budget import CallKind
from hexdbt.hex.client import HexClient
from hexdbt.ledger import (
    LEDGER_FILENAME,
    Holder,
    Ledger,
    NewTrigger,
    TriggerOptions,
    TriggerState,
)
from hexdbt.mapping import load_mappings
from hexdbt.outcomes import Outcome, OutcomeKind
from hexdbt.planner.files import plan_from_files
from hexdbt.planner.rules import Plan
from hexdbt.settings import StateLocation, parse_state_url
from hexdbt.store import open_store

TOKEN = "hxtp_freshness_test_token"


class Apps:
    """``count`` mapped apps over an emulator, a client and a ledger sharing one ManualClock."""

    def __init__(
        self,
        factory: Callable[..., HexEmulator],
        folder: Path,
        state_url: str,
        count: int,
        *,
        projects: list[dict[str, Any]] | None = None,
        running_s: float = 60,
        **mapping_options: Any,
    ) -> None:
        self.clock = ManualClock()
        document = scenario(count, running_s=running_s)
        for spec, extra in zip(document["projects"], projects or [], strict=False):
            spec.update(extra)
        self.emulator = factory(scenario=document, clock=self.clock)
        self.folder = folder
        self.count = count
        self.mapping_options = mapping_options
        self.state = parse_state_url(state_url)
        self.ledger = Ledger.open(self.state, clock=self.clock)

    def client(self) -> HexClient:
        return open_client(
            token=TOKEN, base_url=self.emulator.url, clock=self.clock, state=self.state
        )

    def build(self, invocation_id: str, **mapping_options: Any) -> Plan:
        """A dbt build that refreshes every app's model."""
        target, mappings = write_project(
            self.folder,
            self.count,
            invocation_id=invocation_id,
            mapping_options={**self.mapping_options, **mapping_options},
        )
        return plan_from_files(target / "run_results.json", target / "manifest.json", mappings).plan

    def dispatch(self, *plans: Plan, **settings: Any) -> dict[str, list[Outcome]]:
        """One engine: submit ``plans`` and take up the queue, until all is done."""
        with self.client() as client:
            engine = Engine(client, self.ledger, settings=EngineSettings(**settings))
            for plan in plans:
                engine.submit(plan, source="test")
            engine.resume()
            engine.close()
            engine.run()
            return {plan.invocation_id: engine.outcomes_of(plan) for plan in plans}

    def spend_the_hours_budget(self, keep: int = 0) -> None:
        """Take all of the hour's RunProject calls from the shared budget but ``keep``."""
        with self.client() as client:
            budget = client.budget
            assert budget is not None
            taken = 0
            while taken < 60 - keep:
                self.clock.advance(
                    max(0.0, budget.next_slot_at(CallKind.RUN_PROJECT) - self.clock.now())
                )
                taken += len(budget.take_now(CallKind.RUN_PROJECT, 60 - keep - taken))
            assert budget.next_slot_at(CallKind.RUN_PROJECT) > self.clock.now() + 600 or keep

    def started(self) -> dict[str, int]:
        return started_runs(self.emulator.journal())

    def bodies(self) -> list[dict[str, Any]]:
        return [
            entry["body"]
            for entry in self.emulator.journal()
            if entry.get("operation") == "RunProject" and entry.get("runId")
        ]


@pytest.fixture
def apps_factory(
    hex_emulator_factory: Callable[..., HexEmulator], tmp_path: Path, state_url: str
) -> Iterator[Callable[..., Apps]]:
    made: list[Apps] = []

    def make(count: int, **options: Any) -> Apps:
        apps = Apps(hex_emulator_factory, tmp_path / f"a{len(made)}", state_url, count, **options)
        made.append(apps)
        return apps

    yield make
    for apps in made:
        apps.ledger.close()


def test_a_later_build_supersedes_the_triggers_left_queued_and_one_run_covers_both(
    apps_factory: Callable[..., Apps],
) -> None:
    """Hex's hour spent: two --no-wait builds queue; the second supersedes the first, and once
    the budget is back each app runs once, for the newest build."""
    apps = apps_factory(2, coalesce=True)
    apps.spend_the_hours_budget()
    first, second = apps.build("inv-1"), apps.build("inv-2")
    queued = apps.dispatch(first, wait=False)["inv-1"]
    assert {outcome.kind for outcome in queued} == {OutcomeKind.QUEUED}
    superseded = apps.dispatch(second, wait=False)
    assert apps.started() == {}
    records = apps.ledger.triggers_of("inv-1")
    assert {record.state for record in records} == {TriggerState.SUPERSEDED}
    newer = {trigger.trigger_key for trigger in second.triggers}
    assert {record.superseded_by for record in records} == newer
    assert {record.reason for record in records} == {
        "superseded by dbt invocation inv-2: its run covers this build too"
    }
    # The newer trigger stands for the older refresh: its unserved age runs from the first build.
    for record in apps.ledger.triggers_of("inv-2"):
        assert record.unserved_since == min(r.created_at for r in records)
    assert {o.kind for o in superseded["inv-2"]} == {OutcomeKind.QUEUED}

    apps.clock.advance(3600)
    waited = apps.dispatch(first, second)  # a waiting process, as a later `hexdbt run` is
    assert apps.started() == {project_id(0): 1, project_id(1): 1}
    assert {o.kind for o in waited["inv-2"]} == {OutcomeKind.COMPLETED}
    for outcome, covering in zip(waited["inv-1"], waited["inv-2"], strict=True):
        assert outcome.kind is OutcomeKind.COMPLETED
        assert outcome.run_id == covering.run_id
        assert outcome.reason == "superseded by dbt invocation inv-2"


def test_an_entry_that_does_not_coalesce_keeps_one_run_per_build(
    apps_factory: Callable[..., Apps],
) -> None:
    """Entries with input params are jobs per build: by default, and with coalesce: false."""
    apps = apps_factory(2)  # write_project's entries have input params: no coalescing
    assert not any(trigger.coalesce for trigger in apps.build("inv-0").triggers)
    apps.spend_the_hours_budget()
    apps.dispatch(apps.build("inv-1"), wait=False)
    apps.dispatch(apps.build("inv-2", coalesce=False), wait=False)
    apps.clock.advance(3600)
    apps.dispatch()
    assert apps.started() == {project_id(0): 2, project_id(1): 2}
    for invocation_id in ("inv-1", "inv-2"):
        states = {record.state for record in apps.ledger.triggers_of(invocation_id)}
        assert states == {TriggerState.ENDED}


def test_a_waiting_run_follows_the_run_that_superseded_its_trigger_to_its_end(
    apps_factory: Callable[..., Apps],
) -> None:
    """The superseding run ends ERRORED: the superseded build's waiter reports ERRORED, exit 5,
    naming the invocation that took it over."""
    apps = apps_factory(1, coalesce=True, projects=[{"runs": {"outcome": "ERRORED"}}])
    apps.spend_the_hours_budget()
    first, second = apps.build("inv-1"), apps.build("inv-2")
    apps.dispatch(first, wait=False)
    apps.dispatch(second, wait=False)
    apps.clock.advance(3600)
    (outcome,) = apps.dispatch(first)["inv-1"]
    assert apps.started() == {project_id(0): 1}
    assert (outcome.kind, outcome.exit_code) == (OutcomeKind.ERRORED, 5)
    assert outcome.reason == "superseded by dbt invocation inv-2"
    # Without waiting, the row says what became of it.
    (told,) = apps.dispatch(first, wait=False)["inv-1"]
    assert (told.kind, told.exit_code) == (OutcomeKind.SUPERSEDED, 0)
    assert told.reason == "superseded by dbt invocation inv-2: its run covers this build too"


def test_a_claimed_trigger_is_sent_and_never_superseded(apps_factory: Callable[..., Apps]) -> None:
    """The claim and the supersede race for the same row: the claim came first, so the later
    build's trigger waits as a trigger of its own and both builds get their run."""
    apps = apps_factory(1, coalesce=True)
    first = apps.build("inv-1")
    (record,) = apps.ledger.plan_and_claim(
        first.invocation_id, "build", "test", [_new(apps, first)], [first.triggers[0].trigger_key]
    )[0]
    assert record.state is TriggerState.SENDING
    second = apps.build("inv-2")
    (newer,) = apps.ledger.plan_and_claim("inv-2", "build", "test", [_new(apps, second)], ())[0]
    assert apps.ledger.get(record.trigger_key).state is TriggerState.SENDING
    assert (newer.state, newer.unserved_since) == (TriggerState.PLANNED, newer.created_at)


def _new(apps: Apps, plan: Plan) -> NewTrigger:
    return new_trigger(plan.triggers[0], apps.emulator.url)


def test_the_budget_goes_by_priority_then_views_then_unserved_age(
    apps_factory: Callable[..., Apps],
) -> None:
    """Four apps wait, refreshed by the same builds an hour ago, and one slot frees at a time:
    priority 3 first (the most viewed app, aging 11 times faster, would have overtaken a
    priority 1 in that hour), then by Hex's views (read from ListProjects once they compete)."""
    apps = apps_factory(
        4,
        coalesce=True,
        projects=[{"app_views": 5}, {"app_views": 900}, {"app_views": 5}, {"app_views": 40}],
    )
    apps.spend_the_hours_budget()
    apps.dispatch(apps.build("inv-1"), wait=False)
    apps.clock.advance(3600 + 1)
    order = _send_order(apps, priority={"app_0": 3})
    assert order == [project_id(0), project_id(1), project_id(3), project_id(2)]


def _send_order(apps: Apps, priority: dict[str, int]) -> list[str]:
    """The order in which the engine sends a newer build of every app, with these priorities,
    while one RunProject slot frees at a time."""
    apps.build("inv-2")
    mapping = apps.folder / "hex_mappings.yml"
    document = yaml.safe_load(mapping.read_text())
    for entry in document["projects"]:
        entry["priority"] = priority.get(entry["name"], 0)
    mapping.write_text(yaml.safe_dump(document))
    target = apps.folder / "target"
    plan = plan_from_files(target / "run_results.json", target / "manifest.json", mapping).plan
    apps.spend_the_hours_budget(keep=1)
    apps.dispatch(plan, wait=False, no_wait_send_window_s=7200)
    return _run_order(apps)


def _run_order(apps: Apps) -> list[str]:
    return [
        entry["path"].split("/")[4]
        for entry in apps.emulator.journal()
        if entry.get("operation") == "RunProject" and entry.get("runId")
    ]


def test_waiting_raises_a_rank_by_one_priority_level_per_aging_period() -> None:
    """An app nobody views climbs one priority level per aging period, the most viewed 11 times
    faster; among apps that have waited alike, the more viewed goes first."""
    aging_s = 6 * 3600.0
    fresh_and_favoured = send_rank(1, 0.0, 0.0, aging_s)
    assert send_rank(0, 0.0, aging_s + 1, aging_s) > fresh_and_favoured
    assert send_rank(0, 0.0, aging_s - 1, aging_s) < fresh_and_favoured
    assert send_rank(0, 1.0, aging_s / 11 + 1, aging_s) > fresh_and_favoured
    assert send_rank(0, 0.5, 600.0, aging_s) > send_rank(0, 0.1, 600.0, aging_s)
    assert send_rank(0, 0.5, 0.0, aging_s) > send_rank(0, 0.1, 0.0, aging_s)
    assert send_rank(0, 0.1, 3600.0, aging_s) > send_rank(0, 1.0, 600.0, aging_s)


def test_min_interval_keeps_an_app_from_starting_sooner_and_the_newest_build_waits_for_it(
    apps_factory: Callable[..., Apps],
) -> None:
    apps = apps_factory(1, coalesce=True, min_interval_minutes=30)
    apps.dispatch(apps.build("inv-1"), wait=False)
    assert apps.started() == {project_id(0): 1}
    apps.clock.advance(600)
    second, third = apps.build("inv-2"), apps.build("inv-3")
    apps.dispatch(second, wait=False)  # 10 minutes after the last start: it waits
    assert apps.started() == {project_id(0): 1}
    assert apps.ledger.triggers_of("inv-2")[0].state is TriggerState.QUEUED
    apps.clock.advance(300)
    sent_at = apps.clock.now()
    outcomes = apps.dispatch(third)  # waits out the interval, then sends the newest build
    assert apps.started() == {project_id(0): 2}
    assert apps.ledger.triggers_of("inv-2")[0].state is TriggerState.SUPERSEDED
    (third_record,) = apps.ledger.triggers_of("inv-3")
    assert third_record.intent_at is not None
    assert third_record.intent_at == pytest.approx(sent_at + 900, abs=5)
    assert outcomes["inv-3"][0].kind is OutcomeKind.COMPLETED


def test_apps_freshness_measures_the_lag_from_the_oldest_unserved_refresh(
    apps_factory: Callable[..., Apps],
) -> None:
    apps = apps_factory(2, coalesce=True, freshness_minutes=60)
    apps.spend_the_hours_budget()
    apps.dispatch(apps.build("inv-1"), wait=False)
    mappings = load_mappings(apps.folder / "hex_mappings.yml")
    refreshed_at = apps.clock.now()
    apps.clock.advance(1800)
    apps.dispatch(apps.build("inv-2"), wait=False)
    apps.clock.advance(1200)  # 50 minutes since the first refresh, no run yet
    rows = apps_freshness(apps.ledger, mappings, apps.clock.now())
    assert [(row.state, row.lag_s, row.breached) for row in rows] == [("queued", 3000.0, False)] * 2
    apps.clock.advance(1200)  # 70 minutes: past the target
    rows = apps_freshness(apps.ledger, mappings, apps.clock.now())
    assert {(row.lag_s, row.breached) for row in rows} == {(4200.0, True)}
    apps.dispatch()
    rows = apps_freshness(apps.ledger, mappings, apps.clock.now())
    for row in rows:
        assert row.state == "COMPLETED"
        assert row.run_id is not None
        assert row.run_started_at is not None
        assert row.lag_s == pytest.approx(row.run_started_at - refreshed_at)
        assert row.refreshed_at == refreshed_at + 1800


def test_status_apps_check_exits_1_naming_the_stale_app(tmp_path: Path) -> None:
    """Run through the CLI on a SQLite state, on the system clock: one app fresh, one stale."""
    target, mappings = write_project(tmp_path, 2, mapping_options={"freshness_minutes": 30})
    state = tmp_path / "state"
    plan = plan_from_files(target / "run_results.json", target / "manifest.json", mappings).plan
    clock = SystemClock()
    with Ledger.open(parse_state_url(f"sqlite://{state}"), clock=clock) as ledger:
        triggers = [new_trigger(trigger, "http://127.0.0.1:9") for trigger in plan.triggers]
        first = triggers[0].trigger_key
        ledger.plan_and_claim("inv-1", "build", "test", triggers, ())
        armed = ledger.claim_for_sending(first)
        assert armed is not None
        ledger.mark_started(first, fence=armed.fence, run_id="run-0", run_url=None, trace_id=None)
    runner = CliRunner()
    env = {"HEXDBT_STATE_DIR": str(state)}
    args = ["status", "--apps", "--mappings", str(mappings)]
    fresh = runner.invoke(main, args, env=env)
    assert fresh.exit_code == 0, fresh.output
    assert "app_0" in fresh.stdout
    assert "run-0" in fresh.stdout
    # Past the target: the queued app's lag is measured to now, half an hour and more.
    with Ledger.open(parse_state_url(f"sqlite://{state}"), clock=clock) as ledger:
        ledger.store.write(
            lambda session: session.execute(
                "UPDATE triggers SET unserved_since = unserved_since - 3600 WHERE run_id IS NULL"
            )
        )
    stale = runner.invoke(main, [*args, "--check"], env=env)
    assert stale.exit_code == 1
    assert stale.stderr.strip() == "Error: 1 app is past the freshness target: app_1"
    assert "STALE" in stale.stdout
    as_json = runner.invoke(main, [*args, "--check", "--json"], env=env)
    assert as_json.exit_code == 1
    assert '"stale": [\n    "app_1"\n  ]' in as_json.stdout


def test_status_check_without_apps_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["status", "--check"])
    assert result.exit_code == 2
    assert "--check goes with --apps" in result.stderr


def _run_times(apps: Apps) -> list[float]:
    return sorted(from_iso(run.created_at) for run in apps.emulator.runs())


def test_one_large_build_goes_at_the_budgets_full_speed(apps_factory: Callable[..., Apps]) -> None:
    """Not overload: every app planned once, so the first 20 start within the first minute."""
    apps = apps_factory(25, coalesce=True)
    begin = apps.clock.now()
    apps.dispatch(apps.build("inv-1"), wait=False, no_wait_send_window_s=7200)
    times = _run_times(apps)
    assert len(times) == 25
    assert times[19] - begin < 60


def test_builds_faster_than_the_budget_are_paced_at_its_sustained_rate(
    apps_factory: Callable[..., Apps],
) -> None:
    """35 apps refreshed twice within the hour ask for 70 runs of Hex's 60: the second build's
    runs are spread at the budget's sustained rate (one a minute and its margin) instead of
    spending the hour's rest in its first minute. Once the first build has left the hour, the
    demand fits the budget again and the rest go at once."""
    apps = apps_factory(35, coalesce=True, running_s=5)
    apps.dispatch(apps.build("inv-1"), wait=False, no_wait_send_window_s=7200)
    assert len(_run_times(apps)) == 35
    apps.clock.advance(300)
    apps.dispatch(apps.build("inv-2"), wait=False, no_wait_send_window_s=7200)
    later = _run_times(apps)[35:]
    assert len(later) == 35  # one run per app for the newest build: nothing was dropped
    paced, rest = later[:25], later[25:]  # the hour's 25 calls left, then after the hour
    assert min(b - a for a, b in itertools.pairwise(paced)) >= 60
    assert rest[0] - paced[-1] > 1500  # waited for the first build's calls to leave the hour
    assert rest[-1] - rest[0] <= 61  # as fast as the first build's calls leave the hour
    assert {record.state for record in apps.ledger.triggers_of("inv-2")} == {TriggerState.STARTED}


def test_a_supersede_racing_a_claim_on_another_host_leaves_exactly_one_of_them(
    state_location: StateLocation,
) -> None:
    """Host A claims build 1's trigger for sending while host B records build 2 of the same
    entry, at the same moment, 30 times: each time the ledger lets exactly one of them win. A
    claimed trigger is sent and build 2 waits as a trigger of its own (both builds get a run); a
    superseded one is never claimed (build 2's run covers build 1). Never both, never neither."""
    clock = ManualClock(start=1000.0)
    host_a, host_b = (
        _on_host(state_location, "host-a", clock),
        _on_host(state_location, "host-b", clock),
    )
    outcomes: Counter[TriggerState] = Counter()
    try:
        for round_number in range(30):
            older, newer = _entry_trigger(round_number, 1), _entry_trigger(round_number, 2)
            host_a.plan_and_claim(f"r{round_number}-b1", "build", "test", [older], ())
            start = threading.Barrier(2)
            claimed: list[bool] = []
            racer = threading.Thread(
                target=_claim_at, args=(start, host_a, older.trigger_key, claimed)
            )
            racer.start()
            start.wait()
            host_b.plan_and_claim(f"r{round_number}-b2", "build", "test", [newer], ())
            racer.join()
            first, second = host_b.get(older.trigger_key), host_b.get(newer.trigger_key)
            outcomes[first.state] += 1
            if claimed == [True]:
                assert first.state is TriggerState.SENDING
                assert first.superseded_by is None
                assert second.unserved_since == second.created_at  # build 1 is covered by its run
            else:
                assert claimed == [False]
                assert first.state is TriggerState.SUPERSEDED
                assert first.superseded_by == newer.trigger_key
            assert second.state is TriggerState.PLANNED
            clock.advance(1)
    finally:
        host_a.close()
        host_b.close()
    assert sum(outcomes.values()) == 30, outcomes


def _claim_at(start: threading.Barrier, ledger: Ledger, key: str, claimed: list[bool]) -> None:
    start.wait()
    claimed.append(ledger.claim_for_sending(key) is not None)


def _on_host(state: StateLocation, host: str, clock: ManualClock) -> Ledger:
    """The ledger as a process of another machine opens it (its own host name and boot)."""
    store = open_store(state, LEDGER_FILENAME, what="ledger", clock=clock)
    return Ledger(store, clock=clock, holder=Holder(host, 4242, boot_id=f"boot of {host}"))


def _entry_trigger(round_number: int, build: int) -> NewTrigger:
    return NewTrigger(
        trigger_key=f"r{round_number}-b{build}",
        name="revenue",
        project_id="p-1",
        base_url="http://127.0.0.1:1",
        request={},
        options=TriggerOptions(wait=True),
        entry_key=f"p-1/revenue-{round_number}",
        coalesce=True,
    )


def test_a_daemon_exports_each_app_s_lag_its_breach_and_the_supersedes(
    apps_factory: Callable[..., Apps],
) -> None:
    """Read from the state at each scrape, by the same rule as status --apps: after two builds
    queued 30 minutes apart, each app is 50 minutes behind; past a 40-minute target."""
    from hexdbt.feeders.daemon import daemon_engine
    from hexdbt.logs import StreamEventLog
    from hexdbt.metrics import DaemonMetrics

    apps = apps_factory(2, coalesce=True, freshness_minutes=40)
    apps.spend_the_hours_budget()
    apps.dispatch(apps.build("inv-1"), wait=False)
    apps.clock.advance(1800)
    apps.dispatch(apps.build("inv-2"), wait=False)
    apps.clock.advance(1200)
    metrics = DaemonMetrics("watch")
    with apps.client() as client:
        daemon_engine(
            client, apps.ledger, StreamEventLog(io.StringIO()), EngineSettings(), metrics=metrics
        )
        text = metrics.exposition().decode()
    for index in range(2):
        labels = f'name="app_{index}",project="{project_id(index)}"'
        assert f"hexdbt_app_lag_seconds{{{labels}}} 3000.0" in text
        assert f"hexdbt_app_freshness_breached{{{labels}}} 1.0" in text
    assert "hexdbt_superseded_triggers_total 2.0" in text
