"""dbt's structured events (JSON log lines, dbtRunner messages) -> typed values and echo lines."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hexdbt.dbt.events import (
    EchoFormat,
    dbt_version,
    event_from_dict,
    finished_node,
    human_line,
    parse_log_line,
    selected_node_count,
    started_node,
    written_artifact,
)

INVOCATION = "c8bec081-9633-41a7-8354-047ac61ed769"


def event(name: str, data: dict[str, Any] | None = None, **info: Any) -> dict[str, Any]:
    """An event in the shape dbt 1.11 writes with --log-format json."""
    return {
        "data": data or {},
        "info": {
            "category": "",
            "code": "Q025",
            "extra": {},
            "invocation_id": INVOCATION,
            "level": "debug",
            "msg": f"{name} happened",
            "name": name,
            "pid": 825,
            "thread": "Thread-4 (worker)",
            "ts": "2026-11-28T14:30:55.416991Z",
            **info,
        },
    }


def node_finished(unique_id: str, status: str, **run_result: Any) -> dict[str, Any]:
    return event(
        "NodeFinished",
        {
            "node_info": {"unique_id": unique_id, "node_status": status, "node_name": "x"},
            "run_result": {
                "adapter_response": {"_message": "INSERT 12", "rows_affected": 12.0},
                "execution_time": 0.22021246,
                "message": "INSERT 12",
                "status": status,
                "timing_info": [
                    {
                        "name": "compile",
                        "started_at": "2026-11-28T14:31:15.929409Z",
                        "completed_at": "2026-11-28T14:31:15.929416Z",
                    },
                    {
                        "name": "execute",
                        "started_at": "2026-11-28T14:31:15.929846Z",
                        "completed_at": "2026-11-28T14:31:16.146484Z",
                    },
                ],
                **run_result,
            },
        },
    )


def test_a_json_log_line_becomes_an_event() -> None:
    parsed = parse_log_line(json.dumps(event("ConcurrencyLine", {"node_count": 29})) + "\n")
    assert parsed is not None
    assert parsed.name == "ConcurrencyLine"
    assert parsed.invocation_id == INVOCATION
    assert selected_node_count(parsed) == 29


@pytest.mark.parametrize(
    "line",
    ["", "Traceback (most recent call last):", "{not json", "[1, 2]", '{"info": {"msg": "x"}}'],
)
def test_lines_that_are_not_dbt_events_are_none(line: str) -> None:
    assert parse_log_line(line) is None


def test_node_finished_reads_like_run_results() -> None:
    parsed = event_from_dict(node_finished("seed.shop.raw_customers", "success"))
    assert parsed is not None
    result = finished_node(parsed)
    assert result is not None
    assert result.unique_id == "seed.shop.raw_customers"
    assert result.status == "success"
    assert result.refreshed
    # the execute phase, not the compile phase
    assert result.started_at == "2026-11-28T14:31:15.929846Z"
    assert result.completed_at == "2026-11-28T14:31:16.146484Z"
    # protobuf doubles (12.0) become the integer run_results.json holds
    assert result.rows_affected == 12
    assert result.execution_time_s == pytest.approx(0.22021246)


def test_a_skipped_node_is_a_failure_and_status_falls_back_to_node_status() -> None:
    document = node_finished("model.shop.revenue", "skipped")
    del document["data"]["run_result"]
    parsed = event_from_dict(document)
    assert parsed is not None
    result = finished_node(parsed)
    assert result is not None
    assert result.status == "skipped"
    assert result.failed


def test_accessors_answer_only_their_own_event() -> None:
    start = event_from_dict(event("NodeStart", {"node_info": {"unique_id": "model.shop.a"}}))
    written = event_from_dict(
        event("ArtifactWritten", {"artifact_path": "/p/target/manifest.json"})
    )
    version = event_from_dict(event("MainReportVersion", {"version": "=1.11.16"}))
    assert start is not None
    assert written is not None
    assert version is not None
    assert started_node(start) == "model.shop.a"
    assert written_artifact(written) == "/p/target/manifest.json"
    assert dbt_version(version) == "1.11.16"
    for other in (start, written, version):
        assert finished_node(other) is None
        assert selected_node_count(other) is None
    assert started_node(written) is None
    assert written_artifact(start) is None
    assert dbt_version(start) is None


def _info_event(msg: str, level: str = "info", name: str = "LogModelResult") -> Any:
    parsed = event_from_dict(event(name, level=level, msg=msg))
    assert parsed is not None
    return parsed


def test_default_format_prints_the_time_and_the_message_like_dbt() -> None:
    line = human_line(
        _info_event("1 of 29 OK created sql view model main.stg_orders"), EchoFormat()
    )
    assert line == "14:30:55  1 of 29 OK created sql view model main.stg_orders"


def test_debug_events_are_hidden_at_the_default_level_and_shown_at_debug() -> None:
    debug_event = _info_event("Finished running node", level="debug", name="NodeFinished")
    assert human_line(debug_event, EchoFormat()) is None
    line = human_line(debug_event, EchoFormat(log_format="debug", log_level="debug"))
    assert line == "14:30:55.416991 [debug] [Thread-4 (]: Finished running node"


def test_quiet_keeps_errors_and_print_events_and_none_keeps_nothing() -> None:
    quiet = EchoFormat(log_level="error")
    assert human_line(_info_event("info line"), quiet) is None
    assert human_line(_info_event("broken", level="error"), quiet) == "14:30:55  broken"
    printed = _info_event("| id |\n| 1  |", name="ShowNode")
    assert human_line(printed, quiet) == "| id |\n| 1  |"
    assert human_line(_info_event("broken", level="error"), EchoFormat(log_level="none")) is None


def test_json_format_echoes_dbts_own_line() -> None:
    raw = json.dumps(event("LogModelResult", level="info")) + "\n"
    parsed = parse_log_line(raw)
    assert parsed is not None
    assert human_line(parsed, EchoFormat(log_format="json"), raw_line=raw) == raw.rstrip("\n")
    rebuilt = human_line(parsed, EchoFormat(log_format="json"))
    assert rebuilt is not None
    assert json.loads(rebuilt)["info"]["name"] == "LogModelResult"
