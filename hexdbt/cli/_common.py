"""What every command shares: printing errors, machine output, exit codes."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from hexdbt.errors import HexApiError, HexdbtError


def error_payload(exc: HexdbtError) -> dict[str, Any]:
    """The ``error`` object of a ``--json`` document."""
    payload: dict[str, Any] = {"type": type(exc).__name__, "message": exc.message}
    if isinstance(exc, HexApiError):
        payload["httpStatus"] = exc.status
        payload["traceId"] = exc.trace_id
    if exc.hint:
        payload["hint"] = exc.hint
    return payload


def print_json(document: Any) -> None:
    """Machine output: one JSON document on stdout, nothing else goes there."""
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


def print_error(exc: HexdbtError) -> None:
    click.echo(f"Error: {exc}", err=True)
    if exc.hint:
        click.echo(f"Hint: {exc.hint}", err=True)


def fail(exc: HexdbtError, *, as_json: bool = False) -> NoReturn:
    """Report an expected failure (as one JSON document with ``--json``) and exit with its code."""
    if as_json:
        print_json({"error": error_payload(exc)})
    print_error(exc)
    sys.exit(exc.exit_code)
