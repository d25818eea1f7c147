"""Real dbt builds of sample_dbt_project/, planned with the repository's hex_mappings.yml.

dbt is slow, so the project is built twice per session (a clean build and one where `orders`
fails on purpose), in a background process (tests/prebuilt.py), in a copy under a temporary
folder, and every test reads those.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from dbt_runs import dbt_in_process
from prebuilt import Prebuilds

from hexdbt.cli import main
from hexdbt.dbt.artifacts import load_manifest, load_run_results
from hexdbt.mapping import load_mappings
from hexdbt.planner.rules import make_plan

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE = REPO_ROOT / "sample_dbt_project"

pytestmark = pytest.mark.dbt


@dataclass(frozen=True)
class Build:
    project_dir: Path
    target_dir: Path


def prebuild(root: Path) -> dict[str, Build]:
    """Both builds, made beside the tests before this module (tests/prebuilt.py)."""
    root.mkdir()
    project = root / "sample_dbt_project"
    shutil.copytree(
        SAMPLE, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", ".user.yml")
    )
    result = {}
    for name, variables in (
        ("success", "{slow_model_seconds: 0}"),
        ("failure", "{slow_model_seconds: 0, fail_model: orders}"),
    ):
        target = dbt_in_process(project, ["build", "--vars", variables], project / f"target_{name}")
        result[name] = Build(project, target)
    return result


@pytest.fixture(scope="session")
def builds(prebuilt: Prebuilds) -> dict[str, Build]:
    built: dict[str, Build] = prebuilt.result(__name__)
    return built


def _plan(build: Build) -> dict[str, str]:
    invocation = load_run_results(build.target_dir / "run_results.json")
    manifest = load_manifest(build.target_dir / "manifest.json")
    plan = make_plan(
        invocation, load_mappings(REPO_ROOT / "hex_mappings.yml", manifest), manifest, environ={}
    )
    return {t.name: f"trigger: {t.reason}" for t in plan.triggers} | {
        s.name: f"skip: {s.reason}" for s in plan.skipped
    }


def test_a_clean_build_triggers_every_mapped_project(builds: dict[str, Build]) -> None:
    assert _plan(builds["success"]) == {
        "customer_health": "trigger: customers refreshed",
        "finance_overview": "trigger: orders, revenue_daily refreshed and their tests passed",
        "marketing_attribution": "trigger: marketing_attribution, marketing_touchpoints refreshed",
        "executive_kpis": "trigger: customers, orders, revenue_daily refreshed",
    }


def test_a_failed_orders_skips_the_projects_that_read_it(builds: dict[str, Build]) -> None:
    assert _plan(builds["failure"]) == {
        "customer_health": "trigger: customers refreshed",
        "marketing_attribution": "trigger: marketing_attribution, marketing_touchpoints refreshed",
        "finance_overview": "skip: orders failed; revenue_daily was skipped (an upstream node failed)",
        "executive_kpis": "skip: orders failed; revenue_daily was skipped (an upstream node failed)",
    }


def test_dbt_1_11_artifacts_are_current_schemas(builds: dict[str, Build]) -> None:
    invocation = load_run_results(builds["failure"].target_dir / "run_results.json")
    manifest = load_manifest(builds["failure"].target_dir / "manifest.json")
    assert manifest.schema_version == 12
    assert invocation.command == "build"
    assert invocation.vars == {"slow_model_seconds": 0, "fail_model": "orders"}
    orders = invocation.result("model.hexdbt_sample.orders")
    assert orders is not None
    assert orders.status == "error"
    assert orders.message is not None
    assert "failing on purpose" in orders.message
    assert "exposure.hexdbt_sample.executive_kpis" in manifest.exposures
    # the relationships test on orders is attached to orders, not to customers
    assert any("relationships_orders" in t for t in manifest.tests_of("model.hexdbt_sample.orders"))


def test_plan_command_as_json_from_the_repository_root(
    builds: dict[str, Build], monkeypatch: pytest.MonkeyPatch
) -> None:
    build = builds["success"]
    monkeypatch.chdir(REPO_ROOT)  # hex_mappings.yml is found in the current folder
    result = CliRunner().invoke(
        main,
        [
            "plan",
            "--project-dir",
            str(build.project_dir),
            "--target-path",
            build.target_dir.name,
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    invocation = load_run_results(build.target_dir / "run_results.json")
    assert document["invocation_id"] == invocation.invocation_id
    assert document["command"] == "build"
    by_name = {item["name"]: item for item in document["triggers"]}
    assert set(by_name) == {
        "customer_health",
        "finance_overview",
        "marketing_attribution",
        "executive_kpis",
    }
    assert by_name["customer_health"]["project_id"] == "5a8591dd-4039-49df-9202-96385ba3eff8"
    assert by_name["customer_health"]["input_params"] == {
        "as_of": invocation.started_at[:10],
        "region": "EMEA",
    }
    assert by_name["executive_kpis"]["input_params"] == {
        "dbt_invocation_id": invocation.invocation_id
    }
    assert by_name["finance_overview"]["input_params"]["currency"] == "EUR"
    assert by_name["marketing_attribution"]["input_params"]["window_days"] == 30
    assert document["skipped"] == []


def test_plan_command_text_explains_the_failure(
    builds: dict[str, Build], monkeypatch: pytest.MonkeyPatch
) -> None:
    build = builds["failure"]
    monkeypatch.setenv("DBT_TARGET_PATH", build.target_dir.name)
    monkeypatch.setenv("DBT_PROJECT_DIR", str(build.project_dir))
    result = CliRunner().invoke(main, ["plan", "--mappings", str(REPO_ROOT / "hex_mappings.yml")])
    assert result.exit_code == 0, result.output
    assert "Trigger (2):" in result.output
    assert "Skip (2):" in result.output
    assert "finance_overview" in result.output
    assert "orders failed; revenue_daily was skipped (an upstream node failed)" in result.output
