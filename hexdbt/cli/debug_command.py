"""`hexdbt debug`: whether this setup works, one check a line, as `dbt debug` does for dbt."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from hexdbt.cli._common import (
    JsonAwareCommand,
    allow_insecure_http_option,
    hex_client,
    json_option,
    mappings_option,
    print_json,
    project_dir_option,
    state_url_option,
    target_path_option,
)

if TYPE_CHECKING:
    from hexdbt.settings import StateLocation
    from hexdbt.validate.setup import Check

COMMANDS: list[click.Command] = []


@click.command(cls=JsonAwareCommand)
@project_dir_option
@target_path_option
@mappings_option
@click.option(
    "--dry-run",
    "dry_run_project",
    metavar="PROJECT_ID",
    help="Also check that the token may run projects: a dryRun of this published project"
    " (nothing runs, but it is one of Hex's 20 RunProject calls a minute).",
)
@state_url_option
@allow_insecure_http_option
@json_option
def debug(
    project_dir: Path | None,
    target_path: Path | None,
    mappings_file: Path | None,
    dry_run_project: str | None,
    state_url: str | None,
    allow_insecure_http: bool,
    as_json: bool,
) -> None:
    """Check the setup, one line each: OK, or what to do.

    The token's shape and whether Hex accepts it for reading (one ListProjects call), the clock
    against Hex's, with --dry-run whether the token may run a project, the base URL, the state
    (as `hexdbt state check`), the dbt project and its artifacts, the mapping (as `hexdbt
    validate`) and the rate budget left. Exits with the code of the first failure's cause: 2
    configuration, 3 a dbt artifact, 4 Hex, 7 the state. Never prints the token.

    \b
    Examples:
      hexdbt debug
      hexdbt debug --dry-run 5a8591dd-4039-49df-9202-96385ba3eff8 --json
    """
    from hexdbt._version import __version__
    from hexdbt.clock import SystemClock, to_iso
    from hexdbt.errors import HexdbtError
    from hexdbt.factory import check_state
    from hexdbt.hex.budget import SharedBudget
    from hexdbt.hex.client import check_token, normalize_base_url
    from hexdbt.settings import resolve_base_url, resolve_state_location, resolve_token
    from hexdbt.validate.setup import (
        budget_check,
        dbt_checks,
        exit_code_of,
        failed,
        hex_checks,
        ok,
        skipped,
        state_line,
        summary_line,
        token_check,
    )

    token_line: Check
    base_url_line: Check
    state: Check
    try:
        token_line = token_check(check_token(resolve_token()))
    except HexdbtError as exc:
        token_line = failed("token", exc)
    try:
        base_url = normalize_base_url(resolve_base_url(), allow_insecure_http=allow_insecure_http)
        base_url_line = ok("base URL", base_url)
    except HexdbtError as exc:
        base_url_line = failed("base URL", exc)
    location: StateLocation | None = None
    try:
        location, parts = check_state(resolve_state_location(state_url))
        state = state_line(location, parts)
    except HexdbtError as exc:
        state = failed("state", exc)
    state_usable = state.exit_code == 0

    hex_lines: list[Check]
    budget: Check
    if token_line.exit_code or base_url_line.exit_code:
        cause = "the token" if token_line.exit_code else "the base URL"
        hex_lines = [
            skipped(name, f"not checked: {cause} above")
            for name in ("read access", "clock", "run access")
        ]
        budget = skipped("budget", f"not checked: {cause} above")
    else:
        try:
            with hex_client(
                allow_insecure_http,
                state=location if state_usable else None,
                shared_budget=state_usable,
            ) as client:
                hex_lines = hex_checks(client, dry_run_project)
                if isinstance(client.budget, SharedBudget):
                    budget = budget_check(client.budget)
                else:
                    budget = skipped("budget", "not checked: the state above cannot be used")
        except HexdbtError as exc:  # the client's settings (HEXDBT_BUDGET, a time limit, ...)
            hex_lines = [
                failed("read access", exc),
                *(skipped(name, "not checked") for name in ("clock", "run access")),
            ]
            budget = skipped("budget", "not checked")

    context = click.get_current_context()
    clock = (context.obj or {}).get("clock") if isinstance(context.obj, dict) else None
    dbt_lines = dbt_checks(
        project_dir,
        target_path,
        mappings_file,
        started_at=to_iso((clock or SystemClock()).now()),
    )
    checks = [token_line, base_url_line, *hex_lines, state, *dbt_lines, budget]
    exit_code = exit_code_of(checks)
    if as_json:
        print_json(
            {
                "version": __version__,
                "checks": [check.to_json() for check in checks],
                "exitCode": exit_code,
            }
        )
    else:
        click.echo(f"hexdbt {__version__}")
        for check in checks:
            click.echo(check.render())
        click.echo(summary_line(checks))
    raise SystemExit(exit_code)


COMMANDS.append(debug)
