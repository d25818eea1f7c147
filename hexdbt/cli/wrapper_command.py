"""`hexdbt dbt ...`: run dbt and trigger each Hex project as soon as its models are done."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
