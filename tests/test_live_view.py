"""The live view and the tables a person reads on a terminal: rendered at several widths, with the
rows, names, footer and links they promise, and no terminal control outside a terminal."""

from __future__ import annotations

import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dbt_shapes import manifest_document, model, run_results_document, write_json
from rich.cells import cell_len
from rich.console import Console
from terminal_helpers import run_in_a_terminal

from hexdbt.cli.live_view import LiveView, outcome_table
from hexdbt.clock import ScaledClock
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.pytest_plugin import EmulatorFactory
from hexdbt.emulator.scenario import CUSTOMER_HEALTH_ID, ERRORS_ID, KILLED_ID, UNPUBLISHED_ID
from hexdbt.hex.polls import RunView, WaitCause, WatchedRun
from hexdbt.outcomes import Outcome, OutcomeKind

TOKEN = "hxtp_live_view_secret"
URL = "https://app.hex.tech/acme/app/{project}/runs/{run}"
NOW = 1_000_000.0
# The emulator's and hexdbt's clocks run this much faster than real time: a run of 30 emulated
# seconds ends in 3 real seconds.
TIME_SCALE = 10.0


def _view(
    name: str, project_id: str, run_id: str, status: str, expected_s: float | None = None
) -> RunView:
    run = WatchedRun(
        project_id=project_id,
        run_id=run_id,
        started_at=NOW - 75,
        run_url=URL.format(project=project_id, run=run_id),
        label=name,
    )
    return RunView(run, status, None, 1, expected_s=expected_s)


def _text(renderable: object, width: int) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False)
    console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def _live(
    titles: dict[str, str] | None = None, next_slot_at: Callable[[], float] | None = None
) -> LiveView:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    return LiveView(console, titles=titles, next_slot_at=next_slot_at)


@pytest.mark.parametrize("width", [40, 80, 120, 200])
def test_the_live_table_fits_the_width_one_line_per_project(width: int) -> None:
    view = _live(titles={"p-2": "Finance overview"})
    view.changed(_view("customer_health", "p-1", "r-1" * 12, "RUNNING", expected_s=600.0), NOW)
    view.changed(_view("p-2", "p-2", "r-2" * 12, "PENDING"), NOW)
    text = _text(view.render(NOW), width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), text
    assert lines[0].split()[:2] == ["PROJECT", "STATUS"]
    assert len(lines) == 4  # header, two rows, footer
    assert lines[1].startswith("customer_health")
    assert lines[2].startswith("Finance overvi")
    assert lines[3] == "0 of 2 done"
    if width >= 80:  # narrower, every column gives way (the run's first)
        assert "RUNNING" in lines[1]
        assert "PENDING" in lines[2]
        assert "r-1r-1r-1" in lines[1]  # the run id, as far as it fits
        assert re.search(r"1m15s\s+10m00s", lines[1]), lines[1]  # elapsed, expected
        assert re.search(r"1m15s\s+-", lines[2]), lines[2]


def test_a_project_known_only_by_its_id_keeps_its_id() -> None:
    view = _live(titles={})
    project_id = "5d4e6f7a-8b9c-4dae-9f1a-3b4c5d6e7f80"
    view.changed(_view(project_id, project_id, "run-1", "RUNNING"), NOW)
    assert project_id in _text(view.render(NOW), 120)


def test_the_footer_counts_ends_failures_and_triggers_waiting_for_the_budget() -> None:
    view = _live(next_slot_at=lambda: NOW + 41)
    view.expect([("a", "p-a"), ("b", "p-b"), ("c", "p-c"), ("d", "p-d")])
    done = _view("a", "p-a", "run-a", "COMPLETED")
    view.changed(RunView(done.run, "COMPLETED", OutcomeKind.COMPLETED, 3), NOW)
    failed = _view("b", "p-b", "run-b", "ERRORED")
    view.changed(RunView(failed.run, "ERRORED", OutcomeKind.ERRORED, 3), NOW)
    assert view.footer(NOW) == (
        "2 of 4 done, 1 failed, 2 waiting to start (Hex's budget: next slot in 41 s)"
    )
    lines = _text(view.render(NOW), 100).splitlines()
    assert [line.split()[0] for line in lines[1:5]] == ["a", "b", "c", "d"]
    assert "waiting to start" in lines[3]


