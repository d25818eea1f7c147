"""dbt's structured events, from JSON log lines or dbtRunner callbacks, as small typed values.

Both sources carry the same document: ``{"info": {name, level, msg, ts, invocation_id, ...},
"data": {...}}`` (a JSON log line is dbt's ``msg_to_dict`` of the ``EventMsg`` a callback gets).
The events hexdbt acts on, as dbt 1.11 writes them (``--log-format json --log-level debug``):

- ``MainReportVersion`` (info): ``data.version`` is ``"=1.11.16"``;
- ``ArtifactWritten`` (debug, dbt 1.9+): ``data.artifact_path``; manifest.json is written after
  parsing, before any node runs, and again at the end with run_results.json;
- ``ConcurrencyLine`` (info): ``data.node_count``, how many of its selected nodes dbt counts
  (not unit tests, ephemeral models or microbatch batches, which start all the same);
- ``NodeStart`` / ``NodeFinished`` (debug): ``data.node_info.unique_id``; NodeFinished fires for
  every outcome (skipped nodes included) with ``data.run_result`` holding what run_results.json
  will hold for the node;
- ``CommandCompleted`` (debug): the command ended.

Nothing here imports dbt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hexdbt.dbt.artifacts import NodeResult, node_result

NODE_START = "NodeStart"
NODE_FINISHED = "NodeFinished"
CONCURRENCY_LINE = "ConcurrencyLine"
ARTIFACT_WRITTEN = "ArtifactWritten"
MAIN_REPORT_VERSION = "MainReportVersion"
COMMAND_COMPLETED = "CommandCompleted"

# dbt prints these bare (no timestamp), and even with --quiet: they are what `dbt show`,
# `dbt compile --inline` and the print() macro exist to output.
PRINT_EVENT_NAMES = frozenset({"PrintEvent", "ShowNode", "CompiledNode"})

LEVEL_ORDER = {"debug": 0, "test": 1, "info": 2, "warn": 3, "error": 4}


@dataclass(frozen=True, slots=True)
class DbtEvent:
    """One dbt event. ``data`` is the event's own fields, as dbt names them."""

    name: str
    level: str
    msg: str
    ts: str
    invocation_id: str | None
    thread: str
    data: Mapping[str, Any]

    @property
    def node_info(self) -> Mapping[str, Any]:
        info = self.data.get("node_info")
        return info if isinstance(info, dict) else {}

    @property
    def unique_id(self) -> str | None:
        value = self.node_info.get("unique_id")
        return value if isinstance(value, str) and value else None


def event_from_dict(document: Any) -> DbtEvent | None:
    """A DbtEvent from dbt's dictionary form; None when it is not shaped like one."""
    if not isinstance(document, dict):
        return None
    info = document.get("info")
    if not isinstance(info, dict) or not isinstance(info.get("name"), str):
        return None
    data = document.get("data")
    invocation_id = info.get("invocation_id")
    return DbtEvent(
        name=info["name"],
        level=str(info.get("level") or "info"),
        msg=str(info.get("msg") or ""),
        ts=str(info.get("ts") or ""),
        invocation_id=invocation_id if isinstance(invocation_id, str) and invocation_id else None,
        thread=str(info.get("thread") or ""),
        data=data if isinstance(data, dict) else {},
    )


