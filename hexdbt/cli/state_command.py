"""`hexdbt state check`: where the ledger and the budget live, and whether hexdbt can use them."""

from __future__ import annotations

import click

from hexdbt.cli._common import JsonAwareCommand, fail, json_option, print_json, state_url_option
from hexdbt.errors import HexdbtError, StateError

COMMANDS: list[click.Command] = []


@click.group()
def state() -> None:
    """The state: the ledger (what was sent) and the shared rate budget.

    \b
    Example:
      hexdbt state check --state-url postgresql://hexdbt@db.internal/analytics
    """


@state.command(cls=JsonAwareCommand)
@state_url_option
@json_option
def check(state_url: str | None, as_json: bool) -> None:
    """Say where the state lives, its schema version, and whether it can be written.

    Opens the ledger and the budget as any command would (creating or migrating their tables on
    first use) and writes to each once. Exits 7 when the state cannot be used.

    \b
    Examples:
      hexdbt state check
      HEXDBT_STATE_URL=postgresql://hexdbt@db.internal/analytics hexdbt state check --json
    """
    from hexdbt.factory import check_state
    from hexdbt.settings import PostgresState, resolve_state_location

    try:
        location, parts = check_state(resolve_state_location(state_url))
    except HexdbtError as exc:
        fail(exc, as_json=as_json)
    backend = "postgresql" if isinstance(location, PostgresState) else "sqlite"
    problems = [part.cannot_write for part in parts if part.cannot_write]
    if as_json:
        print_json(
            {
                "backend": backend,
                "where": location.describe(),
                **{
                    part.name: {
                        "schemaVersion": part.schema_version,
                        "knownVersion": part.known_version,
                        "writable": part.cannot_write is None,
                        "problem": part.cannot_write,
                    }
                    for part in parts
                },
                "exitCode": StateError.exit_code if problems else 0,
            }
        )
    else:
        click.echo(f"Backend: {backend}")
        click.echo(f"Where:   {location.describe()}")
        for part in parts:
            writable = "writable" if part.cannot_write is None else "NOT writable"
            click.echo(
                f"{part.name.capitalize():8} schema version {part.schema_version}, {writable}"
            )
    for problem in problems:
        click.echo(f"Error: {problem}", err=True)
    raise SystemExit(StateError.exit_code if problems else 0)


COMMANDS.append(state)
