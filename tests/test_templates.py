"""Input params: plain values pass through, strings render in a sandbox with a documented context."""

from __future__ import annotations

import pytest

from hexdbt.mapping.templates import (
    SecretVariableError,
    TemplateError,
    build_context,
    date_add,
    render_value,
    secret_variables,
    to_date,
)

INVOCATION = {
    "id": "inv-1",
    "invocation_id": "inv-1",
    "command": "build",
    "started_at": "2026-01-31T23:30:00.123456Z",
    "generated_at": "2026-02-01T00:10:00Z",
    "dbt_version": "1.11.16",
    "vars": {"region": "EMEA", "fail_model": None},
}
MODELS = [
    {"unique_id": "model.shop.orders", "name": "orders", "status": "success", "rows_affected": 42}
]


def render(value: object, environ: dict[str, str] | None = None) -> object:
    context = build_context(
        invocation=INVOCATION,
        models=MODELS,
        project={"name": "finance", "project_id": "pid"},
        environ=environ or {},
    )
    return render_value(value, context)


@pytest.mark.parametrize(
    "value", [3, 2.5, True, False, "plain text", ["a", 1], {"k": [1, {"x": True}]}]
)
def test_plain_values_pass_through_with_their_type(value: object) -> None:
    assert render(value) == value
    assert type(render(value)) is type(value)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ invocation.started_at[:10] }}", "2026-01-31"),
        ("{{ invocation.id }}/{{ invocation.command }}", "inv-1/build"),
        ("{{ invocation.vars.region }}", "EMEA"),
        ("{{ invocation.dbt_version }}", "1.11.16"),
        ("{{ models | map(attribute='name') | join(',') }}", "orders"),
        ("{{ models[0].rows_affected }}", "42"),
        ("{{ project.name }}:{{ project.project_id }}", "finance:pid"),
        ("{{ today_utc() }}", "2026-01-31"),
        ("{{ to_date(invocation.generated_at) }}", "2026-02-01"),
        ("{{ date_add(today_utc(), days=-7) }}", "2026-01-24"),
        ("{{ date_add(invocation.generated_at, hours=1) }}", "2026-02-01T01:10:00Z"),
        ("{% if invocation.command == 'build' %}full{% else %}partial{% endif %}", "full"),
    ],
)
def test_templates_render_with_the_documented_context(template: str, expected: str) -> None:
    assert render(template) == expected


def test_templates_inside_lists_and_dicts_render_too() -> None:
    assert render({"ids": ["{{ invocation.id }}", 7]}) == {"ids": ["inv-1", 7]}


def test_env_var_reads_the_given_environment_with_or_without_default() -> None:
    assert render("{{ env_var('REGION') }}", {"REGION": "AMER"}) == "AMER"
    assert render("{{ env_var('REGION', 'EMEA') }}", {}) == "EMEA"
    assert render("{{ env_var('REGION', 'EMEA') }}", {"REGION": "APAC"}) == "APAC"
    with pytest.raises(TemplateError, match="env var 'REGION' is not set and no default was given"):
        render("{{ env_var('REGION') }}", {})


@pytest.mark.parametrize(
    ("template", "variable"),
    [
        ("{{ env_var('HEX_API_TOKEN') }}", "HEX_API_TOKEN"),
        ("{{ env_var('HEX_' ~ 'API_TOKEN', 'x') }}", "HEX_API_TOKEN"),
        ("{{ env_var('HEXDBT_STATE_URL') }}", "HEXDBT_STATE_URL"),
        ("{{ env_var('DBT_ENV_SECRET_' ~ invocation.vars.region) }}", "DBT_ENV_SECRET_EMEA"),
    ],
)
def test_env_var_refuses_secrets_even_when_set(template: str, variable: str) -> None:
    """Also a name computed in the template, which the loader cannot see."""
    environ = {"HEX_API_TOKEN": "hxtp_secret", "HEXDBT_STATE_URL": "postgresql://u:pw@h/db",
               "DBT_ENV_SECRET_EMEA": "pw"}  # fmt: skip
    with pytest.raises(SecretVariableError) as caught:
        render(template, environ)
    assert str(caught.value) == (
        f"env_var({variable!r}) reads a secret: it would be sent to Hex and kept in the plan and"
        " the ledger, so templates may not read it"
    )


@pytest.mark.parametrize(
    ("template", "secrets"),
    [
        ("{{ env_var('HEX_API_TOKEN') }}", ("HEX_API_TOKEN",)),
        ("{% if env_var('DBT_ENV_SECRET_A', '') %}{{ env_var('REGION') }}{% endif %}", ("DBT_ENV_SECRET_A",)),
        ("{{ env_var('REGION') }}", ()),
        ("{{ env_var(name) }}", ()),  # computed: refused when it renders
        ("{{ broken ", ()),  # the syntax check names this one
    ],
)  # fmt: skip
def test_secret_variables_finds_literal_names(template: str, secrets: tuple[str, ...]) -> None:
    assert secret_variables(template) == secrets


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ invocation.__class__ }}",
        "{{ env_var.__globals__ }}",
        "{{ models.append(1) }}",  # the immutable sandbox refuses to mutate the context
        "{{ invocation.vars.update({'a': 1}) }}",
    ],
)
def test_the_sandbox_refuses_python_internals_and_mutation(template: str) -> None:
    with pytest.raises(TemplateError, match=r"^not allowed in a template: "):
        render(template)


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{{ no_such_name }}", "'no_such_name' is undefined"),
        ("{{ invocation.nope }}", "has no attribute 'nope'"),
        ("{% import 'os' as os %}{{ os }}", "no loader"),
        ("{% include '/etc/passwd' %}", "no loader"),
        ("{{ 1 / 0 }}", "ZeroDivisionError"),
        ("{{ to_date('yesterday') }}", "'yesterday' is not an ISO date"),
    ],
)
def test_template_errors_are_one_line_reasons(template: str, problem: str) -> None:
    with pytest.raises(TemplateError) as caught:
        render(template)
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_date_helpers_are_utc() -> None:
    assert to_date("2026-01-31T23:30:00-02:00") == "2026-02-01"
    assert date_add("2026-03-01", days=-1) == "2026-02-28"
    with pytest.raises(TemplateError, match="is not a date"):
        to_date(5)