def parse_log_line(line: str) -> DbtEvent | None:
    """One line of dbt's ``--log-format json`` output; None for anything else (a warning
    printed by a library, a traceback from before dbt's logging was set up)."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    return event_from_dict(document)


def event_from_message(message: Any) -> DbtEvent | None:
    """A DbtEvent from the ``EventMsg`` a dbtRunner callback receives (needs dbt installed,
    which it is wherever dbtRunner runs)."""
    from dbt_common.events.functions import msg_to_dict

    return event_from_dict(msg_to_dict(message))


def _execute_phase(timing: Any) -> tuple[str | None, str | None]:
    """Start and end of the node's work, read as run_results.json's ``timing`` is read."""
    if not isinstance(timing, list):
        return None, None
    started: str | None = None
    completed: str | None = None
    for phase in timing:
        if not isinstance(phase, dict):
            continue
        phase_started = phase.get("started_at")
        phase_completed = phase.get("completed_at")
        phase_started = phase_started if isinstance(phase_started, str) else None
        phase_completed = phase_completed if isinstance(phase_completed, str) else None
        if phase.get("name") == "execute":
            return phase_started, phase_completed
        started = started or phase_started
        completed = phase_completed or completed
    return started, completed


def _rows_affected(run_result: Mapping[str, Any]) -> int | None:
    adapter_response = run_result.get("adapter_response")
    if not isinstance(adapter_response, dict):
        return None
    rows = adapter_response.get("rows_affected")
    # Events carry numbers as protobuf doubles (12.0); run_results.json has the integer.
    if isinstance(rows, float) and rows.is_integer():
        return int(rows)
    return rows if type(rows) is int else None


def finished_node(event: DbtEvent) -> NodeResult | None:
    """The NodeResult a ``NodeFinished`` event reports (None for any other event)."""
    if event.name != NODE_FINISHED:
        return None
    unique_id = event.unique_id
    run_result = event.data.get("run_result")
    run_result = run_result if isinstance(run_result, dict) else {}
    status = run_result.get("status") or event.node_info.get("node_status")
    if unique_id is None or not isinstance(status, str) or not status:
        return None
    started_at, completed_at = _execute_phase(run_result.get("timing_info"))
    execution_time = run_result.get("execution_time")
    message = run_result.get("message")
    return node_result(
        unique_id,
        status,
        started_at=started_at,
        completed_at=completed_at,
        execution_time_s=float(execution_time) if isinstance(execution_time, int | float) else None,
        rows_affected=_rows_affected(run_result),
        message=message if isinstance(message, str) and message else None,
    )


def started_node(event: DbtEvent) -> str | None:
    """The unique id a ``NodeStart`` event announces."""
    return event.unique_id if event.name == NODE_START else None


def selected_node_count(event: DbtEvent) -> int | None:
    """How many selected nodes dbt counts, from ``ConcurrencyLine`` (not every node that
    starts: see hexdbt.planner.stream)."""
    if event.name != CONCURRENCY_LINE:
        return None
    count = event.data.get("node_count")
    return int(count) if isinstance(count, int | float) and not isinstance(count, bool) else None


def written_artifact(event: DbtEvent) -> str | None:
    """The path of the artifact an ``ArtifactWritten`` event reports."""
    if event.name != ARTIFACT_WRITTEN:
        return None
    path = event.data.get("artifact_path")
    return path if isinstance(path, str) and path else None


def dbt_version(event: DbtEvent) -> str | None:
    if event.name != MAIN_REPORT_VERSION:
        return None
    version = event.data.get("version")
    return version.lstrip("=") if isinstance(version, str) and version else None


# ----------------------------------------------------------------------------------------------
# What dbt would have printed


@dataclass(frozen=True, slots=True)
class EchoFormat:
    """How the user asked dbt to print to the console: ``--log-format`` and ``--log-level``
    (with ``--quiet`` meaning errors only, and ``none`` meaning nothing)."""

    log_format: str = "default"  # default | text | debug | json
    log_level: str = "info"  # debug | info | warn | error | none

    def shows(self, event: DbtEvent) -> bool:
        if self.log_level == "none":
            return False
        if event.name in PRINT_EVENT_NAMES:
            return True
        threshold = LEVEL_ORDER.get(self.log_level, LEVEL_ORDER["info"])
        return LEVEL_ORDER.get(event.level, LEVEL_ORDER["info"]) >= threshold


def _clock_time(ts: str) -> str:
    """``HH:MM:SS`` of an event's UTC timestamp, as dbt's console prefix shows it."""
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).strftime("%H:%M:%S")
    except ValueError:
        return ts[11:19]


def _debug_time(ts: str) -> str:
    try:
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts
    return parsed.strftime("%H:%M:%S.%f")


def human_line(event: DbtEvent, echo: EchoFormat, raw_line: str | None = None) -> str | None:
    """The line dbt would have printed for this event with the user's own log flags, or None
    when it would have printed nothing."""
    if not echo.shows(event):
        return None
    if echo.log_format == "json":
        if raw_line is not None:
            return raw_line.rstrip("\n")
        return json.dumps(
            {
                "info": {
                    "name": event.name,
                    "level": event.level,
                    "msg": event.msg,
                    "ts": event.ts,
                    "invocation_id": event.invocation_id,
                    "thread": event.thread,
                },
                "data": dict(event.data),
            },
            sort_keys=True,
            default=str,
        )
    if event.name in PRINT_EVENT_NAMES:
        return event.msg
    if echo.log_format == "debug":
        thread = f" [{event.thread[:10].ljust(10)}]:" if event.thread else ""
        return f"{_debug_time(event.ts)} [{event.level:<5}]{thread} {event.msg}"
    return f"{_clock_time(event.ts)}  {event.msg}"
