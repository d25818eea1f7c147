"""What the ledger drives: `hexdbt status` (and `hexdbt run`)."""

from __future__ import annotations

import click

from hexdbt.cli._common import print_json

COMMANDS: list[click.Command] = []


@click.command()
@click.option("--limit", default=5, show_default=True, help="How many recent dbt invocations.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def status(limit: int, as_json: bool) -> None:
    """Show what the ledger knows: recent invocations, their triggers and runs, and the queue.

    \b
    Example:
      hexdbt status --limit 3
    """
    from hexdbt.ledger import Ledger, TriggerState
    from hexdbt.report import outcome_of, render_table
    from hexdbt.settings import resolve_state_dir

    with Ledger.in_state_dir(resolve_state_dir()) as ledger:
        invocations = ledger.recent_invocations(limit)
        per_invocation = [(inv, ledger.triggers_of(inv.invocation_id)) for inv in invocations]
        queue = ledger.in_state(TriggerState.QUEUED, TriggerState.PLANNED)
        live = ledger.in_state(TriggerState.STARTED, TriggerState.SENDING)
        ledger_path = ledger.path

    if as_json:
        print_json(
            {
                "ledger": str(ledger_path),
                "invocations": [
                    {
                        "invocation_id": inv.invocation_id,
                        "command": inv.command,
                        "source": inv.source,
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
            click.echo(render_table([outcome_of(record) for record in records]))
        else:
            click.echo("  no Hex project triggered")
    click.echo(f"\nQueue: {len(queue)} trigger(s) waiting for the budget; live runs: {len(live)}")


COMMANDS.append(status)
