"""`hexdbt validate` against manifest.json: one test per finding, with file, line and exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from dbt_shapes import exposure, manifest_document, model, write_json

from hexdbt.cli import main
from hexdbt.validate import Finding, Severity, exit_code_of, in_file_order

CUSTOMERS_APP = "5a8591dd-4039-49df-9202-96385ba3eff8"
FINANCE_APP = "7c2e4b10-9d8a-4f3e-b6a1-2f0c3d9e8a11"
KPI_APP = "e8a41c7d-3b52-4f96-8d07-9c1a2b3e4f53"

NODES = [
    model("customers", "marts/core", tags=("core",)),
    model("orders", "marts/core", tags=("core",)),
    model("revenue", "marts/finance", tags=("finance",)),
    model("stg_orders", "staging"),
]

EXPOSURES_YML = """\
version: 2
exposures:
  - name: executive_kpis
    type: application
    url: https://app.hex.tech/acme/app/e8a41c7d-3b52-4f96-8d07-9c1a2b3e4f53/latest
    depends_on: [ref('revenue')]
    owner: {name: Analytics}

  - name: broken_app
    type: application
    meta:
      hex: not-a-mapping
    depends_on: [ref('orders')]
    owner: {name: Analytics}
"""


def dbt_project(
    folder: Path,
    mapping: str | None,
    *,
    exposures: list[dict[str, Any]] | None = None,
    with_manifest: bool = True,
) -> Path:
    (folder / "dbt_project.yml").write_text("name: shop\nversion: '1.0'\nprofile: shop\n")
    (folder / "models").mkdir(exist_ok=True)
    (folder / "models" / "exposures.yml").write_text(EXPOSURES_YML)
    if with_manifest:
        (folder / "target").mkdir(exist_ok=True)
        write_json(folder / "target" / "manifest.json", manifest_document(NODES, exposures))
    if mapping is not None:
        (folder / "hex_mappings.yml").write_text(mapping)
    return folder


def validate(folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(
        main,
        ["validate", "--project-dir", str(folder), *args],
        env={"HEXDBT_MAPPINGS": str(folder / "hex_mappings.yml"), **(env or {})},
        catch_exceptions=False,
    )


def findings_of(result: Result) -> list[dict[str, Any]]:
    document = json.loads(result.stdout)
    findings: list[dict[str, Any]] = document["findings"]
    return findings


def only(result: Result, code: str) -> dict[str, Any]:
    matching = [finding for finding in findings_of(result) if finding["code"] == code]
    assert len(matching) == 1, findings_of(result)
    return matching[0]


CLEAN = f"""\
version: 1
projects:
  - name: customer_health
    project_id: {CUSTOMERS_APP}
    models: [customers]
  - name: finance
    project_id: {FINANCE_APP}
    models: ["tag:finance", "path:models/marts/core/orders.sql"]
    input_params:
      as_of: "{{{{ today_utc() }}}}"
