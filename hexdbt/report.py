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


def kind_of_final_status(hex_status: str | None) -> OutcomeKind:
    """The outcome of a run that ended with this Hex status; one hexdbt does not know is not
    success."""
    return _HEX_FINAL_STATUS_KINDS.get(hex_status or "", OutcomeKind.UNKNOWN_STATUS)


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
        kind = OutcomeKind.TIMEOUT if record.timed_out else kind_of_final_status(record.hex_status)
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


_MARKDOWN_ICONS: dict[OutcomeKind, str] = {
    OutcomeKind.COMPLETED: "✅",
    OutcomeKind.STARTED: "🚀",
    OutcomeKind.DRY_RUN: "🧪",
    OutcomeKind.SKIPPED: "⏭️",
    OutcomeKind.QUEUED: "⏳",
    OutcomeKind.IN_PROGRESS_ELSEWHERE: "⏳",
    OutcomeKind.TIMEOUT: "⌛",
}


def _markdown_cell(text: str) -> str:
    # A pipe ends a cell and a newline ends the row; < and > would be read as HTML by GitHub.
    text = " ".join(text.split())
    for raw, escaped in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), (">", "&gt;")):
        text = text.replace(raw, escaped)
    return text


def _markdown_link(label: str, url: str) -> str:
    if not url.startswith(("https://", "http://")):
        return _markdown_cell(url)
    safe_url = url.replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    return f"[{_markdown_cell(label)}]({safe_url})"


def _markdown_duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m {rest:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m"


def render_markdown(outcomes: Sequence[Outcome], *, title: str) -> str:
    """A GitHub-flavoured Markdown section: a heading, the summary line, one row per project."""
    exit_code = exit_code_of(outcomes)
    verdict = "all well" if exit_code == 0 else f"exit code {exit_code}"
    lines = [f"### {_markdown_cell(title)}", "", f"{summary_line(outcomes)} ({verdict})", ""]
    if not outcomes:
        return "\n".join(lines)
    lines.append("| | Hex project | Outcome | Hex status | Time | Run | Details |")
    lines.append("|---|---|---|---|---|---|---|")
    for outcome in outcomes:
        icon = _MARKDOWN_ICONS.get(outcome.kind, "❌" if outcome.exit_code else "")
        run = _markdown_link(outcome.run_id or "run", outcome.run_url) if outcome.run_url else ""
        details = [outcome.reason or ""]
        if outcome.input_params:
            params = ", ".join(f"{key}={value}" for key, value in outcome.input_params.items())
            details.append(f"inputs: {params}")
        if outcome.trace_id and outcome.exit_code:
            details.append(f"traceId {outcome.trace_id}")
        cells = [
            icon,
            f"{_markdown_cell(outcome.name)}<br>`{_markdown_cell(outcome.project_id)}`",
            outcome.kind.value,
            _markdown_cell(outcome.hex_status or ""),
            _markdown_duration(outcome.elapsed_s),
            run,
            _markdown_cell("; ".join(part for part in details if part)),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(outcomes: Sequence[Outcome], path: Path, *, title: str = "hexdbt") -> None:
    """Append a Markdown table of the outcomes to ``path``, as ``$GITHUB_STEP_SUMMARY`` expects
    (each step appends its own section to one file); a new file is created."""
    section = render_markdown(outcomes, title=title)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Two sections need a blank line between them to stay two tables.
        section = _separator_after(path) + section
        with path.open("a", encoding="utf-8") as report:
            report.write(section)
    except OSError as exc:
        raise ConfigError(f"cannot write the Markdown report {path}: {exc.strerror}") from exc


def _separator_after(path: Path) -> str:
    try:
        with path.open("rb") as existing:
            size = existing.seek(0, 2)
            if size == 0:
                return ""
            existing.seek(-min(2, size), 2)
            tail = existing.read()
    except FileNotFoundError:
        return ""
    if tail.endswith(b"\n\n"):
        return ""
    return "\n" if tail.endswith(b"\n") else "\n\n"
