"""The streaming planner on scripted event sequences: decide as early as is safe, never wrongly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from dbt_shapes import data_test, manifest_document, model, run_results_document, write_json

from hexdbt.dbt.artifacts import Manifest, load_manifest, load_run_results
from hexdbt.dbt.events import DbtEvent, event_from_dict
from hexdbt.mapping.loader import parse_mappings
from hexdbt.planner.rules import Skipped, Trigger, make_plan
from hexdbt.planner.stream import StreamPlanner, load_final_invocation

INVOCATION = "inv-1"
CUSTOMERS = "model.shop.customers"
ORDERS = "model.shop.orders"
REVENUE = "model.shop.revenue"
SLOW = "model.shop.slow"
ORDERS_TEST = "test.shop.unique_orders_id.abc123"
REVENUE_TEST = "test.shop.unique_revenue_day.abc123"

MAPPINGS = """
version: 1
projects:
  - name: health
    project_id: p-health
    models: [customers]
    input_params: {as_of: "{{ invocation.started_at[:10] }}"}
  - name: finance
    project_id: p-finance
    models: ["tag:finance"]
    trigger: all
    require_tests: true
  - name: slow_app
    project_id: p-slow
    models: [slow]
"""


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    nodes = [
        model("customers"),
        model("orders", tags=("finance",)),
        model("revenue", tags=("finance",)),
        model("slow"),
        data_test("unique_orders_id", ORDERS),
        data_test("unique_revenue_day", REVENUE),
    ]
    return load_manifest(write_json(tmp_path / "manifest.json", manifest_document(nodes)))


def ev(name: str, data: dict[str, Any] | None = None, ts: str = "2026-01-31T08:00:01Z") -> DbtEvent:
    parsed = event_from_dict(
        {
            "data": data or {},
            "info": {
                "name": name,
                "level": "debug",
                "msg": "",
                "ts": ts,
                "invocation_id": INVOCATION,
                "thread": "MainThread",
            },
        }
    )
    assert parsed is not None
    return parsed


def start(unique_id: str) -> DbtEvent:
    return ev("NodeStart", {"node_info": {"unique_id": unique_id}})


def finish(unique_id: str, status: str = "success") -> DbtEvent:
    return ev(
        "NodeFinished",
        {"node_info": {"unique_id": unique_id, "node_status": status},
         "run_result": {"status": status, "message": "OK"}},
    )  # fmt: skip


def planner_for(manifest: Manifest, tmp_path: Path, command: str = "build") -> StreamPlanner:
    mappings = parse_mappings(MAPPINGS, "hex_mappings.yml")
    planner = StreamPlanner(load_mappings=lambda _manifest: mappings, command=command, environ={})
    manifest_path = Path(manifest.path)
    planner.feed(ev("MainReportVersion", {"version": "=1.11.16"}, ts="2026-01-31T08:00:00Z"))
    planner.feed(ev("ArtifactWritten", {"artifact_path": str(manifest_path)}))
    return planner


def run(planner: StreamPlanner, *events: DbtEvent) -> list[str]:
    names: list[str] = []
    for item in events:
        names.extend(trigger.name for trigger in planner.feed(item))
    return names


def test_a_project_triggers_as_soon_as_its_only_model_refreshed(
    manifest: Manifest, tmp_path: Path
) -> None:
    planner = planner_for(manifest, tmp_path)
    assert (
        run(planner, ev("ConcurrencyLine", {"node_count": 6}), start(CUSTOMERS), start(SLOW)) == []
    )
    assert run(planner, finish(CUSTOMERS)) == ["health"]
    trigger = planner.decided["health"]
    assert isinstance(trigger, Trigger)
    assert trigger.input_params == {"as_of": "2026-01-31"}
    assert planner.decided_at["health"] == "2026-01-31T08:00:01Z"


def test_all_with_require_tests_waits_for_every_model_and_test(
    manifest: Manifest, tmp_path: Path
) -> None:
    planner = planner_for(manifest, tmp_path)
    assert run(planner, finish(ORDERS), finish(ORDERS_TEST, "pass")) == []
    assert run(planner, finish(REVENUE)) == []  # its test may still run
    assert run(planner, finish(REVENUE_TEST, "warn")) == ["finance"]


def test_a_failed_model_decides_its_projects_at_once_and_triggers_nothing(
    manifest: Manifest, tmp_path: Path
) -> None:
    planner = planner_for(manifest, tmp_path)
    assert run(planner, finish(ORDERS, "error")) == []
    skipped = planner.decided["finance"]
    assert isinstance(skipped, Skipped)
    assert skipped.reason.startswith("orders failed")


def test_a_failed_test_keeps_a_require_tests_project_from_starting(
    manifest: Manifest, tmp_path: Path
) -> None:
    planner = planner_for(manifest, tmp_path)
    events = (
        finish(ORDERS),
        finish(REVENUE),
        finish(ORDERS_TEST, "fail"),
        finish(REVENUE_TEST, "pass"),
    )
    assert run(planner, *events) == []
    assert "unique_orders_id" in planner.decided["finance"].reason


def test_an_unselected_model_is_undecidable_until_every_selected_node_started(
    manifest: Manifest, tmp_path: Path
) -> None:
    planner = planner_for(manifest, tmp_path)
    # --select orders+: orders and its test run; revenue is not selected.
    run(planner, ev("ConcurrencyLine", {"node_count": 2}), start(ORDERS), finish(ORDERS))
    assert "finance" not in planner.decided  # revenue might still run, as far as it knows
    assert not planner.selection_known
    run(planner, start(ORDERS_TEST))
    assert planner.selection_known
    decision = planner.decided["finance"]
    assert isinstance(decision, Skipped)
    assert decision.reason == "trigger is all, and revenue did not refresh"
    assert planner.decided["health"].reason == "no mapped model ran"


def test_settle_plans_the_rest_and_never_replans_what_was_streamed(
    manifest: Manifest, tmp_path: Path
) -> None:
    planner = planner_for(manifest, tmp_path)
    run(planner, finish(CUSTOMERS))
    statuses = {CUSTOMERS: "success", ORDERS: "success", REVENUE: "success", SLOW: "success",
                ORDERS_TEST: "pass"}  # fmt: skip
    path = write_json(tmp_path / "run_results.json", run_results_document(statuses))
    final = load_final_invocation(path, INVOCATION)
    assert final is not None
    settlement = planner.settle(final)
    assert [t.name for t in settlement.new_triggers] == ["slow_app"]
    assert [t.name for t in settlement.plan.triggers] == ["health", "slow_app"]
    assert [s.name for s in settlement.plan.skipped] == ["finance"]  # revenue's test never ran
    # the streamed trigger has the key the final plan gives it: same (invocation, project, params)
    full = make_plan(final, parse_mappings(MAPPINGS, "m.yml"), manifest, environ={})
    keys = {t.name: t.trigger_key for t in full.triggers}
    assert planner.decided["health"].trigger_key == keys["health"]  # type: ignore[union-attr]


def test_settle_after_an_interruption_starts_nothing_new(
    manifest: Manifest, tmp_path: Path
) -> None:
    planner = planner_for(manifest, tmp_path)
    run(planner, finish(CUSTOMERS))
    settlement = planner.settle(None, undecided_reason="dbt was interrupted")
    assert settlement.new_triggers == ()
    assert [t.name for t in settlement.plan.triggers] == ["health"]
    assert {s.name: s.reason for s in settlement.plan.skipped} == {
        "finance": "dbt was interrupted",
        "slow_app": "dbt was interrupted",
    }


def test_a_run_results_of_another_invocation_is_not_this_ones(tmp_path: Path) -> None:
    path = write_json(tmp_path / "run_results.json", run_results_document({CUSTOMERS: "success"}))
    assert load_final_invocation(path, "another-invocation") is None
    assert load_final_invocation(tmp_path / "missing.json", INVOCATION) is None
    assert load_final_invocation(path, INVOCATION) == load_run_results(path)


def test_commands_that_refresh_nothing_trigger_nothing_while_streaming(
    manifest: Manifest, tmp_path: Path
) -> None:
    planner = planner_for(manifest, tmp_path, command="compile")
    assert run(planner, finish(CUSTOMERS), finish(SLOW)) == []
    assert planner.decided == {}


def test_two_mappings_of_one_project_and_params_trigger_once(
    manifest: Manifest, tmp_path: Path
) -> None:
    twice = (
        MAPPINGS
        + """
  - name: health_again
    project_id: p-health
    models: [customers]
    input_params: {as_of: "{{ invocation.started_at[:10] }}"}
