"""Reading run_results.json and manifest.json: every schema version, and every way they break."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from dbt_shapes import manifest_document, model, run_results_document, write_json

from hexdbt.cli import main
from hexdbt.dbt.artifacts import (
    Invocation,
    load_manifest,
    load_run_results,
    node_result,
)
from hexdbt.errors import ArtifactError

FIXTURES = Path(__file__).parent / "fixtures" / "dbt_artifacts"


@pytest.mark.parametrize(
    ("file_name", "invocation_id", "dbt_version", "count", "first_status"),
    [
        ("run_results_v4.json", "5b7ab67d-5559-49b8-9373-35eab8b9f2f7", "1.0.0", 29, "success"),
        ("run_results_v5.json", "7ee58a18-366a-45b0-a0f2-a8a09f5e87ec", "1.7.0", 58, "success"),
        ("run_results_v6.json", "cfbc1db9-66c1-46c2-a94b-8c0cef32314f", "1.9.0", 61, "success"),
    ],
)
def test_every_run_results_schema_version_loads(
    file_name: str, invocation_id: str, dbt_version: str, count: int, first_status: str
) -> None:
    invocation = load_run_results(FIXTURES / file_name)
    assert invocation.invocation_id == invocation_id
    assert invocation.command == "build"
    assert invocation.refreshes_data
    assert invocation.dbt_version == dbt_version
    assert len(invocation.results) == count
    assert invocation.results[0].status == first_status
    # Files before dbt 1.10 carry no invocation_started_at: the earliest node start stands in.
    assert invocation.started_at < invocation.generated_at
    assert invocation.started_at == min(r.started_at for r in invocation.results if r.started_at)


def test_run_results_v4_reads_rows_timing_and_the_failed_model() -> None:
    invocation = load_run_results(FIXTURES / "run_results_v4.json")
    seed = invocation.result("seed.jaffle_shop.raw_customers")
    assert seed is not None
    assert seed.rows_affected == 100
    assert seed.message == "INSERT 100"
    assert seed.started_at == "2021-12-07T10:49:20.200036Z"
    assert seed.execution_time_s == pytest.approx(3.705, abs=0.001)
    failed = [result for result in invocation.results if result.failed]
    assert [result.status for result in failed] == ["error"]


@pytest.mark.parametrize(
    ("file_name", "version", "data_nodes"),
    [
        ("manifest_v4.json", 4, 8),
        ("manifest_v8.json", 8, 8),
        ("manifest_v11.json", 11, 38),
        ("manifest_v12.json", 12, 39),
    ],
)
def test_every_manifest_schema_version_loads(file_name: str, version: int, data_nodes: int) -> None:
    manifest = load_manifest(FIXTURES / file_name)
    assert manifest.schema_version == version
    assert manifest.project_name == "jaffle_shop"
    assert len(manifest.nodes) == data_nodes
    orders = manifest.nodes["model.jaffle_shop.orders"]
    assert orders.original_file_path == "models/orders.sql"
    assert orders.fqn == ("jaffle_shop", "orders")
    assert "model.jaffle_shop.stg_orders" in orders.depends_on
    # attached_node only exists from dbt 1.5; older tests are tied to their model by ref().
    tests = manifest.tests_of("model.jaffle_shop.orders")
    assert "test.jaffle_shop.unique_orders_order_id.fed79b3a6e" in tests
    assert all(test.startswith("test.") for test in tests)


def test_fields_added_by_later_dbt_are_ignored(tmp_path: Path) -> None:
    document = run_results_document({"model.shop.orders": "success"})
    document["metadata"]["something_new"] = {"nested": [1, 2]}
    document["results"][0]["batch_results"] = {"successful": [], "failed": []}
    document["results"][0]["overload_results"] = None
    document["brand_new_top_level"] = True
    invocation = load_run_results(write_json(tmp_path / "run_results.json", document))
    assert invocation.started_at == "2026-01-31T08:00:00Z"
    assert invocation.results[0].rows_affected == 10


@pytest.mark.parametrize(
    ("command", "refreshes"),
    [
        ("build", True),
        ("run", True),
        ("seed", True),
        ("snapshot", True),
        ("retry", True),
        ("compile", False),
        ("show", False),
        ("run-operation", False),
        ("generate", False),
        ("test", False),
    ],
)
def test_only_commands_that_write_data_refresh(
    tmp_path: Path, command: str, refreshes: bool
) -> None:
    document = run_results_document({"model.shop.orders": "success"}, command=command)
    invocation = load_run_results(write_json(tmp_path / "run_results.json", document))
    assert invocation.command == command
    assert invocation.refreshes_data is refreshes


def test_missing_args_which_is_an_unknown_command_that_refreshes_nothing(tmp_path: Path) -> None:
    document = run_results_document({"model.shop.orders": "success"})
    del document["args"]
    invocation = load_run_results(write_json(tmp_path / "run_results.json", document))
    assert invocation.command == "unknown"
    assert not invocation.refreshes_data


def test_started_at_falls_back_to_generated_at_minus_elapsed(tmp_path: Path) -> None:
    document = run_results_document({}, started_at=None)
    invocation = load_run_results(write_json(tmp_path / "run_results.json", document))
    assert invocation.started_at == "2026-01-31T08:00:00.000Z"


def test_node_result_is_one_small_function_for_files_and_events() -> None:
    result = node_result("model.shop.orders.v2", " Success ", message="OK", rows_affected=3)
    assert result.status == "success"
    assert result.refreshed
    assert not result.failed
    assert result.name == "orders"
    assert result.resource_type == "model"
    invocation = Invocation("i", "build", "t0", "t1", "1.11", {}, (result,))
    assert invocation.result("model.shop.orders.v2") is result


def _truncated(tmp_path: Path) -> Path:
    text = (FIXTURES / "run_results_v6.json").read_text()
    return _write(tmp_path, text[: len(text) // 2])


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run_results.json"
    path.write_text(text, encoding="utf-8")
    return path


BAD_RUN_RESULTS = {
    "missing": (lambda tmp: tmp / "run_results.json", "run_results.json not found"),
    "empty": (lambda tmp: _write(tmp, ""), "run_results.json is empty"),
    "blank": (lambda tmp: _write(tmp, "  \n"), "run_results.json is empty"),
    "truncated": (_truncated, "run_results.json is truncated"),
    "not_json": (lambda tmp: _write(tmp, "<html>502 Bad Gateway</html>"), "is not JSON"),
    "not_utf8": (
        lambda tmp: (
            (tmp / "run_results.json").write_bytes(b"\xff\xfe{") and tmp / "run_results.json"
        ),
        "is not JSON",
    ),
    "a_list": (lambda tmp: _write(tmp, "[1, 2]"), "is not a JSON object"),
    "no_schema": (lambda tmp: _write(tmp, '{"results": []}'), "unknown schema: no metadata"),
    "too_new": (
        lambda tmp: write_json(tmp / "run_results.json", run_results_document({}, version=7)),
        "unknown schema run-results/v7: hexdbt reads run-results v4 to v6",
    ),
    "too_old": (
        lambda tmp: write_json(tmp / "run_results.json", run_results_document({}, version=3)),
        "unknown schema run-results/v3",
    ),
    "a_manifest": (
        lambda tmp: write_json(tmp / "run_results.json", manifest_document([])),
        "unknown schema manifest/v12: expected dbt run-results",
    ),
    "results_not_list": (
        lambda tmp: write_json(
            tmp / "run_results.json", {**run_results_document({}), "results": {"a": 1}}
        ),
        "results is not a list",
    ),
    "result_an_empty_object": (
        lambda tmp: write_json(
            tmp / "run_results.json", {**run_results_document({}), "results": [{}, "oops"]}
        ),
        "results[0].unique_id is missing",
    ),
    "second_result_not_an_object": (
        lambda tmp: write_json(
            tmp / "run_results.json",
            {
                **run_results_document({}),
                "results": [{"unique_id": "model.a.b", "status": "success"}, "oops"],
            },
        ),
        "results[1] is not an object",
    ),
    "result_without_id": (
        lambda tmp: write_json(
            tmp / "run_results.json", {**run_results_document({}), "results": [{"status": "x"}]}
        ),
        "results[0].unique_id is missing",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_RUN_RESULTS))
def test_bad_run_results_stop_with_a_message_naming_the_file(tmp_path: Path, case: str) -> None:
    make, expected = BAD_RUN_RESULTS[case]
    path = make(tmp_path)
    with pytest.raises(ArtifactError) as caught:
        load_run_results(path)
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)
    assert caught.value.exit_code == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "manifest.json is empty"),
        ('{"metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v13.json"}}',
         "unknown schema manifest/v13: hexdbt reads manifest v4 to v12"),
        ('{"metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v12.json"}}',
         "nodes is missing"),
        ('{"metadata": {"dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v12.json"},'
         ' "nodes": {"model.a.b": []}}', "nodes['model.a.b'] is not an object"),
    ],
)  # fmt: skip
def test_bad_manifests_stop_with_a_message_naming_the_file(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"manifest\.json") as caught:
        load_manifest(path)
    assert expected in str(caught.value)


def test_a_folder_in_place_of_the_file_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="is a folder"):
        load_manifest(tmp_path)


def _project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "target").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: shop\nprofile: shop\n", encoding="utf-8")
    (project / "hex_mappings.yml").write_text(
        "version: 1\nprojects:\n  - {name: p, project_id: pid, models: [orders]}\n",
        encoding="utf-8",
    )
    return project


@pytest.mark.parametrize("case", ["missing", "truncated", "too_new"])
def test_plan_command_exits_3_naming_the_bad_run_results(tmp_path: Path, case: str) -> None:
    project = _project(tmp_path)
    write_json(project / "target" / "manifest.json", manifest_document([model("orders")]))
    make, expected = BAD_RUN_RESULTS[case]
    make(project / "target")
    result = CliRunner().invoke(
        main,
        ["plan", "--project-dir", str(project), "--mappings", str(project / "hex_mappings.yml")],
    )
    assert result.exit_code == 3, result.output
    assert "Error: " in result.output
    assert str(project / "target" / "run_results.json") in result.output
    assert expected in result.output


def test_plan_command_plans_from_run_results_alone(tmp_path: Path) -> None:
    """dbt 1.0's run_results.json without its manifest: names are matched by the node names in
    its unique ids; a project whose selectors need the manifest is skipped, saying so."""
    project = _project(tmp_path)
    shutil.copy(FIXTURES / "run_results_v4.json", project / "target" / "run_results.json")
    (project / "hex_mappings.yml").write_text(
        "version: 1\nprojects:\n"
        "  - {name: by_name, project_id: p1, models: [customers, orders]}\n"
        "  - {name: by_id, project_id: p2, models: [model.jaffle_shop.stg_orders]}\n"
        "  - {name: by_tag, project_id: p3, models: [customers, 'tag:finance']}\n"
        "  - {name: failed, project_id: p4, models: [test_insert_overwrite]}\n",
        encoding="utf-8",
    )
    mappings = str(project / "hex_mappings.yml")
    result = CliRunner().invoke(
        main, ["plan", "--project-dir", str(project), "--json", "--mappings", mappings]
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert [(t["name"], t["reason"]) for t in plan["triggers"]] == [
        ("by_name", "customers, orders refreshed"),
        ("by_id", "stg_orders refreshed"),
    ]
    assert [(s["name"], s["reason"], s["is_error"]) for s in plan["skipped"]] == [
        (
            "by_tag",
            "no manifest.json: tag:finance needs it"
            " (without it, only model names and unique ids are matched)",
            False,
        ),
        ("failed", "test_insert_overwrite failed", False),
    ]


def test_fixture_attribution_travels_with_the_files() -> None:
    readme = (FIXTURES / "README.md").read_text()
    assert "dbt-artifacts-parser" in readme
    assert json.loads((FIXTURES / "manifest_v12.json").read_text())["metadata"]


def test_result_scalars_of_unexpected_types_are_read_as_absent(tmp_path: Path) -> None:
    """A later dbt or an odd adapter may write other scalar types: the result stays readable."""
    document = run_results_document({"model.shop.a": "success", "model.shop.b": "Success "})
    first, second = document["results"]
    first.update(
        adapter_response={},
        execution_time=True,
        message=None,
        timing=[{"name": "compile", "started_at": 7}],
    )
    second.update(
        adapter_response={"rows_affected": "12"},
        execution_time="1.5",
        message={"text": "x"},
        timing=[
            {"name": "compile", "started_at": "2026-01-31T08:00:00Z", "completed_at": "c1"},
            {"name": "other", "started_at": "later", "completed_at": "2026-01-31T08:00:09Z"},
        ],
    )
    invocation = load_run_results(write_json(tmp_path / "run_results.json", document))
    a, b = invocation.results
    assert (a.status, a.rows_affected, a.execution_time_s, a.message) == (
        "success",
        None,
        None,
        None,
    )
    assert (a.started_at, a.completed_at) == (None, None)
    # no execute phase: the span of all phases
    assert (b.started_at, b.completed_at) == ("2026-01-31T08:00:00Z", "2026-01-31T08:00:09Z")
    assert (b.status, b.rows_affected, b.execution_time_s, b.message) == (
        "success",
        None,
        None,
        None,
    )


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("adapter_response", ["not", "a", "dict"], "results[0].adapter_response is not an object"),
        ("timing", [{"name": "execute"}, "junk"], "results[0].timing[1] is not an object"),
        ("unique_id", 7, "results[0].unique_id is int, expected str"),
    ],
)
def test_result_objects_of_the_wrong_shape_name_the_field(
    tmp_path: Path, field: str, value: Any, expected: str
) -> None:
    """dbt's schemas fix these shapes: another one is a file hexdbt cannot plan from."""
    document = run_results_document({"model.shop.a": "success"})
    document["results"][0][field] = value
    path = write_json(tmp_path / "run_results.json", document)
    with pytest.raises(ArtifactError) as caught:
        load_run_results(path)
    assert str(caught.value) == f"{path}: {expected}"


