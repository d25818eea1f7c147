"""Pure pieces of the client: backoff, Retry-After, base URLs, error bodies, records."""

from __future__ import annotations

import pytest

from hexdbt.errors import ConfigError, HexApiError
from hexdbt.hex.client import (
    _describe_body,
    backoff_delay_s,
    normalize_base_url,
    parse_retry_after,
)
from hexdbt.hex.models import (
    Notification,
    Project,
    ProjectsPage,
    Run,
    RunRequest,
    RunsPage,
    RunStatus,
    is_terminal,
)


def test_backoff_doubles_from_one_second_up_to_the_cap() -> None:
    assert [backoff_delay_s(attempt) for attempt in range(1, 9)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]


def test_backoff_jitter_spreads_over_the_upper_half() -> None:
    assert backoff_delay_s(3, jitter=0.0) == 2.0
    assert backoff_delay_s(3, jitter=0.5) == 3.0
    assert backoff_delay_s(3, jitter=0.999) == pytest.approx(3.998)


def test_retry_after_overrides_the_formula_within_bounds() -> None:
    assert backoff_delay_s(1, 17.0, jitter=0.9) == 17.0
    assert backoff_delay_s(5, 0.0) == 0.0
    assert backoff_delay_s(1, -3.0) == 0.0
    assert backoff_delay_s(1, 86_400.0) == 600.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    now = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    assert parse_retry_after("12", now) == 12.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


@pytest.mark.parametrize(
    "given",
    [
        "https://app.hex.tech",
        "https://app.hex.tech/",
        "https://app.hex.tech/api",
        "https://app.hex.tech/api/v1/",
    ],
)
def test_base_url_with_or_without_api_prefix(given: str) -> None:
    assert normalize_base_url(given) == "https://app.hex.tech/api/v1"


def test_plain_http_only_to_loopback_unless_allowed() -> None:
    assert normalize_base_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080/api/v1"
    assert normalize_base_url("http://localhost:1/api") == "http://localhost:1/api/v1"
    with pytest.raises(ConfigError, match=r"plain http to hex\.internal") as caught:
        normalize_base_url("http://hex.internal")
    assert "--allow-insecure-http" in (caught.value.hint or "")
    assert normalize_base_url("http://hex.internal", allow_insecure_http=True).startswith("http:")
    with pytest.raises(ConfigError, match="'ftp://x' is not an http"):
        normalize_base_url("ftp://x")


@pytest.mark.parametrize(
    ("body", "content_type", "message", "trace_id"),
    [
        (
            '{"code": "NOT_FOUND", "message": "Project not found", "traceId": "t1"}',
            "application/json",
            "Project not found",
            "t1",
        ),
        (
            '{"code": "BAD_REQUEST", "message": "Bad body", "issues": [{"message": "viewId"}]}',
            "application/json",
            "Bad body; viewId",
            None,
        ),
        (
            '{"reason": "Run already ended", "traceId": "t2"}',
            "application/json",
            "Run already ended",
            "t2",
        ),
        (
            '{"invalid": [{"paramName": "n"}], "notFound": ["zz"], "traceId": "t3"}',
            "application/json",
            "invalid input params: n; unknown input params: zz",
            "t3",
        ),
        ('{"code": "FORBIDDEN"}', "application/json", "FORBIDDEN", None),
        (
            "<html><title>502 Bad Gateway</title></html>",
            "text/html",
            "HTML page (502 Bad Gateway)",
            None,
        ),
        ("", "text/plain", "empty body", None),
        ("upstream gone", "text/plain", "HTTP 502: upstream gone", None),
    ],
)
def test_error_bodies_of_every_shape(
    body: str, content_type: str, message: str, trace_id: str | None
) -> None:
    described, found_trace = _describe_body(502, body, content_type)
    assert message in described
    assert found_trace == trace_id


