"""The six endpoints in both path styles, their bodies and every error status they answer."""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from emulator_helpers import (
    CUSTOMER_HEALTH,
    EXECUTIVE_KPIS,
    FINANCE_OVERVIEW,
    MARKETING_ATTRIBUTION,
    HexApi,
    scenario_with,
)

from hexdbt.clock import from_iso
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import (
    ALERTS_CHANNEL_ID,
    ANALYST_USER_ID,
    ARCHIVED_ID,
    COMPONENT_ID,
    DATA_TEAM_GROUP_ID,
    FINANCE_COLLECTION_ID,
    SCHEDULED_ID,
    TRASHED_ID,
    UNPUBLISHED_ID,
)

NO_SUCH_RUN = "0badc0de-0000-4000-8000-000000000000"
NO_SUCH_PROJECT = "0badc0de-1111-4000-8000-000000000000"
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$")

# (plural path, legacy singular path) for each run endpoint, with {p} and {r} to fill in.
RUN_STATUS_PATHS = ["/projects/{p}/runs/{r}", "/project/{p}/run/{r}"]
RUN_PROJECT_PATHS = ["/projects/{p}/runs", "/project/{p}/run"]
PROJECT_RUNS_PATHS = ["/projects/{p}/runs", "/project/{p}/runs"]


@pytest.fixture
def api(hex_emulator: HexEmulator) -> HexApi:
    return HexApi(hex_emulator)


@pytest.mark.parametrize("path", RUN_PROJECT_PATHS)
def test_run_project_answers_201_with_urls_pointing_back_at_the_emulator(
    api: HexApi, hex_emulator: HexEmulator, path: str
) -> None:
    response = api.post(path.format(p=CUSTOMER_HEALTH), json={"inputParams": {"region": "EU"}})
    assert response.status_code == 201
    body = response.json()
    run_id = body["runId"]
    assert body["projectId"] == CUSTOMER_HEALTH
    assert body["runUrl"] == f"{hex_emulator.url}/app/{CUSTOMER_HEALTH}/runs/{run_id}"
    assert (
        body["runStatusUrl"]
        == f"{hex_emulator.url}/api/v1/projects/{CUSTOMER_HEALTH}/runs/{run_id}"
    )
    assert body["projectVersion"] == 7
    assert body["traceId"]
    assert [r.run_id for r in hex_emulator.runs(CUSTOMER_HEALTH)] == [run_id]
    assert hex_emulator.runs()[0].input_params == {"region": "EU"}


@pytest.mark.parametrize("path", RUN_STATUS_PATHS)
def test_get_run_status_answers_the_run_object(api: HexApi, path: str) -> None:
    run_id = api.run(FINANCE_OVERVIEW).json()["runId"]
    response = api.get(path.format(p=FINANCE_OVERVIEW, r=run_id))
    assert response.status_code == 200
    body = response.json()
    assert body["runId"] == run_id
    assert body["status"] == "PENDING"
    assert body["runTrigger"] == "API"
    assert body["projectVersion"] == "12"  # status answers carry it as a string
    assert body["startTime"] is None
    assert body["endTime"] is None
    assert body["elapsedTime"] is None
    assert body["traceId"]


def test_run_times_are_iso_utc_and_elapsed_time_is_milliseconds(
    api: HexApi, hex_emulator: HexEmulator
) -> None:
    run_id = api.run(CUSTOMER_HEALTH).json()["runId"]  # 3 s pending, 25 s running
    hex_emulator.advance(13)
    running = api.status(CUSTOMER_HEALTH, run_id)
    assert running["status"] == "RUNNING"
    assert ISO_UTC.match(running["startTime"])
    assert running["elapsedTime"] == 10_000
    hex_emulator.advance(100)
    done = api.status(CUSTOMER_HEALTH, run_id)
    assert done["status"] == "COMPLETED"
    assert ISO_UTC.match(done["endTime"])
    assert from_iso(done["endTime"]) - from_iso(done["startTime"]) == 25
    assert done["elapsedTime"] == 25_000


@pytest.mark.parametrize("path", PROJECT_RUNS_PATHS)
def test_get_project_runs_lists_newest_first_in_both_path_styles(
    api: HexApi, hex_emulator: HexEmulator, path: str
) -> None:
    first = api.run(MARKETING_ATTRIBUTION).json()["runId"]
    hex_emulator.advance(1)
    second = api.run(MARKETING_ATTRIBUTION).json()["runId"]
    response = api.get(path.format(p=MARKETING_ATTRIBUTION))
    assert response.status_code == 200
    body = response.json()
    assert [run["runId"] for run in body["runs"]] == [second, first]
    assert body["nextPage"] is None
    assert body["previousPage"] is None
    assert body["traceId"]


