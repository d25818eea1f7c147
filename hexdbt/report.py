"""One outcome per mapped Hex project, and the reports made of them (text, JSON, JUnit).

Every mapping in the file appears in a report, triggered or not, with what happened to it and
why. The exit code of a command is the highest code among its outcomes (see ``EXIT_CODES``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from hexdbt.errors import ConfigError
from hexdbt.ledger import TriggerRecord, TriggerState


class OutcomeKind(StrEnum):
    COMPLETED = "completed"
    STARTED = "started"  # sent and not waited on (--no-wait)
    DRY_RUN = "dry_run"  # Hex validated the request; nothing ran
    SKIPPED = "skipped"  # the plan did not trigger it; the reason says why
    QUEUED = "queued"  # waiting in the ledger for the budget; a later run or watch sends it
    IN_PROGRESS_ELSEWHERE = "in_progress_elsewhere"  # another live hexdbt process is sending it
    ERRORED = "errored"
    KILLED = "killed"
    UNABLE_TO_ALLOCATE_KERNEL = "unable_to_allocate_kernel"
    UNKNOWN_STATUS = "unknown_status"  # Hex answered a status this hexdbt does not know
    TIMEOUT = "timeout"
    FAILED_TO_START = "failed_to_start"  # Hex refused the run; nothing was started
    AMBIGUOUS = "ambiguous"  # the POST's answer was lost and Hex's run list could not tell
    EXPIRED = "expired"  # queued past its deadline without fitting the budget
    POLL_FAILED = "poll_failed"  # started, but its status could not be read (token, outage)
    PLAN_ERROR = "plan_error"  # the mapping could not be planned (template error, bad selector)


EXIT_CODES: dict[OutcomeKind, int] = {
    OutcomeKind.COMPLETED: 0,
    OutcomeKind.STARTED: 0,
    OutcomeKind.DRY_RUN: 0,
    OutcomeKind.SKIPPED: 0,
    OutcomeKind.QUEUED: 0,
    OutcomeKind.IN_PROGRESS_ELSEWHERE: 0,
    OutcomeKind.PLAN_ERROR: 2,
    OutcomeKind.FAILED_TO_START: 4,
    OutcomeKind.POLL_FAILED: 4,
    OutcomeKind.AMBIGUOUS: 4,
    OutcomeKind.EXPIRED: 4,
    OutcomeKind.ERRORED: 5,
    OutcomeKind.KILLED: 5,
    OutcomeKind.UNABLE_TO_ALLOCATE_KERNEL: 5,
    OutcomeKind.UNKNOWN_STATUS: 5,
    OutcomeKind.TIMEOUT: 6,
}

_HEX_FINAL_STATUS_KINDS = {
    "COMPLETED": OutcomeKind.COMPLETED,
    "ERRORED": OutcomeKind.ERRORED,
    "KILLED": OutcomeKind.KILLED,
    "UNABLE_TO_ALLOCATE_KERNEL": OutcomeKind.UNABLE_TO_ALLOCATE_KERNEL,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    project_id: str
    kind: OutcomeKind
    reason: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    hex_status: str | None = None
    trace_id: str | None = None
    input_params: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "projectId": self.project_id,
            "outcome": self.kind.value,
            "reason": self.reason,
            "runId": self.run_id,
            "runUrl": self.run_url,
            "status": self.hex_status,
            "traceId": self.trace_id,
            "inputParams": self.input_params,
            "elapsedSeconds": self.elapsed_s,
        }


def outcome_of(record: TriggerRecord) -> Outcome:
    """What a ledger row means for the user right now."""
    kind: OutcomeKind
    if record.state is TriggerState.ENDED:
        if record.timed_out:
            kind = OutcomeKind.TIMEOUT
        else:
            kind = _HEX_FINAL_STATUS_KINDS.get(record.hex_status or "", OutcomeKind.UNKNOWN_STATUS)
    else:
        kind = {
            # Started and not (yet) ended: the command did not wait, or was interrupted.
            TriggerState.STARTED: OutcomeKind.STARTED,
            # Planned but never claimed: a later run or watch sends it, like a queued one.
            TriggerState.PLANNED: OutcomeKind.QUEUED,
            TriggerState.QUEUED: OutcomeKind.QUEUED,
            TriggerState.SENDING: OutcomeKind.IN_PROGRESS_ELSEWHERE,
            TriggerState.FAILED: OutcomeKind.FAILED_TO_START,
            TriggerState.AMBIGUOUS: OutcomeKind.AMBIGUOUS,
            TriggerState.EXPIRED: OutcomeKind.EXPIRED,
        }[record.state]
    elapsed = None
    if record.ended_at is not None and record.intent_at is not None:
        elapsed = round(record.ended_at - record.intent_at, 3)
    return Outcome(
        name=record.name,
        project_id=record.project_id,
        kind=kind,
        reason=record.reason,
        run_id=record.run_id,
        run_url=record.run_url,
        hex_status=record.hex_status,
        trace_id=record.trace_id,
        input_params=dict(record.request.get("inputParams") or {}),
        elapsed_s=elapsed,
    )


def exit_code_of(outcomes: Iterable[Outcome]) -> int:
    """The highest exit code among the outcomes; 0 when all is well."""
    return max((outcome.exit_code for outcome in outcomes), default=0)


def render_table(outcomes: Sequence[Outcome]) -> str:
    """A plain table for people; ids and URLs are never shortened."""
    rows = [("PROJECT", "OUTCOME", "STATUS", "RUN URL / REASON")]
    for outcome in outcomes:
        detail = outcome.run_url or ""
        if outcome.reason:
            detail = f"{detail}  ({outcome.reason})" if detail else outcome.reason
        rows.append((outcome.name, outcome.kind.value, outcome.hex_status or "-", detail))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    )


def summary_line(outcomes: Sequence[Outcome]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.kind.value] = counts.get(outcome.kind.value, 0) + 1
    parts = ", ".join(f"{count} {kind}" for kind, count in counts.items())
    return f"{len(outcomes)} mapped Hex projects: {parts}" if outcomes else "no mapped Hex projects"


def write_junit(outcomes: Sequence[Outcome], path: Path, *, suite_name: str) -> None:
    """One test case per mapped Hex project, for CI systems that read JUnit XML."""
    failures = sum(1 for o in outcomes if o.exit_code and o.kind is not OutcomeKind.TIMEOUT)
    errors = sum(1 for o in outcomes if o.kind is OutcomeKind.TIMEOUT)
    skipped = sum(1 for o in outcomes if o.kind is OutcomeKind.SKIPPED)
    suite = ET.Element(
        "testsuite",
        name=suite_name,
        tests=str(len(outcomes)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
    )
    for outcome in outcomes:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"hexdbt.{suite_name}",
            name=outcome.name,
            time=str(outcome.elapsed_s or 0),
        )
        message = f"{outcome.kind.value}: {outcome.reason or outcome.hex_status or ''}".strip()
        if outcome.kind is OutcomeKind.SKIPPED:
            ET.SubElement(case, "skipped", message=outcome.reason or "")
        elif outcome.kind is OutcomeKind.TIMEOUT:
            ET.SubElement(case, "error", message=message)
        elif outcome.exit_code:
            ET.SubElement(case, "failure", message=message)
        details = [f"project_id: {outcome.project_id}"]
        if outcome.run_url:
            details.append(f"run_url: {outcome.run_url}")
        if outcome.trace_id:
            details.append(f"trace_id: {outcome.trace_id}")
        ET.SubElement(case, "system-out").text = "\n".join(details)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the JUnit report {path}: {exc.strerror}") from exc
