"""The direct Hex commands: trigger, list-projects, runs."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
