"""The plan: each trigger rule, the reasons it gives, trigger keys and dedup, and decidability."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from dbt_shapes import data_test, manifest_document, model, run_results_document, write_json

from hexdbt.dbt.artifacts import Invocation, Manifest, load_manifest, load_run_results, node_result
from hexdbt.hex.models import Notification
from hexdbt.mapping import MappingSet, parse_mappings
from hexdbt.mapping.selectors import SelectorIndex
from hexdbt.planner.rules import FinishedNodes, Plan, decide, make_plan, trigger_key

ORDERS = "model.shop.orders"
REVENUE = "model.shop.revenue_daily"
CUSTOMERS = "model.shop.customers"
T_ORDERS = "test.shop.unique_orders_id.abc123"
T_REVENUE = "test.shop.not_null_revenue_daily.abc123"


@pytest.fixture
def manifest(tmp_path: Path) -> Manifest:
    nodes = [
        model("customers", "marts/core", tags=("core",)),
        model("orders", "marts/finance", tags=("finance",)),
        model("revenue_daily", "marts/finance", tags=("finance",)),
        data_test("unique_orders_id", ORDERS),
        data_test("not_null_revenue_daily", REVENUE),
    ]
    return load_manifest(write_json(tmp_path / "manifest.json", manifest_document(nodes)))


def mappings(text: str) -> MappingSet:
    return parse_mappings(
        "version: 1\nprojects:\n" + textwrap.indent(textwrap.dedent(text), "  "), "m.yml"
    )


FINANCE = (
    "- {name: finance, project_id: fin, models: ['tag:finance'], trigger: %s, require_tests: %s}\n"
)


def invocation(tmp_path: Path, statuses: dict[str, str], **kwargs: object) -> Invocation:
    document = run_results_document(statuses, **kwargs)  # type: ignore[arg-type]
    return load_run_results(write_json(tmp_path / "run_results.json", document))


def plan(
    tmp_path: Path, manifest: Manifest | None, statuses: dict[str, str], text: str, **kwargs: object
) -> Plan:
    return make_plan(invocation(tmp_path, statuses, **kwargs), mappings(text), manifest, environ={})


def outcome(result: Plan) -> dict[str, str]:
    return {t.name: f"trigger: {t.reason}" for t in result.triggers} | {
        s.name: f"skip: {s.reason}" for s in result.skipped
    }


@pytest.mark.parametrize(
    ("rule", "tests", "statuses", "expected"),
    [
        ("any", "false", {ORDERS: "success"}, "trigger: orders refreshed"),
        ("any", "false", {ORDERS: "success", REVENUE: "success"}, "trigger: orders, revenue_daily refreshed"),
        ("any", "false", {CUSTOMERS: "success"}, "skip: no mapped model ran"),
        ("any", "false", {ORDERS: "no-op", REVENUE: "reused"}, "skip: no mapped model refreshed (orders: no-op, revenue_daily: reused)"),
        ("all", "false", {ORDERS: "success", REVENUE: "success"}, "trigger: orders, revenue_daily refreshed"),
        ("all", "false", {ORDERS: "success"}, "skip: trigger is all, and revenue_daily did not refresh"),
        ("any", "false", {ORDERS: "error", REVENUE: "skipped"}, "skip: orders failed; revenue_daily was skipped (an upstream node failed)"),
        ("any", "false", {ORDERS: "success", REVENUE: "skipped"}, "skip: revenue_daily was skipped (an upstream node failed)"),
        ("any", "false", {ORDERS: "partial success"}, "skip: orders only partly succeeded"),
        ("all", "false", {ORDERS: "success", REVENUE: "error"}, "skip: revenue_daily failed"),
        ("any", "true", {ORDERS: "success", T_ORDERS: "pass"}, "trigger: orders refreshed and their tests passed"),
        ("any", "true", {ORDERS: "success", T_ORDERS: "warn"}, "trigger: orders refreshed and their tests passed"),
        ("any", "true", {ORDERS: "success", T_ORDERS: "fail"}, "skip: require_tests: test unique_orders_id on orders ended fail"),
        ("any", "true", {ORDERS: "success", T_ORDERS: "error"}, "skip: require_tests: test unique_orders_id on orders ended error"),
        ("any", "true", {ORDERS: "success", T_ORDERS: "skipped"}, "skip: require_tests: test unique_orders_id on orders was skipped"),
        ("any", "true", {ORDERS: "success"}, "skip: require_tests: tests of orders did not run in this invocation"),
        ("any", "false", {ORDERS: "success", T_ORDERS: "fail"}, "trigger: orders refreshed"),
        ("all", "true", {ORDERS: "success", REVENUE: "success", T_ORDERS: "pass", T_REVENUE: "fail"},
         "skip: require_tests: test not_null_revenue_daily on revenue_daily ended fail"),
    ],
)  # fmt: skip
def test_each_trigger_rule(
    tmp_path: Path,
    manifest: Manifest,
    rule: str,
    tests: str,
    statuses: dict[str, str],
    expected: str,
) -> None:
    result = plan(tmp_path, manifest, statuses, FINANCE % (rule, tests))
    assert outcome(result) == {"finance": expected}


@pytest.mark.parametrize("command", ["compile", "show", "run-operation", "generate", "test"])
def test_commands_that_refresh_nothing_trigger_nothing(
    tmp_path: Path, manifest: Manifest, command: str
) -> None:
    result = plan(
        tmp_path, manifest, {ORDERS: "success"}, FINANCE % ("any", "false"), command=command
    )
    assert outcome(result) == {"finance": f"skip: command was {command}: it refreshes no data"}


def test_disabled_mappings_are_skipped(tmp_path: Path, manifest: Manifest) -> None:
    result = plan(
        tmp_path,
        manifest,
        {ORDERS: "success"},
        "- {name: f, project_id: p, models: [orders], enabled: false}\n",
    )
    assert outcome(result) == {"f": "skip: disabled (m.yml:3)"}


def test_one_project_with_the_same_params_triggers_once(tmp_path: Path, manifest: Manifest) -> None:
    text = """\
    - {name: by_name, project_id: p, models: [orders], input_params: {a: 1}}
    - {name: by_tag, project_id: p, models: ['tag:finance'], input_params: {a: 1}}
    - {name: other_params, project_id: p, models: [orders], input_params: {a: 2}}
    """
    result = plan(tmp_path, manifest, {ORDERS: "success", REVENUE: "success"}, text)
    assert [t.name for t in result.triggers] == ["by_name", "other_params"]
    assert (
        outcome(result)["by_tag"] == "skip: same Hex project and params as by_name: triggered once"
    )
    assert len({t.trigger_key for t in result.triggers}) == 2


def test_trigger_key_is_stable_and_canonical() -> None:
    key = trigger_key("inv", "pid", {"b": 1, "a": "x"})
    assert key == trigger_key("inv", "pid", {"a": "x", "b": 1})
    assert len(key) == 64
    assert key != trigger_key("inv2", "pid", {"a": "x", "b": 1})
    assert key != trigger_key("inv", "pid2", {"a": "x", "b": 1})
    assert key != trigger_key("inv", "pid", {"a": "x", "b": 2})


def test_triggers_carry_rendered_params_and_run_options(tmp_path: Path, manifest: Manifest) -> None:
    text = """\
    - name: finance
      project_id: fin
      models: [orders]
      input_params: {as_of: "{{ invocation.started_at[:10] }}", n: 3, who: "{{ models[0].name }}"}
      use_cached_sql_results: true
      notifications: [{type: FAILURE}]
      wait: false
      timeout_minutes: 5
    """
    result = plan(tmp_path, manifest, {ORDERS: "success"}, text, invocation_id="inv-9")
    (trigger,) = result.triggers
    assert trigger.input_params == {"as_of": "2026-01-31", "n": 3, "who": "orders"}
    assert trigger.request.use_cached_sql_results
    assert not trigger.request.update_published_results  # params given: Hex would ignore them
    assert trigger.request.notifications == (Notification(type="FAILURE"),)
    assert (trigger.wait, trigger.timeout_minutes, trigger.cancel_on_timeout) == (False, 5.0, True)
    assert trigger.models == (ORDERS,)
    assert trigger.trigger_key == trigger_key("inv-9", "fin", trigger.input_params)
    document = result.to_json()
    assert document["invocation_id"] == "inv-9"
    assert document["triggers"][0]["input_params"] == trigger.input_params
    assert set(document["skipped"]) == set()


def test_a_template_error_skips_only_its_project_naming_mapping_and_param(
    tmp_path: Path, manifest: Manifest
) -> None:
    text = """\
    - {name: broken, project_id: a, models: [orders], input_params: {region: "{{ env_var('HEX_REGION') }}"}}
    - {name: fine, project_id: b, models: [orders], input_params: {region: "{{ env_var('HEX_REGION', 'EMEA') }}"}}
    """
    result = plan(tmp_path, manifest, {ORDERS: "success"}, text)
    assert [t.name for t in result.triggers] == ["fine"]
    (skipped,) = result.skipped
    assert skipped.is_error
    assert (
        skipped.reason
        == "broken: input param 'region': env var 'HEX_REGION' is not set and no default was given"
    )


def test_a_selector_matching_nothing_is_an_error_skip(tmp_path: Path, manifest: Manifest) -> None:
    result = plan(
        tmp_path,
        manifest,
        {ORDERS: "success"},
        "- {name: f, project_id: p, models: [ordrs, 'tag:nope']}\n",
    )
    (skipped,) = result.skipped
    assert skipped.is_error
    assert skipped.reason == "no model in manifest.json matches ordrs, tag:nope"


def test_without_a_manifest_bare_names_still_plan(tmp_path: Path) -> None:
    text = """\
    - {name: by_name, project_id: a, models: [orders]}
    - {name: by_tag, project_id: b, models: ['tag:finance']}
    - {name: tested, project_id: c, models: [orders], require_tests: true}
    """
    result = plan(tmp_path, None, {ORDERS: "success"}, text)
    assert outcome(result) == {
        "by_name": "trigger: orders refreshed",
        "by_tag": "skip: no manifest.json: tag:finance needs it"
        " (without it, only model names and unique ids are matched)",
        "tested": "skip: require_tests needs manifest.json to know each model's tests",
    }


def test_the_plan_is_a_pure_function(tmp_path: Path, manifest: Manifest) -> None:
    text = (
        "- {name: f, project_id: p, models: [orders], input_params: {d: '{{ invocation.id }}'}}\n"
    )
    first = plan(tmp_path, manifest, {ORDERS: "success"}, text)
    second = plan(tmp_path, manifest, {ORDERS: "success"}, text)
    assert first == second


def test_a_kept_selector_index_plans_as_a_fresh_one(tmp_path: Path, manifest: Manifest) -> None:
    text = "- {name: f, project_id: p, models: ['tag:finance']}\n"
    kept = SelectorIndex(manifest)
    build = invocation(tmp_path, {ORDERS: "success"})
    first = make_plan(build, mappings(text), manifest, environ={}, selectors=kept)
    again = make_plan(build, mappings(text), manifest, environ={}, selectors=kept)
    assert first == again == plan(tmp_path, manifest, {ORDERS: "success"}, text)
    other = load_manifest(write_json(tmp_path / "other.json", manifest_document([model("x")])))
    with pytest.raises(ValueError, match="another manifest"):
        make_plan(build, mappings(text), other, environ={}, selectors=kept)


def test_decide_waits_while_a_mapped_model_or_its_test_is_pending(manifest: Manifest) -> None:
    (finance,) = mappings(FINANCE % ("any", "true")).projects
    matched = {ORDERS, REVENUE}
    ok = FinishedNodes([node_result(ORDERS, "success")])
    # revenue_daily still to run: it might fail, so nothing is decided yet
    assert decide(finance, matched, ok, manifest.tests_of, pending=frozenset({REVENUE})) is None
    # a failure decides at once, whatever is still pending
    failed = FinishedNodes([node_result(ORDERS, "error")])
    decision = decide(finance, matched, failed, manifest.tests_of, pending=frozenset({REVENUE}))
    assert decision is not None
    assert (decision.trigger, decision.reason) == (False, "orders failed")
    # models done, their test pending: still waiting; once passed: trigger
    assert decide(finance, {ORDERS}, ok, manifest.tests_of, pending=frozenset({T_ORDERS})) is None
    passed = FinishedNodes([node_result(ORDERS, "success"), node_result(T_ORDERS, "pass")])
    decision = decide(finance, {ORDERS}, passed, manifest.tests_of, pending=frozenset({CUSTOMERS}))
    assert decision is not None
    assert decision.trigger
    assert decision.refreshed == (ORDERS,)
    # a node reported again (dbt retry) counts by its last status
    passed.add(node_result(ORDERS, "error"))
    decision = decide(finance, {ORDERS}, passed, manifest.tests_of)
    assert decision is not None
    assert not decision.trigger


def test_the_real_v4_build_with_a_failed_model_skips_its_projects(tmp_path: Path) -> None:
    fixtures = Path(__file__).parent / "fixtures" / "dbt_artifacts"
    invocation_v4 = load_run_results(fixtures / "run_results_v4.json")
    manifest_v4 = load_manifest(fixtures / "manifest_v4.json")
    (failed,) = [r for r in invocation_v4.results if r.failed]
    text = f"""\
    - {{name: broken, project_id: a, models: [{failed.name}]}}
    - {{name: seeds, project_id: b, models: ['path:seeds']}}
    """
    result = make_plan(invocation_v4, mappings(text), manifest_v4, environ={})
    assert outcome(result) == {
        "broken": f"skip: {failed.name} failed",
        "seeds": "trigger: raw_customers, raw_orders, raw_payments refreshed",
    }


def test_finished_nodes_count_each_node_by_its_last_result() -> None:
    """dbt retry can report a node twice; built at once or grown by add(), the last word counts."""
    results = [
        node_result(ORDERS, "error"),
        node_result(ORDERS, "success"),
        node_result(REVENUE, "success"),
        node_result(REVENUE, "skipped"),
        node_result(CUSTOMERS, "no-op"),  # neither refreshed nor failed
    ]
    at_once = FinishedNodes(results)
    grown = FinishedNodes()
    for result in results:
        grown.add(result)
    invocation = Invocation("i", "retry", "t0", "t1", "1.11", {}, tuple(results))
    assert invocation.refreshed_ids == {ORDERS}
    assert invocation.failed_ids == {REVENUE}
    of_invocation = FinishedNodes.of_invocation(invocation)
    of_invocation.add(node_result(T_ORDERS, "pass"))  # its own copy: the invocation is untouched
    assert T_ORDERS not in invocation.results_by_id
    of_invocation.results.pop(T_ORDERS)
    for finished in (at_once, grown, of_invocation):
        assert finished.refreshed == {ORDERS}
        assert finished.failed == {REVENUE}
        assert finished.results[ORDERS].status == "success"
        assert set(finished.results) == {ORDERS, REVENUE, CUSTOMERS}