def test_the_budget_is_not_mentioned_when_the_next_slot_is_now() -> None:
    view = _live(next_slot_at=lambda: NOW)
    view.expect([("a", "p-a")])
    assert view.footer(NOW) == "0 of 1 done, 1 waiting to start"


def test_a_trigger_settled_without_a_run_no_longer_waits_to_start() -> None:
    """Hex refused one trigger and another is not waited on: the engine settles both, and the
    footer counts them done (the refused one failed) while the third run is still live."""
    view = _live(next_slot_at=lambda: NOW + 41)
    view.expect([("a", "p-a"), ("refused", "p-b"), ("fire_and_forget", "p-c")])
    view.changed(_view("a", "p-a", "run-a", "RUNNING"), NOW)
    assert view.footer(NOW) == "0 of 3 done, 2 waiting to start (Hex's budget: next slot in 41 s)"
    reason = "HTTP 422: the project is not published"
    view.settled(Outcome("refused", "p-b", OutcomeKind.FAILED_TO_START, reason=reason), NOW)
    url = URL.format(project="p-c", run="run-c")
    started = Outcome("fire_and_forget", "p-c", OutcomeKind.STARTED, run_id="run-c", run_url=url)
    view.settled(started, NOW)
    assert view.footer(NOW) == "2 of 3 done, 1 failed"
    lines = _text(view.render(NOW), 100).splitlines()
    assert "waiting to start" not in "\n".join(lines)
    rows = {line.split()[0]: line.split()[1] for line in lines[1:4]}
    assert rows == {"a": "RUNNING", "refused": "FAILED_TO_START", "fire_and_forget": "STARTED"}
    assert lines[3].endswith("  run-c")


def test_a_trigger_that_ended_elsewhere_shows_hex_s_status() -> None:
    view = _live()
    view.expect([("a", "p-a")])
    ended = Outcome("a", "p-a", OutcomeKind.ERRORED, hex_status="ERRORED", elapsed_s=75.0)
    view.settled(ended, NOW)
    (row,) = _text(view.render(NOW), 100).splitlines()[1:2]
    assert row.split()[:3] == ["a", "ERRORED", "1m15s"]
    assert view.footer(NOW) == "1 of 1 done, 1 failed"


def test_triggers_waiting_for_the_budget_get_rows_without_a_plan_ahead() -> None:
    """A daemon's view knows no plan ahead: the engine says which triggers wait, and why."""
    view = _live(next_slot_at=lambda: NOW + 3600)
    view.waiting([("finance", "p-f")], WaitCause.BUDGET, NOW)
    assert view.footer(NOW) == (
        "0 of 1 done, 1 waiting to start (Hex's budget: next slot in 3600 s)"
    )
    view.changed(_view("finance", "p-f", "run-f", "PENDING"), NOW)
    assert view.footer(NOW) == "0 of 1 done"


def test_a_daemon_s_view_keeps_the_latest_ended_rows_and_counts_them_all() -> None:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    view = LiveView(console, keep_ended=2)
    for number in range(3):
        live = _view(f"run{number}", f"p-{number}", f"r-{number}", "RUNNING")
        view.changed(live, NOW)
        view.changed(RunView(live.run, "ERRORED", OutcomeKind.ERRORED, 2), NOW)
    view.settled(Outcome("refused", "p-9", OutcomeKind.FAILED_TO_START), NOW)
    view.changed(_view("live", "p-l", "r-l", "RUNNING"), NOW)
    lines = _text(view.render(NOW), 100).splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == ["run2", "live", "refused"]
    assert view.footer(NOW) == "4 of 5 done, 4 failed"


def test_runs_are_links_to_their_full_url_showing_the_run_id() -> None:
    url = URL.format(project="p-1", run="run-1")
    outcome = Outcome(
        "sales", "p-1", OutcomeKind.COMPLETED, run_id="run-1", run_url=url, hex_status="COMPLETED"
    )
    console = Console(file=io.StringIO(), width=60, force_terminal=True, color_system="standard")
    console.print(outcome_table([outcome]))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert re.search(r"\x1b\]8;id=\d+;" + re.escape(url) + r"\x1b\\run-1\x1b\]8;;", output), output


