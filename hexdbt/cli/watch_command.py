"""`hexdbt watch`: the watcher daemon next to dbt."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