def test_run_request_defaults_and_null_inputs() -> None:
    body = RunRequest(input_params={"n": 3, "gone": None}).to_api()
    assert body == {
        "dryRun": False,
        "updatePublishedResults": True,
        "useCachedSqlResults": True,
        "inputParams": {"n": 3},
    }
    with pytest.raises(ConfigError, match="view"):
        RunRequest(input_params={"n": 1}, view_id="v")


RUN_STARTED = {
    "projectId": "p",
    "runId": "r",
    "runUrl": "https://app.hex.tech/app/p/runs/r",
    "runStatusUrl": "https://app.hex.tech/api/v1/projects/p/runs/r",
    "traceId": "t",
    "projectVersion": 3,
}
RUN_OBJECT = {
    "projectId": "p",
    "projectVersion": "draft",
    "runId": "r",
    "runUrl": "https://app.hex.tech/app/p/runs/r",
    "status": "RUNNING",
    "runTrigger": "API",
    "startTime": None,
    "endTime": None,
    "elapsedTime": None,
    "traceId": "t",
}
PROJECT_OBJECT = {
    "id": "p1",
    "title": "One",
    "description": None,
    "type": "PROJECT",
    "creator": {"email": "c@b.c"},
    "owner": {"email": "a@b.c"},
    "status": {"name": "Live"},
    "categories": [{"name": "Sales", "description": None}],
    "reviews": {"required": False},
    "analytics": {
        "appViews": {"allTime": 1, "lastSevenDays": 1, "lastFourteenDays": 1, "lastThirtyDays": 1},
        "lastViewedAt": None,
        "publishedResultsUpdatedAt": None,
    },
    "lastEditedAt": "2026-01-01T00:00:00Z",
    "lastPublishedAt": "2026-01-01T00:00:00Z",
    "createdAt": "2026-01-01T00:00:00Z",
    "archivedAt": None,
    "trashedAt": None,
    "schedules": [],
}


def test_records_accept_both_version_types_null_times_and_unknown_fields() -> None:
    run = Run.from_api({**RUN_STARTED, "extra": 1})
    assert run.project_version == 3
    status = RunStatus.from_api({**RUN_OBJECT, "brandNew": True})
    assert status.project_version == "draft"
    assert status.start_time is None
    assert not status.is_terminal


def test_an_answer_missing_a_required_field_names_it_and_keeps_the_trace_id() -> None:
    answer = {key: value for key, value in RUN_STARTED.items() if key != "runId"}
    with pytest.raises(
        HexApiError, match=r"RunProject answer .*missing required field `runId`"
    ) as info:
        Run.from_api(answer)
    assert info.value.trace_id == "t"
    with pytest.raises(HexApiError, match=r"Expected `str`, got `int` - at `\$.runs\[0\].status`"):
        RunsPage.from_api(
            {
                "runs": [{**RUN_OBJECT, "status": 3}],
                "nextPage": None,
                "previousPage": None,
                "traceId": "t",
            }
        )


def test_an_unknown_status_ends_the_wait_and_is_never_success() -> None:
    assert is_terminal("SOMETHING_NEW")
    status = RunStatus.from_api({**RUN_OBJECT, "status": "SOMETHING_NEW"})
    assert status.is_terminal
    assert not status.is_success


def test_projects_page_reads_cursors_and_project_fields() -> None:
    page = ProjectsPage.from_api(
        {"values": [PROJECT_OBJECT], "pagination": {"after": "c2", "before": None}}
    )
    assert page.after == "c2"
    project = page.values[0]
    assert project.published
    assert not project.archived
    assert project.to_json()["projectId"] == "p1"
    assert project.to_json()["status"] == "Live"
    assert project.to_json()["categories"] == ["Sales"]
    assert Project.from_api({**PROJECT_OBJECT, "status": None}).status is None


def test_a_run_request_survives_the_ledger_round_trip() -> None:
    """The ledger keeps a queued trigger's body; a later process sends the same request."""
    request = RunRequest(
        input_params={"region": "EU", "days": 7},
        update_published_results=False,
        use_cached_sql_results=False,
        notifications=(Notification(type="FAILURE", user_ids=("u1",)),),
    )
    assert RunRequest.from_api(request.to_api()) == request
