"""`hexdbt watch`: the watcher daemon next to dbt."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hexdbt.cli._common import (
    allow_insecure_http_option,
    checked_mappings_file,
    daemon_started,
    draws_in_place,
    make_progress,
    metrics_host_option,
    metrics_port_option,
    state_url_option,
    watched_folders_options,
)

if TYPE_CHECKING:
    from hexdbt.hex.client import HexClient
    from hexdbt.hex.polls import Progress
    from hexdbt.logs import EventLog

# The rows of ended runs a foreground watch keeps on screen (it runs for days).
KEEP_ENDED_ROWS = 10

COMMANDS: list[click.Command] = []


@click.command()
@watched_folders_options("DBT_PROJECT_DIR, else the nearest parent holding dbt_project.yml")
@click.option(
    "--mappings",
    "mappings_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The mapping file (default: HEXDBT_MAPPINGS, else hex_mappings.yml here); read again"
    " whenever it changed, so edits apply without a restart.",
)
@click.option(
    "--polling",
    is_flag=True,
    help="Poll the folders instead of using the OS's file events (network file systems).",
)
@click.option(
    "--replay-latest",
    is_flag=True,
    help="Also act on the run_results.json already there at start (unless the ledger has it).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line per event on stderr: text, or one JSON object per line for log shippers. On a"
    " terminal, text shows the runs in a live table below the other events.",
)
@click.option(
    "--debounce-ms",
    type=click.IntRange(min=0, max=60_000),
    default=200,
    show_default=True,
    help="Quiet time before a file written without a close event is read, and between re-reads.",
)
@click.option(
    "--max-live-runs",
    default=10,
    show_default=True,
    type=click.IntRange(min=1, max=25),
    help="At most this many Hex runs live at once (Hex allows 25 kernels per user).",
)
@metrics_port_option
@metrics_host_option
@state_url_option
@allow_insecure_http_option
def watch(
    project_dirs: tuple[Path, ...],
    target_paths: tuple[Path, ...],
    mappings_file: Path | None,
    polling: bool,
    replay_latest: bool,
    log_format: str,
    debounce_ms: int,
    max_live_runs: int,
    metrics_port: int | None,
    metrics_host: str,
    state_url: str | None,
    allow_insecure_http: bool,
) -> None:
    """Watch dbt target folders and trigger Hex for every new dbt invocation, until stopped.

    Each new run_results.json goes through the same plan and exactly-once dispatch as
    `hexdbt run`; several invocations may be in flight at once. On start it re-attaches to Hex
    runs a previous process left live and sends what is queued. SIGTERM or Ctrl-C stops it
    within seconds (exit 0), leaving live Hex runs running for the next start to re-attach.

    \b
    Examples:
      hexdbt watch --project-dir ~/analytics
      hexdbt watch --project-dir a --project-dir b --log-format json
      hexdbt watch --project-dir ~/analytics --metrics-port 9464
    """
    from hexdbt.engine import EngineSettings
    from hexdbt.feeders.artifact_watch import WatchOptions
    from hexdbt.feeders.watch import WatchDaemon
    from hexdbt.feeders.watch_targets import resolve_targets

    targets = resolve_targets(list(project_dirs), list(target_paths))
    resolved_mappings = checked_mappings_file(mappings_file)
    options = WatchOptions(
        targets=tuple(targets),
        mappings_file=resolved_mappings,
        polling=polling,
        replay_latest=replay_latest,
        debounce_s=debounce_ms / 1000,
    )
    with daemon_started(
        "watch",
        log_format=log_format,
        state_url=state_url,
        allow_insecure_http=allow_insecure_http,
        mappings_file=resolved_mappings,
        metrics_at=(metrics_host, metrics_port),
    ) as (log, client, ledger, _signals, metrics):
        settings = EngineSettings(max_live_runs=max_live_runs, cancel_on_interrupt=False)
        WatchDaemon(
            client,
            ledger,
            options,
            log,
            settings=settings,
            progress=_progress(log_format, log, client),
            metrics=metrics,
        ).run()
    # Being stopped is how a daemon ends: a clean stop is a success for systemd and friends.
    raise SystemExit(0)


def _progress(log_format: str, log: EventLog, client: HexClient) -> Progress:
    """On a terminal, the live view of ``trigger --wait`` and ``run``, with the other events as
    lines above it; elsewhere, and with ``--log-format json``, one event per change."""
    if log_format == "text" and draws_in_place(sys.stderr):
        return make_progress(client=client, keep_ended=KEEP_ENDED_ROWS)
    from hexdbt.hex.progress import EventProgress

    return EventProgress(log, heartbeat_s=3600.0)


COMMANDS.append(watch)