def test_the_outcome_table_wraps_reasons_on_words_and_fits() -> None:
    reason = "run abc of project sales ended ERRORED; see the run for its failing cell"
    outcomes = [
        Outcome("sales", "p-1", OutcomeKind.ERRORED, reason=reason, hex_status="ERRORED"),
        Outcome("p-2", "p-2", OutcomeKind.SKIPPED, reason="no model of it refreshed"),
    ]
    text = _text(outcome_table(outcomes, {"p-2": "Finance overview"}), 60)
    assert all(len(line) <= 60 for line in text.splitlines()), text
    assert "Finance overview" in text
    words = " ".join(text.split())
    assert "failing cell" in words
    assert "ERRORED;" in words


# What `trigger --wait` printed for three projects of the emulator and one unknown id.
REFUSED_ID = "1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0"
UNKNOWN_ID = "0badc0de-1111-4000-8000-000000000000"
ENDED = [
    Outcome(
        CUSTOMER_HEALTH_ID,
        CUSTOMER_HEALTH_ID,
        OutcomeKind.COMPLETED,
        run_id="eb3b2d8e-0959-4795-b372-a8e509fd7de1",
        run_url=f"http://127.0.0.1:18765/app/{CUSTOMER_HEALTH_ID}/runs/eb3b2d8e-0959-4795-b372-a8e509fd7de1",
        hex_status="COMPLETED",
        trace_id="e16615b1d97844009d227c77272e9fd3",
    ),
    Outcome(
        ERRORS_ID,
        ERRORS_ID,
        OutcomeKind.ERRORED,
        run_id="b9bc9814-153d-48d7-8e32-11add8131553",
        run_url=f"http://127.0.0.1:18765/app/{ERRORS_ID}/runs/b9bc9814-153d-48d7-8e32-11add8131553",
        hex_status="ERRORED",
    ),
    Outcome(
        REFUSED_ID,
        REFUSED_ID,
        OutcomeKind.FAILED_TO_START,
        reason=f"POST /projects/{REFUSED_ID}/runs: project {REFUSED_ID} has no published version:"
        " publish the app before running it via the API (HTTP 422, traceId"
        " c71db1bc96a44195844f2ae52ffa4005)",
        trace_id="c71db1bc96a44195844f2ae52ffa4005",
    ),
]
ENDED_TITLES = {
    CUSTOMER_HEALTH_ID: "Customer health",
    ERRORS_ID: "Broken pipeline monitor",
    REFUSED_ID: "Churn deep dive (draft)",
}
UNKNOWN = Outcome(
    UNKNOWN_ID,
    UNKNOWN_ID,
    OutcomeKind.FAILED_TO_START,
    reason=f"POST /projects/{UNKNOWN_ID}/runs: project {UNKNOWN_ID} not found (HTTP 404, traceId"
    " c250bb901170402ea06a04fade6cf55d)",
    trace_id="c250bb901170402ea06a04fade6cf55d",
)


def _ids_whole(text: str, outcomes: list[Outcome]) -> None:
    ids = {each.run_id for each in outcomes}
    ids |= {each.trace_id for each in outcomes if each.reason}  # shown where something failed
    ids |= {each.project_id for each in outcomes if each.project_id not in ENDED_TITLES}
    for whole in ids - {None}:
        assert re.search(rf"(?<![\w-]){whole}(?![\w-])", text), f"{whole} cut:\n{text}"


@pytest.mark.parametrize("width", [80, 120])
def test_the_outcome_table_keeps_run_ids_trace_ids_and_names_whole(width: int) -> None:
    """At 80 columns the run column read `127.0.0.1:18765…`; at 120 the run id was cut while the
    reason took 36 columns, and the reason wrapped over 13 lines with its traceId cut."""
    text = _text(outcome_table(ENDED, ENDED_TITLES), width)
    lines = text.splitlines()
    assert all(len(line) <= width for line in lines), text
    assert lines[0].split() == ["PROJECT", "OUTCOME", "RUN", "/", "REASON"]
    assert [line[:25].strip() for line in lines[1:4]] == list(ENDED_TITLES.values())
    _ids_whole(text, ENDED)
    reason = " ".join(" ".join(line[42:].split()) for line in lines[3:])
    # What matters first: why (the row says the run was refused, the request is left out).
    assert reason == (
        f"project {REFUSED_ID} has no published version: publish the app before running it via"
        " the API (HTTP 422, traceId c71db1bc96a44195844f2ae52ffa4005)"
    )
    assert len(lines) - 3 == (3 if width == 120 else 6)