def test_get_project_runs_pages_with_limit_and_offset(
    api: HexApi, hex_emulator: HexEmulator
) -> None:
    run_ids = []
    for _ in range(5):
        run_ids.append(api.run(EXECUTIVE_KPIS).json()["runId"])
        hex_emulator.advance(1)
    newest_first = list(reversed(run_ids))
    page = api.get(f"/projects/{EXECUTIVE_KPIS}/runs", params={"limit": 2, "offset": 2}).json()
    assert [r["runId"] for r in page["runs"]] == newest_first[2:4]
    assert "offset=4" in page["nextPage"]
    assert "limit=2" in page["nextPage"]
    assert "offset=0" in page["previousPage"]
    following = api.session.get(page["nextPage"], timeout=10).json()
    assert [r["runId"] for r in following["runs"]] == newest_first[4:]
    assert following["nextPage"] is None


def test_get_project_runs_filters_by_status_and_trigger(
    api: HexApi, hex_emulator: HexEmulator
) -> None:
    api.run(SCHEDULED_ID)  # stays PENDING for 30 s
    scheduled = api.get(f"/projects/{SCHEDULED_ID}/runs", params={"runTriggerFilter": "SCHEDULED"})
    assert {r["runTrigger"] for r in scheduled.json()["runs"]} == {"SCHEDULED"}
    assert len(scheduled.json()["runs"]) == 2
    pending = api.get(f"/projects/{SCHEDULED_ID}/runs", params={"statusFilter": "PENDING"})
    assert [r["runTrigger"] for r in pending.json()["runs"]] == ["API"]
    errored = api.get(f"/projects/{SCHEDULED_ID}/runs", params={"statusFilter": "ERRORED"})
    assert [r["status"] for r in errored.json()["runs"]] == ["ERRORED"]
    everything = api.get(f"/projects/{SCHEDULED_ID}/runs", params={"runTriggerFilter": "ALL"})
    assert len(everything.json()["runs"]) == 4
    assert hex_emulator.runs(SCHEDULED_ID, include_history=True)[0].run_trigger == "SCHEDULED"
    assert len(hex_emulator.runs(SCHEDULED_ID)) == 1


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"offset": -1},
        {"statusFilter": "DONE"},
        {"runTriggerFilter": "CRON"},
    ],
)
def test_get_project_runs_rejects_bad_query_with_400(api: HexApi, params: dict[str, Any]) -> None:
    response = api.get(f"/projects/{CUSTOMER_HEALTH}/runs", params=params)
    assert response.status_code == 400
    assert response.json()["code"] == "BAD_REQUEST"
    assert next(iter(params)) in response.json()["message"]


def test_get_project_runs_of_an_unpublished_project_is_422(api: HexApi) -> None:
    response = api.get(f"/projects/{UNPUBLISHED_ID}/runs")
    assert response.status_code == 422
    assert response.json()["code"] == "UNPROCESSABLE_CONTENT"


@pytest.mark.parametrize("path", ["/projects/{p}/runs/{r}", "/project/{p}/run/{r}"])
def test_cancel_of_a_live_run_is_204_and_the_run_becomes_killed(
    api: HexApi, hex_emulator: HexEmulator, path: str
) -> None:
    run_id = api.run(CUSTOMER_HEALTH).json()["runId"]
    hex_emulator.advance(5)
    response = api.delete(path.format(p=CUSTOMER_HEALTH, r=run_id))
    assert response.status_code == 204
    assert response.content == b""
    hex_emulator.advance(100)
    killed = api.status(CUSTOMER_HEALTH, run_id)
    assert killed["status"] == "KILLED"
    assert killed["elapsedTime"] == 2_000


def test_cancel_of_a_pending_run_kills_it_before_it_starts(
    api: HexApi, hex_emulator: HexEmulator
) -> None:
    run_id = api.run(CUSTOMER_HEALTH).json()["runId"]
    assert api.delete(f"/projects/{CUSTOMER_HEALTH}/runs/{run_id}").status_code == 204
    killed = api.status(CUSTOMER_HEALTH, run_id)
    assert killed["status"] == "KILLED"
    assert killed["startTime"] is None
    assert killed["endTime"] is not None


