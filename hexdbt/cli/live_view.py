"""What a person sees on a terminal: a live table of runs redrawn in place, and tables of outcomes
that fit the terminal's width. The only module that imports rich; ``hexdbt.cli._common`` imports
it only when a terminal view is drawn, so ``hexdbt --help`` and piped output never load rich.

A run is a hyperlink (OSC 8) to its page whose visible text is its run id. In the live table a
row never wraps: names and runs are cut with an ellipsis. Wrapped rows are what broke the
hand-made table this replaces: its cursor-up count went wrong and every refresh printed the table
again below the last one. The table of outcomes, printed once, wraps instead and cuts nothing a
person may need to quote: run ids, project ids and Hex's traceIds stay whole at any width a run id
fits in.
"""

from __future__ import annotations

import io
import re
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TextIO

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.live import Live
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from hexdbt.hex.polls import RunView, WaitCause
from hexdbt.hex.progress import format_elapsed, state_of
from hexdbt.outcomes import EXIT_CODES, Outcome, OutcomeKind, kind_of_final_status

_STATUS_STYLES = {
    "PENDING": "yellow",
    "RUNNING": "cyan",
    "COMPLETED": "green",
    "TRIGGERED": "yellow",
    # Triggers settled without a run followed, and nothing wrong with them.
    "STARTED": "yellow",
    "QUEUED": "yellow",
    "IN_PROGRESS_ELSEWHERE": "yellow",
}
_WAITING = "waiting to start"


def terminal_console(stream: TextIO) -> Console:
    """A console on ``stream``; rich honours NO_COLOR. Nothing is highlighted (a number or an id
    in a name is not code), and lines printed above a live view are left to the terminal to wrap
    (rich would break a URL at its hyphens); tables set their own wrapping per column."""
    return Console(file=stream, highlight=False, soft_wrap=True)


def status_text(state: str) -> Text:
    """A status in its colour: green done, yellow and cyan on the way, red anything else."""
    style = _STATUS_STYLES.get(state, "dim" if state == _WAITING else "red")
    return Text(state, style=style)


def run_link(run_id: str | None, url: str | None, *, cut: bool = False) -> Text:
    """A run: its id, a hyperlink to its URL (a terminal without OSC 8 shows the id alone).
    ``cut``: cut with an ellipsis where it does not fit (a row of the live table never wraps)."""
    text = Text(run_id or "-", style=f"link {url}" if run_id and url else "")
    if cut:
        text.no_wrap, text.overflow = True, "ellipsis"
    return text


def _table() -> Table:
    return Table(box=None, pad_edge=False, header_style="bold", expand=False)


def _name_column(table: Table) -> None:
    # A project id (36 characters) is shown whole; a longer name is cut.
    table.add_column("PROJECT", no_wrap=True, overflow="ellipsis", max_width=36)


def _run_column(table: Table) -> None:
    """The column that gives way when the terminal is narrow: rich narrows wrapping columns
    first, and its cells are cut with an ellipsis instead of wrapping."""
    table.add_column("RUN", overflow="ellipsis")


@dataclass(frozen=True, slots=True)
class _Expected:
    """A trigger of the plan that has no run followed yet (waiting for the budget or a slot)."""

    name: str
    project_id: str


def _settled_state(outcome: Outcome) -> str:
    """Hex's final status when the outcome is that status, else the outcome (``FAILED_TO_START``)."""
    if outcome.hex_status and outcome.kind is kind_of_final_status(outcome.hex_status):
        return outcome.hex_status
    return outcome.kind.value.upper()


