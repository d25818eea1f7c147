"""What the ledger drives: `hexdbt run` and `hexdbt status`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hexdbt.cli._common import (
    JsonAwareCommand,
    allow_insecure_http_option,
    cancel_on_interrupt_option,
    echo_outcomes,
    error_payload,
    fail,
    hex_client,
    json_option,
    log_format_option,
    make_log,
    make_progress,
    mappings_option,
    max_live_runs_option,
    print_json,
    project_dir_option,
    report_junit_option,
    report_markdown_option,
    state_url_option,
    target_path_option,
    wait_option,
    write_reports,
)
from hexdbt.errors import HexdbtError
from hexdbt.signals import Signals
from hexdbt.wording import counted

if TYPE_CHECKING:
    from hexdbt.outcomes import Outcome

COMMANDS: list[click.Command] = []


def _report(
    *,
    as_json: bool,
    header: dict[str, Any],
    outcomes: list[Outcome],
    earlier: list[Outcome],
    exit_code: int,
) -> None:
    from hexdbt.report import summary_line

    if as_json:
        print_json(
            {
                **header,
                "exitCode": exit_code,
                "projects": [outcome.to_json() for outcome in outcomes],
                "earlierQueue": [outcome.to_json() for outcome in earlier],
            }
        )
        return
    echo_outcomes(outcomes)
    if earlier:
        click.echo("\nFrom the queue of earlier invocations:")
        echo_outcomes(earlier)
    click.echo(summary_line(outcomes))


@click.command(cls=JsonAwareCommand)
@project_dir_option
@target_path_option
@mappings_option
@wait_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Plan, and let Hex validate each trigger (dryRun); nothing runs, nothing is recorded.",
)
@max_live_runs_option
@click.option(
    "--resend-ambiguous",
    is_flag=True,
    help="Send again a trigger whose earlier POST may or may not have started a run.",
)
@cancel_on_interrupt_option
@report_junit_option
@report_markdown_option
@log_format_option
@state_url_option
@allow_insecure_http_option
@json_option
def run(
    project_dir: Path | None,
    target_path: Path | None,
    mappings_file: Path | None,
    wait: bool,
    dry_run: bool,
    max_live_runs: int,
    resend_ambiguous: bool,
    cancel_on_interrupt: bool,
    report_junit: Path | None,
    report_markdown: Path | None,
    log_format: str,
    state_url: str | None,
    allow_insecure_http: bool,
    as_json: bool,
) -> None:
    """Trigger the Hex projects whose models the last dbt command refreshed, wait, report.

    Reads run_results.json and manifest.json where dbt wrote them. Each Hex project is started
    at most once per dbt invocation: running this twice re-attaches to the first one's runs.

    \b
    Example:
      dbt build && hexdbt run --report-junit reports/hex.xml
    """
    from hexdbt.engine import EngineSettings, dry_run_outcomes
    from hexdbt.factory import open_engine
    from hexdbt.feeders.after_build import run_after_build
    from hexdbt.outcomes import exit_code_of
    from hexdbt.planner.files import plan_from_artifacts
    from hexdbt.settings import resolve_state_location

    log = make_log(log_format)
    signals = Signals()
    try:
        state = resolve_state_location(state_url)
        planned = plan_from_artifacts(project_dir, target_path, mappings_file)
        plan = planned.plan
        header = {"invocation_id": plan.invocation_id, "command": plan.command, "dryRun": dry_run}
        earlier: list[Outcome] = []
        with (
            signals.installed(),
            hex_client(allow_insecure_http, stop=signals.stop, state=state) as client,
        ):
            if dry_run:
                outcomes = dry_run_outcomes(plan, client)
            else:
                settings = EngineSettings(
                    wait=wait,
                    max_live_runs=max_live_runs,
                    resend_ambiguous=resend_ambiguous,
                    cancel_on_interrupt=cancel_on_interrupt,
                )
                progress = make_progress(
                    log_format,
                    client=client,
                    expect=[(each.name, each.project_id) for each in plan.triggers],
                )
                with open_engine(
                    client, settings=settings, progress=progress, log=log, state=state
                ) as engine:
                    outcomes, earlier = run_after_build(
                        engine,
                        plan,
                        log=log,
                        project_dir=str(planned.project_dir) if planned.project_dir else None,
                    )
    except HexdbtError as exc:
        if as_json:
            print_json({"error": error_payload(exc), "exitCode": exc.exit_code})
        raise
    exit_code = signals.exit_code if signals.stop.is_set() else exit_code_of([*outcomes, *earlier])
    write_reports(outcomes, junit=report_junit, markdown=report_markdown, title="hexdbt run")
    _report(as_json=as_json, header=header, outcomes=outcomes, earlier=earlier, exit_code=exit_code)
    raise SystemExit(exit_code)


COMMANDS.append(run)


@click.command(cls=JsonAwareCommand)
@click.option(
    "--limit",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many recent dbt invocations.",
)
@click.option(
    "--apps",
    is_flag=True,
    help="Instead: one row per mapped Hex app, with its models' last refresh, the run that"
    " reads it, its lag and its freshness target.",
)
@click.option("--check", is_flag=True, help="With --apps: exit 1 when an app is past its target.")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Instead: write the status page's apps table and timeline (the last 24 hours), as they"
    " are now, to this file: one self-contained HTML file (a CI artifact, an e-mail), written"
    " whole or not at all.",
)
@project_dir_option
@target_path_option
@mappings_option
@state_url_option
@json_option
def status(
    limit: int,
    apps: bool,
    check: bool,
    html_file: Path | None,
    project_dir: Path | None,
    target_path: Path | None,
    mappings_file: Path | None,
    state_url: str | None,
    as_json: bool,
) -> None:
    """Show what the ledger knows: recent invocations, their triggers and runs, and the queue;
    with --project-dir, only the invocations of that dbt project; with --apps, how fresh each
    mapped Hex app is.

    \b
    Examples:
      hexdbt status --limit 3
      hexdbt status --project-dir ~/analytics
      hexdbt status --apps --check    # exit 1 when an app is past its freshness_minutes
      hexdbt status --html reports/hex-apps.html
    """
    if check and not apps:
        raise click.UsageError("--check goes with --apps")
    if html_file is not None:
        if apps or as_json:
            raise click.UsageError("--html goes without --apps and --json")
        _status_as_html(html_file, project_dir, target_path, mappings_file, state_url)
        return
    if apps:
        _status_of_apps(project_dir, target_path, mappings_file, state_url, check, as_json)
        return
    from hexdbt.engine import outcome_of
    from hexdbt.ledger import Ledger, TriggerState
    from hexdbt.settings import resolve_state_location

    try:
        with Ledger.open(resolve_state_location(state_url)) as ledger:
            only = str(project_dir.resolve()) if project_dir is not None else None
            invocations = ledger.recent_invocations(limit, project_dir=only)
            per_invocation = [(inv, ledger.triggers_of(inv.invocation_id)) for inv in invocations]
            queue = ledger.in_state(TriggerState.QUEUED, TriggerState.PLANNED)
            live = ledger.in_state(TriggerState.STARTED, TriggerState.SENDING)
            ledger_path = ledger.where
    except HexdbtError as exc:
        fail(exc, as_json=as_json)

    if as_json:
        print_json(
            {
                "ledger": ledger_path,
                "invocations": [
                    {
                        "invocation_id": inv.invocation_id,
                        "command": inv.command,
                        "source": inv.source,
                        "projectDir": inv.project_dir,
                        "triggers": [outcome_of(record).to_json() for record in records],
                    }
                    for inv, records in per_invocation
                ],
                "queue": [
                    {**outcome_of(record).to_json(), "deadlineAt": record.deadline_at}
                    for record in queue
                ],
                "live": [outcome_of(record).to_json() for record in live],
            }
        )
        return
    click.echo(f"Ledger: {ledger_path}")
    if not invocations:
        click.echo("No dbt invocations handled yet.")
    for inv, records in per_invocation:
        click.echo(f"\nInvocation {inv.invocation_id} (dbt {inv.command}, via {inv.source})")
        if records:
            echo_outcomes([outcome_of(record) for record in records])
        else:
            click.echo("  no Hex project triggered")
    click.echo(
        f"\nQueue: {counted(len(queue), 'trigger')} waiting for the budget;"
        f" {counted(len(live), 'live run')}"
    )


def _status_as_html(
    html_file: Path,
    project_dir: Path | None,
    target_path: Path | None,
    mappings_file: Path | None,
    state_url: str | None,
) -> None:
    from hexdbt.clock import SystemClock
    from hexdbt.files import write_whole
    from hexdbt.ledger import Ledger
    from hexdbt.page.read_model import read_page
    from hexdbt.page.render import render_export
    from hexdbt.planner.files import mappings_of_project
    from hexdbt.settings import resolve_state_location

    try:
        mappings = mappings_of_project(project_dir, target_path, mappings_file)
        with Ledger.open(resolve_state_location(state_url)) as ledger:
            only = str(project_dir.resolve()) if project_dir is not None else None
            view = read_page(ledger, now=SystemClock().now(), mappings=mappings, project_dir=only)
        write_whole(html_file, render_export(view), what="the status page")
    except HexdbtError as exc:
        fail(exc, as_json=False)
    click.echo(
        f"Wrote {html_file}: {counted(len(view.apps), 'app')}, {view.stale} past the freshness"
        " target"
    )


def _status_of_apps(
    project_dir: Path | None,
    target_path: Path | None,
    mappings_file: Path | None,
    state_url: str | None,
    check: bool,
    as_json: bool,
) -> None:
    from hexdbt.clock import SystemClock
    from hexdbt.freshness import apps_freshness, render_apps
    from hexdbt.ledger import Ledger
    from hexdbt.planner.files import mappings_of_project
    from hexdbt.settings import resolve_state_location

    now = SystemClock().now()
    try:
        mappings = mappings_of_project(project_dir, target_path, mappings_file)
        with Ledger.open(resolve_state_location(state_url)) as ledger:
            rows = apps_freshness(ledger, mappings, now)
            where = ledger.where
    except HexdbtError as exc:
        fail(exc, as_json=as_json)
    stale = [row for row in rows if row.breached]
    exit_code = 1 if check and stale else 0
    if as_json:
        print_json(
            {
                "ledger": where,
                "apps": [row.to_json() for row in rows],
                "stale": [row.name for row in stale],
                "exitCode": exit_code,
            }
        )
    else:
        click.echo(f"Ledger: {where}")
        click.echo(render_apps(rows, now))
    if stale:
        from hexdbt.wording import counted

        names = ", ".join(row.name for row in stale)
        verb = "is" if len(stale) == 1 else "are"
        label = "Error" if check else "Note"
        click.echo(
            f"{label}: {counted(len(stale), 'app')} {verb} past the freshness target: {names}",
            err=True,
        )
    raise SystemExit(exit_code)


COMMANDS.append(status)