def test_cancel_of_an_ended_run_is_422_in_the_older_error_shape(
    api: HexApi, hex_emulator: HexEmulator
) -> None:
    run_id = api.run(CUSTOMER_HEALTH).json()["runId"]
    hex_emulator.advance(60)
    response = api.delete(f"/projects/{CUSTOMER_HEALTH}/runs/{run_id}")
    assert response.status_code == 422
    body = response.json()
    assert set(body) >= {"reason", "traceId"}
    assert "already ended (COMPLETED)" in body["reason"]
    assert "code" not in body


def test_cancel_of_an_ended_run_is_204_when_the_setting_says_so(
    hex_emulator_factory: Any,
) -> None:
    from hexdbt.emulator import default_scenario

    emulator = hex_emulator_factory(
        scenario=default_scenario().with_settings(cancel_ended_run="accept")
    )
    api = HexApi(emulator)
    run_id = api.run(CUSTOMER_HEALTH).json()["runId"]
    emulator.advance(60)
    assert api.delete(f"/projects/{CUSTOMER_HEALTH}/runs/{run_id}").status_code == 204
    assert api.status(CUSTOMER_HEALTH, run_id)["status"] == "COMPLETED"


def test_unknown_run_is_404_for_status_and_cancel(api: HexApi) -> None:
    status = api.get(f"/projects/{CUSTOMER_HEALTH}/runs/{NO_SUCH_RUN}")
    assert status.status_code == 404
    assert status.json()["code"] == "NOT_FOUND"
    cancel = api.delete(f"/projects/{CUSTOMER_HEALTH}/runs/{NO_SUCH_RUN}")
    assert cancel.status_code == 404
    assert NO_SUCH_RUN in cancel.json()["reason"]


@pytest.mark.parametrize(
    ("method", "path", "shape"),
    [
        ("GET", "/projects/{p}/runs/no-such-run", "code"),
        ("DELETE", "/projects/{p}/runs/no-such-run", "reason"),
        ("GET", "/project/{p}/run/no-such-run", "reason"),
        ("GET", "/projects/not-a-uuid", "code"),
        ("POST", "/projects/not-a-uuid/runs", "code"),
        ("GET", "/project/not-a-uuid/runs", "reason"),
    ],
)
def test_an_id_that_is_not_a_uuid_is_400_not_404(
    api: HexApi, method: str, path: str, shape: str
) -> None:
    response = api.request(method, path.format(p=CUSTOMER_HEALTH))
    assert response.status_code == 400
    body = response.json()
    assert "is not a UUID" in body[shape if shape == "reason" else "message"]
    assert body["traceId"]


def test_a_run_is_not_found_under_another_project(api: HexApi) -> None:
    run_id = api.run(CUSTOMER_HEALTH).json()["runId"]
    assert api.get(f"/projects/{FINANCE_OVERVIEW}/runs/{run_id}").status_code == 404


def test_get_project_answers_the_project_shape(api: HexApi) -> None:
    response = api.get(f"/projects/{CUSTOMER_HEALTH}")
    assert response.status_code == 200
    project = response.json()
    assert project["id"] == CUSTOMER_HEALTH
    assert project["title"] == "Customer health"
    assert project["type"] == "PROJECT"
    assert project["creator"]["email"]
    assert project["owner"]["email"]
    assert ISO_UTC.match(project["lastPublishedAt"])
    assert ISO_UTC.match(project["createdAt"])
    assert ISO_UTC.match(project["lastEditedAt"])
    assert project["archivedAt"] is None
    assert project["trashedAt"] is None
    assert project["status"] == {"name": "Approved"}
    assert project["categories"] == [{"name": "Customers", "description": "Accounts and churn"}]
    assert project["reviews"] == {"required": False}
    assert project["analytics"]["appViews"] == {
        "allTime": 0,
        "lastSevenDays": 0,
        "lastFourteenDays": 0,
        "lastThirtyDays": 0,
    }
    assert project["schedules"][0] == {
        "cadence": "DAILY",
        "enabled": True,
        "hourly": None,
        "daily": {"hour": 6, "minute": 30, "timezone": "Europe/Berlin"},
        "weekly": None,
        "monthly": None,
        "custom": None,
    }
    assert "sharing" not in project  # only with includeSharing=true
    assert "traceId" not in project  # the project object has none


