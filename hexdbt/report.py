"""One outcome per mapped Hex project, and the reports made of them (text, JSON, JUnit).

Every mapping in the file appears in a report, triggered or not, with what happened to it and
why. The outcomes themselves and their exit codes are ``hexdbt.outcomes``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from hexdbt.files import current_bytes, write_whole
from hexdbt.outcomes import Outcome, OutcomeKind, exit_code_of
from hexdbt.wording import counted, display_width, pad


def render_table(outcomes: Sequence[Outcome]) -> str:
    """A plain table for people; ids and URLs are never shortened."""
    rows = [("PROJECT", "OUTCOME", "STATUS", "RUN URL / REASON")]
    for outcome in outcomes:
        detail = outcome.run_url or ""
        if outcome.reason:
            detail = f"{detail}  ({outcome.reason})" if detail else outcome.reason
        rows.append((outcome.name, outcome.kind.value, outcome.hex_status or "-", detail))
    widths = [max(display_width(row[column]) for row in rows) for column in range(3)]
    return "\n".join(
        "  ".join(pad(cell, width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    )


def summary_line(outcomes: Sequence[Outcome], *, mapped: bool = True) -> str:
    """``3 mapped Hex projects: 2 completed, 1 errored``; ``mapped=False`` for projects named
    on the command line (``trigger``), which no mapping names."""
    noun = "mapped Hex project" if mapped else "Hex project"
    if not outcomes:
        return f"no {noun}s"
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.kind.value] = counts.get(outcome.kind.value, 0) + 1
    parts = ", ".join(f"{count} {kind}" for kind, count in counts.items())
    return f"{counted(len(outcomes), noun)}: {parts}"


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
    document = ET.tostring(suite, encoding="utf-8", xml_declaration=True)
    write_whole(path, document, what="the JUnit report")


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


def render_markdown(outcomes: Sequence[Outcome], *, title: str, mapped: bool = True) -> str:
    """A GitHub-flavoured Markdown section: a heading, the summary line, one row per project."""
    exit_code = exit_code_of(outcomes)
    verdict = "all well" if exit_code == 0 else f"exit code {exit_code}"
    summary = summary_line(outcomes, mapped=mapped)
    lines = [f"### {_markdown_cell(title)}", "", f"{summary} ({verdict})", ""]
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


def write_markdown(
    outcomes: Sequence[Outcome], path: Path, *, title: str = "hexdbt", mapped: bool = True
) -> None:
    """Append a Markdown table of the outcomes to ``path``, as ``$GITHUB_STEP_SUMMARY`` expects
    (each step appends its own section to one file); a new file is created."""
    what = "the Markdown report"
    earlier = current_bytes(path, what=what)
    # Two sections need a blank line between them to stay two tables.
    section = _separator_after(earlier) + render_markdown(outcomes, title=title, mapped=mapped)
    write_whole(path, earlier + section.encode("utf-8"), what=what)


def _separator_after(earlier: bytes) -> str:
    if not earlier or earlier.endswith(b"\n\n"):
        return ""
    return "\n" if earlier.endswith(b"\n") else "\n\n"
