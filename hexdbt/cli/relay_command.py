"""`hexdbt hook install` and `hexdbt relay`: Hex triggered from dbt's on-run-end hook."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click
import yaml

from hexdbt.cli._common import (
    allow_insecure_http_option,
    checked_mappings_file,
    daemon_started,
    echo_outcomes,
    make_progress,
    mappings_option,
    max_live_runs_option,
    metrics_host_option,
    metrics_port_option,
    state_url_option,
)
from hexdbt.errors import ConfigError

if TYPE_CHECKING:
    from hexdbt.feeders.relay import Relayed
    from hexdbt.outcomes import Outcome

COMMANDS: list[click.Command] = []

_project_dir_option = click.option(
    "--project-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The dbt project (default: DBT_PROJECT_DIR, else the nearest parent holding"
    " dbt_project.yml).",
)


@click.group()
def hook() -> None:
    """hexdbt's dbt on-run-end hook, for where hexdbt cannot run beside dbt (dbt Cloud).

    The hook writes what each dbt invocation ran to an outbox table in the warehouse;
    `hexdbt relay` triggers Hex from it.

    \b
    Example:
      hexdbt hook install --project-dir analytics --write
    """


@hook.command("install")
@_project_dir_option
@click.option(
    "--write",
    is_flag=True,
    help="Also add the on-run-end line to dbt_project.yml (when it has no on-run-end yet).",
)
def hook_install(project_dir: Path | None, write: bool) -> None:
    """Copy the hook's macros into the project (macros/hexdbt/) and print the on-run-end line.

    \b
    Examples:
      hexdbt hook install --project-dir analytics
      hexdbt hook install --write
    """
    from hexdbt.dbt.locate import find_project_dir
    from hexdbt.feeders.hook_install import HOOK_LINE, install_hook

    installed = install_hook(find_project_dir(project_dir), write=write)
    click.echo(f"Copied the hook's macros to {installed.macro_path}")
    if installed.written:
        click.echo(f"Added to dbt_project.yml: {HOOK_LINE}")
    elif installed.configured:
        click.echo("dbt_project.yml calls the hook already.")
    else:
        click.echo(f"Add this line to dbt_project.yml (or run again with --write):\n{HOOK_LINE}")


def _parse_vars(text: str | None) -> dict[str, object]:
    if not text:
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--vars {text!r}: not YAML ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--vars {text!r}: expected a mapping, as dbt's --vars")
    return value


@click.command()
@_project_dir_option
@click.option(
    "--profiles-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where profiles.yml is (dbt's default: DBT_PROFILES_DIR, the current folder, ~/.dbt).",
)
@click.option(
    "--target", help="The profile's target (dbt's default: DBT_TARGET, else the profile's)."
)
@click.option(
    "--vars",
    "vars_text",
    help="dbt vars, as YAML; hexdbt_outbox_schema and hexdbt_outbox_table name the outbox.",
)
@mappings_option
@click.option(
    "--once",
    is_flag=True,
    help="Handle what the outbox holds, send, print a line per invocation and a table of its"
    " triggers, and exit (cron).",
)
@click.option(
    "--wait",
    is_flag=True,
    help="With --once: follow the runs to their end, then report them and exit as `hexdbt run`"
    " does (0 only when every one completed).",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds between reads of the outbox.",
)
@click.option(
    "--retain-days",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Handled entries older than this are deleted from the outbox.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line per event on stderr: text, or one JSON object per line for log shippers.",
)
@max_live_runs_option
@metrics_port_option
@metrics_host_option
@state_url_option
@allow_insecure_http_option
def relay(
    project_dir: Path | None,
    profiles_dir: Path | None,
    target: str | None,
    vars_text: str | None,
    mappings_file: Path | None,
    once: bool,
    wait: bool,
    poll_interval: float,
    retain_days: float,
    log_format: str,
    max_live_runs: int,
    metrics_port: int | None,
    metrics_host: str,
    state_url: str | None,
    allow_insecure_http: bool,
) -> None:
    """Trigger Hex from the outbox that hexdbt's on-run-end hook writes, until stopped.

    Reads new entries with your dbt profile and adapter, plans each as `hexdbt plan` would and
    starts each Hex project once per dbt invocation, however many relays run. On start it
    re-attaches to Hex runs a previous process left live. SIGTERM or Ctrl-C stops it within
    seconds (exit 0), leaving live Hex runs running for the next start to re-attach.

    With --once it prints, per invocation handed over, a line and the table of its triggers;
    with --wait it first follows their runs to the end and exits as `hexdbt run` does.

    \b
    Examples:
      hexdbt relay --project-dir analytics --target prod
      hexdbt relay --once --wait --target prod
      hexdbt relay --target prod --metrics-port 9465
    """
    from hexdbt.dbt.locate import find_project_dir
    from hexdbt.engine import EngineSettings
    from hexdbt.feeders.relay import DbtTarget, RelayDaemon, RelayOptions, WarehouseOutbox

    if wait and not once:
        raise ConfigError(
            "--wait goes with --once: the daemon follows its runs anyway",
            hint="hexdbt relay --once --wait",
        )
    where = DbtTarget(find_project_dir(project_dir), profiles_dir, target, _parse_vars(vars_text))
    resolved_mappings = checked_mappings_file(mappings_file)
    outbox = WarehouseOutbox(where)
    options = RelayOptions(resolved_mappings, poll_interval, retain_days)
    with daemon_started(
        "relay",
        log_format=log_format,
        state_url=state_url,
        allow_insecure_http=allow_insecure_http,
        mappings_file=resolved_mappings,
        metrics_at=(metrics_host, metrics_port),
        outbox=outbox.relation,
        target=outbox.target_name,
    ) as (log, client, ledger, signals, metrics):
        # The daemon follows every run; --once only with --wait. Either leaves live runs to the
        # next relay when stopped.
        settings = EngineSettings(
            wait=wait or not once, max_live_runs=max_live_runs, cancel_on_interrupt=False
        )
        daemon = RelayDaemon(
            client,
            ledger,
            outbox,
            options,
            log,
            settings=settings,
            metrics=metrics,
            once=once,
            progress=make_progress(log_format, client=client) if wait else None,
        )
        daemon.run()
        if once:
            exit_code = _report_once(daemon.relayed(), daemon.earlier(), outbox.relation)
            raise SystemExit(signals.exit_code if signals.stop.is_set() else exit_code)
    raise SystemExit(0)


def _report_once(relayed: list[Relayed], earlier: list[Outcome], relation: str) -> int:
    """What ``relay --once`` handed over, on stdout: a line per invocation and the table of its
    triggers (as ``hexdbt run`` prints them), then the summary. Returns the exit code: the
    highest of the outcomes' and of the entries that could not be planned."""
    from hexdbt.outcomes import exit_code_of
    from hexdbt.report import summary_line

    if not relayed:
        click.echo(f"No new dbt invocation in {relation}.")
    for item in relayed:
        head = f"Invocation {item.invocation_id}"
        if item.command:  # an entry set aside was never read: its command is not known
            head += f" (dbt {item.command}, target {item.target})"
        if item.note:
            click.echo(f"{head}: {item.note}")
            continue
        click.echo(f"{head}:")
        echo_outcomes(item.outcomes)
    if earlier:
        click.echo("\nFrom the queue of earlier invocations:")
        echo_outcomes(earlier)
    outcomes = [outcome for item in relayed for outcome in item.outcomes]
    if outcomes:
        click.echo(summary_line(outcomes))
    return max([exit_code_of([*outcomes, *earlier]), *(item.exit_code for item in relayed)])


COMMANDS.extend([hook, relay])