@pytest.mark.parametrize("width", [80, 120])
def test_a_project_known_by_its_id_alone_keeps_it_whole(width: int) -> None:
    """Where an id, the run and the outcome leave no room, each project is a block of lines."""
    outcomes = [*ENDED, UNKNOWN]
    text = _text(outcome_table(outcomes, {}), width)
    assert all(len(line) <= width for line in text.splitlines()), text
    _ids_whole(text, outcomes)
    if width == 80:
        assert [line.rstrip() for line in text.splitlines()[:4]] == [
            f"{CUSTOMER_HEALTH_ID}  completed",
            f"  {ENDED[0].run_id}",
            f"{ERRORS_ID}  errored",
            f"  {ENDED[1].run_id}",
        ]


def test_a_timeout_shows_hex_s_status_under_its_outcome() -> None:
    timeout = Outcome(
        "kpis",
        "p-k",
        OutcomeKind.TIMEOUT,
        reason="did not end within 60 minutes; cancelled",
        run_id="r-k",
        hex_status="RUNNING",
    )
    lines = _text(outcome_table([ENDED[0], timeout]), 100).splitlines()
    assert lines[2].split() == ["kpis", "timeout", "r-k"]
    assert lines[3].split() == [
        "Hex:",
        "RUNNING",
        "did",
        "not",
        "end",
        "within",
        "60",
        "minutes;",
        "cancelled",
    ]


CJK_TITLES = {CUSTOMER_HEALTH_ID: "顧客ダッシュボード", ERRORS_ID: "売上 (週次)"}


def _columns_of(lines: list[str], words: list[str]) -> set[int]:
    """The terminal column where each line's ``word`` starts."""
    return {cell_len(line[: line.index(word)]) for line, word in zip(lines, words, strict=True)}


def test_names_in_cjk_keep_the_outcome_table_aligned() -> None:
    lines = _text(outcome_table(ENDED[:2], CJK_TITLES), 100).splitlines()
    assert len(_columns_of(lines, ["OUTCOME", "completed", "errored"])) == 1, "\n".join(lines)
    assert len(_columns_of(lines, ["RUN", ENDED[0].run_id or "", ENDED[1].run_id or ""])) == 1


def test_names_in_cjk_keep_the_live_table_aligned() -> None:
    view = _live(titles=CJK_TITLES)
    for outcome in ENDED[:2]:
        view.settled(outcome, NOW)
    lines = _text(view.render(NOW), 100).splitlines()[:3]
    assert len(_columns_of(lines, ["STATUS", "COMPLETED", "ERRORED"])) == 1, "\n".join(lines)


# -- the real command -----------------------------------------------------------------------------


@pytest.fixture
def scaled_emulator(
    hex_emulator_factory: EmulatorFactory,
) -> tuple[HexEmulator, dict[str, str]]:
    """An emulator on a scaled clock, and the environment that puts hexdbt on the same clock."""
    origin = time.time()
    emulator = hex_emulator_factory(clock=ScaledClock.since(origin, TIME_SCALE))
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("HEX_", "DBT_"))
    }
    environment.update(
        HEX_API_TOKEN=TOKEN,
        HEX_BASE_URL=emulator.url,
        HEXDBT_TIME_SCALE=str(TIME_SCALE),
        HEXDBT_TIME_ORIGIN=repr(origin),
        PYTHONPATH=str(Path(__file__).resolve().parent.parent),
    )
    return emulator, environment


TRIGGER = ["trigger", f"{CUSTOMER_HEALTH_ID},{ERRORS_ID}", "--wait"]


@pytest.mark.slow
def test_a_dumb_terminal_gets_lines_without_control_sequences(
    scaled_emulator: tuple[HexEmulator, dict[str, str]],
) -> None:
    _emulator, environment = scaled_emulator
    code, output = run_in_a_terminal(TRIGGER, {**environment, "TERM": "dumb"})
    assert code == 5, output  # one run errored
    assert b"\x1b" not in output, output[:400]
    text = output.decode()
    assert re.search(rf"{CUSTOMER_HEALTH_ID}: run \S+ COMPLETED after", text), text
    assert "1 completed, 1 errored" in text
    assert TOKEN not in text