"""


def test_a_clean_mapping_has_no_findings_and_exits_0(tmp_path: Path) -> None:
    result = validate(dbt_project(tmp_path, CLEAN))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        f"2 mapped Hex projects (2 in {tmp_path / 'hex_mappings.yml'}, 0 from dbt exposures):"
        " no problems found"
    )


def test_json_document_lists_findings_with_file_and_line(tmp_path: Path) -> None:
    folder = dbt_project(tmp_path, CLEAN.replace("[customers]", "[custmers]"))
    result = validate(folder, "--json")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["exitCode"] == 2
    assert document["projects"] == 2
    assert document["mappingsFile"] == str(folder / "hex_mappings.yml")
    assert document["manifestChecked"] is True
    assert document["remote"] is False
    assert document["findings"] == [
        {
            "severity": "error",
            "code": "selector-typo",
            "file": str(folder / "hex_mappings.yml"),
            "line": 5,
            "message": "customer_health: selector 'custmers' matches no model"
            " (did you mean 'customers'?)",
            "hint": None,
        }
    ]


@pytest.mark.parametrize(
    ("selector", "suggestion"),
    [
        ("custmers", "customers"),
        ("tag:finanse", "tag:finance"),
        ("path:models/mart/core", "path:models/marts/core"),
        ("model.shop.ordrs", "model.shop.orders"),
        ("package:shopp", "package:shop"),
        ("marts.cor", "marts.core"),
    ],
)
def test_a_selector_that_looks_like_a_typo_is_an_error_with_a_suggestion(
    tmp_path: Path, selector: str, suggestion: str
) -> None:
    mapping = CLEAN.replace("models: [customers]", f'models: ["{selector}"]')
    result = validate(dbt_project(tmp_path, mapping))
    assert result.exit_code == 2
    line = result.stdout.splitlines()[0]
    assert line == (
        f"{tmp_path / 'hex_mappings.yml'}:5: error: customer_health: selector {selector!r}"
        f" matches no model (did you mean {suggestion!r}?) [selector-typo]"
    )


def test_the_line_of_a_selector_in_a_block_list_is_its_own(tmp_path: Path) -> None:
    mapping = CLEAN.replace("models: [customers]", "models:\n      - customers\n      - ordres")
    finding = only(validate(dbt_project(tmp_path, mapping), "--json"), "selector-typo")
    assert finding["line"] == 7


def test_a_selector_matching_nothing_beside_others_that_match_is_a_warning(
    tmp_path: Path,
) -> None:
    mapping = CLEAN.replace("[customers]", '[customers, "tag:no_such_tag_anywhere"]')
    result = validate(dbt_project(tmp_path, mapping))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"{tmp_path / 'hex_mappings.yml'}:5: warning: customer_health: selector"
        " 'tag:no_such_tag_anywhere' matches no model in manifest.json [selector-no-match]",
        f"2 mapped Hex projects (2 in {tmp_path / 'hex_mappings.yml'}, 0 from dbt exposures):"
        " 0 errors, 1 warning",
    ]


def test_a_project_whose_selectors_all_match_nothing_is_an_error(tmp_path: Path) -> None:
    mapping = CLEAN.replace("[customers]", '["tag:nightly_exports", "path:models/legacy"]')
    result = validate(dbt_project(tmp_path, mapping), "--json")
    assert result.exit_code == 2
    finding = only(result, "project-no-match")
    assert finding["line"] == 3
    assert finding["message"] == (
        "customer_health: no model in manifest.json matches 'tag:nightly_exports',"
        " 'path:models/legacy': this Hex project would never be triggered"
    )


def test_a_project_id_that_is_not_a_uuid_is_a_warning(tmp_path: Path) -> None:
    mapping = CLEAN.replace(CUSTOMERS_APP, "customer-health")
    result = validate(dbt_project(tmp_path, mapping), "--json")
    assert result.exit_code == 0
    finding = only(result, "project-id-format")
    assert finding["severity"] == "warning"
    assert finding["line"] == 3
    assert "'customer-health' does not look like a Hex project id" in finding["message"]


def test_a_min_interval_longer_than_the_freshness_target_is_a_warning(tmp_path: Path) -> None:
    mapping = CLEAN.replace(
        "    models: [customers]\n",
        "    models: [customers]\n    min_interval_minutes: 90\n    freshness_minutes: 60\n",
    )
    result = validate(dbt_project(tmp_path, mapping), "--json")
    assert result.exit_code == 0
    finding = only(result, "interval-exceeds-freshness")
    assert (finding["severity"], finding["line"]) == ("warning", 3)
    assert finding["message"] == (
        "customer_health: min_interval_minutes 90 exceeds freshness_minutes 60: the app will be"
        " past its target after a refresh that comes just after a run"
    )


def test_a_hex_link_as_project_id_is_an_error_naming_the_id_inside(tmp_path: Path) -> None:
    link = f"https://app.hex.tech/acme/app/Customer-health-{CUSTOMERS_APP}/latest"
    mapping = CLEAN.replace(CUSTOMERS_APP, link)
    result = validate(dbt_project(tmp_path, mapping))
    assert result.exit_code == 2
    assert (
        f"hex_mappings.yml:3: error: customer_health: project_id is a Hex link, not an id;"
        f" hint: use project_id: {CUSTOMERS_APP} [project-id-is-link]"
    ) in result.stdout


def test_one_project_mapped_twice_with_the_same_params_is_a_warning(tmp_path: Path) -> None:
    mapping = (
        CLEAN + f"  - name: health_again\n    project_id: {CUSTOMERS_APP}\n    models: [orders]\n"
    )
    result = validate(dbt_project(tmp_path, mapping), "--json")
    assert result.exit_code == 0
    finding = only(result, "duplicate-project")
    assert finding["line"] == 11
    assert finding["message"] == (
        f"health_again: Hex project {CUSTOMERS_APP} is also mapped by customer_health"
        f" ({tmp_path / 'hex_mappings.yml'}:3) with the same input params: it runs once per dbt"
        " invocation"
    )


def test_one_project_mapped_twice_with_other_params_is_fine(tmp_path: Path) -> None:
    mapping = CLEAN + (
        f"  - name: health_eu\n    project_id: {CUSTOMERS_APP}\n    models: [orders]\n"
        "    input_params: {region: EU}\n"
    )
    result = validate(dbt_project(tmp_path, mapping))
    assert result.exit_code == 0
    assert result.stdout.strip().endswith(" 0 from dbt exposures): no problems found")
    assert result.stdout.startswith("3 mapped Hex projects (3 in ")


def test_one_project_mapped_twice_with_conflicting_options_is_an_error(tmp_path: Path) -> None:
    mapping = CLEAN + (
        f"  - name: health_again\n    project_id: {CUSTOMERS_APP}\n    models: [orders]\n"
        "    timeout_minutes: 5\n    wait: false\n"
    )
    result = validate(dbt_project(tmp_path, mapping), "--json")
    assert result.exit_code == 2
    finding = only(result, "duplicate-conflict")
    assert finding["line"] == 11
    assert "other options (wait True vs False; timeout_minutes 60.0 vs 5.0)" in finding["message"]


def test_a_template_that_does_not_render_is_a_warning(tmp_path: Path) -> None:
    mapping = CLEAN.replace("{{ today_utc() }}", "{{ env_var('HEXDBT_TEST_REGION') }}")
    result = validate(dbt_project(tmp_path, mapping), "--json")
    assert result.exit_code == 0
    finding = only(result, "template-render")
    assert finding["line"] == 6
    assert finding["message"] == (
        "finance: does not render with a sample invocation: input param 'as_of': env var"
        " 'HEXDBT_TEST_REGION' is not set and no default was given"
    )


def test_the_same_template_renders_once_the_variable_is_set(tmp_path: Path) -> None:
    mapping = CLEAN.replace("{{ today_utc() }}", "{{ env_var('HEXDBT_TEST_REGION') }}")
    result = validate(dbt_project(tmp_path, mapping), env={"HEXDBT_TEST_REGION": "EU"})
    assert result.exit_code == 0
    assert "no problems found" in result.stdout


def test_a_mapping_the_loader_refuses_is_one_error_with_its_line(tmp_path: Path) -> None:
    mapping = CLEAN.replace("    models: [customers]", "    models: [customers]\n    triger: all")
    result = validate(dbt_project(tmp_path, mapping))
    assert result.exit_code == 2
    assert result.stdout.splitlines()[0] == (
        f"{tmp_path / 'hex_mappings.yml'}:6: error: projects[0].triger: unknown key"
        " (did you mean 'trigger'?) [mapping-invalid]"
    )


def test_invalid_yaml_is_an_error_with_its_line(tmp_path: Path) -> None:
    result = validate(dbt_project(tmp_path, "version: 1\nprojects:\n  - name: [oops\n"), "--json")
    assert result.exit_code == 2
    finding = only(result, "mapping-invalid")
    assert finding["line"] == 4
    assert finding["message"].startswith("not valid YAML")


def test_a_missing_mapping_file_given_explicitly_is_an_error(tmp_path: Path) -> None:
    folder = dbt_project(tmp_path, None)
    result = validate(folder, "--mappings", str(tmp_path / "nope.yml"))
    assert result.exit_code == 2
    assert result.stdout.splitlines()[0] == (
        f"{tmp_path / 'nope.yml'}: error: mapping file not found; hint: create it (see"
        " docs/mapping.md) or point --mappings / HEXDBT_MAPPINGS at it [mapping-unreadable]"
    )


def test_no_mapping_file_and_no_hex_exposure_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = dbt_project(tmp_path, None)
    result = CliRunner().invoke(
        main, ["validate", "--project-dir", str(folder), "--json"], catch_exceptions=False
    )
    assert result.exit_code == 2
    assert only(result, "no-mappings")["message"] == (
        "no mapping file, and no dbt exposure declares a Hex project"
    )


def test_exposures_alone_are_validated_when_there_is_no_mapping_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = dbt_project(
        tmp_path,
        None,
        exposures=[
            exposure(
                "executive_kpis",
                ["model.shop.revenue"],
                url=f"https://app.hex.tech/acme/app/{KPI_APP}/latest",
            )
        ],
    )
    result = CliRunner().invoke(
        main, ["validate", "--project-dir", str(folder)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == (
        "1 mapped Hex project (no mapping file, 1 from dbt exposures): no problems found"
    )


def test_a_malformed_exposure_meta_hex_is_an_error_at_the_exposure_line(tmp_path: Path) -> None:
    folder = dbt_project(
        tmp_path,
        CLEAN,
        exposures=[
            exposure("broken_app", ["model.shop.orders"], hex_meta="not-a-mapping"),
            exposure("unlinked", ["model.shop.orders"], hex_meta={"trigger": "all"}),
            exposure(
                "typo_app", ["model.shop.orders"], hex_meta={"project_id": KPI_APP, "wiat": 1}
            ),
        ],
    )
    result = validate(folder)
    assert result.exit_code == 2
    exposures_file = folder / "models" / "exposures.yml"
    # Sorted by file and line; the two exposures not in exposures.yml keep the manifest's order.
    assert result.stdout.splitlines() == [
        f"{exposures_file}: error: exposure unlinked: meta.hex: no project_id, and the url is"
        " not a Hex app link; hint: see docs/mapping.md (exposures) [exposure-invalid]",
        f"{exposures_file}: error: exposure typo_app: meta.hex.wiat: unknown key (did you mean"
        " 'wait'?); hint: see docs/mapping.md (exposures) [exposure-invalid]",
        f"{exposures_file}:9: error: exposure broken_app: meta.hex: expected a mapping, got a"
        " string; hint: see docs/mapping.md (exposures) [exposure-invalid]",
        f"2 mapped Hex projects (2 in {folder / 'hex_mappings.yml'}, 0 from dbt exposures):"
        " 3 errors, 0 warnings",
    ]


def test_without_a_manifest_the_file_is_still_checked_and_a_warning_says_so(
    tmp_path: Path,
) -> None:
    folder = dbt_project(tmp_path, CLEAN.replace(CUSTOMERS_APP, "bad-id"), with_manifest=False)
    result = validate(folder)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"{folder / 'hex_mappings.yml'}: warning: no manifest.json in {folder / 'target'}:"
        " selectors were not checked against the dbt project; hint: run `dbt parse` (or any dbt"
        " command) first, or pass --project-dir [manifest-missing]"
    )
    assert "[project-id-format]" in lines[1]


def test_a_project_dir_without_dbt_project_yml_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["validate", "--project-dir", str(tmp_path)], catch_exceptions=False
    )
    assert result.exit_code == 2
    assert result.stderr == f"Error: --project-dir {tmp_path}: no dbt_project.yml there\n"


def test_a_corrupt_manifest_is_an_artifact_error(tmp_path: Path) -> None:
    folder = dbt_project(tmp_path, CLEAN)
    (folder / "target" / "manifest.json").write_text("{not json")
    result = validate(folder, "--json")
    assert result.exit_code == 3
    assert json.loads(result.stdout)["exitCode"] == 3
    assert result.stderr.startswith("Error: ")


def test_the_exit_code_is_the_highest_among_findings() -> None:
    def finding(severity: Severity, code: str) -> Finding:
        return Finding(severity, code, "hex_mappings.yml", 3, "m")

    assert exit_code_of([]) == 0
    assert exit_code_of([finding(Severity.WARNING, "hex-archived")]) == 0
    assert exit_code_of([finding(Severity.ERROR, "selector-typo")]) == 2
    assert (
        exit_code_of(
            [finding(Severity.ERROR, "selector-typo"), finding(Severity.ERROR, "hex-trashed")]
        )
        == 4
    )
    assert finding(Severity.ERROR, "hex-trashed").render() == (
        "hex_mappings.yml:3: error: m [hex-trashed]"
    )


def test_findings_are_shown_in_file_order() -> None:
    later = Finding(Severity.ERROR, "a", "f.yml", 20, "later")
    earlier = Finding(Severity.WARNING, "b", "f.yml", 3, "earlier")
    whole_file = Finding(Severity.WARNING, "c", "f.yml", None, "file")
    assert in_file_order([later, earlier, whole_file]) == [whole_file, earlier, later]


def test_a_template_reading_the_token_is_an_error_naming_the_variable(tmp_path: Path) -> None:
    mapping = CLEAN.replace("{{ today_utc() }}", "{{ env_var('HEX_API_TOKEN') }}")
    result = validate(dbt_project(tmp_path, mapping), env={"HEX_API_TOKEN": "hxtp_validate_secret"})
    assert result.exit_code == 2
    assert result.stdout.splitlines()[0] == (
        f"{tmp_path / 'hex_mappings.yml'}:10: error: projects[1].input_params.as_of:"
        " env_var('HEX_API_TOKEN') reads a secret: it would be sent to Hex and kept in the plan"
        " and the ledger, so templates may not read it [mapping-invalid]"
    )
    assert "hxtp_validate_secret" not in result.output


def test_a_template_computing_a_secret_name_is_an_error_too(tmp_path: Path) -> None:
    mapping = CLEAN.replace("{{ today_utc() }}", "{{ env_var('DBT_ENV_SECRET_' ~ 'PASSWORD') }}")
    result = validate(
        dbt_project(tmp_path, mapping), "--json", env={"DBT_ENV_SECRET_PASSWORD": "pw-secret"}
    )
    assert result.exit_code == 2
    finding = only(result, "template-secret")
    assert (finding["severity"], finding["line"]) == ("error", 6)
    assert finding["message"] == (
        "finance: input param 'as_of': env_var('DBT_ENV_SECRET_PASSWORD') reads a secret: it would"
        " be sent to Hex and kept in the plan and the ledger, so templates may not read it"
    )
    assert "pw-secret" not in result.output


def test_without_a_manifest_selectors_other_than_names_are_warned_about(tmp_path: Path) -> None:
    """A plan from run_results.json alone skips their projects: validate says so, line by line."""
    folder = dbt_project(tmp_path, CLEAN, with_manifest=False)
    result = validate(folder)
    assert result.exit_code == 0, result.output
    mapping_file = folder / "hex_mappings.yml"
    warnings = [line for line in result.stdout.splitlines() if "[selector-needs-manifest]" in line]
    hint = (
        "hint: keep target/manifest.json beside run_results.json, or select by model name"
        " [selector-needs-manifest]"
    )
    assert warnings == [
        f"{mapping_file}:{line}: warning: finance: selector {text!r} needs manifest.json:"
        f" without it this project is skipped; {hint}"
        for line, text in ((8, "tag:finance"), (8, "path:models/marts/core/orders.sql"))
    ]
