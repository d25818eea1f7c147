"""The direct Hex commands: trigger, list-projects, runs status|list|cancel.

Machine output (``--json``) is exactly one JSON document on stdout, on success and on failure
alike (click's own usage errors included); everything else a person reads goes to stderr, except
the human result of a command, which goes to stdout untruncated.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hexdbt.cli._common import (
    JsonAwareCommand,
    allow_insecure_http_option,
    err_line,
    error_payload,
    fail,
    hex_client,
    json_option,
    log_format_option,
    make_log,
    make_progress,
    print_error,
    print_json,
    report_junit_option,
    report_markdown_option,
    write_reports,
)
from hexdbt.errors import (
    ConfigError,
    HexdbtError,
)
from hexdbt.signals import Signals

if TYPE_CHECKING:
    from hexdbt.hex.client import HexClient
    from hexdbt.hex.models import Run
    from hexdbt.hex.waiter import RunResult
    from hexdbt.report import Outcome as ReportOutcome


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


def resolve_update_published(flag: bool | None, params: dict[str, Any]) -> tuple[bool, str | None]:
    """The value to send, and a note for stderr when hexdbt chose it for the user."""
    if params and flag is True:
        raise ConfigError(
            "--update-published cannot be used with --input-param: Hex ignores input params"
            " when updatePublishedResults is true",
            hint="drop --update-published (hexdbt then sends false) or drop the input params",
        )
    if flag is None and params:
        return False, (
            "Note: sending updatePublishedResults=false because input params were given"
            " (Hex ignores them otherwise); the published app keeps its results"
        )
    return (True if flag is None else flag), None


@dataclass
class _Item:
    """One project of a trigger command and what became of it."""

    project_id: str
    run: Run | None = None
    error: HexdbtError | None = None
    result: RunResult | None = None
    cancel_note: str | None = None

    def outcome(self, *, dry_run: bool) -> ReportOutcome:
        """What became of this project, in the terms of hexdbt's reports."""
        from hexdbt.hex.waiter import Outcome as WaitOutcome
        from hexdbt.report import Outcome, OutcomeKind, kind_of_final_status

        run = self.run
        kind = OutcomeKind.DRY_RUN if dry_run else OutcomeKind.STARTED
        reason: str | None = None
        status = None
        if self.error is not None:
            kind, reason = OutcomeKind.FAILED_TO_START, str(self.error)
        elif self.result is not None:
            status = self.result.status
            reason = str(self.result.error) if self.result.error is not None else None
            kind = {
                WaitOutcome.COMPLETED: OutcomeKind.COMPLETED,
                WaitOutcome.TIMED_OUT: OutcomeKind.TIMEOUT,
                WaitOutcome.LOST: OutcomeKind.POLL_FAILED,
                WaitOutcome.INTERRUPTED: OutcomeKind.KILLED
                if self.cancel_note == "cancelled"
                else OutcomeKind.STARTED,
                WaitOutcome.FAILED: kind_of_final_status(status),
            }[self.result.outcome]
        last = self.result.last if self.result is not None else None
        elapsed_ms = last.elapsed_time_ms if last is not None else None
        return Outcome(
            name=self.project_id,
            project_id=self.project_id,
            kind=kind,
            reason=reason,
            run_id=run.run_id if run else None,
            run_url=(last.run_url if last else None) or (run.run_url if run else None),
            hex_status=status,
            trace_id=getattr(self.error, "trace_id", None) or (run.trace_id if run else None),
            elapsed_s=elapsed_ms / 1000 if elapsed_ms is not None else None,
        )

    def exit_code(self) -> int:
        if self.error is not None:
            return self.error.exit_code
        if self.result is not None and self.result.error is not None:
            return self.result.error.exit_code
        return 0

    def to_json(self, *, dry_run: bool, waited: bool) -> dict[str, Any]:
        run = self.run
        document: dict[str, Any] = {
            "projectId": self.project_id,
            "runId": run.run_id if run else None,
            "runUrl": run.run_url if run else None,
            "status": "ERROR",
            "outcome": "ERROR",
            "elapsedTime": None,
            "traceId": run.trace_id if run else None,
        }
        if self.error is not None:
            document["error"] = error_payload(self.error)
            if hasattr(self.error, "trace_id"):
                document["traceId"] = self.error.trace_id or document["traceId"]
            return document
        if dry_run:
            document["status"] = document["outcome"] = "DRY_RUN"
        elif self.result is None:
            document["status"] = document["outcome"] = "TRIGGERED"
        else:
            last = self.result.last
            document["status"] = self.result.status or "TRIGGERED"
            document["outcome"] = self.result.outcome.value
            if last is not None:
                document["elapsedTime"] = last.elapsed_time_ms
                document["runUrl"] = last.run_url or document["runUrl"]
                document["traceId"] = last.trace_id or document["traceId"]
            if self.result.error is not None:
                document["error"] = error_payload(self.result.error)
            if self.cancel_note:
                document["cancel"] = self.cancel_note
        document["waited"] = waited
        return document

    def human(self, *, dry_run: bool) -> str:
        from hexdbt.hex.progress import format_elapsed

        if self.error is not None:
            return f"{self.project_id}: not triggered: {self.error}"
        assert self.run is not None
        url = f"  {self.run.run_url}" if self.run.run_url else ""
        if dry_run:
            return f"{self.project_id}: dry run accepted (run {self.run.run_id}){url}"
        if self.result is None:
            return f"{self.project_id}: triggered run {self.run.run_id}{url}"
        outcome = self.result.outcome.value
        status = self.result.status or "no status"
        elapsed = ""
        if self.result.last is not None and self.result.last.elapsed_time_ms is not None:
            elapsed = f" in {format_elapsed(self.result.last.elapsed_time_ms / 1000)}"
        shown = status if outcome in ("COMPLETED", "FAILED") else f"{outcome} ({status})"
        note = f"; {self.cancel_note}" if self.cancel_note else ""
        return f"{self.project_id}: run {self.run.run_id} {shown}{elapsed}{note}{url}"


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
    wait: bool,
    timeout_minutes: float,
    cancel_on_timeout: bool,
    cancel_on_interrupt: bool,
    poll_interval: float | None,
    report_junit: Path | None,
    report_markdown: Path | None,
    log_format: str,
    allow_insecure_http: bool,
    as_json: bool,
) -> None:
    """Run published Hex projects, each judged on its own.

    \b
    Examples:
      hexdbt trigger 5a8591dd-4039-49df-9202-96385ba3eff8 --wait
      hexdbt trigger ID1,ID2 --input-param region=EU --input-param days=7 --json
    """
    from hexdbt.hex.models import Notification, RunRequest

    try:
        ids = parse_project_ids(project_ids)
        params = parse_input_params(input_params)
        publish, note = resolve_update_published(update_published, params)
        request = RunRequest(
            input_params=params,
            update_published_results=publish,
            use_cached_sql_results=use_cached_sql,
            dry_run=dry_run,
            view_id=view_id,
            notifications=(Notification(slack_channel_ids=slack_channels),)
            if slack_channels
            else (),
        )
        client = hex_client(allow_insecure_http)
    except HexdbtError as exc:
        fail(exc, as_json=as_json)
    if note:
        make_log(log_format)(note)

    signals = Signals()
    items = [_Item(project_id) for project_id in ids]
    with client, signals.installed():
        started: dict[str, float] = {}
        for item in items:
            if signals.stop.is_set():
                item.error = HexdbtError("not triggered: interrupted")
                continue
            started[item.project_id] = client.clock.now()
            try:
                item.run = client.run_project_once(item.project_id, request)
            except HexdbtError as exc:
                item.error = exc
                print_error(exc)
        waited = wait and not dry_run
        if waited:
            _wait(
                client,
                items,
                started,
                signals,
                timeout_minutes,
                cancel_on_timeout,
                cancel_on_interrupt,
                poll_interval,
                log_format,
            )

    code = max((item.exit_code() for item in items), default=0)
    if signals.signum is not None:
        code = signals.exit_code
    if as_json:
        print_json(
            {
                "runs": [item.to_json(dry_run=dry_run, waited=waited) for item in items],
                "dryRun": dry_run,
                "updatePublishedResults": publish,
                "exitCode": code,
            }
        )
    else:
        for item in items:
            click.echo(item.human(dry_run=dry_run))
    for item in items:
        if item.result is not None and item.result.error is not None:
            print_error(item.result.error)
    try:
        outcomes = [item.outcome(dry_run=dry_run) for item in items]
        write_reports(
            outcomes, junit=report_junit, markdown=report_markdown, title="hexdbt trigger"
        )
    except HexdbtError as exc:
        print_error(exc)
        code = max(code, exc.exit_code)
    sys.exit(code)


