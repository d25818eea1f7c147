"""`hexdbt dbt ...`: run dbt and trigger each Hex project as soon as its models are done."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hexdbt.cli._common import (
    JsonAwareCommand,
    allow_insecure_http_option,
    cancel_on_interrupt_option,
    checked_mappings_file,
    echo_outcomes,
    err_line,
    error_payload,
    hex_client,
    log_format_option,
    make_log,
    make_progress,
    mappings_option,
    max_live_runs_option,
    print_json,
    report_junit_option,
    report_markdown_option,
    state_url_option,
    wait_option,
    write_reports,
)
from hexdbt.errors import HexdbtError
from hexdbt.signals import Signals

COMMANDS: list[click.Command] = []


def _stdout_line(line: str) -> None:
    # sys.stdout as it is now: under the live view, rich's proxy that prints above the view.
    click.echo(line, file=sys.stdout)


@click.command(
    "dbt",
    cls=JsonAwareCommand,
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@mappings_option
@wait_option
@max_live_runs_option
@cancel_on_interrupt_option
@report_junit_option
@report_markdown_option
@log_format_option
@state_url_option
@allow_insecure_http_option
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON report on stdout; dbt's own output then goes to stderr.",
)
@click.argument("dbt_args", nargs=-1, type=click.UNPROCESSED)
def dbt_wrapper(
    mappings_file: Path | None,
    wait: bool,
    max_live_runs: int,
    cancel_on_interrupt: bool,
    report_junit: Path | None,
    report_markdown: Path | None,
    log_format: str,
    state_url: str | None,
    allow_insecure_http: bool,
    as_json: bool,
    dbt_args: tuple[str, ...],
) -> None:
    """Run dbt, and start each mapped Hex project as soon as its models are done.

    hexdbt's own options come first; everything from the dbt command on is dbt's (put `--`
    before it when in doubt). dbt's output is printed as usual. A Hex project starts the moment
    the nodes finished so far satisfy its mapping (its models refreshed, with require_tests
    their tests passed), while dbt keeps building; what is still undecided when dbt ends is
    planned from run_results.json. The exit code is dbt's when dbt failed, else the worst Hex
    outcome's.

    \b
    Examples:
      hexdbt dbt build --select marts --target prod
      hexdbt dbt --mappings hex_mappings.yml --no-wait -- build --select customers+
    """
    from hexdbt.dbt.locate import locate_artifacts
    from hexdbt.engine import EngineSettings
    from hexdbt.factory import open_engine
    from hexdbt.feeders.dbt_wrapper import (
        DbtProcess,
        StreamDispatch,
        find_dbt_executable,
        parse_dbt_args,
        run_dbt_and_dispatch,
    )
    from hexdbt.outcomes import exit_code_of
    from hexdbt.planner.files import load_mapping_set
    from hexdbt.planner.stream import StreamPlanner
    from hexdbt.report import summary_line
    from hexdbt.settings import resolve_state_location

    log = make_log(log_format, prefix="hexdbt: ")

    echo_line = err_line if as_json else _stdout_line
    try:
        state = resolve_state_location(state_url)
        args = parse_dbt_args(dbt_args)
        executable = find_dbt_executable()
        paths = locate_artifacts(args.project_dir, args.target_path)
        checked_mappings_file(mappings_file)
        dbt = DbtProcess()
        signals = Signals(forward=dbt.forward)
        settings = EngineSettings(
            wait=wait, max_live_runs=max_live_runs, cancel_on_interrupt=cancel_on_interrupt
        )
        with (
            signals.installed(),
            hex_client(allow_insecure_http, stop=signals.stop, state=state) as client,
            open_engine(
                client,
                settings=settings,
                progress=make_progress(log_format, prefix="hexdbt: ", client=client),
                log=log,
                state=state,
            ) as engine,
        ):
            planner = StreamPlanner(
                load_mappings=lambda manifest: load_mapping_set(mappings_file, manifest)[0],
                command=args.command,
                dbt_vars=args.vars,
                manifest_path=paths.manifest,
                log=log,
            )
            stream = StreamDispatch(
                planner, engine, source="dbt-wrapper", stop_submitting=signals.stop
            )
            result = run_dbt_and_dispatch(
                args,
                stream,
                executable=executable,
                paths=paths,
                write=echo_line,
                signals=signals,
                dbt=dbt,
            )
            outcomes = engine.outcomes_of(result.settlement.plan)
    except HexdbtError as exc:
        if as_json:
            print_json({"error": error_payload(exc), "exitCode": exc.exit_code})
        raise
    if result.interrupted_by is not None:
        exit_code = signals.exit_code
    elif result.dbt_exit_code != 0:
        exit_code = result.dbt_exit_code
    else:
        exit_code = exit_code_of(outcomes)
    write_reports(outcomes, junit=report_junit, markdown=report_markdown, title="hexdbt dbt")
    plan = result.settlement.plan
    if as_json:
        print_json(
            {
                "invocation_id": plan.invocation_id,
                "command": plan.command,
                "dbtExitCode": result.dbt_exit_code,
                "interrupted": result.interrupted_by is not None,
                "exitCode": exit_code,
                "projects": [
                    {**outcome.to_json(), "decidedAt": planner.decided_at.get(outcome.name)}
                    for outcome in outcomes
                ],
            }
        )
    else:
        click.echo("")
        echo_outcomes(outcomes)
        click.echo(summary_line(outcomes))
    if result.dbt_exit_code != 0 and result.interrupted_by is None:
        err_line(f"dbt exited with code {result.dbt_exit_code}")
    sys.stdout.flush()
    raise SystemExit(exit_code)


COMMANDS.append(dbt_wrapper)
