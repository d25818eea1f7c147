"""Input params as sandboxed Jinja templates.

Plain YAML values pass through with their type; strings containing ``{{`` or ``{%`` are rendered
in jinja2's immutable sandbox with StrictUndefined (an unknown name is an error, not ""). The
sandbox refuses attribute access to Python internals (``''.__class__``), and there is no import.

The context (documented in docs/mapping.md):

    invocation   id, invocation_id, command, started_at, generated_at, dbt_version, vars
    models       the mapping's matched models that ran: a list of {unique_id, name, status,
                 started_at, completed_at, execution_time_s, rows_affected, message}
    project      name, project_id of the mapping
    env_var(name, default)   like dbt's: a missing variable without a default is an error;
                             secrets (is_secret_variable) are refused
    today_utc()  the invocation's start date, YYYY-MM-DD (the template's "today" is the build's)
    date_add(date_or_datetime, days=0, hours=0)   ISO date arithmetic in UTC
    to_date(text) -> YYYY-MM-DD of an ISO timestamp

There is deliberately no wall-clock "now": a plan is a pure function of its inputs, so the same
invocation always renders the same params (and the same trigger key).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from types import FrameType
from typing import TYPE_CHECKING, Any

from hexdbt.settings import (
    DBT_CLOUD_SECRET_ENV,
    DBT_CLOUD_TOKEN_ENV,
    PAGE_PASSWORD_ENV,
    PAGE_TOKEN_ENV,
    STATE_URL_ENV,
    TOKEN_ENV,
)

if TYPE_CHECKING:
    from jinja2 import Template
    from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(ValueError):
    """A template that does not render; carries a one-line reason."""


class SecretVariableError(TemplateError):
    """A template asked env_var() for a secret."""


_MISSING = object()

# What a template renders is sent to Hex, printed by `hexdbt plan --json` and kept in the ledger,
# so env_var() refuses the variables that hold secrets: the Hex token, the state database's URL
# (it carries a password), the status page's token and password, dbt Cloud's token and webhook
# secret and, as dbt does, every DBT_ENV_SECRET_* variable.
SECRET_VARIABLES = frozenset(
    {
        TOKEN_ENV,
        STATE_URL_ENV,
        PAGE_TOKEN_ENV,
        PAGE_PASSWORD_ENV,
        DBT_CLOUD_TOKEN_ENV,
        DBT_CLOUD_SECRET_ENV,
    }
)
SECRET_VARIABLE_PREFIX = "DBT_ENV_SECRET_"


def is_secret_variable(name: str) -> bool:
    return name in SECRET_VARIABLES or name.startswith(SECRET_VARIABLE_PREFIX)


def secret_refusal(name: str) -> str:
    return (
        f"env_var({name!r}) reads a secret: it would be sent to Hex and kept in the plan and the"
        " ledger, so templates may not read it"
    )


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def make_env_var(environ: Mapping[str, str]) -> Callable[..., Any]:
    """dbt's ``env_var(name, default)`` over the given environment."""

    def env_var(name: str, default: Any = _MISSING) -> Any:
        if is_secret_variable(name):
            raise SecretVariableError(secret_refusal(name))
        value = environ.get(name)
        if value is not None:
            return value
        if default is _MISSING:
            raise TemplateError(f"env var {name!r} is not set and no default was given")
        return default

    return env_var


