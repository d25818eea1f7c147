"""`hexdbt emulator`: a local Hex API server."""

from __future__ import annotations

import math
import signal
import sys
import threading
from types import FrameType

import click

from hexdbt.errors import ConfigError


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=8765, show_default=True, type=int, help="Port to bind; 0 picks a free one."
)
@click.option(
    "--scenario",
    "scenario_path",
    type=click.Path(dir_okay=False),
    help="Scenario file (YAML or JSON); the built-in default scenario when left out.",
)
@click.option(
    "--time-scale",
    default=1.0,
    show_default=True,
    type=float,
    help="Emulated seconds per real second (60: an hour of Hex in a minute).",
)
@click.option(
    "--time-origin",
    type=float,
    metavar="EPOCH_S",
    help="With --time-scale: the real moment (seconds since the epoch) at which the emulated "
    "clock reads real time; give hexdbt the same as HEXDBT_TIME_ORIGIN so that both read one "
    "time. Default: the emulator's start.",
)
@click.option(
    "--manual-clock",
    is_flag=True,
    help='Time stands still until POST /_emulator/advance {"seconds": N}.',
)
@click.option("--quiet", is_flag=True, help="Write nothing to stderr (no banner, no request log).")
@click.option(
    "--print-default-scenario",
    is_flag=True,
    help="Print the built-in scenario as YAML (a starting point for your own) and exit.",
)
def emulator(
    host: str,
    port: int,
    scenario_path: str | None,
    time_scale: float,
    time_origin: float | None,
    manual_clock: bool,
    quiet: bool,
    print_default_scenario: bool,
) -> None:
    """Serve a local Hex API that follows Hex's contract, limits and failure modes.

    Prints its base URL as the first line, then serves until Ctrl-C or SIGTERM. Point hexdbt at
    it with HEX_BASE_URL=<that URL> and any token.

    \b
    Example:
      hexdbt emulator --port 8765 --time-scale 60 --time-origin "$HEXDBT_TIME_ORIGIN" &
      curl -H 'Authorization: Bearer hxtp_demo' http://127.0.0.1:8765/api/v1/projects
    """
    from hexdbt.clock import Clock, ManualClock, ScaledClock
    from hexdbt.emulator.scenario import Scenario, default_scenario_document
    from hexdbt.emulator.server import HexEmulator

    if print_default_scenario:
        import yaml

        click.echo(yaml.safe_dump(default_scenario_document(), sort_keys=False), nl=False)
        return
    if manual_clock and time_scale != 1.0:
        raise ConfigError("--manual-clock and --time-scale cannot be used together")
    if time_scale <= 0:
        raise ConfigError(f"--time-scale must be above 0, got {time_scale}")
    if time_origin is not None and time_scale == 1.0:
        raise ConfigError("--time-origin goes with --time-scale: on real time there is none")
    if time_origin is not None and not math.isfinite(time_origin):
        raise ConfigError(f"--time-origin must be seconds since the epoch, got {time_origin}")
    clock: Clock | None = ManualClock() if manual_clock else None
    if time_origin is not None:
        clock = ScaledClock.since(time_origin, time_scale)
    scenario = Scenario.from_file(scenario_path) if scenario_path else None

    def log(line: str) -> None:
        click.echo(line, err=True)

    server = HexEmulator(
        scenario=scenario,
        clock=clock,
        time_scale=1.0 if clock is not None else time_scale,
        host=host,
        port=port,
        log=None if quiet else log,
    )
    try:
        server.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo(server.url)
        sys.stdout.flush()
        if not quiet:
            click.echo(
                f"Hex emulator: {len(server.scenario.projects)} projects from {server.scenario.source}; "
                f"API at {server.url}/api/v1, journal at {server.url}/_emulator/requests",
                err=True,
            )
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.stop()


COMMANDS: list[click.Command] = [emulator]