def test_manifest_node_fields_of_unexpected_types_are_read_as_absent(tmp_path: Path) -> None:
    node = {
        "unique_id": "model.shop.orders",
        "resource_type": "model",
        "name": 5,
        "package_name": None,
        "path": ["x"],
        "original_file_path": None,
        "fqn": ["shop", 3, "orders"],
        "tags": "finance",
        "config": "not a dict",
        "meta": [],
        "depends_on": ["model.shop.stg"],
    }
    document = {**manifest_document([]), "nodes": {node["unique_id"]: node}}
    manifest = load_manifest(write_json(tmp_path / "manifest.json", document))
    orders = manifest.nodes["model.shop.orders"]
    assert orders.name == "orders"  # from the unique id
    assert (orders.package_name, orders.path, orders.original_file_path) == ("", "", "")
    assert orders.fqn == ("shop", "orders")
    assert orders.tags == ("finance",)
    assert (dict(orders.config), dict(orders.meta), orders.depends_on) == ({}, {}, ())
    assert manifest.lookups is not None
    assert manifest.lookups.by_tag == {"finance": ["model.shop.orders"]}


def test_reading_leaves_the_garbage_collector_as_it_found_it(tmp_path: Path) -> None:
    """The collector is paused only while a parsed file becomes records, even when that fails."""
    good = write_json(tmp_path / "run_results.json", run_results_document({"model.a.b": "success"}))
    bad = write_json(
        tmp_path / "bad.json", {**run_results_document({}), "results": [{"status": "x"}]}
    )
    was_enabled = gc.isenabled()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            load_run_results(good)
            load_manifest(FIXTURES / "manifest_v12.json")
            with pytest.raises(ArtifactError):
                load_run_results(bad)
            assert gc.isenabled() is enabled
    finally:
        (gc.enable if was_enabled else gc.disable)()