@pytest.mark.slow
def test_piped_output_has_no_control_sequences_and_whole_urls(
    scaled_emulator: tuple[HexEmulator, dict[str, str]],
) -> None:
    emulator, environment = scaled_emulator
    done = subprocess.run(
        [sys.executable, "-m", "hexdbt", *TRIGGER],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 5, done.stderr
    assert "\x1b" not in done.stdout + done.stderr
    run_urls = re.findall(rf"{re.escape(emulator.url)}/app/\S+/runs/[0-9a-f-]{{36}}", done.stdout)
    assert len(run_urls) == 2, done.stdout
    assert re.search(rf"^{ERRORS_ID}: run \S+ ERRORED after", done.stderr, re.MULTILINE)
    assert TOKEN not in done.stdout + done.stderr


@pytest.mark.slow
def test_status_in_a_terminal_fits_and_keeps_its_ids_whole(
    scaled_emulator: tuple[HexEmulator, dict[str, str]],
) -> None:
    emulator, environment = scaled_emulator
    code, _output = run_in_a_terminal(TRIGGER, environment)
    assert code == 5
    code, output = run_in_a_terminal(["status"], {**environment, "COLUMNS": "70"})
    assert code == 0
    plain = re.sub(rb"\x1b\[[0-9;]*m|\x1b\]8;[^\x1b]*\x1b\\", b"", output).decode()
    after = plain[plain.index("Invocation trigger:") :].split("\r\n\r\n")[0].splitlines()[1:]
    assert all(len(line) <= 70 for line in after), after
    # Projects known by their id alone, whole, with each run's id under it, whole.
    (customer_run,) = emulator.runs(CUSTOMER_HEALTH_ID)
    (errors_run,) = emulator.runs(ERRORS_ID)
    assert [line.rstrip() for line in after] == [
        f"{CUSTOMER_HEALTH_ID}  completed",
        f"  {customer_run.run_id}",
        f"{ERRORS_ID}  errored",
        f"  {errors_run.run_id}",
    ]


# -- in tmux: what a person sees ------------------------------------------------------------------

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ID_START = re.compile(r"[0-9a-f]{8}-[0-9a-f-]*")


@dataclass
class Tmux:
    """A detached tmux session of a fixed size on a server of its own, running one script."""

    socket: str
    width: int
    height: int

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self, script: Path) -> None:
        size = ["-x", str(self.width), "-y", str(self.height)]
        self.tmux("-f", "/dev/null", "new-session", "-d", *size, "-s", "live", "sh", str(script))

    def screen(self) -> str:
        """The pane as it shows now; a line the terminal wrapped is joined again (-J)."""
        return self.tmux("capture-pane", "-p", "-J", "-t", "live")

    def wait_for(self, pattern: str, timeout_s: float = 90.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            screen = self.screen()
            if re.search(pattern, screen):
                return screen
            assert time.monotonic() < deadline, f"never on screen: {pattern!r}\n{screen}"
            time.sleep(0.05)

    def kill(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Callable[[int, int], Tmux]]:
    sessions: list[Tmux] = []

    def open_session(width: int, height: int) -> Tmux:
        session = Tmux(f"hexdbt-test-{os.getpid()}-{tmp_path.name}", width, height)
        sessions.append(session)
        return session

    yield open_session
    for session in sessions:
        session.kill()


def _script(path: Path, environment: dict[str, str], command: list[str]) -> Path:
    """A shell script that runs ``command`` and then keeps the pane open, showing its exit."""
    exports = "\n".join(
        f"export {key}={shlex.quote(value)}"
        for key, value in environment.items()
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key)
    )
    path.write_text(f'{exports}\n{shlex.join(command)}\necho "hexdbt exited $?"\nread _\n')
    return path


def _check_ids(screen: str, known: set[str]) -> None:
    """Every id on screen is whole and real, or a real one's beginning cut with an ellipsis."""
    for match in ID_START.finditer(screen):
        token = match.group(0).rstrip("-")
        whole = UUID.fullmatch(token) is not None
        cut = screen[match.end() : match.end() + 1] == "…"
        assert (
            (token in known) if whole and not cut else any(each.startswith(token) for each in known)
        ), f"{token!r} is no id hexdbt was given\n{screen}"


TITLES = {
    CUSTOMER_HEALTH_ID: "Customer health",
    ERRORS_ID: "Broken pipeline monitor",
    KILLED_ID: "Runaway notebook",
}


