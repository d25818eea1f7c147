"""hex_mappings.yml declared once: the pydantic models the loader validates with, from which the
JSON Schema for editors (hex_mappings.schema.json beside this module) is generated.

Regenerate the shipped schema after changing a model:

    python -m hexdbt.mapping.schema > hexdbt/mapping/hex_mappings.schema.json

Importing this module imports pydantic: only the loader does, once a mapping is read, so that
``hexdbt --help`` stays fast. Problems the models find are ``PydanticCustomError``s or pydantic's
own errors; the loader turns the first into a one-line ``file:line: key: problem``. A custom
error's ``ctx`` carries the text (``message``), and may carry ``subpath``, the keys below the
error's location that it is about, and ``of_key``, whether the key's line is meant rather than
its value's.
"""

from __future__ import annotations

import difflib
import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

from hexdbt.mapping.model import TriggerRule
from hexdbt.mapping.selectors import Selector, SelectorError, parse_selector
from hexdbt.mapping.templates import check_syntax, is_template, secret_refusal, secret_variables

SCHEMA_URL = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "https://github.com/hexdbt/hexdbt/hexdbt/mapping/hex_mappings.schema.json"


def problem(text: str, *, subpath: tuple[str | int, ...] = (), of_key: bool = False) -> Exception:
    """A mapping problem as pydantic carries it; the loader reads the ``ctx`` back."""
    return PydanticCustomError(
        "hexdbt_mapping",
        "{message}",
        {"message": text, "subpath": subpath, "of_key": of_key},
    )


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "a mapping"}.get(type(value), type(value).__name__)  # fmt: skip


class _Strict(BaseModel):
    """No key the model does not declare; a misspelt one gets a suggestion."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys_only(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = [field.alias or name for name, field in cls.model_fields.items()]
            for key in data:
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise problem(f"unknown key{hint}", subpath=(key,), of_key=True)
        return data


# ----------------------------------------------------------------------------------------------
# Values


NonEmptyText = Annotated[StrictStr, StringConstraints(strip_whitespace=True, min_length=1)]


def _positive_minutes(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise problem(f"expected a positive number of minutes, got {value!r}")
    return float(value)


def _positive_hours(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise problem(f"expected a positive number of hours, got {value!r}")
    return float(value)


def _params_mapping(value: Any) -> Any:
    if not isinstance(value, dict):
        raise problem(f"expected a mapping of input name to value, got {type_name(value)}")
    return value


def _param(value: Any) -> Any:
    """Any value Hex accepts, checked all the way down: no null, no broken or secret template."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        subpath, item = stack.pop()
        if item is None:
            raise problem(
                "null is not a value Hex accepts; leave the param out instead", subpath=subpath
            )
        if isinstance(item, list):
            stack.extend(((*subpath, index), each) for index, each in enumerate(item))
        elif isinstance(item, dict):
            stack.extend(((*subpath, key), each) for key, each in item.items())
        elif is_template(item):
            syntax = check_syntax(item)
            if syntax:
                raise problem(f"template syntax error: {syntax}", subpath=subpath)
            secrets = secret_variables(item)
            if secrets:
                raise problem(secret_refusal(secrets[0]), subpath=subpath)
    return value


ParamValue = Annotated[Any, AfterValidator(_param), WithJsonSchema({"not": {"type": "null"}})]


def _selector(value: Any) -> Selector:
    if not isinstance(value, str):
        raise problem(f"expected a selector string, got {value!r}")
    try:
        return parse_selector(value)
    except SelectorError as exc:
        raise problem(str(exc)) from None


