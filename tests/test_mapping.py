"""hex_mappings.yml: defaults, exposures, and every bad input with file, line and key."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from dbt_shapes import exposure, manifest_document, model, run_results_document, write_json

from hexdbt.cli import main
from hexdbt.dbt.artifacts import load_manifest
from hexdbt.errors import ConfigError
from hexdbt.mapping import TriggerRule, load_mappings, parse_mappings, project_id_from_url
from hexdbt.mapping.schema import mapping_json_schema

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = REPO_ROOT / "hexdbt" / "mapping" / "hex_mappings.schema.json"
PID = "5a8591dd-4039-49df-9202-96385ba3eff8"


def parse(text: str) -> object:
    return parse_mappings(textwrap.dedent(text), "hex_mappings.yml")


def test_a_full_project_reads_every_key() -> None:
    mappings = parse_mappings(
        textwrap.dedent(f"""\
        version: 1
        defaults: {{wait: false, timeout_minutes: 15, input_params: {{as_of: x, region: EMEA}}}}
        projects:
          - name: customer_health
            project_id: {PID}
            models: [customers, "tag:finance", "path:models/marts"]
            trigger: all
            require_tests: true
            input_params: {{region: AMER, day: 2026-01-31, n: 3, flag: true}}
            update_published_results: false
            use_cached_sql_results: true
            notifications: [{{type: FAILURE, userIds: [u1]}}]
            timeout_minutes: 90
            cancel_on_timeout: false
            enabled: false
          - name: second
            project_id: other
            models: orders
        """),
        "hex_mappings.yml",
    )
    first, second = mappings.projects
    assert first.trigger is TriggerRule.ALL
    assert first.require_tests
    assert first.use_cached_sql_results
    assert not first.update_published_results
    assert not first.cancel_on_timeout
    assert not first.enabled
    assert not first.wait
    assert first.timeout_minutes == 90
    # project params extend the defaults' params; YAML dates become ISO text for Hex
    assert first.params == {
        "as_of": "x",
        "region": "AMER",
        "day": "2026-01-31",
        "n": 3,
        "flag": True,
    }
    assert [s.method for s in first.models] == ["fqn", "tag", "path"]
    assert first.notifications == ({"type": "FAILURE", "userIds": ["u1"]},)
    assert first.source == "hex_mappings.yml:4"
    # documented defaults
    assert second.trigger is TriggerRule.ANY
    # params given, so not written to the published app (Hex would ignore the params)
    assert not second.update_published_results
    assert not second.use_cached_sql_results
    assert second.timeout_minutes == 15
    assert second.cancel_on_timeout
    assert second.enabled
    assert second.params == {"as_of": "x", "region": "EMEA"}
    assert second.view_id is None


BAD_FILES = [
    ("", "hex_mappings.yml: is empty"),
    ("- a\n- b\n", "hex_mappings.yml:1: expected a mapping with version and projects, got a list"),
    ("version: 1\nprojects: [\n", "hex_mappings.yml:3: not valid YAML"),
    ("projects: []\n", "hex_mappings.yml:1: missing required key 'version'"),
    ("version: 2\n", "hex_mappings.yml:1: version: version 2 is not supported"),
    ("version: 1\nproject: []\n", "hex_mappings.yml:2: project: unknown key (did you mean 'projects'?)"),
    ("version: 1\nprojects: {}\n", "hex_mappings.yml:2: projects: expected a list, got a mapping"),
    ("version: 1\ndefaults: {name: x}\n", "hex_mappings.yml:2: defaults.name: unknown key"),
    ("version: 1\ndefaults: {waitt: true}\n", "defaults.waitt: unknown key (did you mean 'wait'?)"),
    ("version: 1\nprojects:\n  - just a string\n", "hex_mappings.yml:3: projects[0]: expected a mapping, got a string"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    triger: any\n",
     "hex_mappings.yml:6: projects[0].triger: unknown key (did you mean 'trigger'?)"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    trigger: sometimes\n",
     "hex_mappings.yml:6: projects[0].trigger: expected any or all, got 'sometimes'"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    require_tests: 'yes'\n",
     "hex_mappings.yml:6: projects[0].require_tests: expected true or false, got a string 'yes'"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    timeout_minutes: -5\n",
     "projects[0].timeout_minutes: expected a positive number of minutes, got -5"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    input_params: [1]\n",
     "projects[0].input_params: expected a mapping of input name to value, got a list"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    input_params: {region: null}\n",
     "hex_mappings.yml:6: projects[0].input_params.region: null is not a value Hex accepts"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    input_params:\n      d: '{{ oops '\n",
     "hex_mappings.yml:7: projects[0].input_params.d: template syntax error"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    view_id: v1\n    input_params: {a: 1}\n",
     "projects[0].view_id: Hex refuses a view_id together with input_params"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    notifications: [{type: SOMETIMES}]\n",
     "projects[0].notifications[0].type: expected one of SUCCESS, FAILURE, ALL, got 'SOMETIMES'"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    notifications: [{type: ALL, userid: [a]}]\n",
     "projects[0].notifications[0].userid: unknown key (did you mean 'userIds'?)"),
    ("version: 1\nprojects:\n  - project_id: p\n    models: [x]\n", "hex_mappings.yml:3: projects[0]: missing required key 'name'"),
    ("version: 1\nprojects:\n  - name: a\n    models: [x]\n", "projects[0]: missing required key 'project_id'"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: 7\n    models: [x]\n", "projects[0].project_id: expected a non-empty string, got 7"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n", "projects[0]: missing required key 'models'"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: []\n", "projects[0].models: expected a non-empty list of model selectors"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [+orders]\n", "projects[0].models[0]: '+orders': graph and set operators"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: ['tags:finance']\n",
     "projects[0].models[0]: 'tags:finance': unknown selector method 'tags' (did you mean 'tag'?)"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n  - name: a\n    project_id: q\n    models: [y]\n",
     "hex_mappings.yml:6: projects[1].name: duplicate name 'a' (first used on line 3)"),
    ("version: 1\nprojects:\n  - name: a\n    name: b\n    project_id: p\n    models: [x]\n",
     "hex_mappings.yml:4: projects[0].name: duplicate key"),
    # an unknown key is named before the required key it probably meant
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    model: [x]\n",
     "hex_mappings.yml:5: projects[0].model: unknown key (did you mean 'models'?)"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    notifications: [{userIds: [a]}]\n",
     "hex_mappings.yml:6: projects[0].notifications[0]: missing required key 'type'"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    notifications: [{type: ALL, screenshotFormat: gif}]\n",
     "projects[0].notifications[0].screenshotFormat: expected png or pdf, got 'gif'"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    notifications: [{type: ALL, userIds: u1}]\n",
     "projects[0].notifications[0].userIds: expected a list, got a string"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    view_id: ' '\n",
     "hex_mappings.yml:6: projects[0].view_id: expected a non-empty string, got ' '"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    timeout_minutes: true\n",
     "projects[0].timeout_minutes: expected a positive number of minutes, got True"),
    ("version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n    input_params: {a: [1, {b: null}]}\n",
     "hex_mappings.yml:6: projects[0].input_params.a[1].b: null is not a value Hex accepts"),
    ("version: 1\ndefaults: []\n", "hex_mappings.yml:2: defaults: expected a mapping, got a list"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), BAD_FILES)
def test_bad_mapping_files_name_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_mappings(text, "hex_mappings.yml")
    assert expected in str(caught.value)
    assert caught.value.exit_code == 2


def test_missing_and_unreadable_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping file not found"):
        load_mappings(tmp_path / "nope.yml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_mappings(tmp_path)
    (tmp_path / "latin1.yml").write_bytes(b"version: 1 # caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_mappings(tmp_path / "latin1.yml")


def _project_with_artifacts(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "target").mkdir(parents=True)
    (project / "dbt_project.yml").write_text("name: shop\n", encoding="utf-8")
    write_json(project / "target" / "manifest.json", manifest_document([model("orders")]))
    write_json(
        project / "target" / "run_results.json",
        run_results_document({"model.shop.orders": "success"}),
    )
    return project


def test_plan_command_exits_2_with_file_line_and_did_you_mean(tmp_path: Path) -> None:
    project = _project_with_artifacts(tmp_path)
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [orders]\n    wiat: true\n"
    )
    result = CliRunner().invoke(
        main, ["plan", "--project-dir", str(project), "--mappings", str(bad)]
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"Error: {bad}:6: projects[0].wiat: unknown key (did you mean 'wait'?)"
    )


def test_plan_command_reads_hexdbt_mappings_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project_with_artifacts(tmp_path)
    monkeypatch.setenv("HEXDBT_MAPPINGS", str(tmp_path / "elsewhere.yml"))
    result = CliRunner().invoke(main, ["plan", "--project-dir", str(project)])
    assert result.exit_code == 2
    assert f"{tmp_path / 'elsewhere.yml'}: mapping file not found" in result.output


def test_plan_command_without_any_mapping_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project_with_artifacts(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["plan", "--project-dir", str(project)])
    assert result.exit_code == 2
    assert "no mappings: hex_mappings.yml does not exist and no dbt exposure" in result.output


def test_a_project_dir_without_dbt_project_is_a_config_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["plan", "--project-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert f"--project-dir {tmp_path}: no dbt_project.yml there" in result.output


# ----------------------------------------------------------------------------------------------
# Exposures


@pytest.mark.parametrize(
    ("url", "project_id"),
    [
        (f"https://app.hex.tech/acme/app/{PID}/latest", PID),
        (f"https://app.hex.tech/acme/hex/{PID}/draft/logic", PID),
        (f"https://eu.hex.tech/acme/app/Customer-health-{PID}/latest?tab=1", PID),
        (f"https://app.hex.tech/acme/app/{PID.upper()}", PID),
        (f"https://example.com/acme/app/{PID}/latest", None),
        ("https://app.hex.tech/acme/home", None),
        ("not a url", None),
        (None, None),
    ],
)
def test_project_id_from_hex_app_links(url: str | None, project_id: str | None) -> None:
    assert project_id_from_url(url) == project_id


def _manifest_with_exposures(tmp_path: Path, *exposures: dict[str, object]) -> object:
    nodes = [model("customers", "marts/core"), model("orders", "marts/finance")]
    return load_manifest(
        write_json(tmp_path / "manifest.json", manifest_document(nodes, list(exposures)))
    )


def test_exposures_declare_mappings_by_meta_or_by_url(tmp_path: Path) -> None:
    manifest = _manifest_with_exposures(
        tmp_path,
        exposure(
            "kpis",
            ["model.shop.customers", "model.shop.orders", "source.shop.raw.x"],
            hex_meta={
                "project_id": "meta-id",
                "trigger": "all",
                "input_params": {"a": "{{ invocation.id }}"},
            },
        ),
        exposure(
            "by_url", ["model.shop.orders"], url=f"https://app.hex.tech/acme/app/{PID}/latest"
        ),
        exposure("not_hex", ["model.shop.orders"], url="https://lookerstudio.google.com/x"),
    )
    mappings = load_mappings(None, manifest)  # type: ignore[arg-type]
    assert [m.name for m in mappings] == ["kpis", "by_url"]
    kpis = mappings.by_name("kpis")
    assert kpis.project_id == "meta-id"
    assert kpis.trigger is TriggerRule.ALL
    assert [s.value for s in kpis.models] == ["model.shop.customers", "model.shop.orders"]
    assert kpis.params == {"a": "{{ invocation.id }}"}
    assert kpis.source == "exposure kpis"
    assert mappings.by_name("by_url").project_id == PID


def test_the_yaml_file_wins_over_an_exposure_of_the_same_project(tmp_path: Path) -> None:
    manifest = _manifest_with_exposures(
        tmp_path,
        exposure("kpis", ["model.shop.orders"], hex_meta={"project_id": PID}),
        exposure("customer_health", ["model.shop.orders"], hex_meta={"project_id": "other"}),
    )
    mapping_file = tmp_path / "hex_mappings.yml"
    mapping_file.write_text(
        f"version: 1\nprojects:\n  - {{name: customer_health, project_id: {PID}, models: [customers]}}\n"
    )
    mappings = load_mappings(mapping_file, manifest)  # type: ignore[arg-type]
    assert [(m.name, m.project_id) for m in mappings] == [
        ("customer_health", PID),
        ("exposure:customer_health", "other"),  # a name clash keeps both, renamed
    ]
    assert mappings.overridden_exposures == ("kpis",)


@pytest.mark.parametrize(
    ("hex_meta", "depends_on", "expected"),
    [
        ({"trigger": "any"}, ["model.shop.orders"], "meta.hex: no project_id, and the url is not a Hex app link"),
        ({"project_id": "p", "triger": "all"}, ["model.shop.orders"], "meta.hex.triger: unknown key (did you mean 'trigger'?)"),
        ({"project_id": 5}, ["model.shop.orders"], "meta.hex.project_id: expected a non-empty string, got 5"),
        ("p", ["model.shop.orders"], "meta.hex: expected a mapping, got a string"),
        ({"project_id": "p"}, ["source.shop.raw.x"], "depends_on: declares a Hex app but depends on no model"),
    ],
)  # fmt: skip
def test_bad_exposure_meta_is_a_config_error_naming_the_exposure(
    tmp_path: Path, hex_meta: object, depends_on: list[str], expected: str
) -> None:
    manifest = _manifest_with_exposures(tmp_path, exposure("kpis", depends_on, hex_meta=hex_meta))
    with pytest.raises(ConfigError) as caught:
        load_mappings(None, manifest)  # type: ignore[arg-type]
    assert "exposure kpis (models/exposures.yml)" in str(caught.value)
    assert expected in str(caught.value)


# ----------------------------------------------------------------------------------------------
# The JSON Schema for editors


def test_the_shipped_schema_is_the_one_generated_from_the_model() -> None:
    assert json.loads(SCHEMA.read_text()) == mapping_json_schema(), (
        "hex_mappings.schema.json is out of date; regenerate it with"
        " `python -m hexdbt.mapping.schema > hexdbt/mapping/hex_mappings.schema.json`"
    )


def test_the_repository_mapping_file_is_valid_for_loader_and_schema() -> None:
    import jsonschema
    import yaml

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    document = yaml.safe_load((REPO_ROOT / "hex_mappings.yml").read_text())
    assert list(validator.iter_errors(document)) == []
    assert [
        e.message
        for e in validator.iter_errors(
            {
                "version": 1,
                "projects": [{"name": "a", "project_id": "p", "models": ["x"], "triger": "all"}],
            }
        )
    ]
    mappings = load_mappings(REPO_ROOT / "hex_mappings.yml")
    assert [m.name for m in mappings] == [
        "customer_health",
        "finance_overview",
        "marketing_attribution",
    ]


def test_the_schema_ships_inside_the_package() -> None:
    from importlib.resources import files

    assert json.loads(files("hexdbt.mapping").joinpath("hex_mappings.schema.json").read_text())[
        "title"
    ]


@pytest.mark.parametrize(
    ("template", "variable"),
    [
        ("{{ env_var('HEX_API_TOKEN') }}", "HEX_API_TOKEN"),
        ("{{ env_var('HEXDBT_STATE_URL', 'none') }}", "HEXDBT_STATE_URL"),
        ('as of {{ today_utc() }} by {{ env_var("DBT_ENV_SECRET_PASSWORD") }}', "DBT_ENV_SECRET_PASSWORD"),
    ],
)  # fmt: skip
def test_a_template_reading_a_secret_is_refused_when_the_file_loads(
    template: str, variable: str
) -> None:
    """What a template renders is sent to Hex, printed by `hexdbt plan --json` and stored."""
    text = (
        "version: 1\nprojects:\n  - name: a\n    project_id: p\n    models: [x]\n"
        f"    input_params:\n      region: EMEA\n      token: {json.dumps(template)}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_mappings(text, "hex_mappings.yml")
    assert str(caught.value) == (
        f"hex_mappings.yml:8: projects[0].input_params.token: env_var({variable!r}) reads a"
        " secret: it would be sent to Hex and kept in the plan and the ledger, so templates may"
        " not read it"
    )
    assert caught.value.exit_code == 2


def test_an_exposure_template_reading_a_secret_is_refused(tmp_path: Path) -> None:
    hex_meta = {"project_id": "p", "input_params": {"t": "{{ env_var('HEX_API_TOKEN') }}"}}
    manifest = _manifest_with_exposures(
        tmp_path, exposure("kpis", ["model.shop.orders"], hex_meta=hex_meta)
    )
    with pytest.raises(
        ConfigError, match=r"meta\.hex\.input_params\.t: env_var\('HEX_API_TOKEN'\)"
    ):
        load_mappings(None, manifest)  # type: ignore[arg-type]


def test_update_published_results_with_input_params_is_refused(tmp_path: Path) -> None:
    """Hex ignores input params when it writes published results: asking for both is a mistake."""
    path = tmp_path / "hex_mappings.yml"
    path.write_text(
        "version: 1\nprojects:\n  - name: a\n    project_id: p-1\n    models: [m]\n"
        "    input_params: {region: EMEA}\n    update_published_results: true\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_mappings(path)
    assert str(caught.value) == (
        f"{path}:3: projects[0]: update_published_results is true and input params are given,"
        " but Hex ignores input params when it writes published results"
    )
    assert caught.value.hint == (
        "leave update_published_results unset (false is then sent for runs with params),"
        " or drop the input params"
    )
    assert caught.value.exit_code == 2


def test_without_params_results_are_published_by_default(tmp_path: Path) -> None:
    path = tmp_path / "hex_mappings.yml"
    path.write_text("version: 1\nprojects:\n  - name: a\n    project_id: p-1\n    models: [m]\n")
    (project,) = load_mappings(path).projects
    assert project.update_published_results
