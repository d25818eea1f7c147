"""`hexdbt serve`: one long-running process for dbt Cloud's webhooks and polling, with /metrics
and /healthz, on one engine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from hexdbt.cli._common import (
    allow_insecure_http_option,
    checked_mappings_file,
    daemon_started,
    log_format_option,
    mappings_option,
    max_live_runs_option,
    state_url_option,
    watched_folders_options,
)
from hexdbt.errors import ConfigError

COMMANDS: list[click.Command] = []

DEFAULT_PORT = 8580


def _job_ids(text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    ids = [item.strip() for item in text.split(",") if item.strip()]
    if not ids or not all(item.isdigit() for item in ids):
        raise ConfigError(
            f"--dbt-cloud-jobs {text!r}: expected dbt Cloud job ids separated by commas",
            hint="e.g. --dbt-cloud-jobs 1234,5678 (the number after /jobs/ in dbt Cloud's URLs)",
        )
    return frozenset(ids)


@click.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address the HTTP server listens on (0.0.0.0: every interface; put TLS in front,"
    " see docs/dbt-cloud.md).",
)
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="The HTTP server's port (0: any free one, logged in the serving event).",
)
@mappings_option
@watched_folders_options("none: dbt Cloud only")
@click.option(
    "--relay-project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Also read this dbt project's outbox (the on-run-end hook's), as `hexdbt relay` does,"
    " through its profile.",
)
@click.option(
    "--relay-profiles-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="With --relay-project-dir: where profiles.yml is (dbt's default otherwise).",
)
@click.option(
    "--relay-target", help="With --relay-project-dir: the profile's target (dbt's default)."
)
@click.option(
    "--dbt-cloud-host",
    metavar="HOST",
    help="dbt Cloud's host name or base URL (default: DBT_CLOUD_HOST, else cloud.getdbt.com).",
)
@click.option(
    "--dbt-cloud-account",
    metavar="ID",
    help="The dbt Cloud account id (default: DBT_CLOUD_ACCOUNT_ID).",
)
@click.option(
    "--dbt-cloud-config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A YAML file mapping dbt Cloud job ids (jobs:) or project ids (projects:) to mapping"
    " files; other runs use --mappings.",
)
@click.option(
    "--dbt-cloud-jobs",
    "jobs_text",
    metavar="J1,J2",
    help="Act only on these dbt Cloud jobs (default: every job of a deployment environment"
    " that is not a CI or merge job, looked up through the API).",
)
@click.option(
    "--dbt-cloud-poll",
    "poll_interval_s",
    type=click.FloatRange(min=1),
    is_flag=False,
    flag_value=60.0,
    default=None,
    metavar="[SECONDS]",
    help="Also list the jobs' runs every SECONDS (60 when none given) and take up every ended"
    " run not heard of, within the look-back window: for networks that cannot take a webhook.",
)
@click.option(
    "--dbt-cloud-look-back-hours",
    "look_back_hours",
    type=click.FloatRange(min=0, min_open=True),
    default=24.0,
    show_default=True,
    help="Polling takes runs that ended this long ago at most.",
)
@click.option(
    "--dbt-cloud-give-up-hours",
    "give_up_hours",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="A run whose artifacts cannot be had (a dbt step's run_results.json still missing,"
    " dbt Cloud failing) is tried again, with a growing interval, for this long after its first"
    " failed try; then it is given up, as an error naming the run and the step.",
)
@click.option(
    "--dbt-cloud-take-old-runs",
    "take_old_runs",
    is_flag=True,
    help="The first start of polling also takes the runs that ended before it (within the"
    " look-back window); by default it takes none of them.",
)
@log_format_option
@max_live_runs_option
@state_url_option
@allow_insecure_http_option
def serve(
    host: str,
    port: int,
    mappings_file: Path | None,
    project_dirs: tuple[Path, ...],
    target_paths: tuple[Path, ...],
    relay_project_dir: Path | None,
    relay_profiles_dir: Path | None,
    relay_target: str | None,
    dbt_cloud_host: str | None,
    dbt_cloud_account: str | None,
    config_file: Path | None,
    jobs_text: str | None,
    poll_interval_s: float | None,
    look_back_hours: float,
    give_up_hours: float,
    take_old_runs: bool,
    log_format: str,
    max_live_runs: int,
    state_url: str | None,
    allow_insecure_http: bool,
) -> None:
    """Trigger Hex from dbt Cloud's job runs (signed webhooks, polling, or both), watched target
    folders and the on-run-end hook's outbox, on one engine and one HTTP server, until stopped.

    A completed run's steps' artifacts are read through dbt Cloud's Admin API and planned as one
    invocation, as `hexdbt plan` would, and each Hex project starts at most once per run, however
    many deliveries, polls, restarts or serve processes on one state. One HTTP server (127.0.0.1
    by default) serves the status page at /, POST /webhooks/dbt-cloud, /metrics and /healthz
    (HEXDBT_PAGE_TOKEN or HEXDBT_PAGE_PASSWORD guard the page and /metrics). SIGTERM or Ctrl-C stops it
    (exit 0), leaving live Hex runs for the next start. Setup: docs/dbt-cloud.md.

    \b
    Examples:
      hexdbt serve                                # webhooks (HEXDBT_DBT_CLOUD_WEBHOOK_SECRET)
      hexdbt serve --dbt-cloud-poll               # polling every 60 s, no inbound network
      hexdbt serve --dbt-cloud-jobs 1234 --port 9000 --dbt-cloud-poll 300
      hexdbt serve --project-dir ~/analytics      # as hexdbt watch, with /metrics
    """
    from hexdbt.dbt.locate import find_project_dir
    from hexdbt.engine import EngineSettings
    from hexdbt.feeders.artifact_watch import WatchOptions
    from hexdbt.feeders.dbt_cloud import DbtCloudOptions, MappingsByRun, load_job_mappings
    from hexdbt.feeders.relay import DbtTarget, RelayOptions
    from hexdbt.feeders.serve import DbtCloudFeeding, ServeOptions, check_dbt_cloud
    from hexdbt.feeders.serve import serve as run_serve
    from hexdbt.feeders.watch_targets import resolve_targets
    from hexdbt.page.routes import daemon_page
    from hexdbt.settings import resolve_dbt_cloud

    job_ids = _job_ids(jobs_text)
    watching = bool(project_dirs or target_paths)
    if (relay_profiles_dir or relay_target) and relay_project_dir is None:
        raise ConfigError(
            "--relay-profiles-dir and --relay-target go with --relay-project-dir",
            hint="hexdbt serve --relay-project-dir analytics --relay-target prod",
        )
    dbt_cloud = check_dbt_cloud(
        resolve_dbt_cloud(
            host=dbt_cloud_host,
            account_id=dbt_cloud_account,
            allow_insecure_http=allow_insecure_http,
        ),
        polling=poll_interval_s is not None,
        required=not watching and relay_project_dir is None,
    )
    resolved_mappings = checked_mappings_file(mappings_file)
    by_run = MappingsByRun(resolved_mappings)
    if config_file is not None:
        by_run = load_job_mappings(config_file, resolved_mappings)
        for file in by_run.files():  # each read once now: a broken one is a usage error
            checked_mappings_file(file)
    options = ServeOptions(
        host=host,
        port=port,
        dbt_cloud=None
        if dbt_cloud is None
        else DbtCloudFeeding(
            dbt_cloud,
            DbtCloudOptions(
                account_id=dbt_cloud.account_id,
                mappings=by_run,
                job_ids=job_ids,
                poll_interval_s=poll_interval_s,
                look_back_s=look_back_hours * 3600,
                take_old_runs=take_old_runs,
                give_up_after_s=give_up_hours * 3600,
            ),
        ),
        watch=WatchOptions(
            targets=tuple(resolve_targets(list(project_dirs), list(target_paths))),
            mappings_file=resolved_mappings,
        )
        if watching
        else None,
        relay=None
        if relay_project_dir is None
        else (
            DbtTarget(find_project_dir(relay_project_dir), relay_profiles_dir, relay_target),
            RelayOptions(resolved_mappings),
        ),
    )
    with daemon_started(
        "serve",
        log_format=log_format,
        state_url=state_url,
        allow_insecure_http=allow_insecure_http,
        mappings_file=resolved_mappings,
        dbt_cloud=dbt_cloud.api_url if dbt_cloud else "off",
        account=dbt_cloud.account_id if dbt_cloud else None,
    ) as (log, client, ledger, _signals, _metrics):
        settings = EngineSettings(max_live_runs=max_live_runs, cancel_on_interrupt=False)
        routes, guard = daemon_page(ledger, client.budget, client.clock, resolved_mappings)
        page = replace(options, routes=routes, middleware=guard)
        run_serve(client, ledger, page, log, settings=settings)
    # Being stopped is how a daemon ends: a clean stop is a success for systemd and friends.
    raise SystemExit(0)


COMMANDS.append(serve)