def _one_or_many(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise problem("expected a non-empty list of model selectors")
    return value


SelectorText = Annotated[Selector, PlainValidator(_selector, json_schema_input_type=NonEmptyText)]


# ----------------------------------------------------------------------------------------------
# The models


class Notification(_Strict):
    """One of Hex's notification objects, in Hex's camelCase."""

    model_config = ConfigDict(alias_generator=to_camel)

    type: Literal["SUCCESS", "FAILURE", "ALL"]
    include_success_screenshot: StrictBool | None = None
    screenshot_format: Literal["png", "pdf"] | None = None
    slack_channel_ids: list[StrictStr] | None = None
    user_ids: list[StrictStr] | None = None
    group_ids: list[StrictStr] | None = None
    subject: StrictStr | None = None
    body: StrictStr | None = None


class WhenToRun(_Strict):
    """Whether a dbt invocation triggers the project."""

    trigger: TriggerRule = Field(
        default=TriggerRule.ANY,
        strict=False,  # the enum from its text
        description="any: at least one mapped model refreshed; all: every mapped model refreshed.",
    )
    require_tests: StrictBool = Field(
        default=False,
        description="Trigger only when the tests of the refreshed models ran in the same"
        " invocation and passed (warn counts as pass).",
    )
    enabled: StrictBool = Field(
        default=True, description="false keeps the mapping but never triggers it."
    )


class HowToRun(_Strict):
    """What RunProject is asked besides the inputs, and how hexdbt waits for the run."""

    update_published_results: StrictBool | None = Field(
        default=None,
        description="Write the run's results into the published app (needs Can Edit). Unset:"
        " true when the project has no input_params, false when it has (Hex ignores input params"
        " when it writes published results); true together with input_params is an error.",
    )
    use_cached_sql_results: StrictBool = Field(
        default=False,
        description="false makes SQL cells re-query the warehouse dbt just refreshed.",
    )
    view_id: NonEmptyText | None = Field(
        default=None, description="Run with a saved view's inputs; not together with input_params."
    )
    notifications: list[Notification] = Field(
        default_factory=list, description="Hex's notification objects for the run."
    )
    wait: StrictBool = Field(default=True, description="Wait for the Hex run to end.")
    timeout_minutes: Annotated[float, BeforeValidator(_positive_minutes)] = Field(
        default=60.0, gt=0, description="How long to wait for the run."
    )
    cancel_on_timeout: StrictBool = Field(
        default=True, description="Cancel the run when the wait times out."
    )


class Freshness(_Strict):
    """How fresh the Hex app must be kept, and how it shares Hex's budget with the others."""

    coalesce: StrictBool | None = Field(
        default=None,
        description="true: a trigger not yet sent is superseded by a later build's trigger of"
        " this entry (its run covers the older builds too). Unset: true when the runs update the"
        " published app (no input_params), false when each build's run is a job of its own.",
    )
    priority: StrictInt = Field(
        default=0,
        description="When more triggers wait than Hex's budget allows, higher goes first."
        " Waiting raises an app's rank too, so that none starves (see docs/mapping.md).",
    )
    min_interval_minutes: Annotated[float, BeforeValidator(_positive_minutes)] | None = Field(
        default=None,
        description="Start the app at most this often; a trigger that comes sooner waits in the"
        " ledger (coalescing) until the interval has passed.",
    )
    freshness_minutes: Annotated[float, BeforeValidator(_positive_minutes)] | None = Field(
        default=None,
        description="The app's freshness target: its lag (from its models' refresh to the start"
        " of the run that reads it) should stay under this. `hexdbt status --apps --check`"
        " exits 1 past it.",
    )


class Settings(WhenToRun, HowToRun, Freshness):
    """Every setting a project, the file's ``defaults`` or an exposure's ``meta.hex`` may give."""

    input_params: Annotated[dict[str, ParamValue], BeforeValidator(_params_mapping)] = Field(
        default_factory=dict,
        description="Hex input name -> value. Strings may be Jinja templates rendered in a"
        " sandbox (see docs/mapping.md).",
    )


class ProjectEntry(Settings):
    """One Hex project of the file and the dbt models it reads."""

    name: NonEmptyText = Field(description="Unique in the file; used in reports.")
    project_id: NonEmptyText = Field(description="The Hex project id (a UUID).")
    models: Annotated[list[SelectorText], BeforeValidator(_one_or_many)] = Field(
        description="Selectors of the models the Hex app reads: a name, a dotted fqn with"
        " wildcards, tag:, path:, package:, config.<key>:, or a unique_id.",
        min_length=1,
    )
    discovered: StrictBool = Field(
        default=False,
        description="Added by `hexdbt discover --write`; it keeps this entry's models in step"
        " with what Hex says the app reads. Hand-written entries leave it out.",
    )


class FileDefaults(Settings):
    """The file's ``defaults``: every project's settings, and whether discovery adds projects."""

    discover: Literal["off", "auto"] = Field(
        default="off",
        description="auto: `hexdbt run` (and plan, watch, dbt) also triggers the apps that"
        " `hexdbt discover` found reading dbt models and that no entry maps, from its cache in"
        " the state folder.",
    )
    discover_max_age_hours: Annotated[float, BeforeValidator(_positive_hours)] = Field(
        default=24.0,
        gt=0,
        description="With discover: auto, a discovery older than this is not used.",
    )


class ExposureSettings(Settings):
    """A dbt exposure's ``meta.hex``; the project id may come from the exposure's Hex link."""

    project_id: NonEmptyText | None = Field(
        default=None, description="The Hex project id; default: the one in the exposure's url."
    )


class MappingFile(_Strict):
    """hexdbt hex_mappings.yml: which Hex projects read which dbt models, and how hexdbt runs
    them. See docs/mapping.md."""

    model_config = ConfigDict(title="hexdbt hex_mappings.yml")

    version: Literal[1] = Field(description="The mapping format version: 1.")
    defaults: FileDefaults | None = Field(
        default=None,
        description="Settings applied to every project in this file; a project's own value wins"
        " (input_params merge per name).",
    )
    projects: list[ProjectEntry] | None = Field(
        default=None, description="The mapped Hex projects."
    )


class _WithoutFieldTitles(GenerateJsonSchema):
    # pydantic titles each key after its Python name ("Includesuccessscreenshot"): noise in an
    # editor, which shows the key itself and its description.
    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def mapping_json_schema() -> dict[str, Any]:
    """The JSON Schema of hex_mappings.yml, as shipped for editors."""
    schema = MappingFile.model_json_schema(schema_generator=_WithoutFieldTitles)
    return {"$schema": SCHEMA_URL, "$id": SCHEMA_ID, **schema}


if __name__ == "__main__":
    print(json.dumps(mapping_json_schema(), indent=2))