def _parse_moment(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise TemplateError(f"{value!r} is not an ISO date or timestamp") from None
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise TemplateError(f"{value!r} is not a date")


def to_date(value: Any) -> str:
    return _parse_moment(value).date().isoformat()


def date_add(value: Any, days: float = 0, hours: float = 0) -> str:
    """Shift an ISO date (-> a date) or timestamp (-> a UTC timestamp with Z)."""
    moment = _parse_moment(value) + timedelta(days=days, hours=hours)
    if isinstance(value, str) and len(value) == 10:
        return moment.date().isoformat()
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# A template is a parameter, not a program: what it renders and the work it does are bounded, so
# `{{ 'a' * 10**9 }}` or nested loops over big ranges end at once with an error, not after
# minutes with a gigabyte line.
MAX_RENDERED_CHARS = 65_536
MAX_TEMPLATE_STEPS = 200_000  # Python line events while rendering one value (~50 ms)


class _TemplateTooBig(Exception):
    """Raised inside a render that went past a bound (turned into TemplateError)."""


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    # Imported here: jinja2 is only needed once a template is seen.
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedSandbox(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "**" and isinstance(right, int) and abs(right) > 1000:
                raise _TemplateTooBig(f"a power of {right} is too big for a template")
            if operator == "*":
                for sized, count in ((left, right), (right, left)):
                    if (
                        isinstance(sized, str | list | tuple)
                        and isinstance(count, int)
                        and len(sized) * count > MAX_RENDERED_CHARS
                    ):
                        raise _TemplateTooBig(
                            f"repeating a value {count} times is too big for a template"
                        )
            return super().call_binop(context, operator, left, right)

    environment = BoundedSandbox(undefined=StrictUndefined, autoescape=False)
    environment.globals.update(to_date=to_date, date_add=date_add)
    return environment


def _within_bounds(render: Callable[[], str]) -> str:
    """Run ``render`` counting the Python steps it takes; past MAX_TEMPLATE_STEPS it stops."""
    steps = 0
    previous = sys.gettrace()

    def count(frame: FrameType, event: str, arg: Any) -> Any:
        nonlocal steps
        steps += 1
        if steps > MAX_TEMPLATE_STEPS:
            raise _TemplateTooBig(f"it takes more than {MAX_TEMPLATE_STEPS} steps to render")
        return count

    sys.settrace(count)
    try:
        rendered = render()
    finally:
        sys.settrace(previous)
    if len(rendered) > MAX_RENDERED_CHARS:
        raise _TemplateTooBig(
            f"it renders {len(rendered)} characters (at most {MAX_RENDERED_CHARS})"
        )
    return rendered


@lru_cache(maxsize=4096)
def _compile(source: str) -> Template:
    return _environment().from_string(source)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render one param: a template string renders to a string; lists and dicts recursively;
    everything else passes through unchanged."""
    if is_template(value):
        return _render_string(value, context)
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    return value


def _render_string(source: str, context: Mapping[str, Any]) -> str:
    from jinja2 import TemplateError as JinjaTemplateError
    from jinja2.exceptions import SecurityError

    try:
        return _within_bounds(lambda: _compile(source).render(context))
    except TemplateError:
        raise
    except _TemplateTooBig as exc:
        raise TemplateError(f"template too big: {exc}") from None
    except RecursionError:
        raise TemplateError("template too big: it calls itself without end") from None
    except SecurityError as exc:
        raise TemplateError(f"not allowed in a template: {exc}") from exc
    except JinjaTemplateError as exc:
        raise TemplateError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    except (ArithmeticError, LookupError, TypeError, ValueError) as exc:
        raise TemplateError(f"{type(exc).__name__}: {exc}") from exc


def check_syntax(source: str) -> str | None:
    """The syntax error of a template, or None: so a bad template fails at load time."""
    from jinja2 import TemplateSyntaxError

    try:
        _compile(source)
    except TemplateSyntaxError as exc:
        return f"{exc.message} (template line {exc.lineno})"
    return None


def secret_variables(source: str) -> tuple[str, ...]:
    """The secrets a template reads with ``env_var('LITERAL NAME')``: refused when the mapping
    loads, before any build. A name computed in the template is refused when it renders."""
    from jinja2 import TemplateSyntaxError, nodes

    try:
        tree = _environment().parse(source)
    except TemplateSyntaxError:
        return ()
    return tuple(
        call.args[0].value
        for call in tree.find_all(nodes.Call)
        if isinstance(call.node, nodes.Name)
        and call.node.name == "env_var"
        and call.args
        and isinstance(call.args[0], nodes.Const)
        and isinstance(call.args[0].value, str)
        and is_secret_variable(call.args[0].value)
    )


def build_context(
    *,
    invocation: Mapping[str, Any],
    models: Sequence[Mapping[str, Any]],
    project: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    started_at = str(invocation.get("started_at") or invocation.get("generated_at") or "")

    def today_utc() -> str:
        return to_date(started_at)

    return {
        "invocation": invocation,
        "models": models,
        "project": project,
        "today_utc": today_utc,
        "env_var": make_env_var(os.environ if environ is None else environ),
    }
