"""`hexdbt discover`: table names matched to dbt relations, Hex's GetQueriedTables through the
client and the emulator, --write, --check, validate --remote's drift and discover: auto."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from disk_helpers import read_only, run_hexdbt_on_a_full_disk, run_hexdbt_with_a_file_size_limit

from hexdbt.cli import main
from hexdbt.clock import ManualClock, SystemClock
from hexdbt.dbt.relations import Relation, RelationIndex, load_relations, parse_table_name
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import (
    UNPUBLISHED_ID,
    default_scenario_document,
)
from hexdbt.errors import HexRejectedError
from hexdbt.hex.client import HexClient

REPO_ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MANIFEST = REPO_ROOT / "tests" / "fixtures" / "sample_build" / "manifest.json"
TOKEN = "hxtp_discover_secret_123456"
Factory = Callable[..., HexEmulator]


# -- table names ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "adapter", "parts"),
    [
        ("customers", "postgres", ("customers",)),
        ("Marts.Customers", "postgres", ("marts", "customers")),
        ('"Marts"."Customers"', "postgres", ("Marts", "Customers")),
        ("analytics.marts.customers", "snowflake", ("ANALYTICS", "MARTS", "CUSTOMERS")),
        ('ANALYTICS."marts".customers', "snowflake", ("ANALYTICS", "marts", "CUSTOMERS")),
        ('"a""b".c', "snowflake", ('a"b', "C")),
        ('"MAIN"."Orders"', "duckdb", ("main", "orders")),
        ("`my-project.Sales.Orders`", "bigquery", ("my-project", "Sales", "Orders")),
        ("`my-project`.Sales.`Orders`", "bigquery", ("my-project", "Sales", "Orders")),
        ("`Cat`.`Sch`.`T`", "databricks", ("cat", "sch", "t")),
        ("[dbo].[Orders]", "sqlserver", ("dbo", "Orders")),
        (" main.orders ", None, ("main", "orders")),
    ],
)
def test_a_table_name_is_read_as_its_warehouse_reads_it(
    text: str, adapter: str | None, parts: tuple[str, ...]
) -> None:
    assert parse_table_name(text, adapter) == parts


@pytest.mark.parametrize("text", ["", "a.b.c.d", '"open', "a..b", "a.", 'a"b.c', '""', "a b.c`"])
def test_what_is_no_table_name_matches_nothing(text: str) -> None:
    assert parse_table_name(text, "postgres") is None


def _relation(
    uid: str, database: str, schema: str, identifier: str, rendered: str | None = None
) -> Relation:
    kind = uid.split(".")[0]
    return Relation(uid, kind, identifier, database, schema, identifier, rendered)


def test_one_two_and_three_part_names_match_the_relations_they_end() -> None:
    marts = _relation("model.p.customers", "analytics", "marts", "customers")
    staging = _relation("model.p.stg_customers", "analytics", "staging", "customers")
    quoted = _relation("model.p.odd", "analytics", "marts", "Odd", '"ANALYTICS"."MARTS"."Odd"')
    index = RelationIndex.of([marts, staging, quoted], "snowflake")
    assert index.match("CUSTOMERS") == (marts, staging)
    assert index.match("marts.customers") == (marts,)
    assert index.match("Analytics.Marts.Customers") == (marts,)
    assert index.match("other.marts.customers") == ()
    assert index.match('marts."Odd"') == (quoted,)
    assert index.match("marts.odd") == ()  # unquoted is ODD on Snowflake, the relation is "Odd"
    assert index.match("a.b.c.d") == ()


def test_the_sample_manifest_gives_relations_of_models_and_seeds() -> None:
    relations = load_relations(SAMPLE_MANIFEST)
    assert relations.adapter_type == "duckdb"
    by_name = {relation.name: relation for relation in relations.relations}
    assert by_name["raw_orders"].resource_type == "seed"
    assert by_name["raw_orders"].schema == "main_raw"
    assert by_name["customers"].rendered == '"hexdbt_sample"."main"."customers"'
    assert all(relation.triggers for relation in relations.relations)


# -- a synthetic Snowflake project: models, a seed, a snapshot, a source, an ephemeral model -----


def _node(uid: str, schema: str, *, alias: str | None = None, **extra: Any) -> dict[str, Any]:
    kind, package, name = uid.split(".")[:3]
    return {
        "unique_id": uid,
        "resource_type": kind,
        "name": name,
        "package_name": package,
        "path": f"{name}.sql",
        "original_file_path": f"models/{name}.sql",
        "fqn": [package, name],
        "tags": [],
        "config": {"materialized": extra.pop("materialized", "table")},
        "depends_on": {"nodes": []},
        "database": "ANALYTICS",
        "schema": schema,
        "alias": alias or name,
        **extra,
    }


def _write_snowflake_project(folder: Path) -> Path:
    nodes = {
        uid: _node(uid, schema, **extra)
        for uid, schema, extra in [
            ("model.shop.customers", "MARTS", {}),
            ("model.shop.orders", "MARTS", {"alias": "fct_orders"}),
            ("model.shop.revenue", "FINANCE", {}),
            ("seed.shop.country_codes", "RAW", {}),
            ("snapshot.shop.customers_history", "SNAPSHOTS", {}),
            ("model.shop.helper", "MARTS", {"materialized": "ephemeral"}),
        ]
    }
    sources = {
        "source.shop.stripe.payments": {
            "unique_id": "source.shop.stripe.payments",
            "resource_type": "source",
            "name": "payments",
            "source_name": "stripe",
            "database": "RAW_DB",
            "schema": "STRIPE",
            "identifier": "payments",
        }
    }
    (folder / "target").mkdir(parents=True)
    (folder / "dbt_project.yml").write_text("name: shop\nprofile: shop\n")
    manifest = folder / "target" / "manifest.json"
    manifest.write_text(
        json.dumps(
            {
                "metadata": {
                    "dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v12.json",
                    "dbt_version": "1.9.0",
                    "adapter_type": "snowflake",
                    "project_name": "shop",
                },
                "nodes": nodes,
                "sources": sources,
                "exposures": {},
            }
        )
    )
    return manifest


# Table names as 40 apps' SQL cells write them, and what each must match.
_FORMS: list[tuple[list[str], set[str]]] = [
    (["customers"], {"customers"}),
    (["marts.customers"], {"customers"}),
    (["ANALYTICS.MARTS.CUSTOMERS"], {"customers"}),
    (['"ANALYTICS"."MARTS"."CUSTOMERS"'], {"customers"}),
    (["analytics.marts.fct_orders", "Finance.Revenue"], {"orders", "revenue"}),
    (["raw.country_codes", "snapshots.customers_history"], {"country_codes", "customers_history"}),
    (["raw_db.stripe.payments", "marts.fct_orders"], {"orders"}),
    (['"marts"."customers"', "elsewhere.stuff"], set()),  # quoted lower case is another table
]


def _workspace(count: int) -> dict[str, Any]:
    projects = []
    for number in range(count):
        tables, _ = _FORMS[number % len(_FORMS)]
        projects.append(
            {
                "id": f"00000000-0000-4000-9000-{number:012d}",
                "title": f"App {number:03d}",
                "queried_tables": tables,
            }
        )
    projects.append({"id": UNPUBLISHED_ID, "title": "Draft", "published": False})
    return {"projects": projects}


def _invoke(emulator: HexEmulator, args: list[str], cwd: Path) -> Result:
    env = {"HEX_BASE_URL": emulator.url, "HEX_API_TOKEN": TOKEN}
    runner = CliRunner()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(main, args, env=env, obj={"clock": emulator.clock})
    finally:
        os.chdir(previous)
    assert TOKEN not in result.output + result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_forty_apps_match_models_by_every_form_of_name(
    hex_emulator_factory: Factory, tmp_path: Path
) -> None:
    _write_snowflake_project(tmp_path)
    emulator = hex_emulator_factory(scenario=_workspace(40))
    result = _invoke(emulator, ["discover", "--json"], tmp_path)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    apps = {app["title"]: app for app in document["apps"]}
    assert len(apps) == 40
    for number in range(40):
        tables, expected = _FORMS[number % len(_FORMS)]
        app = apps[f"App {number:03d}"]
        assert set(app["models"]) == expected, (tables, app)
    assert apps["App 006"]["sources"] == ["stripe.payments"]
    assert apps["App 007"]["unmatchedTables"] == ['"marts"."customers"', "elsewhere.stuff"]
    assert document["unpublished"] == ["Draft"]
    # Sources never make an app "read dbt models": the apps of form 7 and 8 propose nothing new.
    unmapped = {item["app"] for item in document["drift"] if item["kind"] == "unmapped-app"}
    assert "App 007" not in unmapped
    assert "App 000" in unmapped


def test_a_hundred_and_twenty_apps_are_read_inside_hexs_real_limits(
    hex_emulator_factory: Factory, tmp_path: Path
) -> None:
    """Two ListProjects pages and 120 GetQueriedTables calls at 30 a minute: no 429 at all."""
    _write_snowflake_project(tmp_path)
    workspace = _workspace(120)
    many_tables = [f"marts.t{number}" for number in range(150)]
    workspace["projects"][0]["queried_tables"] = ["customers", *many_tables]
    emulator = hex_emulator_factory(scenario=workspace)
    started = emulator.clock.now()
    result = _invoke(emulator, ["discover", "--json"], tmp_path)
    assert result.exit_code == 0, result.stderr
    journal = emulator.journal()
    assert [entry["status"] for entry in journal].count(429) == 0
    operations = [entry["operation"] for entry in journal]
    assert operations.count("ListProjects") == 2
    assert operations.count("GetQueriedTables") == 121  # the first app's 151 tables: 2 pages
    assert emulator.clock.now() - started >= 3 * 60  # 123 calls at 30 a minute
    assert "120 calls, about 4 minutes at 30 calls a minute" in result.stderr
    assert "[120/120]" in result.stderr
    first = next(app for app in json.loads(result.stdout)["apps"] if app["title"] == "App 000")
    assert first["models"] == ["customers"]
    assert len(first["unmatchedTables"]) == 150


# -- the endpoint ----------------------------------------------------------------------------------


def test_the_client_pages_through_queried_tables_and_hears_422_for_a_draft(
    hex_emulator_factory: Factory,
) -> None:
    tables = [f"s.t{number}" for number in range(7)]
    document = {
        "projects": [
            {"id": "p-1", "title": "One", "queried_tables": tables},
            {"id": "p-2", "title": "Draft", "published": False, "queried_tables": ["s.t"]},
        ]
    }
    emulator = hex_emulator_factory(scenario=document)
    with HexClient(emulator.url, TOKEN, clock=emulator.clock) as client:
        first = client.get_queried_tables("p-1", limit=3)
        assert [table.table_name for table in first.values] == tables[:3]
        assert first.before is None
        assert first.after
        second = client.get_queried_tables("p-1", limit=3, after=first.after)
        assert second.before
        back = client.get_queried_tables("p-1", limit=3, before=second.before)
        assert back.values == first.values
        every = list(client.iter_queried_tables("p-1", page_size=3))
        assert [table.table_name for table in every] == tables
        assert every[0].data_connection_name == "Warehouse"
        with pytest.raises(HexRejectedError, match="no published version") as raised:
            client.get_queried_tables("p-2")
        assert raised.value.status == 422


def test_a_workspace_without_the_feature_gets_one_line_and_exit_4(
    hex_emulator_factory: Factory, tmp_path: Path
) -> None:
    _write_snowflake_project(tmp_path)
    document = {**_workspace(3), "settings": {"queried_tables_feature": False}}
    emulator = hex_emulator_factory(scenario=document)
    result = _invoke(emulator, ["discover"], tmp_path)
    assert result.exit_code == 4
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert error_lines == [
        "Error: discovery needs Hex Enterprise: this workspace does not offer GetQueriedTables"
        " (Hex answered 403); the hand-written mapping keeps working (HTTP 403, traceId "
        + error_lines[0].rsplit("traceId ", 1)[1]
    ]


def test_discover_without_a_manifest_says_to_run_dbt_parse(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    (tmp_path / "dbt_project.yml").write_text("name: shop\n")
    result = _invoke(hex_emulator, ["discover"], tmp_path)
    assert result.exit_code == 3
    assert (
        f"Error: {tmp_path / 'target' / 'manifest.json'}: manifest.json not found" in result.stderr
    )
    assert "dbt parse" in result.stderr


def test_write_and_check_together_are_refused(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    result = _invoke(hex_emulator, ["discover", "--write", "--check"], tmp_path)
    assert result.exit_code == 2
    assert "Error: --write and --check cannot be used together" in result.stderr


# -- the sample project: --check, --write, validate --remote, discover: auto ---------------------


def _sample(tmp_path: Path, *, rename: bool = False) -> Path:
    project = tmp_path / "sample"
    (project / "target").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "sample_dbt_project" / "dbt_project.yml", project)
    shutil.copy(REPO_ROOT / "hex_mappings.yml", project)
    text = SAMPLE_MANIFEST.read_text()
    if rename:
        text = text.replace("revenue_daily", "daily_revenue")
    (project / "target" / "manifest.json").write_text(text)
    return project


def test_the_sample_project_and_the_default_scenario_agree(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    project = _sample(tmp_path)
    result = _invoke(hex_emulator, ["discover", "--check"], project)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "hex_mappings.yml and Hex agree" in result.stdout
    assert "tables matching no dbt relation: finance.fx_rates" in result.stdout


def test_check_fails_on_a_renamed_model_naming_it_and_the_app(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    project = _sample(tmp_path, rename=True)
    result = _invoke(hex_emulator, ["discover", "--check"], project)
    assert result.exit_code == 1
    assert (
        "hex_mappings.yml:22: drift: finance_overview is mapped to daily_revenue, which Hex does"
        " not list among the tables the app reads; hint: if the app does not need them, remove"
        " them from the entry's models by hand (`hexdbt discover --write` removes models from"
        " `discovered: true` entries only, and only a selector that matches nothing the app"
        " reads) [stale-model]"
    ) in result.stdout
    assert "Error: the mapping and Hex disagree (2 differences)" in result.stderr


def _with_unmapped_app(
    emulator: HexEmulator, keep: Callable[[dict[str, Any]], bool] = lambda app: True
) -> None:
    """Hex holds the default scenario's apps (those ``keep`` keeps) and one unmapped app."""
    document = default_scenario_document()
    document["projects"] = [app for app in document["projects"] if keep(app)]
    document["projects"].append(
        {
            "id": "aaaaaaaa-0000-4000-8000-000000000001",
            "title": "Order funnel",
            "queried_tables": ["main.stg_orders", "main_raw.raw_payments"],
        }
    )
    emulator.load_scenario(document)