@pytest.mark.slow
@pytest.mark.parametrize("width", [80, 120, 200])
def test_trigger_wait_in_tmux_redraws_in_place_at_any_width(
    scaled_emulator: tuple[HexEmulator, dict[str, str]],
    tmux: Callable[[int, int], Tmux],
    tmp_path: Path,
    width: int,
) -> None:
    emulator, environment = scaled_emulator
    command = [sys.executable, "-m", "hexdbt", "trigger", ",".join(TITLES), "--wait"]
    session = tmux(width, 40)
    session.start(_script(tmp_path / "trigger.sh", environment, command))

    live = session.wait_for(r"(?m)^1 of 3 done")
    known = set(TITLES) | {run.run_id for each in TITLES for run in emulator.runs(each)}
    assert len(known) == 6
    lines = live.splitlines()
    assert [line.split()[0] for line in lines if line.startswith("PROJECT")] == ["PROJECT"]
    for title in TITLES.values():
        rows = [line for line in lines if line.startswith(title)]
        assert len(rows) == 1, live
    # The table fits; only the log lines above it are long (the terminal wraps them, -J joins).
    header_at = next(index for index, line in enumerate(lines) if line.startswith("PROJECT"))
    assert all(len(line) <= width for line in lines[header_at:]), live
    _check_ids(live, known)

    ended = session.wait_for(r"hexdbt exited \d+")
    assert "hexdbt exited 5" in ended
    assert "3 Hex projects: 1 completed, 1 errored, 1 killed" in ended
    lines = ended.splitlines()
    headers = [line for line in lines if line.startswith("PROJECT")]
    assert len(headers) == 1, ended  # the live table gave way to the final one
    assert headers[0].split() == ["PROJECT", "OUTCOME", "RUN", "/", "REASON"]
    for run_id in known - set(TITLES):  # the final table's run ids are whole
        assert re.search(rf"(?m)\s{run_id}\s*$", ended), ended
    outcomes = {"Customer health": "completed", "Broken pipeline monitor": "errored"}
    outcomes["Runaway notebook"] = "killed"
    for title, outcome in outcomes.items():
        (row,) = [line for line in lines if line.startswith(title)]
        assert row.split()[len(title.split())] == outcome, row
    assert not any(line.endswith("of 3 done") for line in lines), ended
    _check_ids(ended, known)
    assert TOKEN not in ended


@pytest.mark.slow
@pytest.mark.dbt
def test_dbt_build_in_tmux_keeps_the_live_view_below_dbts_lines(
    scaled_emulator: tuple[HexEmulator, dict[str, str]],
    tmux: Callable[[int, int], Tmux],
    tmp_path: Path,
) -> None:
    _emulator, environment = scaled_emulator
    repo = Path(__file__).resolve().parent.parent
    project = tmp_path / "sample_dbt_project"
    shutil.copytree(
        repo / "sample_dbt_project",
        project,
        ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", ".user.yml"),
    )
    mappings = str(repo / "hex_mappings.yml")
    dbt_build = ["dbt", "--mappings", mappings, "build", "--profiles-dir", str(project)]
    command = [sys.executable, "-m", "hexdbt", *dbt_build, "--project-dir", str(project)]
    session = tmux(100, 40)
    session.start(_script(tmp_path / "dbt.sh", environment, command))

    live = session.wait_for(r"(?m)^\d+ of \d+ done")
    lines = live.rstrip("\n").splitlines()
    header_at = next(index for index, line in enumerate(lines) if line.startswith("PROJECT"))
    assert re.match(r"\d+ of \d+ done", lines[-1]), live  # the view is the last thing shown
    dbt_lines = [
        index for index, line in enumerate(lines) if re.search(r"\d+ of \d+ (START|OK)", line)
    ]
    assert dbt_lines, live
    assert max(dbt_lines) < header_at, live
    assert all(len(line) <= 100 for line in lines[header_at:]), live

    ended = session.wait_for(r"hexdbt exited \d+", timeout_s=180)
    assert "hexdbt exited 0" in ended, ended
    lines = ended.splitlines()
    headers = [index for index, line in enumerate(lines) if line.startswith("PROJECT")]
    assert len(headers) == 1, ended
    done_at = next(index for index, line in enumerate(lines) if "Done. PASS=" in line)
    assert done_at < headers[0], ended
    assert re.search(r"mapped Hex projects: \d+ completed", ended), ended


