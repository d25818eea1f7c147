"""What every command shares: printing errors, machine output, exit codes."""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TextIO

import click

from hexdbt.errors import HexApiError, HexdbtError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hexdbt.hex.client import HexClient
    from hexdbt.hex.polls import Progress
    from hexdbt.ledger import Ledger
    from hexdbt.logs import EventLog, StreamEventLog
    from hexdbt.metrics import DaemonMetrics
    from hexdbt.outcomes import Outcome
    from hexdbt.settings import StateLocation
    from hexdbt.signals import Signals


def error_payload(exc: HexdbtError) -> dict[str, Any]:
    """The ``error`` object of a ``--json`` document."""
    payload: dict[str, Any] = {"type": type(exc).__name__, "message": exc.message}
    if isinstance(exc, HexApiError):
        payload["httpStatus"] = exc.status
        payload["traceId"] = exc.trace_id
    if exc.hint:
        payload["hint"] = exc.hint
    return payload


def print_json(document: Any) -> None:
    """Machine output: one JSON document on stdout, nothing else goes there."""
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


def print_error(exc: HexdbtError) -> None:
    click.echo(f"Error: {exc}", err=True)
    if exc.hint:
        click.echo(f"Hint: {exc.hint}", err=True)


def fail(exc: HexdbtError, *, as_json: bool = False) -> NoReturn:
    """Report an expected failure (as one JSON document with ``--json``) and exit with its code."""
    if as_json:
        print_json({"error": error_payload(exc)})
    print_error(exc)
    sys.exit(exc.exit_code)


