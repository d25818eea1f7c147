"""The streaming wrapper's promise on real builds: it decides later than it could, never wrongly.

Each shape is one real dbt command on one copy of sample_dbt_project/ (which has unit tests, a
snapshot and an ephemeral model), with a saved query and a microbatch model added here. Each
runs once a session, in a background process (tests/prebuilt.py), recording dbt's events as hexdbt's dbtRunner callback
reads them. Replayed through the StreamPlanner (what `hexdbt dbt` and the callback feed), every
project it decides while dbt runs must be decided as `hexdbt plan` decides it from that build's
run_results.json, and what it settles at the end must be plan's whole plan.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from dbt_runs import dbt_in_process
from prebuilt import Prebuilds

from hexdbt.dbt.artifacts import load_manifest, load_run_results
from hexdbt.dbt.events import DbtEvent, event_from_message, selected_node_count, started_node
from hexdbt.mapping import load_mappings
from hexdbt.planner.rules import Plan, Skipped, Trigger, make_plan
from hexdbt.planner.stream import StreamPlanner

REPO_ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.dbt

# One project per way a build can go wrong for a streaming planner. `executive_kpis` comes from
# the sample's exposure.
MAPPINGS = """
version: 1
defaults:
  input_params: {as_of: "{{ invocation.started_at[:10] }}"}
projects:
  - name: customers_tested      # its unit tests start before it, its tests last
    project_id: p-customers
    models: [customers]
    require_tests: true
  - name: finance_all_tested
    project_id: p-finance
    models: ["tag:finance"]
    trigger: all
    require_tests: true
  - name: marketing_any         # the slow model, then the late marketing_attribution
    project_id: p-marketing
    models: ["path:models/marts/marketing"]
  - name: raw_seeds
    project_id: p-seeds
    models: ["tag:raw"]
    trigger: all
  - name: customer_history
    project_id: p-snapshot
    models: [customers_snapshot]
  - name: staging_all           # stg_payment_totals is ephemeral: it runs, but never refreshes
    project_id: p-staging
    models: ["tag:staging"]
    trigger: all
  - name: microbatch_orders         # a microbatch model: its batches start and finish inside it
    project_id: p-yearly
    models: [orders_per_day]
"""

# Added to the copy only: the sample stays small, and these need more than one file each.
OVERLAY = {
    "models/shapes/orders_per_day.sql": """
{{ config(materialized='incremental', incremental_strategy='microbatch', event_time='order_date',
          begin='2024-01-01', batch_size='year') }}
select order_date, count(*) as orders
from {{ ref('stg_orders') }}
-- With fail_last_batch, the batch holding today fails: the ones before it succeed.
where {% if var('fail_last_batch', false) and model.batch
             and model.batch.event_time_end > run_started_at -%}
    error('failing batch on purpose') is null
{%- else -%}
    true
{%- endif %}
group by 1
""",
    "models/shapes/metricflow_time_spine.sql": """
select cast(range as date) as date_day
from range(date '2024-01-01', date '2027-01-01', interval 1 day)
""",
    "models/shapes/_shapes.yml": """
version: 2
models:
  - name: metricflow_time_spine
    time_spine:
      standard_granularity_column: date_day
    columns:
      - name: date_day
        granularity: day
semantic_models:
  - name: orders
    model: ref('orders')
    defaults:
      agg_time_dimension: order_date
    entities:
      - name: order
        type: primary
        expr: order_id
    dimensions:
      - name: order_date
        type: time
        type_params:
          time_granularity: day
    measures:
      - name: order_amount
        agg: sum
        expr: amount
metrics:
  - name: revenue
    label: Revenue
    type: simple
    type_params:
      measure: order_amount
saved_queries:
  - name: revenue_by_day
    query_params:
      metrics: [revenue]
      group_by: ["TimeDimension('order__order_date', 'day')"]