def test_get_project_with_include_sharing_answers_hexs_sharing_shape(api: HexApi) -> None:
    sharing = api.get(f"/projects/{CUSTOMER_HEALTH}", params={"includeSharing": "true"}).json()[
        "sharing"
    ]
    assert sharing == {
        "users": [{"user": {"email": "ana@example.com"}, "access": "FULL_ACCESS"}],
        "collections": [{"collection": {"name": "Finance"}, "access": "APP_ONLY"}],
        "groups": [{"group": {"name": "Data team"}, "access": "CAN_EDIT"}],
        "workspace": {"access": "CAN_VIEW"},
        "publicWeb": {"access": "NONE"},
        "support": {"access": "NONE"},
    }


def test_status_is_the_workspaces_label_and_never_derived_from_publishing(api: HexApi) -> None:
    assert api.get(f"/projects/{FINANCE_OVERVIEW}").json()["status"] is None
    assert api.get(f"/projects/{UNPUBLISHED_ID}").json()["status"] is None


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"statuses": "Approved"}, {CUSTOMER_HEALTH}),
        ({"categories": ["Finance", "Customers"]}, {CUSTOMER_HEALTH, FINANCE_OVERVIEW}),
        ({"creatorEmail": "ana@example.com"}, {CUSTOMER_HEALTH}),
        ({"ownerEmail": "finance@example.com"}, {FINANCE_OVERVIEW}),
        ({"collectionId": FINANCE_COLLECTION_ID}, {CUSTOMER_HEALTH, FINANCE_OVERVIEW}),
        ({"statuses": "Approved", "ownerEmail": "finance@example.com"}, set()),
    ],
)
def test_list_projects_filters(api: HexApi, params: dict[str, Any], expected: set[str]) -> None:
    body = api.get("/projects", params={"limit": 100, **params}).json()
    assert set(body) == {"values", "pagination"}
    assert {project["id"] for project in body["values"]} == expected


def test_get_project_shows_unpublished_archived_and_trashed_states(api: HexApi) -> None:
    assert api.get(f"/projects/{UNPUBLISHED_ID}").json()["lastPublishedAt"] is None
    assert api.get(f"/projects/{ARCHIVED_ID}").json()["archivedAt"] is not None
    assert api.get(f"/projects/{TRASHED_ID}").json()["trashedAt"] is not None


def test_get_unknown_project_is_404_in_the_newer_error_shape(api: HexApi) -> None:
    response = api.get("/projects/00000000-dead-beef-0000-000000000000")
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "NOT_FOUND"
    assert "00000000-dead-beef-0000-000000000000" in body["message"]
    assert body["traceId"]