"""
    )
    mappings = parse_mappings(twice, "m.yml")
    planner = StreamPlanner(load_mappings=lambda _m: mappings, command="build", environ={})
    planner.feed(ev("ArtifactWritten", {"artifact_path": manifest.path}, ts="2026-01-31T08:00:00Z"))
    assert run(planner, finish(CUSTOMERS)) == ["health"]
    assert (
        planner.decided["health_again"].reason
        == "same Hex project and params as health: triggered once"
    )


def test_a_manifest_that_cannot_be_read_leaves_everything_to_the_end(tmp_path: Path) -> None:
    messages: list[str] = []
    mappings = parse_mappings(MAPPINGS, "m.yml")
    planner = StreamPlanner(
        load_mappings=lambda _m: mappings, command="build", environ={}, log=messages.append,
        manifest_path=tmp_path / "missing" / "manifest.json",
    )  # fmt: skip
    assert run(planner, ev("ConcurrencyLine", {"node_count": 1}), finish(CUSTOMERS)) == []
    assert messages
    assert "planning when dbt ends" in messages[0]


UNIT_TEST = "unit_test.shop.orders.orders_sum_payments"
EPHEMERAL = "model.shop.order_totals"

TESTED_ORDERS = """
version: 1
projects:
  - name: tested_orders
    project_id: p-orders
    models: [orders]
    require_tests: true
  - name: all_finance
    project_id: p-finance
    models: ["tag:finance"]
    trigger: all
