"""Every answer of every endpoint, in both path styles and with every error status, against the JSON
Schemas of hexdbt.hex.models: the one description that the client reads with.

The schemas are made strict here (no field beyond the description's), so the emulator can neither
leave out a field Hex requires nor invent one.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jsonschema
import pytest
import requests

from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import (
    ALERTS_CHANNEL_ID,
    ANALYST_USER_ID,
    CUSTOMER_HEALTH_ID,
    DATA_TEAM_GROUP_ID,
    UNPUBLISHED_ID,
    default_scenario_document,
)
from hexdbt.hex.models import wire_schemas

FULL = "hxtw_full"
READER = "hxtp_reader"
NO_SUCH_PROJECT = "0badc0de-1111-4000-8000-000000000000"
NOTIFY_ALL_KINDS = {
    "type": "ALL",
    "includeSuccessScreenshot": True,
    "screenshotFormat": "png",
    "userIds": [ANALYST_USER_ID],
    "groupIds": [DATA_TEAM_GROUP_ID],
    "slackChannelIds": [ALERTS_CHANNEL_ID],
}
# The paths of each operation: (plural, singular); None where Hex has no singular path.
PATHS: dict[str, tuple[str, str | None]] = {
    "RunProject": ("POST /projects/{p}/runs", "POST /project/{p}/run"),
    "GetRunStatus": ("GET /projects/{p}/runs/{r}", "GET /project/{p}/run/{r}"),
    "GetProjectRuns": ("GET /projects/{p}/runs", "GET /project/{p}/runs"),
    "CancelRun": ("DELETE /projects/{p}/runs/{r}", "DELETE /project/{p}/run/{r}"),
    "ListProjects": ("GET /projects", None),
    "GetProject": ("GET /projects/{p}", None),
    "GetQueriedTables": ("GET /projects/{p}/queriedTables", None),
}
ANSWER_OF = {
    "RunProject": "RunStarted",
    "GetRunStatus": "RunObject",
    "GetProjectRuns": "RunsAnswer",
    "ListProjects": "ProjectsAnswer",
    "GetProject": "ProjectObject",
    "GetQueriedTables": "QueriedTablesAnswer",
}
_OLDER_SHAPE = {"CancelRun", "ListProjects"}


def _strict(schema: Any) -> Any:
    """The schema with ``additionalProperties: false`` on every object."""
    if isinstance(schema, dict):
        strict = {key: _strict(value) for key, value in schema.items()}
        if strict.get("type") == "object" and "properties" in strict:
            strict["additionalProperties"] = False
        return strict
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


SCHEMAS = {name: _strict(schema) for name, schema in wire_schemas().items()}


@dataclass(frozen=True)
class Case:
    """One call: the operation, its path style, the settings it needs, and the status expected."""

    operation: str
    singular: bool
    status: int
    why: str
    settings: tuple[tuple[str, Any], ...] = ()

    @property
    def id(self) -> str:
        return (
            f"{self.operation}-{'singular' if self.singular else 'plural'}-{self.status}-{self.why}"
        )


def _cases() -> Iterator[Case]:
    for operation, (_, singular_path) in PATHS.items():
        for singular in (False, True) if singular_path else (False,):
            ok = 204 if operation == "CancelRun" else 201 if operation == "RunProject" else 200
            yield Case(operation, singular, ok, "ok")
            yield Case(operation, singular, 401, "no-token")
            yield Case(
                operation,
                singular,
                429,
                "over-budget",
                (("other_per_minute", 1), ("run_project_per_minute", 1)),
            )
            if operation in ("RunProject", "CancelRun"):
                yield Case(operation, singular, 403, "read-only-token")
            else:
                yield Case(operation, singular, 403, "run-only-token")
            yield Case(operation, singular, 400, "bad-request")
            if operation != "ListProjects":
                yield Case(operation, singular, 404, "unknown-project")
            if operation in ("RunProject", "GetProjectRuns", "GetQueriedTables"):
                yield Case(operation, singular, 422, "unpublished")
            if operation == "CancelRun":
                yield Case(operation, singular, 422, "ended-run")
    yield Case("GetProject", False, 200, "with-sharing")
    yield Case("RunProject", False, 503, "kernels-busy", (("max_live_runs", 1),))
    yield Case("RunProject", True, 503, "kernels-busy", (("max_live_runs", 1),))
    yield Case(
        "RunProject",
        False,
        422,
        "old-input-error",
        (("unknown_inputs", "reject"), ("input_error_shape", "legacy")),
    )
    yield Case("RunProject", False, 405, "wrong-method")
    yield Case(
        "GetQueriedTables", False, 403, "no-enterprise", (("queried_tables_feature", False),)
    )


CASES = list(_cases())


def _scenario(case: Case) -> dict[str, Any]:
    document = copy.deepcopy(default_scenario_document())
    document["tokens"] = [
        {"token": FULL},
        {"token": READER, "scopes": ["read"]},
        {"token": "hxtp_runner", "scopes": ["run"]},
    ]
    document["settings"] = dict(case.settings)
    return document


def _call(emulator: HexEmulator, case: Case) -> requests.Response:
    """Make the case's call, after whatever calls it needs first (a run to look at, a budget)."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {FULL}"
    base = emulator.url + "/api/v1"
    plural, singular = PATHS[case.operation]
    method, template = (singular if case.singular and singular else plural).split(" ")
    project_id = CUSTOMER_HEALTH_ID
    started = session.post(
        f"{base}/projects/{CUSTOMER_HEALTH_ID}/runs", json={"notifications": [NOTIFY_ALL_KINDS]}
    )
    assert started.status_code == 201, started.text
    run_id = started.json()["runId"]
    params: dict[str, str] = {}
    body: dict[str, Any] = {}
    if case.operation == "RunProject":
        body = {"notifications": [NOTIFY_ALL_KINDS]}
    why = case.why
    if why == "no-token":
        del session.headers["Authorization"]
    elif why == "read-only-token":
        session.headers["Authorization"] = f"Bearer {READER}"
    elif why == "run-only-token":
        session.headers["Authorization"] = "Bearer hxtp_runner"
    elif why == "unknown-project":
        project_id = NO_SUCH_PROJECT
    elif why == "unpublished":
        project_id = UNPUBLISHED_ID
    elif why == "ended-run":
        emulator.advance(3600)
    elif why == "with-sharing":
        params["includeSharing"] = "true"
    elif why == "wrong-method":
        method = "PUT"
    elif why == "old-input-error":
        body = {"inputParams": {"colour": "red"}}
    elif why == "bad-request":
        if case.operation == "RunProject":
            body = {"notifications": [{"type": "ALL"}]}
        elif case.operation in ("GetRunStatus", "CancelRun"):
            run_id = "not-a-uuid"
        elif case.operation == "GetProject":
            params["includeSharing"] = "maybe"
        elif case.operation == "GetQueriedTables":
            params["after"] = "not-a-cursor"
        else:
            params["limit"] = "0"
    elif why == "over-budget":
        session.request(method, base + template.format(p=project_id, r=run_id), json=body or None)
    path = template.format(p=project_id, r=run_id)
    return session.request(method, base + path, params=params, json=body or None, timeout=10)


