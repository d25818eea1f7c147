"""`hexdbt validate --remote` against the emulator: one test per finding Hex can cause."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from dbt_shapes import manifest_document, model, write_json

from hexdbt.cli import main
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import (
    ARCHIVED_ID,
    CUSTOMER_HEALTH_ID,
    FINANCE_OVERVIEW_ID,
    TRASHED_ID,
    UNPUBLISHED_ID,
    TokenSpec,
    default_scenario,
    default_scenario_document,
)

TOKEN = "hxtp_validate_remote_secret"
EmulatorFactory = Callable[..., HexEmulator]
UNKNOWN_ID = "00000000-0000-4000-8000-0000000000ff"


def project_with(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    (tmp_path / "dbt_project.yml").write_text("name: shop\nversion: '1.0'\nprofile: shop\n")
    (tmp_path / "target").mkdir()
    write_json(
        tmp_path / "target" / "manifest.json",
        manifest_document([model("customers", "marts"), model("orders", "marts")]),
    )
    lines = ["version: 1", "projects:"]
    for entry in entries:
        lines.append(f"  - name: {entry['name']}")
        lines.append(f"    project_id: {entry['project_id']}")
        lines.append("    models: [customers]")
        if "input_params" in entry:
            lines.append(f"    input_params: {json.dumps(entry['input_params'])}")
    (tmp_path / "hex_mappings.yml").write_text("\n".join(lines) + "\n")
    return tmp_path


def validate_remote(emulator: HexEmulator, folder: Path, *args: str, token: str = TOKEN) -> Result:
    result = CliRunner().invoke(
        main,
        [
            "validate",
            "--remote",
            "--project-dir",
            str(folder),
            "--mappings",
            str(folder / "hex_mappings.yml"),
            *args,
        ],
        env={"HEX_API_TOKEN": token, "HEX_BASE_URL": emulator.url},
        obj={"clock": emulator.clock},
        catch_exceptions=False,
    )
    assert token not in result.output
    assert token not in result.stderr
    return result


def findings(result: Result) -> list[dict[str, Any]]:
    document = json.loads(result.stdout)
    found: list[dict[str, Any]] = document["findings"]
    return found


def test_published_projects_visible_to_the_token_pass(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    folder = project_with(
        tmp_path,
        [
            {"name": "health", "project_id": CUSTOMER_HEALTH_ID, "input_params": {"region": "EU"}},
            {"name": "finance", "project_id": FINANCE_OVERVIEW_ID},
        ],
    )
    # The default scenario's apps read tables of the sample project, not of this one's.
    document = default_scenario_document()
    for project in document["projects"]:
        project.pop("queried_tables", None)
    hex_emulator.load_scenario(document)
    result = validate_remote(hex_emulator, folder)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"2 mapped Hex projects (2 in {folder / 'hex_mappings.yml'}, 0 from dbt exposures):"
        " no problems found"
    )
    operations = [entry["operation"] for entry in hex_emulator.journal()]
    # The drift check reads every published app's tables after the mapping's own checks.
    assert operations.count("GetQueriedTables") == 33
    # A dryRun only where it checks more than GetProject does: the mapping with inputs.
    assert sorted(op for op in operations if op in ("GetProject", "RunProject")) == [
        "GetProject",
        "GetProject",
        "RunProject",
    ]
    dry_run = next(e for e in hex_emulator.journal() if e["operation"] == "RunProject")
    assert dry_run["body"]["dryRun"] is True
    assert dry_run["body"]["inputParams"] == {"region": "EU"}
    assert hex_emulator.runs() == []


def test_an_unknown_project_is_hex_not_found_and_exits_4(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    folder = project_with(tmp_path, [{"name": "ghost", "project_id": UNKNOWN_ID}])
    result = validate_remote(hex_emulator, folder)
    assert result.exit_code == 4
    assert result.stdout.splitlines()[0] == (
        f"{folder / 'hex_mappings.yml'}:3: error: ghost: Hex project {UNKNOWN_ID} not found, or"
        " not visible to the token; hint: check the id, and that the token's user can open the"
        " project in Hex [hex-not-found]"
    )


def test_a_project_the_token_may_not_see_is_hex_not_found(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    scenario = dataclasses.replace(
        default_scenario(),
        tokens=(TokenSpec(TOKEN, projects=frozenset({FINANCE_OVERVIEW_ID})),),
    )
    emulator = hex_emulator_factory(scenario=scenario)
    folder = project_with(
        tmp_path,
        [
            {"name": "health", "project_id": CUSTOMER_HEALTH_ID},
            {"name": "finance", "project_id": FINANCE_OVERVIEW_ID},
        ],
    )
    result = validate_remote(emulator, folder, "--json")
    assert result.exit_code == 4
    assert [(f["code"], f["line"]) for f in findings(result)] == [("hex-not-found", 3)]


def test_unpublished_trashed_and_archived_projects(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    folder = project_with(
        tmp_path,
        [
            {"name": "draft", "project_id": UNPUBLISHED_ID, "input_params": {"x": 1}},
            {"name": "scratch", "project_id": TRASHED_ID},
            {"name": "board_deck", "project_id": ARCHIVED_ID},
        ],
    )
    result = validate_remote(hex_emulator, folder)
    assert result.exit_code == 4
    mapping_file = folder / "hex_mappings.yml"
    assert result.stdout.splitlines() == [
        f"{mapping_file}:3: error: draft: Hex project 'Churn deep dive (draft)'"
        f" ({UNPUBLISHED_ID}) has never been published: only published apps run; hint: publish"
        " the app in Hex (Publish button, top right) [hex-unpublished]",
        f"{mapping_file}:7: error: scratch: Hex project 'Old scratchpad' ({TRASHED_ID}) is in"
        " the trash: Hex refuses to run it; hint: restore it in Hex, or remove this mapping"
        " [hex-trashed]",
        f"{mapping_file}:10: warning: board_deck: Hex project '2024 board deck' ({ARCHIVED_ID})"
        " is archived (it still runs) [hex-archived]",
        f"3 mapped Hex projects (3 in {mapping_file}, 0 from dbt exposures): 2 errors, 1 warning",
    ]
    # No dryRun for a project Hex would refuse anyway.
    assert "RunProject" not in [entry["operation"] for entry in hex_emulator.journal()]


def test_only_an_archived_project_is_a_warning_and_exits_0(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    folder = project_with(tmp_path, [{"name": "board_deck", "project_id": ARCHIVED_ID}])
    result = validate_remote(hex_emulator, folder, "--json")
    assert result.exit_code == 0
    assert [f["code"] for f in findings(result)] == ["hex-archived"]


def test_inputs_the_app_does_not_have_are_hex_rejected_by_the_dry_run(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = hex_emulator_factory(
        scenario=default_scenario().with_settings(unknown_inputs="reject")
    )
    folder = project_with(
        tmp_path,
        [
            {"name": "health", "project_id": CUSTOMER_HEALTH_ID, "input_params": {"regoin": "EU"}},
            {
                "name": "health_ok",
                "project_id": CUSTOMER_HEALTH_ID,
                "input_params": {"region": "EU"},
            },
        ],
    )
    result = validate_remote(emulator, folder, "--json")
    assert result.exit_code == 4
    (finding,) = findings(result)
    assert finding["code"] == "hex-rejected"
    assert finding["line"] == 3
    assert finding["message"].startswith("health: a dryRun was refused: POST ")
    assert "regoin" in finding["message"]
    assert "HTTP 422" in finding["message"]
    assert emulator.runs() == []


def test_legacy_input_error_bodies_name_the_unknown_inputs_too(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emulator = hex_emulator_factory(
        scenario=default_scenario().with_settings(
            unknown_inputs="reject", input_error_shape="legacy"
        )
    )
    folder = project_with(
        tmp_path,
        [{"name": "health", "project_id": CUSTOMER_HEALTH_ID, "input_params": {"regoin": "EU"}}],
    )
    result = validate_remote(emulator, folder, "--json")
    assert result.exit_code == 4
    (finding,) = findings(result)
    assert finding["code"] == "hex-rejected"
    assert "unknown input params: regoin" in finding["message"]


def test_a_token_hex_refuses_stops_the_checks_with_one_finding(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    scenario = dataclasses.replace(default_scenario(), tokens=(TokenSpec("hxtp_someone_else"),))
    emulator = hex_emulator_factory(scenario=scenario)
    folder = project_with(
        tmp_path,
        [
            {"name": "health", "project_id": CUSTOMER_HEALTH_ID},
            {"name": "finance", "project_id": FINANCE_OVERVIEW_ID},
        ],
    )
    result = validate_remote(emulator, folder, "--json")
    assert result.exit_code == 4
    (finding,) = findings(result)
    assert finding["code"] == "hex-refused"
    assert finding["message"].startswith("health: Hex refused the token: ")
    assert "HTTP 401" in finding["message"]
    assert "HEX_API_TOKEN" in finding["hint"]
    assert len(emulator.journal()) == 1


def test_a_token_without_the_run_scope_is_refused_at_the_dry_run(
    hex_emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    scenario = dataclasses.replace(
        default_scenario(), tokens=(TokenSpec(TOKEN, scopes=frozenset({"read"})),)
    )
    emulator = hex_emulator_factory(scenario=scenario)
    folder = project_with(
        tmp_path,
        [{"name": "health", "project_id": CUSTOMER_HEALTH_ID, "input_params": {"region": "EU"}}],
    )
    result = validate_remote(emulator, folder, "--json")
    assert result.exit_code == 4
    (finding,) = findings(result)
    assert finding["code"] == "hex-refused"
    assert "HTTP 403" in finding["message"]


def test_hex_out_of_reach_is_one_finding_and_exits_4(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    folder = project_with(tmp_path, [{"name": "health", "project_id": CUSTOMER_HEALTH_ID}])
    hex_emulator.inject_faults("GetProject", sequence=["drop", "drop", "drop", "drop", "drop"])
    hex_emulator.inject_faults("*", rate=1.0, fault={"kind": "drop"}, seed=1)
    result = validate_remote(hex_emulator, folder, "--json")
    assert result.exit_code == 4
    (finding,) = findings(result)
    assert finding["code"] == "hex-refused"
    assert finding["message"].startswith("health: Hex could not be asked: ")


def test_without_a_token_remote_is_a_usage_error(hex_emulator: HexEmulator, tmp_path: Path) -> None:
    folder = project_with(tmp_path, [{"name": "health", "project_id": CUSTOMER_HEALTH_ID}])
    result = CliRunner().invoke(
        main,
        [
            "validate",
            "--remote",
            "--project-dir",
            str(folder),
            "--mappings",
            str(folder / "hex_mappings.yml"),
        ],
        env={"HEX_BASE_URL": hex_emulator.url},
        catch_exceptions=False,
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ")
    assert "HEX_API_TOKEN" in result.stderr


def test_a_hex_link_in_place_of_an_id_is_not_asked_about(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    link = f"https://app.hex.tech/acme/app/{CUSTOMER_HEALTH_ID}/latest"
    folder = project_with(tmp_path, [{"name": "health", "project_id": link}])
    result = validate_remote(hex_emulator, folder, "--json")
    assert result.exit_code == 2
    assert [f["code"] for f in findings(result)] == ["project-id-is-link"]
    assert hex_emulator.journal() == []
