"""`hexdbt emulator`: a local Hex API server."""

from __future__ import annotations

import click

COMMANDS: list[click.Command] = []