""",
}

# name -> dbt arguments. Built in this order on one DuckDB file: the first builds everything.
SHAPES = {
    "build": ["build", "--vars", "{slow_model_seconds: 0}"],
    # marketing_attribution starts after everything else (it waits for the slow model), then
    # fails; a batch of orders_per_day fails after the first one succeeded.
    "late_failures": [
        "build", "--vars",
        "{slow_model_seconds: 2, fail_model: marketing_attribution, fail_last_batch: true}",
    ],
    # The shape: customers, its upstream and its unit tests; its tests start last.
    "select_customers": ["build", "--select", "+customers", "--vars", "{slow_model_seconds: 0}"],
    "seeds_and_snapshot": ["build", "--select", "tag:raw", "customers_snapshot"],
    # A unit test of customers fails (fail_model names it): customers and its tests are skipped.
    "failing_unit_test": [
        "build", "--select", "customers", "--vars", "{fail_model: customers_region_from_country}",
    ],
    "run_marts": ["run", "--select", "marts", "shapes", "--vars", "{slow_model_seconds: 0}"],
}  # fmt: skip

# What each shape triggers (plan and wrapper alike): each shape does what it is here for.
TRIGGERED = {
    "build": {
        "customers_tested", "finance_all_tested", "marketing_any", "raw_seeds",
        "customer_history", "microbatch_orders", "executive_kpis",
    },
    "late_failures": {
        "customers_tested", "finance_all_tested", "raw_seeds", "customer_history",
        "executive_kpis",
    },
    "select_customers": {"customers_tested", "raw_seeds"},
    "seeds_and_snapshot": {"raw_seeds", "customer_history"},
    "failing_unit_test": set(),
    "run_marts": {"marketing_any", "microbatch_orders", "executive_kpis"},
}  # fmt: skip


@dataclass(frozen=True)
class Shape:
    command: str
    target: Path
    events: tuple[DbtEvent, ...]

    @property
    def mappings_path(self) -> Path:
        return self.target.parent / "shapes_mappings.yml"


def prebuild(root: Path) -> dict[str, Shape]:
    """Every shape, built beside the tests before this module (tests/prebuilt.py)."""
    root.mkdir()
    project = root / "sample_dbt_project"
    shutil.copytree(
        REPO_ROOT / "sample_dbt_project",
        project,
        ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", ".user.yml"),
    )
    for relative, text in OVERLAY.items():
        (project / relative).parent.mkdir(parents=True, exist_ok=True)
        (project / relative).write_text(text.lstrip(), encoding="utf-8")
    (root / "shapes_mappings.yml").write_text(MAPPINGS, encoding="utf-8")
    built = {}
    for name, arguments in SHAPES.items():
        events: list[DbtEvent] = []

        def record(message: object, events: list[DbtEvent] = events) -> None:
            event = event_from_message(message)
            if event is not None:
                events.append(event)

        target = dbt_in_process(project, arguments, root / f"target_{name}", callbacks=[record])
        built[name] = Shape(arguments[0], target, tuple(events))
    return built


@pytest.fixture(scope="session")
def shapes(prebuilt: Prebuilds) -> dict[str, Shape]:
    built: dict[str, Shape] = prebuilt.result(__name__)
    return built


def _final_plan(shape: Shape) -> Plan:
    manifest = load_manifest(shape.target / "manifest.json")
    invocation = load_run_results(shape.target / "run_results.json")
    mappings = load_mappings(shape.mappings_path, manifest)
    return make_plan(invocation, mappings, manifest, environ={})


def _stream(shape: Shape) -> tuple[StreamPlanner, dict[str, Trigger | Skipped], list[str]]:
    """Replay the build's events; what was decided before dbt ended, and what settling said."""
    messages: list[str] = []
    planner = StreamPlanner(
        load_mappings=lambda manifest: load_mappings(shape.mappings_path, manifest),
        command=shape.command,
        environ={},
        log=messages.append,
    )
    for event in shape.events:
        planner.feed(event)
    streamed = dict(planner.decided)
    return planner, streamed, messages


def _decision(decision: Trigger | Skipped | None) -> tuple[str, str]:
    if isinstance(decision, Trigger):
        return ("trigger", decision.trigger_key)
    return ("skip", "") if decision is not None else ("undecided", "")


@pytest.mark.parametrize("name", list(SHAPES))
def test_what_the_wrapper_decides_while_dbt_runs_is_what_plan_decides_after(
    shapes: dict[str, Shape], name: str
) -> None:
    shape = shapes[name]
    final = _final_plan(shape)
    assert {trigger.name for trigger in final.triggers} == TRIGGERED[name]
    by_name: dict[str, Trigger | Skipped] = {t.name: t for t in final.triggers}
    by_name.update({s.name: s for s in final.skipped})
    planner, streamed, messages = _stream(shape)
    # Every project is decided while dbt runs (none is left to the end for want of knowing
    # what is selected), and each as plan decides it, trigger keys included.
    assert {project: _decision(streamed.get(project)) for project in by_name} == {
        project: _decision(decision) for project, decision in by_name.items()
    }
    invocation = load_run_results(shape.target / "run_results.json")
    settlement = planner.settle(invocation)
    assert settlement.new_triggers == ()
    assert messages == []  # no "the final results would decide otherwise"
    assert [t.trigger_key for t in settlement.plan.triggers] == [
        t.trigger_key for t in final.triggers
    ]


def _announced_and_started(shape: Shape) -> tuple[int, set[str]]:
    announced = next(c for c in map(selected_node_count, shape.events) if c is not None)
    return announced, {uid for uid in map(started_node, shape.events) if uid is not None}


def test_unit_tests_and_ephemeral_models_start_without_being_counted(
    shapes: dict[str, Shape],
) -> None:
    """The premise: dbt starts more nodes than it announces (jaffle-shop: 41 announced, 44
    started), so a count of started nodes says nothing about what is still to come."""
    announced, started = _announced_and_started(shapes["select_customers"])
    assert len([uid for uid in started if uid.startswith("unit_test.")]) == 2
    assert "model.hexdbt_sample.stg_payment_totals" not in started  # not upstream of customers
    assert len(started) == announced + 2
    announced, started = _announced_and_started(shapes["build"])
    assert "model.hexdbt_sample.stg_payment_totals" in started
    assert len(started) == announced + 3 + 1  # three unit tests and the ephemeral model


@pytest.mark.parametrize(
    ("name", "project", "reason"),
    [
        # issue 26: the tests that start last are not taken for tests that will not run
        ("select_customers", "customers_tested", "customers refreshed and their tests passed"),
        ("select_customers", "finance_all_tested", "no mapped model ran"),
        # the slow model's success does not start the app before its late sibling fails
        ("late_failures", "marketing_any", "marketing_attribution failed"),
        # nor does a first batch's success start it before a later batch fails
        ("late_failures", "microbatch_orders", "orders_per_day only partly succeeded"),
        (
            "failing_unit_test",
            "customers_tested",
            "customers was skipped (an upstream node failed)",
        ),
    ],
)
def test_why_the_wrapper_decided_while_dbt_ran(
    shapes: dict[str, Shape], name: str, project: str, reason: str
) -> None:
    _, streamed, _ = _stream(shapes[name])
    assert streamed[project].reason == reason
