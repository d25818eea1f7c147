"""Hostile inputs end with one line and the documented exit code, quickly: never a traceback, a
hang or a gigabyte of output."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from dbt_shapes import manifest_document, model, run_results_document, write_json

from hexdbt.cli import main
from hexdbt.errors import ConfigError
from hexdbt.ledger import LEDGER_FILENAME
from hexdbt.mapping import parse_mappings
from hexdbt.mapping.templates import MAX_RENDERED_CHARS, TemplateError, render_value
from hexdbt.settings import resolve_state_dir

BILLION_LAUGHS = """version: 1
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
projects: *g
"""

SELF_ALIAS = """version: 1
projects: &projects
  - name: app
    project_id: 5a8591dd-4039-49df-9202-96385ba3eff8
    models: *projects
"""


def test_a_yaml_alias_bomb_is_refused_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"^hex_mappings.yml:\d+: .*aliases repeat blocks more"):
        parse_mappings(BILLION_LAUGHS, "hex_mappings.yml")
    assert time.monotonic() - started < 5  # it would take minutes and gigabytes otherwise


def test_an_alias_inside_its_own_anchor_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_mappings(SELF_ALIAS, "hex_mappings.yml")
    assert str(caught.value) == (
        "hex_mappings.yml:2: projects[0].models: an alias refers to the block it is in"
        " (it never ends)"
    )


def test_a_few_aliases_are_still_fine() -> None:
    text = """version: 1
projects:
  - name: a
    project_id: 5a8591dd-4039-49df-9202-96385ba3eff8
    models: &marts [customers, orders]
  - name: b
    project_id: 7c2e4b10-9d8a-4f3e-b6a1-2f0c3d9e8a11
    models: *marts
"""
    mappings = parse_mappings(text, "hex_mappings.yml")
    assert [m.name for m in mappings.projects] == ["a", "b"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 'a' * 10**9 }}", "repeating a value 1000000000 times is too big"),
        ("{{ [1] * 10**8 }}", "repeating a value 100000000 times is too big"),
        ("{{ 2 ** 100000 }}", "a power of 100000 is too big"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            "steps to render",
        ),
        ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "it calls itself without end"),
        ("{{ 'a' * 60000 }}{{ 'b' * 60000 }}", f"(at most {MAX_RENDERED_CHARS})"),
    ],
)
def test_a_template_is_bounded_in_size_and_work(source: str, message: str) -> None:
    started = time.monotonic()
    with pytest.raises(TemplateError, match="template too big") as caught:
        render_value(source, {})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert time.monotonic() - started < 5


def test_ordinary_templates_render_as_before() -> None:
    context = {"invocation": {"started_at": "2026-01-31T08:00:00Z"}}
    assert render_value("{{ invocation.started_at[:10] }}", context) == "2026-01-31"
    assert render_value("{% for i in range(3) %}{{ i }}{% endfor %}", context) == "012"


def _target(tmp_path: Path) -> Path:
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "dbt_project.yml").write_text("name: shop\nversion: '1.0'\nprofile: shop\n")
    models = [model("customers", "marts")]
    write_json(target / "manifest.json", manifest_document(models))
    write_json(
        target / "run_results.json",
        run_results_document({node["unique_id"]: "success" for node in models}),
    )
    (tmp_path / "hex_mappings.yml").write_text(
        "version: 1\nprojects:\n  - name: app\n"
        "    project_id: 5a8591dd-4039-49df-9202-96385ba3eff8\n    models: [customers]\n"
    )
    return target


@pytest.mark.parametrize("artifact", ["run_results.json", "manifest.json"])
def test_an_artifact_nested_100000_levels_deep_is_an_artifact_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, artifact: str
) -> None:
    target = _target(tmp_path)
    (target / artifact).write_text("[" * 100_000 + "]" * 100_000)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["plan", "--project-dir", str(tmp_path)])
    assert result.exit_code == 3, result.output
    assert f"{target / artifact}: " in result.output
    assert "nested too deeply" in result.output
    assert "Traceback" not in result.output


def test_status_json_on_an_unreadable_ledger_prints_one_error_document(tmp_path: Path) -> None:
    ledger = resolve_state_dir() / LEDGER_FILENAME
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_bytes(b"this is not a SQLite database" * 100)
    result = CliRunner().invoke(main, ["status", "--json"])
    assert result.exit_code == 7
    document = json.loads(result.stdout)
    assert document["error"]["type"] == "StateError"
    assert str(ledger) in document["error"]["message"]


def test_status_names_a_ledger_row_that_cannot_be_read(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status"])  # creates the ledger
    assert result.exit_code == 0, result.output
    path = resolve_state_dir() / LEDGER_FILENAME
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO invocations (invocation_id, command, source, first_seen_at) VALUES ('inv', 'build', 'run', 0)"
        )
        db.execute(
            "INSERT INTO triggers (trigger_key, invocation_id, name, project_id, base_url,"
            " request_json, options_json, state, created_at, updated_at)"
            " VALUES ('k1', 'inv', 'app', 'p', 'http://x', '{not json', '{}', 'planned', 0, 0)"
        )
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 7
    assert "k1" in result.output
    assert "Traceback" not in result.output