class JsonAwareCommand(click.Command):
    """With ``--json`` among the arguments, click's usage errors also print a JSON document."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        wants_json = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if wants_json:
                print_json(
                    {
                        "error": {
                            "type": "UsageError",
                            "message": exc.format_message(),
                            "exitCode": 2,
                        }
                    }
                )
            raise


def err_line(line: str) -> None:
    # sys.stderr as it is now: while a live view is drawn it is rich's proxy, which prints the
    # line above the view (click's own err=True would write past it, to the terminal beneath).
    click.echo(line, file=sys.stderr)


def hex_client(
    allow_insecure_http: bool,
    *,
    stop: threading.Event | None = None,
    state: StateLocation | None = None,
    shared_budget: bool = True,
) -> HexClient:
    """The client of a command; ``stop``: the event its signal handlers set (see ``Signals``);
    ``state``: where its rate budget lives (``--state-url``); ``shared_budget``: False where
    the state cannot be used (``hexdbt debug`` still asks Hex)."""
    from hexdbt.factory import open_client

    # The clock is a seam: ``CliRunner.invoke(main, ..., obj={"clock": clock})`` shares a test's
    # ManualClock with the command; the real command runs on the system clock.
    context = click.get_current_context(silent=True)
    options = context.obj if context is not None and isinstance(context.obj, dict) else {}
    return open_client(
        allow_insecure_http=allow_insecure_http,
        clock=options.get("clock"),
        stop=stop,
        state=state,
        shared_budget=shared_budget,
    )


def draws_in_place(stream: TextIO) -> bool:
    """Whether ``stream`` is a terminal that can redraw in place (``TERM=dumb`` cannot)."""
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def make_progress(
    log_format: str = "text",
    *,
    heartbeat_s: float = 60.0,
    prefix: str = "",
    client: HexClient | None = None,
    expect: Iterable[tuple[str, str]] = (),
    titles: Mapping[str, str] | None = None,
    keep_ended: int | None = None,
) -> Progress:
    """What a person (or a log shipper) sees while runs are waited on, on stderr: a live table
    on a terminal, else a line per change; with ``--log-format json``, one event per line.

    For the live table: ``expect``, the (name, project id) of the triggers planned, shown before
    their runs start; ``titles``, Hex titles by project id; ``client``, whose budget says when
    the next trigger may go; ``keep_ended``, how many rows of ended triggers it keeps (a
    daemon's, the latest)."""
    from hexdbt.hex.progress import EventProgress, LineProgress

    if log_format == "json":
        return EventProgress(_json_log(), heartbeat_s=heartbeat_s)
    if not draws_in_place(sys.stderr):
        return LineProgress(make_log(prefix=prefix), heartbeat_s=heartbeat_s)
    from hexdbt.cli.live_view import LiveView, terminal_console
    from hexdbt.hex.budget import CallKind

    budget = client.budget if client is not None else None
    view = LiveView(
        terminal_console(sys.stderr),
        titles=titles,
        next_slot_at=(lambda: budget.next_slot_at(CallKind.RUN_PROJECT)) if budget else None,
        # Lines written to stdout meanwhile (dbt's) scroll above the live table.
        redirect_stdout=draws_in_place(sys.stdout),
        keep_ended=keep_ended,
    )
    view.expect(expect)
    return view


def echo_outcomes(outcomes: Sequence[Outcome], titles: Mapping[str, str] | None = None) -> None:
    """The human result on stdout: on a terminal a table that fits its width, else plain lines
    with ids and URLs whole. ``titles``: Hex titles by project id, for projects named by id."""
    if draws_in_place(sys.stdout):
        from hexdbt.cli.live_view import outcome_table, terminal_console

        terminal_console(sys.stdout).print(outcome_table(outcomes, titles))
        return
    from hexdbt.report import render_table

    click.echo(render_table(outcomes))


def make_log(log_format: str = "text", *, prefix: str = "") -> Callable[[str], None]:
    """Where a command's notes go: a line on stderr, or a ``note`` event with ``--log-format json``."""
    if log_format == "json":
        log = _json_log()
        return lambda message: log.emit("note", message=message)
    return lambda message: err_line(prefix + message)


def _json_log() -> EventLog:
    from hexdbt.logs import LogFormat, StreamEventLog

    return StreamEventLog(log_format=LogFormat.JSON)


# -- options several commands share: one definition each ------------------------------------------

state_url_option = click.option(
    "--state-url",
    metavar="URL",
    help="Where the ledger and the rate budget live: postgresql://user@host/db shares them"
    " between machines, sqlite:///folder keeps files (default: HEXDBT_STATE_URL, else"
    " HEXDBT_STATE_DIR or the user's state folder).",
)

project_dir_option = click.option(
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The dbt project folder (default: DBT_PROJECT_DIR, else the nearest parent holding"
    " dbt_project.yml).",
)
target_path_option = click.option(
    "--target-path",
    type=click.Path(file_okay=False, path_type=Path),
    help="dbt's target folder (default: DBT_TARGET_PATH, else target-path in dbt_project.yml,"
    " else target).",
)
mappings_option = click.option(
    "--mappings",
    "mappings_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The mapping file (default: HEXDBT_MAPPINGS, else hex_mappings.yml in the current"
    " folder, else only the dbt exposures that declare Hex apps).",
)
wait_option = click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for the Hex runs to end (a mapping's own `wait: false` also skips waiting).",
)
max_live_runs_option = click.option(
    "--max-live-runs",
    default=10,
    show_default=True,
    type=click.IntRange(min=1, max=25),
    help="At most this many Hex runs live at once (Hex allows 25 kernels per user).",
)
cancel_on_interrupt_option = click.option(
    "--cancel-on-interrupt/--no-cancel-on-interrupt",
    default=True,
    show_default=True,
    help="On Ctrl-C or SIGTERM, cancel the Hex runs this command started.",
)
report_junit_option = click.option(
    "--report-junit",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a JUnit XML report here: one test case per mapped Hex project.",
)
allow_insecure_http_option = click.option(
    "--allow-insecure-http",
    is_flag=True,
    help="Allow an http:// HEX_BASE_URL to a host other than this machine.",
)
report_markdown_option = click.option(
    "--report-markdown",
    type=click.Path(dir_okay=False, path_type=Path),
    help='Append a Markdown table of the outcomes here (e.g. "$GITHUB_STEP_SUMMARY").',
)


def write_reports(
    outcomes: Sequence[Outcome],
    *,
    junit: Path | None,
    markdown: Path | None,
    title: str,
    mapped: bool = True,
) -> None:
    """The CI reports a command was asked for: JUnit XML and a Markdown table. ``mapped``:
    whether the outcomes are of a mapping's projects (not of ids given to ``trigger``)."""
    from hexdbt.report import write_junit, write_markdown

    if junit is not None:
        write_junit(outcomes, junit, suite_name=title)
    if markdown is not None:
        write_markdown(outcomes, markdown, title=title, mapped=mapped)


metrics_port_option = click.option(
    "--metrics-port",
    type=click.IntRange(min=0, max=65535),
    metavar="PORT",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics, a health check at /healthz and"
    " the status page at / (0: any free port, logged in the metrics_serving event).",
)
metrics_host_option = click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="The address --metrics-port listens on (0.0.0.0: every interface).",
)


def watched_folders_options(default: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--project-dir`` and ``--target-path``, repeatable: the target folders a daemon watches
    (``project_dirs``, ``target_paths``); ``default``: what it watches without them."""
    project_dirs = click.option(
        "--project-dir",
        "project_dirs",
        multiple=True,
        type=click.Path(file_okay=False, path_type=Path),
        help=f"A dbt project whose target folder to watch (repeatable; without it: {default}).",
    )
    target_paths = click.option(
        "--target-path",
        "target_paths",
        multiple=True,
        type=click.Path(file_okay=False, path_type=Path),
        help="A target folder to watch (repeatable; relative to the project; paired in order"
        " with --project-dir when as many are given).",
    )
    return lambda command: project_dirs(target_paths(command))


def checked_mappings_file(mappings_file: Path | None) -> Path | None:
    """The mapping file a command will read (absolute), read once now: a broken one is a usage
    error at start, not a log line per invocation or an error after a 40-minute build. None when
    there is none (the dbt exposures are the mapping)."""
    from hexdbt.mapping import load_mappings, resolve_mappings_path

    path, explicit = resolve_mappings_path(mappings_file)
    if not explicit and not path.exists():
        return None
    load_mappings(path, None)
    return path.absolute()


class StartedDaemon(NamedTuple):
    """What ``daemon_started`` hands a daemon's command."""

    log: StreamEventLog
    client: HexClient
    ledger: Ledger
    signals: Signals
    metrics: DaemonMetrics | None


@contextmanager
def daemon_started(
    daemon: str,
    *,
    log_format: str,
    state_url: str | None,
    allow_insecure_http: bool,
    mappings_file: Path | None,
    metrics_at: tuple[str, int | None] = ("", None),
    **started: Any,
) -> Iterator[StartedDaemon]:
    """How every daemon (``watch``, ``relay``, ``serve``) starts: the signals that stop it
    installed, its client, the ``started`` event (version, Hex, state, then ``started``'s fields
    and the mapping), its ledger, and its metrics and page served on ``metrics_at`` (host, port;
    no port: none); all let go of when it ends."""
    from hexdbt._version import __version__
    from hexdbt.factory import open_ledger
    from hexdbt.logs import LogFormat, StreamEventLog
    from hexdbt.settings import resolve_state_location
    from hexdbt.signals import Signals

    log = StreamEventLog(log_format=LogFormat(log_format))
    signals = Signals()
    state = resolve_state_location(state_url)
    with (
        signals.installed(),
        hex_client(allow_insecure_http, stop=signals.stop, state=state) as client,
    ):
        log.emit(
            "started",
            version=__version__,
            hex=client.base_url,
            state=state.describe(),
            **started,
            mappings=str(mappings_file) if mappings_file else "dbt exposures only",
        )
        with open_ledger(client, state) as ledger, ExitStack() as served:
            host, port = metrics_at
            metrics = _serve_daemon_metrics(
                served, daemon, host, port, log, ledger, client, mappings_file
            )
            yield StartedDaemon(log, client, ledger, signals, metrics)


def _serve_daemon_metrics(
    served: ExitStack,
    daemon: str,
    host: str,
    port: int | None,
    log: EventLog,
    ledger: Ledger,
    client: HexClient,
    mappings_file: Path | None,
) -> DaemonMetrics | None:
    """A daemon's metrics and status page, served on ``host:port`` until ``served`` closes
    (None: no port)."""
    if port is None:
        return None
    from hexdbt.metrics import DaemonMetrics
    from hexdbt.page.routes import daemon_page
    from hexdbt.web import HttpServer, build_app

    metrics = DaemonMetrics(daemon)
    routes, guard = daemon_page(ledger, client.budget, client.clock, mappings_file)
    app = build_app(metrics, routes=routes, middleware=guard)
    server = served.enter_context(HttpServer(app, host, port))
    log.emit(
        "metrics_serving",
        url=f"{server.url}/metrics",
        health=f"{server.url}/healthz",
        page=f"{server.url}/",
    )
    return metrics


log_format_option = click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Progress and notes on stderr: text for people, or one JSON object per line for log"
    " shippers.",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document on stdout, errors included."
)