def _expected_schema(case: Case, response: requests.Response) -> str | None:
    if response.status_code == 204:
        return None
    if response.status_code < 300:
        return ANSWER_OF[case.operation]
    if case.why == "old-input-error":
        return "InputErrorAnswer"
    if case.singular or case.operation in _OLDER_SHAPE:
        return "ReasonAnswer"
    return "ErrorAnswer"


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_every_answer_follows_the_description(
    hex_emulator_factory: Callable[..., HexEmulator], case: Case
) -> None:
    emulator = hex_emulator_factory(scenario=_scenario(case))
    response = _call(emulator, case)
    assert response.status_code == case.status, response.text
    schema_name = _expected_schema(case, response)
    if schema_name is None:
        assert response.content == b""
        return
    assert response.headers["Content-Type"] == "application/json"
    jsonschema.validate(response.json(), SCHEMAS[schema_name])


def test_the_cases_cover_every_endpoint_path_style_and_error_status() -> None:
    covered = {(case.operation, case.singular, case.status) for case in CASES}
    for operation, (_, singular) in PATHS.items():
        for style in (False, True) if singular else (False,):
            assert {400, 401, 403, 429} <= {
                s for o, st, s in covered if (o, st) == (operation, style)
            }
    statuses = {case.status for case in CASES}
    assert {200, 201, 204, 400, 401, 403, 404, 405, 422, 429, 503} <= statuses


def test_sharing_schedules_and_notifications_are_in_the_answers_checked(
    hex_emulator_factory: Callable[..., HexEmulator],
) -> None:
    """The conformance cases meet the rich shapes, not only their empty forms."""
    emulator = hex_emulator_factory(
        scenario=_scenario(Case("GetProject", False, 200, "with-sharing"))
    )
    project = _call(emulator, Case("GetProject", False, 200, "with-sharing")).json()
    assert project["sharing"]["groups"]
    assert project["sharing"]["collections"]
    assert {schedule["cadence"] for schedule in project["schedules"]} == {"DAILY", "CUSTOM"}
    run = _call(emulator, Case("RunProject", False, 201, "ok")).json()
    kinds = {item["recipientType"] for item in run["notifications"]}
    assert kinds == {"USER", "GROUP", "SLACK_CHANNEL"}


def test_a_strict_schema_refuses_a_field_the_description_does_not_know() -> None:
    """The check can fail: an invented field, or a required one left out, is caught."""
    project = {"values": [], "pagination": {"after": None, "before": None}}
    jsonschema.validate(project, SCHEMAS["ProjectsAnswer"])
    with pytest.raises(jsonschema.ValidationError, match="traceId"):
        jsonschema.validate({**project, "traceId": "t"}, SCHEMAS["ProjectsAnswer"])
    with pytest.raises(jsonschema.ValidationError, match="pagination"):
        jsonschema.validate({"values": []}, SCHEMAS["ProjectsAnswer"])