class _PrintedAbove(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` while a view is drawn: each whole line is printed above the
    view, under the view's lock.

    Rich's own redirection prints from the writing thread (dbt's lines, the engine's notes) while
    the engine's thread redraws the view, and two renders of the region that interleave leave a
    stale row behind (the tmux test of ``hexdbt dbt`` caught a second header). One lock keeps each
    print and each redraw whole."""

    def __init__(self, console: Console, lock: threading.RLock, original: TextIO) -> None:
        self._console = console
        self._lock = lock
        self.original = original
        self._pending = ""

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        if lines:
            self._print("\n".join(lines))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._print(line)

    def _print(self, text: str) -> None:
        with self._lock:
            self._console.print(Text.from_ansi(text))

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]  # TextIOBase's is a plain attribute
        return self.original.encoding


class LiveView:
    """The engine's progress on a terminal: one row per project, a footer of counts.

    ``titles``: Hex titles by project id, shown for projects known only by their id.
    ``next_slot_at``: when the budget next lets a RunProject through (for the footer).
    ``console``: where to draw (stderr); ``redirect_stdout``: print the process's stdout above
    the live region (when both are the one terminal, as for dbt's lines under ``hexdbt dbt``).
    ``keep_ended``: at most this many rows of ended triggers, the latest (a daemon's view would
    grow without end); the footer still counts them all.

    A trigger the engine follows no run of (refused, expired, not waited on) leaves the rows of
    those waiting to start when the engine settles it (``settled``), and shows its outcome.
    """

    refresh_s = 1.0

    def __init__(
        self,
        console: Console,
        *,
        titles: Mapping[str, str] | None = None,
        next_slot_at: Callable[[], float] | None = None,
        redirect_stdout: bool = False,
        keep_ended: int | None = None,
    ) -> None:
        self._console = console
        self._keep_ended = keep_ended
        self._titles = dict(titles or {})
        self._next_slot_at = next_slot_at
        # The final table of outcomes replaces the live one when it goes to the same terminal.
        self._live = Live(
            console=console,
            auto_refresh=False,
            transient=redirect_stdout,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._redirect_stdout = redirect_stdout
        self._lock = threading.RLock()
        self._expected: dict[str, _Expected] = {}
        self._views: dict[str, RunView] = {}  # run id -> its latest view, in order of arrival
        self._settled: dict[str, Outcome] = {}  # trigger name -> its outcome, without a run view
        self._ended_at: dict[str, float] = {}  # run id -> when it ended
        # The rows of ended triggers, oldest first: ("run", run id) or ("trigger", name).
        self._ended_rows: dict[tuple[str, str], None] = {}
        self._dropped_done = 0  # ended rows no longer shown (keep_ended), for the footer
        self._dropped_failed = 0

    def expect(self, triggers: Iterable[tuple[str, str]]) -> None:
        """Rows for triggers (name, project id) that have no run yet: the plan is seen whole."""
        for name, project_id in triggers:
            self._expected.setdefault(name, _Expected(name, project_id))

    def changed(self, view: RunView, now: float) -> None:
        self._expected.pop(view.run.label or view.run.project_id, None)
        self._views[view.run.run_id] = view
        if view.outcome is not None:
            self._ended_at.setdefault(view.run.run_id, now)
            self._row_ended(("run", view.run.run_id))
        self._draw(now)

    def waiting(self, triggers: Sequence[tuple[str, str]], cause: WaitCause, now: float) -> None:
        """Rows for triggers the engine cannot send yet (a daemon's plans are not known ahead)."""
        self.expect(triggers)
        self._redraw(now)

    def settled(self, outcome: Outcome, now: float) -> None:
        self._expected.pop(outcome.name, None)
        self._settled.pop(outcome.name, None)  # the row moves to the end, as the latest
        self._settled[outcome.name] = outcome
        self._row_ended(("trigger", outcome.name))
        self._redraw(now)

    def refresh(self, views: Sequence[RunView], now: float) -> None:
        for view in views:
            self._views[view.run.run_id] = view
        self._draw(now)

    def close(self, now: float) -> None:
        with self._lock:
            if self._live.is_started:
                self._draw(now)
                self._live.stop()
                for name in ("stdout", "stderr"):
                    stream = getattr(sys, name)
                    if isinstance(stream, _PrintedAbove):
                        stream.flush()
                        setattr(sys, name, stream.original)

    def render(self, now: float) -> Group:
        """The table and its footer as they stand at ``now``."""
        table = _table()
        _name_column(table)
        table.add_column("STATUS", no_wrap=True)
        table.add_column("ELAPSED", no_wrap=True, justify="right")
        table.add_column("EXPECTED", no_wrap=True, justify="right")
        _run_column(table)
        for view in self._views.values():
            run = view.run
            ended = self._ended_at.get(run.run_id, now)
            expected = format_elapsed(view.expected_s) if view.expected_s is not None else "-"
            table.add_row(
                self._name_of(run.label, run.project_id),
                status_text(state_of(view)),
                format_elapsed(ended - run.started_at),
                expected,
                run_link(run.run_id, run.run_url, cut=True),
            )
        for outcome in self._settled.values():
            elapsed = format_elapsed(outcome.elapsed_s) if outcome.elapsed_s is not None else "-"
            table.add_row(
                self._name_of(outcome.name, outcome.project_id),
                status_text(_settled_state(outcome)),
                elapsed,
                "-",
                run_link(outcome.run_id, outcome.run_url, cut=True),
            )
        for item in self._expected.values():
            name = self._name_of(item.name, item.project_id)
            table.add_row(name, status_text(_WAITING), "-", "-", "-")
        return Group(table, Text(self.footer(now), no_wrap=True, overflow="ellipsis"))

    def footer(self, now: float) -> str:
        """``3 of 7 done, 1 failed, 2 waiting to start (Hex's budget: next slot in 41 s)``.

        Done: runs that ended and triggers settled without a run; failed: those of them whose
        outcome fails a command (a run not completed, a trigger Hex refused or that expired)."""
        ends = [view.outcome for view in self._views.values() if view.outcome is not None]
        exit_codes = [EXIT_CODES[kind] for kind in ends]
        exit_codes += [outcome.exit_code for outcome in self._settled.values()]
        done = len(exit_codes) + self._dropped_done
        failed = sum(1 for code in exit_codes if code) + self._dropped_failed
        total = len(self._views) + len(self._settled) + len(self._expected) + self._dropped_done
        parts = [f"{done} of {total} done"]
        if failed:
            parts.append(f"{failed} failed")
        if self._expected:
            waiting = f"{len(self._expected)} {_WAITING}"
            slot_in = self._next_slot_at() - now if self._next_slot_at is not None else 0.0
            if slot_in >= 1:
                waiting += f" (Hex's budget: next slot in {slot_in:.0f} s)"
            parts.append(waiting)
        return ", ".join(parts)

    def _name_of(self, label: str | None, project_id: str) -> str:
        """The mapping's name; for a project known only by its id, its Hex title when known."""
        if label and label != project_id:
            return label
        return self._titles.get(project_id, project_id)

    def _row_ended(self, row: tuple[str, str]) -> None:
        """Note an ended row; past ``keep_ended``, the oldest ended row is no longer shown."""
        self._ended_rows.pop(row, None)
        self._ended_rows[row] = None
        if self._keep_ended is None or len(self._ended_rows) <= self._keep_ended:
            return
        kind, key = next(iter(self._ended_rows))
        del self._ended_rows[(kind, key)]
        if kind == "run":
            view = self._views.pop(key)
            del self._ended_at[key]
            failed = view.outcome is not None and EXIT_CODES[view.outcome] != 0
        else:
            failed = self._settled.pop(key).exit_code != 0
        self._dropped_done += 1
        self._dropped_failed += failed

    def _redraw(self, now: float) -> None:
        """Draw again if drawn already: without a run followed (``--no-wait``) no view is drawn."""
        if self._live.is_started:
            self._draw(now)

    def _draw(self, now: float) -> None:
        with self._lock:
            if not self._live.is_started:
                self._live.start()
                sys.stderr = _PrintedAbove(self._console, self._lock, sys.stderr)
                if self._redirect_stdout:
                    sys.stdout = _PrintedAbove(self._console, self._lock, sys.stdout)
            self._live.update(self.render(now), refresh=True)


def outcome_table(
    outcomes: Sequence[Outcome], titles: Mapping[str, str] | None = None
) -> OutcomeTable:
    """The outcomes as a table that fits the console (see ``OutcomeTable``). ``titles``: Hex titles
    by project id, for projects named by their id."""
    return OutcomeTable(outcomes, titles or {})


# The run / reason column is never narrower than this (a reason of a few words a line), nor than
# the run ids and traceIds it holds, which stay whole.
_DETAIL_MIN_WIDTH = 24
# Three columns, two spaces between them.
_GAPS = 4
# How a Hex API error begins (``POST /projects/ID/runs: ``). The row says which call it was (a
# refused start, a failed poll) and the reason comes first without it; the path, longer than the
# column, would be broken across lines. The plain table and --json keep it.
_REQUEST = re.compile(r"^(?:GET|POST|PUT|PATCH|DELETE) /\S*: ")


@dataclass(frozen=True, slots=True)
class _Row:
    name: str
    outcome: Text
    hex_status: Text | None  # where it says more than the outcome: a timeout's RUNNING
    detail: Text
    ids_width: int  # of the run id and traceId, which the run / reason column keeps whole

    def said(self, separator: str) -> Text:
        """The outcome, and Hex's status after ``separator`` where it says more."""
        if self.hex_status is None:
            return self.outcome
        return Text.assemble(self.outcome, separator, self.hex_status)


class OutcomeTable:
    """One row per outcome: project, outcome (with Hex's status where it says more), and the run
    with the reason under it, wrapped on words within its column.

    Laid out at the width it is drawn at: the project column takes what the run column (at least
    a run id wide) leaves, wrapping names between words; where that leaves a name's longest word
    (a project id) no room, each outcome becomes a block of lines instead, its run and reason
    under its name, so that no id is ever cut or broken across lines."""

    def __init__(self, outcomes: Sequence[Outcome], titles: Mapping[str, str]) -> None:
        self._rows = [_row(outcome, titles) for outcome in outcomes]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        outcome_width = max(
            [cell_len("OUTCOME"), *(_widest_line(row.said("\n")) for row in self._rows)]
        )
        detail_min = max([_DETAIL_MIN_WIDTH, *(row.ids_width for row in self._rows)])
        name_room = width - outcome_width - detail_min - _GAPS
        longest_word = max([0, *(_widest_word(row.name) for row in self._rows)])
        if name_room < longest_word:
            yield self._blocks()
            return
        name_width = min(
            name_room, max([cell_len("PROJECT"), *(cell_len(r.name) for r in self._rows)])
        )
        table = _table()
        table.add_column("PROJECT", width=name_width, overflow="fold")
        table.add_column("OUTCOME", no_wrap=True)
        table.add_column(
            "RUN / REASON", overflow="fold", max_width=width - name_width - outcome_width - _GAPS
        )
        for row in self._rows:
            table.add_row(row.name, row.said("\n"), row.detail)
        yield table

    def _blocks(self) -> Table:
        grid = Table.grid()
        grid.add_column(overflow="fold")
        for row in self._rows:
            grid.add_row(Text.assemble(row.name, "  ", row.said("  ")))
            grid.add_row(Padding(row.detail, (0, 0, 0, 2), expand=False))
        return grid


def _row(outcome: Outcome, titles: Mapping[str, str]) -> _Row:
    name = outcome.name
    if name == outcome.project_id:
        name = titles.get(name, name)
    style = "red" if outcome.exit_code else "green"
    if outcome.kind is not OutcomeKind.COMPLETED and not outcome.exit_code:
        style = "yellow"  # started, queued, skipped: nothing went wrong, nothing ended
    hex_status = None
    if outcome.hex_status and kind_of_final_status(outcome.hex_status) is not outcome.kind:
        hex_status = Text(f"Hex: {outcome.hex_status}", style="dim")
    lines = [run_link(outcome.run_id, outcome.run_url)] if outcome.run_id else []
    if outcome.reason:
        lines.append(_reason_text(outcome.reason))
    detail = Text("\n").join(lines) if lines else Text("-")
    ids_width = max(cell_len(outcome.run_id or ""), cell_len(outcome.trace_id or ""))
    return _Row(name, Text(outcome.kind.value, style=style), hex_status, detail, ids_width)


def _reason_text(reason: str) -> Text:
    return Text(_REQUEST.sub("", reason, count=1))


def _widest_line(text: Text) -> int:
    return max(cell_len(line) for line in text.plain.split("\n"))


def _widest_word(text: str) -> int:
    return max([0, *(cell_len(word) for word in text.split())])