def _all_pages(api: HexApi, **params: Any) -> list[dict[str, Any]]:
    projects: list[dict[str, Any]] = []
    after = None
    while True:
        query = dict(params, **({"after": after} if after else {}))
        response = api.get("/projects", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        projects.extend(body["values"])
        after = body["pagination"]["after"]
        if after is None:
            return projects


def test_list_projects_pages_through_every_default_project(api: HexApi) -> None:
    first = api.get("/projects").json()
    assert len(first["values"]) == 25
    assert first["pagination"]["before"] is None
    assert first["pagination"]["after"] is not None
    ids = [p["id"] for p in _all_pages(api, limit=7)]
    assert len(ids) == len(set(ids)) == 34  # 37 minus one archived, one trashed, one component
    assert {CUSTOMER_HEALTH, FINANCE_OVERVIEW, MARKETING_ATTRIBUTION, EXECUTIVE_KPIS} <= set(ids)
    assert ARCHIVED_ID not in ids
    assert TRASHED_ID not in ids
    assert COMPONENT_ID not in ids


def test_list_projects_before_cursor_goes_back_a_page(api: HexApi) -> None:
    first = api.get("/projects", params={"limit": 5}).json()
    second = api.get("/projects", params={"limit": 5, "after": first["pagination"]["after"]}).json()
    back = api.get(
        "/projects", params={"limit": 5, "before": second["pagination"]["before"]}
    ).json()
    assert [p["id"] for p in back["values"]] == [p["id"] for p in first["values"]]


def test_list_projects_include_flags(api: HexApi) -> None:
    ids = {
        p["id"]
        for p in _all_pages(
            api, limit=100, includeArchived="true", includeTrashed="true", includeComponents="true"
        )
    }
    assert {ARCHIVED_ID, TRASHED_ID, COMPONENT_ID} <= ids
    assert len(ids) == 37


@pytest.mark.parametrize(
    ("sort_by", "field"),
    [
        ("CREATED_AT", "createdAt"),
        ("LAST_EDITED_AT", "lastEditedAt"),
        ("LAST_PUBLISHED_AT", "lastPublishedAt"),
    ],
)
@pytest.mark.parametrize("direction", ["ASC", "DESC"])
def test_list_projects_sorts(api: HexApi, sort_by: str, field: str, direction: str) -> None:
    projects = _all_pages(api, limit=100, sortBy=sort_by, sortDirection=direction)
    stamps = [from_iso(p[field]) for p in projects if p[field] is not None]
    assert stamps == sorted(stamps, reverse=direction == "DESC")
    assert len(set(stamps)) > 1


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 500},
        {"sortBy": "TITLE"},
        {"sortDirection": "UP"},
        {"includeArchived": "maybe"},
        {"after": "!!not-a-cursor!!"},
        {"after": "b2Zmc2V0OjU", "before": "b2Zmc2V0OjU"},
    ],
)
def test_list_projects_rejects_bad_query_in_the_older_error_shape(
    api: HexApi, params: dict[str, Any]
) -> None:
    response = api.get("/projects", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["reason"]
    assert body["traceId"]


# ------------------------------------------------------------------ auth
@pytest.fixture
def scoped(hex_emulator_factory: Any) -> HexEmulator:
    emulator: HexEmulator = hex_emulator_factory(
        scenario={
            "projects": [
                {"id": "p-open", "title": "Open", "inputs": ["a"]},
                {"id": "p-secret", "title": "Secret"},
            ],
            "tokens": [
                {"token": "hxtw_all", "scopes": ["read", "run"]},
                {"token": "hxtw_reader", "scopes": ["read"]},
                {"token": "hxtw_runner", "scopes": ["run"]},
                {"token": "hxtw_narrow", "projects": ["p-open"]},
                {"token": "hxtp_old", "expired": True},
            ],
        }
    )
    return emulator


EVERY_OPERATION = [
    ("GET", "/projects"),
    ("GET", "/projects/p-open"),
    ("GET", "/projects/p-open/runs"),
    ("POST", "/projects/p-open/runs"),
    ("GET", "/projects/p-open/runs/r"),
    ("DELETE", "/projects/p-open/runs/r"),
]


@pytest.mark.parametrize(("method", "path"), EVERY_OPERATION)
@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "missing Authorization header"),
        ("Bearer ", "must be 'Bearer <token>'"),
        ("Basic abc", "must be 'Bearer <token>'"),
        ("Bearer hxtw_unknown", "invalid token"),
        ("Bearer hxtp_old", "expired"),
    ],
)
def test_every_endpoint_answers_401_without_a_valid_token(
    scoped: HexEmulator, method: str, path: str, authorization: str | None, message: str
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = requests.request(method, scoped.url + "/api/v1" + path, headers=headers, timeout=10)
    assert response.status_code == 401
    body = response.json()
    assert message in (body.get("message") or body.get("reason"))
    assert body["traceId"]


def test_any_token_is_accepted_when_the_scenario_lists_none(hex_emulator: HexEmulator) -> None:
    assert HexApi(hex_emulator, token="anything-at-all").get("/projects").status_code == 200
    assert HexApi(hex_emulator, token=None).get("/projects").status_code == 401


@pytest.mark.parametrize(
    ("token", "method", "path"),
    [
        ("hxtw_reader", "POST", "/projects/p-open/runs"),
        ("hxtw_reader", "DELETE", "/projects/p-open/runs/r"),
        ("hxtw_runner", "GET", "/projects"),
        ("hxtw_runner", "GET", "/projects/p-open"),
        ("hxtw_runner", "GET", "/projects/p-open/runs"),
        ("hxtw_runner", "GET", "/projects/p-open/runs/r"),
    ],
)
def test_a_token_without_the_scope_gets_403(
    scoped: HexEmulator, token: str, method: str, path: str
) -> None:
    response = HexApi(scoped, token=token).request(method, path)
    assert response.status_code == 403
    body = response.json()
    assert "scope" in (body.get("message") or body.get("reason"))


def test_projects_a_token_may_not_see_are_404_and_unlisted(scoped: HexEmulator) -> None:
    narrow = HexApi(scoped, token="hxtw_narrow")
    assert narrow.get("/projects/p-secret").status_code == 404
    assert narrow.run("p-secret").status_code == 404
    assert narrow.get("/projects/p-open").status_code == 200
    assert [p["id"] for p in narrow.get("/projects").json()["values"]] == ["p-open"]
    assert len(HexApi(scoped, token="hxtw_all").get("/projects").json()["values"]) == 2


def test_the_token_never_appears_in_the_journal(scoped: HexEmulator) -> None:
    HexApi(scoped, token="hxtw_all").run("p-open", {"inputParams": {"a": 1}})
    text = str(scoped.journal()) + str(scoped.runs())
    assert "hxtw_all" not in text
    assert scoped.journal()[0]["tokenFingerprint"].startswith("sha256:")


# ------------------------------------------------------------- RunProject
def test_dry_run_validates_and_creates_nothing(api: HexApi, hex_emulator: HexEmulator) -> None:
    response = api.run(CUSTOMER_HEALTH, {"dryRun": True, "inputParams": {"region": "EU"}})
    assert response.status_code == 201
    assert response.json()["runId"]
    assert hex_emulator.runs() == []
    assert api.run(UNPUBLISHED_ID, {"dryRun": True}).status_code == 422


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"viewId": "v-1", "inputParams": {"region": "EU"}}, "viewId and inputParams"),
        ({"inputParams": ["region"]}, "inputParams must be an object"),
        ({"inputParams": {"region": None}}, "must not be null"),
        ({"dryRun": "true"}, "dryRun must be a boolean"),
        ({"updatePublishedResults": 1}, "updatePublishedResults must be a boolean"),
        ({"viewId": 3}, "viewId must be a string"),
        ({"notifications": [{"type": "SOMETIMES"}]}, "invalid notification"),
        ({"notifications": "ALL"}, "notifications must be a list"),
    ],
)
def test_run_project_rejects_bad_bodies_with_400(
    api: HexApi, hex_emulator: HexEmulator, body: dict[str, Any], message: str
) -> None:
    response = api.run(CUSTOMER_HEALTH, body)
    assert response.status_code == 400
    assert response.json()["code"] == "BAD_REQUEST"
    assert message in response.json()["message"]
    assert hex_emulator.runs() == []