"""


def _planner_of(mappings_text: str, manifest: Manifest) -> StreamPlanner:
    mappings = parse_mappings(mappings_text, "m.yml")
    planner = StreamPlanner(load_mappings=lambda _m: mappings, command="build", environ={})
    planner.feed(ev("ArtifactWritten", {"artifact_path": manifest.path}, ts="2026-01-31T08:00:00Z"))
    return planner


def test_unit_tests_start_uncounted_and_never_make_a_test_look_unselected(
    manifest: Manifest,
) -> None:
    """Issue 26: `build --select orders` announces 2 nodes (orders and its test) and starts 3,
    its unit test first. The test that starts last is not taken for one that will not run."""
    planner = _planner_of(TESTED_ORDERS, manifest)
    run(planner, ev("ConcurrencyLine", {"node_count": 2}))
    assert run(planner, start(UNIT_TEST), finish(UNIT_TEST, "pass"), start(ORDERS)) == []
    assert not planner.selection_known  # 3 nodes started, only 1 of those dbt counted
    assert run(planner, finish(ORDERS)) == []
    assert "tested_orders" not in planner.decided  # its test may still run, and will
    assert run(planner, start(ORDERS_TEST)) == []
    assert planner.selection_known
    assert planner.decided["all_finance"].reason == "trigger is all, and revenue did not refresh"
    assert run(planner, finish(ORDERS_TEST, "pass")) == ["tested_orders"]


def test_more_counted_starts_than_announced_and_the_count_is_not_trusted(
    manifest: Manifest,
) -> None:
    planner = _planner_of(TESTED_ORDERS, manifest)
    run(planner, ev("ConcurrencyLine", {"node_count": 1}), start(ORDERS))
    assert planner.selection_known
    run(planner, start(REVENUE))
    assert not planner.selection_known


def test_an_ephemeral_model_runs_but_is_neither_counted_nor_refreshed(tmp_path: Path) -> None:
    nodes = [model("orders", tags=("finance",)),
             model("order_totals", tags=("finance",), config={"materialized": "ephemeral"})]  # fmt: skip
    ephemeral = load_manifest(write_json(tmp_path / "manifest.json", manifest_document(nodes)))
    planner = _planner_of(TESTED_ORDERS, ephemeral)
    run(planner, ev("ConcurrencyLine", {"node_count": 1}), start(EPHEMERAL))
    assert not planner.selection_known
    assert run(planner, finish(EPHEMERAL), start(ORDERS)) == []
    assert planner.selection_known
    # As in run_results.json, where dbt leaves it out: order_totals never refreshed.
    assert run(planner, finish(ORDERS)) == ["tested_orders"]
    decision = planner.decided["all_finance"]
    assert isinstance(decision, Skipped)
    assert decision.reason == "trigger is all, and order_totals did not refresh"


def test_a_microbatch_models_batches_are_not_its_result(manifest: Manifest) -> None:
    """Each batch starts and finishes under its model's id, inside the model's own start and
    finish: a first batch's success is not the model's."""
    planner = planner_for(manifest, Path(manifest.path).parent)
    batches = (start(SLOW), start(SLOW), finish(SLOW), start(SLOW), finish(SLOW, "error"))
    assert run(planner, *batches) == []
    assert "slow_app" not in planner.decided
    assert run(planner, finish(SLOW, "partial success")) == []
    decision = planner.decided["slow_app"]
    assert isinstance(decision, Skipped)
    assert decision.reason == "slow only partly succeeded"
