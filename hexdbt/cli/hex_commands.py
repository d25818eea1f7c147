"""The direct Hex commands: trigger, list-projects, runs status|list|cancel.

Machine output (``--json``) is exactly one JSON document on stdout, on success and on failure
alike (click's own usage errors included); everything else a person reads goes to stderr, except
the human result of a command, which goes to stdout untruncated.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hexdbt.cli._common import (
    JsonAwareCommand,
    allow_insecure_http_option,
    draws_in_place,
    echo_outcomes,
    err_line,
    fail,
    hex_client,
    json_option,
    log_format_option,
    make_log,
    make_progress,
    print_json,
    report_junit_option,
    report_markdown_option,
    state_url_option,
    write_reports,
)
from hexdbt.errors import ConfigError, HexdbtError
from hexdbt.hex.models import update_published_results_for
from hexdbt.signals import Signals
from hexdbt.wording import counted

if TYPE_CHECKING:
    from hexdbt.hex.client import HexClient


def parse_input_params(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that parses as JSON keeps its type, anything else is a string."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"--input-param {pair!r}: expected KEY=VALUE", hint="e.g. --input-param region=EU"
            )
        if key in params:
            raise ConfigError(f"--input-param {key!r} is given twice")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


def parse_project_ids(values: Sequence[str]) -> list[str]:
    ids: list[str] = []
    for value in values:
        for piece in value.split(","):
            piece = piece.strip()
            if piece and piece not in ids:
                ids.append(piece)
    if not ids:
        raise ConfigError("no project id given", hint="hexdbt trigger PROJECT_ID [PROJECT_ID...]")
    return ids


@click.command(cls=JsonAwareCommand)
@click.argument("project_ids", nargs=-1, required=True, metavar="PROJECT_ID...")
@click.option(
    "--input-param",
    "input_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="An input of the app; a VALUE that parses as JSON keeps its type.",
)
@click.option(
    "--update-published/--no-update-published",
    default=None,
    help="Write the run's results into the published app (default: yes, but no when"
    " input params are given, since Hex then ignores them).",
)
@click.option(
    "--use-cached-sql/--no-use-cached-sql",
    default=True,
    show_default=True,
    help="Let SQL cells use their cache.",
)
@click.option("--view-id", default=None, help="Run with a saved view's inputs.")
@click.option(
    "--notify-slack",
    "slack_channels",
    multiple=True,
    metavar="CHANNEL",
    help="Slack channel id to notify when the run ends (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Let Hex validate the request; nothing runs.")
@click.option(
    "--idempotency-key",
    default=None,
    metavar="KEY",
    help="Run each project at most once for this key: a retried step that passes the same key"
    " follows the run its first try started (e.g. your CI's run id).",
)
@click.option("--wait", is_flag=True, help="Wait for the runs to end.")
@click.option(
    "--timeout-minutes",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True),
    help="With --wait: give up on a run after this long.",
)
@click.option(
    "--cancel-on-timeout/--no-cancel-on-timeout",
    default=True,
    show_default=True,
    help="Cancel a run in Hex when it times out.",
)
@click.option(
    "--cancel-on-interrupt/--no-cancel-on-interrupt",
    default=True,
    show_default=True,
    help="On Ctrl-C or SIGTERM, cancel the runs this command started.",
)
@click.option(
    "--poll-interval",
    default=None,
    type=click.FloatRange(min=1),
    help="Poll every N seconds (the seed's fixed schedule, e.g. 10) instead of adaptively.",
)
@report_junit_option
@report_markdown_option
@log_format_option
@state_url_option
@allow_insecure_http_option
@json_option
def trigger(
    project_ids: tuple[str, ...],
    input_params: tuple[str, ...],
    update_published: bool | None,
    use_cached_sql: bool,
    view_id: str | None,
    slack_channels: tuple[str, ...],
    dry_run: bool,
    idempotency_key: str | None,
    wait: bool,
    timeout_minutes: float,
    cancel_on_timeout: bool,
    cancel_on_interrupt: bool,
    poll_interval: float | None,
    report_junit: Path | None,
    report_markdown: Path | None,
    log_format: str,
    state_url: str | None,
    allow_insecure_http: bool,
    as_json: bool,
) -> None:
    """Run published Hex projects, each judged on its own.

    \b
    Examples:
      hexdbt trigger 5a8591dd-4039-49df-9202-96385ba3eff8 --wait
      hexdbt trigger ID1,ID2 --input-param region=EU --input-param days=7 --json
    """
    from hexdbt.engine import EngineSettings, dry_run_outcomes
    from hexdbt.factory import open_engine
    from hexdbt.feeders.direct import direct_plan, run_direct
    from hexdbt.hex.models import Notification, RunRequest
    from hexdbt.hex.polls import FixedSchedule
    from hexdbt.outcomes import exit_code_of
    from hexdbt.report import summary_line
    from hexdbt.settings import resolve_state_location

    signals = Signals()
    titles: dict[str, str] = {}
    log = make_log(log_format)
    try:
        ids = parse_project_ids(project_ids)
        params = parse_input_params(input_params)
        publish = update_published_results_for(update_published, params, where="--update-published")
        request = RunRequest(
            input_params=params,
            update_published_results=publish,
            use_cached_sql_results=use_cached_sql,
            view_id=view_id,
            notifications=(Notification(slack_channel_ids=slack_channels),)
            if slack_channels
            else (),
        )
        plan = direct_plan(
            ids,
            request,
            idempotency_key=idempotency_key,
            timeout_minutes=timeout_minutes,
            cancel_on_timeout=cancel_on_timeout,
        )
        if params and update_published is None:
            log(
                "Note: sending updatePublishedResults=false because input params were given"
                " (Hex ignores them otherwise); the published app keeps its results"
            )
        state = resolve_state_location(state_url)
        with (
            signals.installed(),
            hex_client(allow_insecure_http, stop=signals.stop, state=state) as client,
        ):
            if dry_run:
                outcomes = dry_run_outcomes(plan, client)
            else:
                settings = EngineSettings(wait=wait, cancel_on_interrupt=cancel_on_interrupt)
                if wait and (draws_in_place(sys.stderr) or draws_in_place(sys.stdout)):
                    titles = project_titles(client, ids)
                progress = make_progress(
                    log_format,
                    client=client,
                    expect=[(each.name, each.project_id) for each in plan.triggers],
                    titles=titles,
                )
                with open_engine(
                    client,
                    settings=settings,
                    progress=progress,
                    schedule=FixedSchedule(poll_interval) if poll_interval else None,
                    log=log,
                    state=state,
                ) as engine:
                    outcomes = run_direct(engine, plan)
    except HexdbtError as exc:
        fail(exc, as_json=as_json)
    code = signals.exit_code if signals.stop.is_set() else exit_code_of(outcomes)
    write_reports(
        outcomes,
        junit=report_junit,
        markdown=report_markdown,
        title="hexdbt trigger",
        mapped=False,
    )
    if as_json:
        print_json(
            {
                "invocation_id": plan.invocation_id,
                "dryRun": dry_run,
                "updatePublishedResults": publish,
                "exitCode": code,
                "projects": [outcome.to_json() for outcome in outcomes],
            }
        )
    else:
        echo_outcomes(outcomes, titles)
        click.echo(summary_line(outcomes, mapped=False))
    sys.exit(code)


def project_titles(client: HexClient, project_ids: Sequence[str]) -> dict[str, str]:
    """The Hex titles of the projects a person is about to watch run, by id (one call each; a
    project Hex will not describe keeps its id, and its trigger says why)."""
    titles: dict[str, str] = {}
    for project_id in project_ids:
        try:
            titles[project_id] = client.get_project(project_id).title
        except HexdbtError:
            continue
    return titles


def _api_command(as_json: bool, allow_insecure_http: bool, body: Callable[[HexClient], Any]) -> Any:
    try:
        with hex_client(allow_insecure_http) as client:
            return body(client)
    except HexdbtError as exc:
        fail(exc, as_json=as_json)


@click.command("list-projects", cls=JsonAwareCommand)
@click.option(
    "--limit",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many projects to list (hexdbt follows Hex's pages).",
)
@click.option("--include-archived", is_flag=True)
@click.option("--include-trashed", is_flag=True)
@allow_insecure_http_option
@json_option
def list_projects(
    limit: int,
    include_archived: bool,
    include_trashed: bool,
    allow_insecure_http: bool,
    as_json: bool,
) -> None:
    """List Hex projects: id, status and title (with --json, an array of objects with projectId).

    \b
    Example:
      hexdbt list-projects --limit 200 --json | jq -r '.[].projectId'
    """
    projects = _api_command(
        as_json,
        allow_insecure_http,
        lambda client: list(
            client.iter_projects(
                limit=limit, include_archived=include_archived, include_trashed=include_trashed
            )
        ),
    )
    if as_json:
        print_json([project.to_json() for project in projects])
        return
    for project in projects:
        flags = [
            "published" if project.published else "unpublished",
            *(["archived"] if project.archived else []),
            *(["trashed"] if project.trashed else []),
        ]
        click.echo(f"{project.id}  {','.join(flags)}  {project.title}")
    err_line(counted(len(projects), "project"))


@click.group("runs")
def runs() -> None:
    """A project's runs: status, list, cancel.

    \b
    Example:
      hexdbt runs list 5a8591dd-4039-49df-9202-96385ba3eff8 --limit 5
    """


@runs.command("status", cls=JsonAwareCommand)
@click.argument("project_id")
@click.argument("run_id")
@allow_insecure_http_option
@json_option
def runs_status(project_id: str, run_id: str, allow_insecure_http: bool, as_json: bool) -> None:
    """Show one run's status (exit 0 whatever the status; it is in the output).

    \b
    Example:
      hexdbt runs status 5a8591dd-4039-49df-9202-96385ba3eff8 RUN_ID --json
    """
    status = _api_command(
        as_json, allow_insecure_http, lambda client: client.get_run_status(project_id, run_id)
    )
    if as_json:
        print_json(status.to_json())
        return
    click.echo(_run_line(status))


def _run_line(status: Any) -> str:
    from hexdbt.clock import to_iso
    from hexdbt.hex.progress import format_elapsed

    elapsed = (
        format_elapsed(status.elapsed_time_ms / 1000) if status.elapsed_time_ms is not None else "-"
    )
    start = to_iso(status.start_time) if status.start_time is not None else "-"
    return (
        f"{status.run_id}  {status.status}  {status.run_trigger or '-'}  started {start}"
        f"  elapsed {elapsed}  {status.run_url or ''}".rstrip()
    )


@runs.command("list", cls=JsonAwareCommand)
@click.argument("project_id")
@click.option("--limit", default=25, show_default=True, type=click.IntRange(1, 100))
@click.option("--offset", default=0, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--status",
    "status_filter",
    default=None,
    type=click.Choice(
        ["PENDING", "RUNNING", "COMPLETED", "ERRORED", "KILLED", "UNABLE_TO_ALLOCATE_KERNEL"]
    ),
)
@click.option(
    "--trigger",
    "run_trigger",
    default=None,
    type=click.Choice(["API", "SCHEDULED", "APP_REFRESH", "ALL"]),
)
@allow_insecure_http_option
@json_option
def runs_list(
    project_id: str,
    limit: int,
    offset: int,
    status_filter: str | None,
    run_trigger: str | None,
    allow_insecure_http: bool,
    as_json: bool,
) -> None:
    """List a project's runs, newest first.

    \b
    Example:
      hexdbt runs list 5a8591dd-4039-49df-9202-96385ba3eff8 --limit 10
    """
    page = _api_command(
        as_json,
        allow_insecure_http,
        lambda client: client.get_project_runs(
            project_id,
            limit=limit,
            offset=offset,
            status_filter=status_filter,
            run_trigger_filter=run_trigger,
        ),
    )
    if as_json:
        print_json({"runs": [run.to_json() for run in page.runs], "nextPage": page.next_page})
        return
    for run in page.runs:
        click.echo(_run_line(run))
    err_line(counted(len(page.runs), "run"))


@runs.command("cancel", cls=JsonAwareCommand)
@click.argument("project_id")
@click.argument("run_id")
@allow_insecure_http_option
@json_option
def runs_cancel(project_id: str, run_id: str, allow_insecure_http: bool, as_json: bool) -> None:
    """Cancel a live run (Hex marks it KILLED).

    \b
    Example:
      hexdbt runs cancel 5a8591dd-4039-49df-9202-96385ba3eff8 RUN_ID
    """
    _api_command(as_json, allow_insecure_http, lambda client: client.cancel_run(project_id, run_id))
    if as_json:
        print_json({"projectId": project_id, "runId": run_id, "cancelled": True})
        return
    click.echo(f"cancelled run {run_id} of project {project_id}")


COMMANDS: list[click.Command] = [trigger, list_projects, runs]
