"""A client written from HEX_API.md alone, as a new user would write one, drives the emulator.

It shares nothing with hexdbt: its readers below transcribe HEX_API.md's shapes by hand (every
field it calls required must be there, with its type), so if hexdbt's description and the
document drift apart, this test sees the emulator disagree with the document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import (
    ALERTS_CHANNEL_ID,
    ANALYST_USER_ID,
    CUSTOMER_HEALTH_ID,
    DATA_TEAM_GROUP_ID,
    default_scenario_document,
)

Json = dict[str, Any]
STR, INT, BOOL, LIST, OBJ, NULL = str, int, bool, list, dict, type(None)
ACCESS = {"NONE", "APP_ONLY", "CAN_VIEW", "CAN_EDIT", "FULL_ACCESS"}


def need(document: Json, key: str, *types: type) -> Any:
    """``document[key]``, which must be present and of one of ``types``."""
    assert key in document, f"missing {key!r} in {sorted(document)}"
    value = document[key]
    assert isinstance(value, types), f"{key!r}: {value!r} is not {types}"
    # bool is an int in Python; the document keeps them apart.
    assert BOOL in types or not isinstance(value, bool), f"{key!r}: {value!r} is a boolean"
    return value


def read_project(project: Json) -> None:
    need(project, "id", STR)
    need(project, "title", STR)
    need(project, "description", STR, NULL)
    assert need(project, "type", STR) in ("PROJECT", "COMPONENT")
    need(need(project, "creator", OBJ), "email", STR)
    need(need(project, "owner", OBJ), "email", STR)
    status = need(project, "status", OBJ, NULL)
    if status is not None:
        need(status, "name", STR)
    for category in need(project, "categories", LIST):
        need(category, "name", STR)
        need(category, "description", STR, NULL)
    need(need(project, "reviews", OBJ), "required", BOOL)
    analytics = need(project, "analytics", OBJ)
    views = need(analytics, "appViews", OBJ)
    for window in ("allTime", "lastSevenDays", "lastFourteenDays", "lastThirtyDays"):
        need(views, window, INT)
    need(analytics, "lastViewedAt", STR, NULL)
    need(analytics, "publishedResultsUpdatedAt", STR, NULL)
    need(project, "lastEditedAt", STR)
    need(project, "lastPublishedAt", STR, NULL)
    need(project, "createdAt", STR)
    need(project, "archivedAt", STR, NULL)
    need(project, "trashedAt", STR, NULL)
    for schedule in need(project, "schedules", LIST):
        cadence = need(schedule, "cadence", STR)
        assert cadence in ("HOURLY", "DAILY", "WEEKLY", "MONTHLY", "CUSTOM")
        need(schedule, "enabled", BOOL)
        for name in ("hourly", "daily", "weekly", "monthly", "custom"):
            detail = need(schedule, name, OBJ, NULL)
            assert (detail is not None) == (name == cadence.lower())
        detail = schedule[cadence.lower()]
        need(detail, "timezone", STR)
        if cadence == "CUSTOM":
            need(detail, "cron", STR)
        else:
            need(detail, "minute", INT)
    if "sharing" in project:
        sharing = project["sharing"]
        for kind, inner, key in (
            ("users", "user", "email"),
            ("collections", "collection", "name"),
            ("groups", "group", "name"),
        ):
            for grant in need(sharing, kind, LIST):
                need(need(grant, inner, OBJ), key, STR)
                assert need(grant, "access", STR) in ACCESS
        for scope in ("workspace", "publicWeb", "support"):
            assert need(need(sharing, scope, OBJ), "access", STR) in ACCESS


def read_notifications(run: Json) -> list[Json]:
    items: list[Json] = run.get("notifications", [])
    for item in items:
        assert need(item, "type", STR) in ("SUCCESS", "FAILURE", "ALL")
        kind = need(item, "recipientType", STR)
        assert kind in ("USER", "GROUP", "SLACK_CHANNEL")
        need(item, "includeSuccessScreenshot", BOOL)
        recipient = need(item, "recipient", OBJ)
        need(recipient, "id", STR)
        need(recipient, "name", STR)
        if "isPrivate" in recipient:
            assert kind == "SLACK_CHANNEL"
            need(recipient, "isPrivate", BOOL)
        for screenshot_format in item.get("screenshotFormat", []):
            assert screenshot_format in ("png", "pdf")
    return items


def read_run(run: Json) -> Json:
    need(run, "projectId", STR)
    need(run, "projectVersion", INT, STR)
    need(run, "runId", STR)
    need(run, "runUrl", STR)
    need(run, "status", STR)
    assert need(run, "runTrigger", STR) in ("API", "SCHEDULED", "APP_REFRESH")
    need(run, "startTime", STR, NULL)
    need(run, "endTime", STR, NULL)
    need(run, "elapsedTime", INT, NULL)
    need(run, "traceId", STR)
    read_notifications(run)
    return run


def test_a_client_written_from_hex_api_md_reads_every_answer(
    hex_emulator_factory: Callable[..., HexEmulator],
) -> None:
    emulator = hex_emulator_factory(scenario=default_scenario_document())
    session = requests.Session()
    session.headers["Authorization"] = "Bearer hxtp_new_user"
    api = emulator.url + "/api/v1"

    listed = session.get(f"{api}/projects", params={"limit": 5}).json()
    assert set(listed) == {"values", "pagination"}
    for project in listed["values"]:
        read_project(project)
    after = need(need(listed, "pagination", OBJ), "after", STR, NULL)
    assert after is not None
    read_project(session.get(f"{api}/projects/{CUSTOMER_HEALTH_ID}").json())
    shared = session.get(f"{api}/projects/{CUSTOMER_HEALTH_ID}", params={"includeSharing": "true"})
    read_project(shared.json())
    assert "sharing" in shared.json()

    notification = {
        "type": "FAILURE",
        "includeSuccessScreenshot": False,
        "userIds": [ANALYST_USER_ID],
        "groupIds": [DATA_TEAM_GROUP_ID],
        "slackChannelIds": [ALERTS_CHANNEL_ID],
    }
    started = session.post(
        f"{api}/projects/{CUSTOMER_HEALTH_ID}/runs", json={"notifications": [notification]}
    )
    assert (started.status_code, started.reason) == (201, "Created")
    body = started.json()
    for key in ("projectId", "runId", "runUrl", "runStatusUrl", "traceId"):
        need(body, key, STR)
    need(body, "projectVersion", INT, STR)
    assert len(read_notifications(body)) == 3

    status = read_run(session.get(need(body, "runStatusUrl", STR)).json())
    assert len(read_notifications(status)) == 3
    for path in (f"/projects/{CUSTOMER_HEALTH_ID}/runs", f"/project/{CUSTOMER_HEALTH_ID}/runs"):
        page = session.get(api + path).json()
        need(page, "traceId", STR)
        need(page, "nextPage", STR, NULL)
        need(page, "previousPage", STR, NULL)
        assert [read_run(run)["runId"] for run in need(page, "runs", LIST)] == [body["runId"]]

    cancelled = session.delete(f"{api}/projects/{CUSTOMER_HEALTH_ID}/runs/{body['runId']}")
    assert (cancelled.status_code, cancelled.content) == (204, b"")
    assert read_run(session.get(body["runStatusUrl"]).json())["status"] == "KILLED"

    refused = session.post(
        f"{api}/projects/{CUSTOMER_HEALTH_ID}/runs", json={"notifications": [{"type": "ALL"}]}
    )
    assert refused.status_code == 400
    error = refused.json()
    need(error, "code", STR)
    need(error, "message", STR)
    for issue in error.get("issues", []):
        need(issue, "message", STR)
    older = session.get(f"{api}/projects", params={"limit": 0}).json()
    need(older, "reason", STR)
    need(older, "traceId", STR)
    # X-RateLimit-* is off by default, as HEX_API.md says a client must expect.
    assert not [name for name in started.headers if name.lower().startswith("x-ratelimit")]