@pytest.mark.slow
def test_a_trigger_hex_refuses_is_done_in_the_footer_while_the_other_run_is_live(
    scaled_emulator: tuple[HexEmulator, dict[str, str]],
    tmux: Callable[[int, int], Tmux],
    tmp_path: Path,
) -> None:
    """The unpublished project is refused at once: the footer counts it done and failed while
    the other run is still live (it used to wait to start until the view closed)."""
    _emulator, environment = scaled_emulator
    projects = f"{CUSTOMER_HEALTH_ID},{UNPUBLISHED_ID}"
    command = [sys.executable, "-m", "hexdbt", "trigger", projects, "--wait"]
    session = tmux(100, 30)
    session.start(_script(tmp_path / "trigger.sh", environment, command))

    live = session.wait_for(r"(?m)^1 of 2 done, 1 failed\s*$")
    (refused,) = [line for line in live.splitlines() if line.startswith("Churn deep dive")]
    assert "FAILED_TO_START" in refused
    assert "waiting to start" not in live
    (running,) = [line for line in live.splitlines() if line.startswith("Customer health")]
    assert re.search(r"\b(TRIGGERED|PENDING|RUNNING)\b", running), live

    ended = session.wait_for(r"hexdbt exited \d+")
    assert "hexdbt exited 4" in ended, ended


@pytest.mark.slow
def test_watch_in_a_terminal_shows_the_live_view_below_its_events(
    scaled_emulator: tuple[HexEmulator, dict[str, str]],
    tmux: Callable[[int, int], Tmux],
    tmp_path: Path,
) -> None:
    """A foreground watch: its events are lines, its runs a live table below them, with the
    trigger Hex refused settled in it; SIGTERM stops it (exit 0) below the table."""
    _emulator, environment = scaled_emulator
    target = tmp_path / "target"
    target.mkdir()
    write_json(target / "manifest.json", manifest_document([model("customers"), model("orders")]))
    mappings = tmp_path / "hex_mappings.yml"
    mappings.write_text(
        "version: 1\nprojects:\n"
        f"  - {{name: health, project_id: {CUSTOMER_HEALTH_ID}, models: [customers]}}\n"
        f"  - {{name: draft, project_id: {UNPUBLISHED_ID}, models: [orders]}}\n"
    )
    pid_file = tmp_path / "watch.pid"
    watch = [sys.executable, "-m", "hexdbt", "watch", "--target-path", str(target)]
    watch += ["--mappings", str(mappings), "--debounce-ms", "50"]
    exports = "\n".join(f"export {key}={shlex.quote(value)}" for key, value in environment.items()
                        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key))  # fmt: skip
    script = tmp_path / "watch.sh"
    script.write_text(
        f"{exports}\n{shlex.join(watch)} &\necho $! > {shlex.quote(str(pid_file))}\n"
        'wait $!\necho "hexdbt exited $?"\nread _\n'
    )
    session = tmux(100, 40)
    session.start(script)
    session.wait_for(r"INFO watching ")

    both = {"model.shop.customers": "success", "model.shop.orders": "success"}
    write_json(target / "run_results.json", run_results_document(both, invocation_id="i-1"))
    # The invocation's event is told once its POSTs are out: the view may show the refused
    # trigger a moment before the event line is written above it.
    live = session.wait_for(r"(?ms)INFO invocation_submitted.*^1 of 2 done, 1 failed\s*$")
    lines = live.rstrip("\n").splitlines()
    header_at = next(index for index, line in enumerate(lines) if line.startswith("PROJECT"))
    assert [line for line in lines if line.startswith("PROJECT")] == [lines[header_at]]
    submitted_at = next(i for i, line in enumerate(lines) if "INFO invocation_submitted" in line)
    assert submitted_at < header_at, live  # the events scroll above the view
    rows = {line.split()[0]: line.split()[1] for line in lines[header_at + 1 : -1]}
    assert rows["draft"] == "FAILED_TO_START", live
    assert rows["health"] in {"TRIGGERED", "PENDING", "RUNNING"}, live

    ended = session.wait_for(r"(?m)^2 of 2 done, 1 failed\s*$")
    assert re.search(r"(?m)^health\s+COMPLETED", ended), ended
    # The runs are in the table, not in event lines as they are in a pipe or with json.
    assert "run_followed" not in ended
    assert "run_ended" not in ended

    os.kill(int(pid_file.read_text()), signal.SIGTERM)
    stopped = session.wait_for(r"hexdbt exited \d+")
    assert "hexdbt exited 0" in stopped, stopped
    assert "INFO stopped" in stopped
    assert TOKEN not in stopped
