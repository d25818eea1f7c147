"""Commands over dbt artifacts: plan (and later run, dbt, watch)."""

from __future__ import annotations

from pathlib import Path

import click

from hexdbt.cli._common import (
    mappings_option,
    print_json,
    project_dir_option,
    target_path_option,
)
from hexdbt.errors import ConfigError
from hexdbt.wording import counted, pad


@click.command()
@project_dir_option
@target_path_option
@mappings_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as one JSON document.")
def plan(
    project_dir: Path | None, target_path: Path | None, mappings_file: Path | None, as_json: bool
) -> None:
    """Show which Hex projects the last dbt command makes stale, and why.

    Reads run_results.json and manifest.json where dbt wrote them, and triggers nothing.

    \b
    Example:
      dbt build && hexdbt plan --json
    """
    from hexdbt.planner.files import plan_from_artifacts

    planned = plan_from_artifacts(project_dir, target_path, mappings_file)
    invocation, result = planned.invocation, planned.plan
    errors = [skipped for skipped in result.skipped if skipped.is_error]

    if as_json:
        print_json(result.to_json())
    else:
        click.echo(
            f"dbt {invocation.command} {invocation.invocation_id} "
            f"(started {invocation.started_at}, {len(invocation.results)} nodes)"
        )
        if not planned.used_mapping_file:
            click.echo(f"({planned.mappings_path} not found: using dbt exposures only)")
        for note in planned.mappings.notes:
            click.echo(f"({note})")
        click.echo(f"Trigger ({len(result.triggers)}):")
        for trigger in result.triggers:
            params = ", ".join(f"{k}={v!r}" for k, v in trigger.input_params.items())
            click.echo(f"  {pad(trigger.name, 24)} {trigger.project_id}  {trigger.reason}")
            if params:
                click.echo(f"  {'':<24} params: {params}")
        click.echo(f"Skip ({len(result.skipped)}):")
        for skipped in result.skipped:
            marker = "ERROR " if skipped.is_error else ""
            click.echo(f"  {pad(skipped.name, 24)} {skipped.project_id}  {marker}{skipped.reason}")
    if errors:
        raise ConfigError(
            f"{counted(len(errors), 'mapped project')} could not be planned: "
            + "; ".join(f"{skipped.name}: {skipped.reason}" for skipped in errors)
        )


COMMANDS: list[click.Command] = [plan]