@pytest.mark.parametrize(
    ("raw", "message"), [(b"{not json", "not valid JSON"), (b"[1, 2]", "JSON object")]
)
def test_run_project_rejects_a_body_that_is_not_a_json_object(
    api: HexApi, raw: bytes, message: str
) -> None:
    response = api.post(
        f"/projects/{CUSTOMER_HEALTH}/runs", data=raw, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert message in response.json()["message"]


def test_view_id_alone_is_accepted(api: HexApi, hex_emulator: HexEmulator) -> None:
    assert api.run(CUSTOMER_HEALTH, {"viewId": "v-1"}).status_code == 201
    assert hex_emulator.runs()[0].view_id == "v-1"


@pytest.mark.parametrize("project_id", [UNPUBLISHED_ID, TRASHED_ID])
def test_run_project_of_an_unpublished_or_trashed_project_is_422(
    api: HexApi, hex_emulator: HexEmulator, project_id: str
) -> None:
    response = api.run(project_id)
    assert response.status_code == 422
    assert response.json()["code"] == "UNPROCESSABLE_CONTENT"
    assert project_id in response.json()["message"]
    assert hex_emulator.runs() == []


def test_an_archived_published_project_still_runs(api: HexApi) -> None:
    assert api.run(ARCHIVED_ID).status_code == 201


def test_run_project_of_an_unknown_project_is_404(api: HexApi) -> None:
    response = api.run(NO_SUCH_PROJECT)
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"


def test_unknown_inputs_are_ignored_by_default(api: HexApi, hex_emulator: HexEmulator) -> None:
    response = api.run(CUSTOMER_HEALTH, {"inputParams": {"region": "EU", "colour": "red"}})
    assert response.status_code == 201
    assert hex_emulator.runs()[0].input_params == {"region": "EU"}


def test_unknown_inputs_are_422_listing_them_when_the_setting_rejects(
    hex_emulator_factory: Any,
) -> None:
    emulator = hex_emulator_factory(
        scenario=scenario_with(inputs=["a"], published=True)
        | {"settings": {"unknown_inputs": "reject"}}
    )
    response = HexApi(emulator).run("p-1", {"inputParams": {"a": 1, "b": 2, "c": 3}})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "UNPROCESSABLE_CONTENT"
    assert "b, c" in body["message"]
    assert [i["message"] for i in body["issues"]] == [
        "inputParams.b: no such input in the published app",
        "inputParams.c: no such input in the published app",
    ]
    assert emulator.runs() == []


def test_unknown_inputs_use_the_legacy_422_shape_when_set(hex_emulator_factory: Any) -> None:
    settings = {"unknown_inputs": "reject", "input_error_shape": "legacy"}
    emulator = hex_emulator_factory(scenario=scenario_with(inputs=["a"]) | {"settings": settings})
    response = HexApi(emulator).run("p-1", {"inputParams": {"b": 2}})
    assert response.status_code == 422
    body = response.json()
    assert body["notFound"] == ["b"]
    assert body["invalid"] == []
    assert body["traceId"]


def test_inputs_with_update_published_results_are_ignored_by_default(
    api: HexApi, hex_emulator: HexEmulator
) -> None:
    body = {"inputParams": {"region": "EU"}, "updatePublishedResults": True}
    assert api.run(CUSTOMER_HEALTH, body).status_code == 201
    run = hex_emulator.runs()[0]
    assert run.input_params == {}
    assert run.update_published_results is True


def test_inputs_with_update_published_results_are_400_when_the_setting_rejects(
    hex_emulator_factory: Any,
) -> None:
    settings = {"inputs_with_update_published_results": "reject"}
    emulator = hex_emulator_factory(scenario=scenario_with(inputs=["a"]) | {"settings": settings})
    response = HexApi(emulator).run(
        "p-1", {"inputParams": {"a": 1}, "updatePublishedResults": True}
    )
    assert response.status_code == 400
    assert "updatePublishedResults" in response.json()["message"]
    assert HexApi(emulator).run("p-1", {"updatePublishedResults": True}).status_code == 201


def test_deprecated_update_cache_means_update_and_refresh(
    api: HexApi, hex_emulator: HexEmulator
) -> None:
    assert api.run(CUSTOMER_HEALTH, {"updateCache": True}).status_code == 201
    run = hex_emulator.runs()[0]
    assert run.update_published_results is True
    assert run.use_cached_sql_results is False


NOTIFY_EVERYONE = {
    "type": "FAILURE",
    "includeSuccessScreenshot": True,
    "screenshotFormat": "pdf",
    "userIds": [ANALYST_USER_ID],
    "groupIds": [DATA_TEAM_GROUP_ID],
    "slackChannelIds": [ALERTS_CHANNEL_ID],
    "subject": "Customer health failed",
}
EXPANDED_NOTIFICATIONS = [
    {
        "type": "FAILURE",
        "recipientType": recipient_type,
        "includeSuccessScreenshot": True,
        "recipient": recipient,
        "screenshotFormat": ["pdf"],
    }
    for recipient_type, recipient in (
        ("USER", {"id": ANALYST_USER_ID, "name": "Ana Lyst"}),
        ("GROUP", {"id": DATA_TEAM_GROUP_ID, "name": "Data team"}),
        ("SLACK_CHANNEL", {"id": ALERTS_CHANNEL_ID, "name": "data-alerts", "isPrivate": False}),
    )
]


def test_notifications_are_answered_per_recipient_with_the_scenarios_names(api: HexApi) -> None:
    body = api.run(CUSTOMER_HEALTH, {"notifications": [NOTIFY_EVERYONE]}).json()
    assert body["notifications"] == EXPANDED_NOTIFICATIONS
    assert api.status(CUSTOMER_HEALTH, body["runId"])["notifications"] == EXPANDED_NOTIFICATIONS
    listed = api.get(f"/projects/{CUSTOMER_HEALTH}/runs").json()["runs"][0]
    assert listed["notifications"] == EXPANDED_NOTIFICATIONS


def test_every_item_of_get_project_runs_carries_its_own_trace_id(api: HexApi) -> None:
    started = [api.run(CUSTOMER_HEALTH).json()["traceId"] for _ in range(2)]
    page = api.get(f"/projects/{CUSTOMER_HEALTH}/runs").json()
    assert [run["traceId"] for run in page["runs"]] == started[::-1]
    assert page["traceId"] not in started


@pytest.mark.parametrize(
    ("notification", "issue"),
    [
        ({"type": "ALL"}, "notifications[0].includeSuccessScreenshot: required, true or false"),
        (
            {"type": "ALL", "includeSuccessScreenshot": True, "screenshotFormat": "jpeg"},
            "notifications[0].screenshotFormat: 'jpeg' is not png or pdf",
        ),
        (
            {"type": "ALL", "includeSuccessScreenshot": False, "userIds": ["u1"]},
            "notifications[0].userIds: 'u1' is not a valid id",
        ),
        (
            {"type": "ALL", "includeSuccessScreenshot": False, "slackChannelIds": ["#alerts"]},
            "notifications[0].slackChannelIds: '#alerts' is not a valid id",
        ),
        (
            {"type": "ALL", "includeSuccessScreenshot": False, "groupIds": [NO_SUCH_PROJECT]},
            f"notifications[0].groupIds: no recipient with id {NO_SUCH_PROJECT}",
        ),
    ],
)
def test_notifications_are_checked_as_hex_checks_them(
    api: HexApi, hex_emulator: HexEmulator, notification: dict[str, Any], issue: str
) -> None:
    response = api.run(CUSTOMER_HEALTH, {"notifications": [notification]})
    assert response.status_code == 400
    assert response.json()["issues"] == [{"message": issue}]
    assert hex_emulator.runs() == []


def test_a_scenario_can_make_runs_report_the_draft_version(
    hex_emulator_factory: Any,
) -> None:
    api = HexApi(hex_emulator_factory(scenario=scenario_with(version="draft")))
    run = api.run("p-1").json()
    assert run["projectVersion"] == "draft"
    assert api.status("p-1", run["runId"])["projectVersion"] == "draft"


# --------------------------------------------------------------- the rest
def test_unknown_endpoint_is_404_and_wrong_method_is_405(api: HexApi) -> None:
    unknown = api.get("/nothing/here")
    assert unknown.status_code == 404
    assert unknown.json()["traceId"]
    wrong = api.request("PUT", f"/projects/{CUSTOMER_HEALTH}/runs")
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "GET, POST"


def test_trailing_slashes_are_tolerated(api: HexApi) -> None:
    assert api.get("/projects/").status_code == 200


def test_the_run_url_serves_a_small_page(api: HexApi) -> None:
    run = api.run(CUSTOMER_HEALTH).json()
    page = requests.get(run["runUrl"], timeout=10)
    assert page.status_code == 200
    assert "text/html" in page.headers["Content-Type"]
    assert "Customer health" in page.text
    assert "PENDING" in page.text
    missing = requests.get(run["runUrl"].replace(run["runId"], "nope"), timeout=10)
    assert missing.status_code == 404


def test_every_run_and_error_answer_carries_a_trace_id(api: HexApi) -> None:
    """Projects have none: ListProjects is exactly {values, pagination}, GetProject a project."""
    run = api.run(CUSTOMER_HEALTH).json()
    answers = [
        api.get(f"/projects/{CUSTOMER_HEALTH}/runs"),
        api.get(f"/projects/{CUSTOMER_HEALTH}/runs/{run['runId']}"),
        api.get(f"/projects/{NO_SUCH_PROJECT}"),
        api.delete(f"/projects/{CUSTOMER_HEALTH}/runs/nope"),
    ]
    assert run["traceId"]
    for answer in answers:
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json()["traceId"], answer.url


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/project/{p}/run"),
        ("GET", "/project/{p}/runs"),
        ("GET", "/project/{p}/run/" + NO_SUCH_RUN),
        ("DELETE", "/project/{p}/run/" + NO_SUCH_RUN),
    ],
)
def test_the_singular_paths_answer_errors_as_reason_and_trace_id(
    api: HexApi, method: str, path: str
) -> None:
    response = api.request(method, path.format(p=NO_SUCH_PROJECT))
    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"reason", "traceId"}
    assert NO_SUCH_PROJECT in body["reason"]


def test_the_singular_get_project_runs_lists_api_runs_only(api: HexApi) -> None:
    started = api.run(SCHEDULED_ID).json()["runId"]
    plural = api.get(f"/projects/{SCHEDULED_ID}/runs").json()["runs"]
    singular = api.get(f"/project/{SCHEDULED_ID}/runs", params={"runTriggerFilter": "ALL"}).json()
    assert len(plural) == 4  # the scenario's three scheduled and app-refresh runs, and ours
    assert [run["runId"] for run in singular["runs"]] == [started]
