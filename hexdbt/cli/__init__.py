"""The ``hexdbt`` command. Only this package imports click.

Commands are thin: parse options, call the core, render. Heavy modules (dbt, the emulator,
requests) are imported inside the commands that need them so ``hexdbt --help`` stays fast.
Each module below owns a group of commands and lists them in ``COMMANDS``.
"""

from __future__ import annotations

from typing import Any

import click

from hexdbt._version import __version__
from hexdbt.cli._common import fail
from hexdbt.errors import HexdbtError, Interrupted


class _Group(click.Group):
    """Turns expected errors into ``Error: ...`` on stderr and the error's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HexdbtError as exc:
            fail(exc)
        except KeyboardInterrupt:
            # Ctrl-C before a command installs its own handlers: the shell's code for SIGINT.
            fail(Interrupted("interrupted"))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hexdbt")
def main() -> None:
    """Keep Hex apps in step with dbt.

    \b
    Examples:
      dbt build && hexdbt run          trigger the Hex projects whose models dbt refreshed
      hexdbt dbt build --select marts  run dbt and trigger each project as its models finish
      hexdbt emulator                  a local Hex API to try it all without touching Hex
    """


def _register() -> None:
    from hexdbt.cli import (
        dbt_commands,
        debug_command,
        discover_command,
        emulator_command,
        hex_commands,
        relay_command,
        run_commands,
        serve_command,
        state_command,
        validate_command,
        watch_command,
        wrapper_command,
    )

    for module in (
        hex_commands,
        dbt_commands,
        run_commands,
        validate_command,
        discover_command,
        wrapper_command,
        watch_command,
        serve_command,
        state_command,
        debug_command,
        relay_command,
        emulator_command,
    ):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
