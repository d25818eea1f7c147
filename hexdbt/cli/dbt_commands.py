"""Commands over dbt artifacts: plan (and later run, dbt, watch)."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