def _wait(
    client: HexClient,
    items: list[_Item],
    started: dict[str, float],
    signals: Signals,
    timeout_minutes: float,
    cancel_on_timeout: bool,
    cancel_on_interrupt: bool,
    poll_interval: float | None,
    log_format: str,
) -> None:
    from hexdbt.hex.waiter import (
        AdaptiveSchedule,
        FixedSchedule,
        Outcome,
        PollSchedule,
        Waiter,
        WatchedRun,
        cancel_runs,
        expected_duration_s,
    )

    schedule: PollSchedule = (
        FixedSchedule(poll_interval) if poll_interval is not None else AdaptiveSchedule()
    )
    waiter = Waiter(
        client,
        schedule=schedule,
        cancel_on_timeout=cancel_on_timeout,
        progress=make_progress(log_format),
    )
    by_run: dict[str, _Item] = {}
    watched = []
    for item in items:
        if item.run is None:
            continue
        by_run[item.run.run_id] = item
        expected = (
            None if poll_interval is not None else expected_duration_s(client, item.project_id)
        )
        watched.append(
            WatchedRun(
                project_id=item.project_id,
                run_id=item.run.run_id,
                started_at=started[item.project_id],
                run_url=item.run.run_url,
                timeout_s=timeout_minutes * 60,
                expected_duration_s=expected,
            )
        )
    results = waiter.wait(watched, stop=signals.stop)
    for result in results:
        by_run[result.run.run_id].result = result
    if signals.stop.is_set():
        if cancel_on_interrupt:
            for result, note in cancel_runs(client, results):
                by_run[result.run.run_id].cancel_note = note
        else:
            for result in results:
                if result.outcome is Outcome.INTERRUPTED:
                    by_run[
                        result.run.run_id
                    ].cancel_note = "left running (--no-cancel-on-interrupt)"


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
    err_line(f"{len(projects)} project(s)")


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
    err_line(f"{len(page.runs)} run(s)")


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