def test_write_adds_the_unmapped_app_and_keeps_every_other_line(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    project = _sample(tmp_path)
    _with_unmapped_app(hex_emulator)
    before = (project / "hex_mappings.yml").read_text().splitlines()
    result = _invoke(hex_emulator, ["discover", "--write"], project)
    assert result.exit_code == 0, result.stderr
    after = (project / "hex_mappings.yml").read_text().splitlines()
    assert after[: len(before)] == before  # comments, quoting and layout kept, line for line
    assert after[len(before) :] == [
        "  # Order funnel: added by hexdbt discover",
        "  - name: order_funnel",
        "    project_id: aaaaaaaa-0000-4000-8000-000000000001",
        "    models: [stg_orders, raw_payments]",
        "    discovered: true",
    ]
    assert "hex_mappings.yml: 1 entry added (order_funnel), 0 updated" in result.stdout
    again = _invoke(hex_emulator, ["discover", "--check"], project)
    assert again.exit_code == 0, again.stdout


def _discover_elsewhere(
    emulator: HexEmulator, tmp_path: Path
) -> tuple[Path, Path, bytes, dict[str, str]]:
    """The sample project with its mapping file in a folder of its own (a disk of its own in
    the full-disk test), for a `discover --write` in another process. Hex holds the mapped apps
    and one more: few enough to be read at once inside Hex's real rate limit."""
    project = _sample(tmp_path)
    mapped = (project / "hex_mappings.yml").read_text()
    _with_unmapped_app(emulator, keep=lambda app: app["id"] in mapped)
    folder = project / "mappings"
    folder.mkdir()
    mapping_file = folder / "hex_mappings.yml"
    shutil.move(project / "hex_mappings.yml", mapping_file)
    environment = {**os.environ, "HEX_BASE_URL": emulator.url, "HEX_API_TOKEN": TOKEN}
    return project, mapping_file, mapping_file.read_bytes(), environment


def test_write_on_a_full_disk_leaves_the_mapping_whole_and_says_so_in_one_line(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    """It was cut mid-line (`project_id: b3d9f6a2-1e47-4c`), failing every later run."""
    project, mapping_file, before, environment = _discover_elsewhere(hex_emulator, tmp_path)
    done = run_hexdbt_on_a_full_disk(
        ["discover", "--write", "--mappings", "mappings/hex_mappings.yml"],
        full=mapping_file.parent,
        cwd=project,
        env=environment,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "Error: cannot write the mapping file mappings/hex_mappings.yml: No space left on device"
    )
    assert "Traceback" not in done.stderr
    assert mapping_file.read_bytes() == before
    assert sorted(path.name for path in mapping_file.parent.iterdir()) == ["hex_mappings.yml"]


def test_write_past_a_file_size_limit_leaves_the_mapping_whole(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    project, mapping_file, before, environment = _discover_elsewhere(hex_emulator, tmp_path)
    # Room for the discovery cache (written first), not for the mapping file grown by an entry.
    padded = before + b"# " + b"-" * 500_000 + b"\n"
    mapping_file.write_bytes(padded)
    done = run_hexdbt_with_a_file_size_limit(
        ["discover", "--write", "--mappings", "mappings/hex_mappings.yml"],
        limit_bytes=len(padded) + 20,
        cwd=project,
        env=environment,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "Error: cannot write the mapping file mappings/hex_mappings.yml: File too large"
    )
    assert mapping_file.read_bytes() == padded
    assert sorted(path.name for path in mapping_file.parent.iterdir()) == ["hex_mappings.yml"]


def test_write_on_a_read_only_mapping_file_is_one_line(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    project = _sample(tmp_path)
    _with_unmapped_app(hex_emulator)
    mapping_file = project / "hex_mappings.yml"
    before = mapping_file.read_bytes()
    with read_only(mapping_file):
        result = _invoke(hex_emulator, ["discover", "--write"], project)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] in (
        "Error: cannot write the mapping file hex_mappings.yml: Permission denied",
        "Error: cannot write the mapping file hex_mappings.yml: Operation not permitted",
    )
    assert mapping_file.read_bytes() == before


def test_validate_remote_reports_the_drift_as_warnings(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    project = _sample(tmp_path)
    _with_unmapped_app(hex_emulator)
    result = _invoke(hex_emulator, ["validate", "--remote"], project)
    assert result.exit_code == 0, result.stdout
    (line,) = [line for line in result.stdout.splitlines() if "[discover-" in line]
    assert line.startswith(
        "hex_mappings.yml: warning: Hex app 'Order funnel' (aaaaaaaa-0000-4000-8000-000000000001)"
        " reads raw_payments, stg_orders but has no mapping; hint:"
    )
    assert line.endswith("[discover-unmapped-app]")


def test_validate_remote_on_a_workspace_without_the_feature_still_validates(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    project = _sample(tmp_path)
    document = default_scenario_document()
    document["settings"] = {"queried_tables_feature": False}
    hex_emulator.load_scenario(document)
    result = _invoke(hex_emulator, ["validate", "--remote"], project)
    assert result.exit_code == 0, result.stdout
    assert "discovery needs Hex Enterprise" in result.stdout
    assert "[discover-unavailable]" in result.stdout


def test_discover_auto_plans_the_discovered_app_and_says_so(
    hex_emulator_factory: Factory, tmp_path: Path
) -> None:
    """``hexdbt plan`` reads the clock of the machine: the emulator's starts from it."""
    hex_emulator = hex_emulator_factory(clock=ManualClock(SystemClock().now()))
    project = _sample(tmp_path)
    shutil.copy(
        SAMPLE_MANIFEST.with_name("run_results_success.json"),
        project / "target" / "run_results.json",
    )
    mappings = project / "hex_mappings.yml"
    mappings.write_text(
        mappings.read_text().replace("defaults:\n", "defaults:\n  discover: auto\n")
    )
    _with_unmapped_app(hex_emulator)
    before = _invoke(hex_emulator, ["plan"], project)
    assert "(discover: auto: no discovery cache yet; run `hexdbt discover` to refresh it)" in (
        before.stdout
    )
    assert _invoke(hex_emulator, ["discover"], project).exit_code == 0
    planned = _invoke(hex_emulator, ["plan", "--json"], project)
    assert planned.exit_code == 0, planned.stderr
    triggers = {trigger["name"]: trigger for trigger in json.loads(planned.stdout)["triggers"]}
    funnel = triggers["order_funnel"]
    assert funnel["discovered"] is True
    assert "; mapped by discovery (discovered 20" in funnel["reason"]
    assert triggers["customer_health"]["discovered"] is False
    cache = tmp_path / "hexdbt-state" / "discovery.json"
    document = json.loads(cache.read_text())
    document["fetchedAt"] -= 25 * 3600
    cache.write_text(json.dumps(document))
    stale = _invoke(hex_emulator, ["plan"], project)
    assert "order_funnel" not in stale.stdout
    assert "the discovery cache is 25 hours old (more than discover_max_age_hours, 24)" in (
        stale.stdout
    )


# -- versioned models, and hints that say what mends the drift -------------------------------------

ACCOUNTS_V1 = "11111111-0000-4000-8000-000000000001"
ACCOUNTS_V2 = "11111111-0000-4000-8000-000000000002"


def _with_versioned_model(folder: Path) -> None:
    """The Snowflake project plus dim_accounts in two versions, as dbt writes them: one name,
    ids and fqns ending in the version, a relation per version."""
    manifest = _write_snowflake_project(folder)
    document = json.loads(manifest.read_text())
    for version in (1, 2):
        uid = f"model.shop.dim_accounts.v{version}"
        node = _node(uid, "MARTS", alias=f"dim_accounts_v{version}")
        node.update(fqn=["shop", "dim_accounts", f"v{version}"], version=version, latest_version=2)
        document["nodes"][uid] = node
    manifest.write_text(json.dumps(document))


def _accounts_workspace() -> dict[str, Any]:
    return {
        "projects": [
            {"id": ACCOUNTS_V1, "title": "Old accounts", "queried_tables": ["dim_accounts_v1"]},
            {"id": ACCOUNTS_V2, "title": "New accounts", "queried_tables": ["dim_accounts_v2"]},
        ]
    }


def test_discover_names_the_version_of_a_model_each_app_reads(
    hex_emulator_factory: Factory, tmp_path: Path
) -> None:
    _with_versioned_model(tmp_path)
    emulator = hex_emulator_factory(scenario=_accounts_workspace())
    result = _invoke(emulator, ["discover"], tmp_path)
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    old = lines.index(f"old_accounts (not mapped): 'Old accounts' {ACCOUNTS_V1}")
    assert lines[old + 1] == "  models:  dim_accounts.v1"
    new = lines.index(f"new_accounts (not mapped): 'New accounts' {ACCOUNTS_V2}")
    assert lines[new + 1] == "  models:  dim_accounts.v2"
    assert (
        f"drift: Hex app 'Old accounts' ({ACCOUNTS_V1}) reads dim_accounts.v1 but has no mapping;"
        " hint: `hexdbt discover --write` adds it as a `discovered: true` entry [unmapped-app]"
    ) in lines
    document = json.loads(_invoke(emulator, ["discover", "--json"], tmp_path).stdout)
    models = {app["title"]: app["models"] for app in document["apps"]}
    assert models == {"Old accounts": ["dim_accounts.v1"], "New accounts": ["dim_accounts.v2"]}


def test_drift_blames_the_stale_version_alone(
    hex_emulator_factory: Factory, tmp_path: Path
) -> None:
    """Mapped to dim_accounts (every version), the app reads v2: v1 is the stale one."""
    _with_versioned_model(tmp_path)
    (tmp_path / "hex_mappings.yml").write_text(
        "version: 1\nprojects:\n"
        f"  - name: accounts\n    project_id: {ACCOUNTS_V2}\n    models: [dim_accounts]\n"
    )
    emulator = hex_emulator_factory(scenario=_accounts_workspace())
    result = _invoke(emulator, ["discover", "--check"], tmp_path)
    assert result.exit_code == 1
    (drift,) = [line for line in result.stdout.splitlines() if "[stale-model]" in line]
    assert drift.startswith(
        "hex_mappings.yml:3: drift: accounts is mapped to dim_accounts.v1, which Hex does not"
        " list among the tables the app reads; hint: if the app does not need them, remove them"
        " from the entry's models by hand"
    )


def _mapped_to_a_model_the_app_does_not_read(folder: Path, *, discovered: bool) -> None:
    (folder / "hex_mappings.yml").write_text(
        "version: 1\nprojects:\n"
        f"  - name: accounts\n    project_id: {ACCOUNTS_V2}\n"
        "    models: [model.shop.dim_accounts.v2, customers]\n"
        + ("    discovered: true\n" if discovered else "")
    )


@pytest.mark.parametrize("discovered", [False, True])
def test_validate_remote_says_what_hex_does_not_list_and_the_hint_mends_it(
    hex_emulator_factory: Factory, tmp_path: Path, discovered: bool
) -> None:
    """A model the app never read is not one it "no longer reads"; the hint is the fix that
    works: `discover --write` for a discovered entry (and it does), by hand for a written one."""
    _with_versioned_model(tmp_path)
    _mapped_to_a_model_the_app_does_not_read(tmp_path, discovered=discovered)
    emulator = hex_emulator_factory(scenario=_accounts_workspace())
    result = _invoke(emulator, ["validate", "--remote"], tmp_path)
    assert result.exit_code == 0, result.stdout
    (line,) = [line for line in result.stdout.splitlines() if "[discover-stale-model]" in line]
    message = (
        "hex_mappings.yml:3: warning: accounts is mapped to customers, which Hex does not list"
        " among the tables the app reads; hint: "
    )
    hint = (
        "`hexdbt discover --write` removes them from this discovered entry"
        if discovered
        else "if the app does not need them, remove them from the entry's models by hand"
        " (`hexdbt discover --write` removes models from `discovered: true` entries only, and"
        " only a selector that matches nothing the app reads)"
    )
    assert line == f"{message}{hint} [discover-stale-model]"
    assert "no longer reads" not in result.stdout
    written = _invoke(emulator, ["discover", "--write"], tmp_path)
    assert written.exit_code == 0, written.stderr
    again = _invoke(emulator, ["discover", "--check"], tmp_path)
    assert again.exit_code == (0 if discovered else 1), again.stdout
