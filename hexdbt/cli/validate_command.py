"""`hexdbt validate`: check the mapping against dbt's manifest and, with --remote, against Hex."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from hexdbt.cli._common import (
    JsonAwareCommand,
    allow_insecure_http_option,
    error_payload,
    hex_client,
    json_option,
    mappings_option,
    print_json,
    project_dir_option,
    target_path_option,
)
from hexdbt.errors import HexdbtError

if TYPE_CHECKING:
    from hexdbt.dbt.artifacts import Manifest

COMMANDS: list[click.Command] = []


def _manifest(
    project_dir: Path | None, target_path: Path | None
) -> tuple[Manifest | None, Path | None, str]:
    """dbt's manifest, where dbt wrote it. Without a dbt project in sight (and none asked for)
    the mapping is still checked on its own: a missing manifest is a warning, not an error."""

    from hexdbt.dbt.artifacts import load_manifest
    from hexdbt.dbt.locate import locate_artifacts
    from hexdbt.errors import ConfigError
    from hexdbt.settings import dbt_environment

    explicit = bool(project_dir or target_path or dbt_environment().project_dir)
    try:
        paths = locate_artifacts(project_dir, target_path)
    except ConfigError as exc:
        if explicit:
            raise
        return None, None, f"no dbt project found ({exc.message})"
    if not paths.manifest.is_file():
        return None, paths.project_dir, f"no manifest.json in {paths.target_dir}"
    return load_manifest(paths.manifest), paths.project_dir, ""


@click.command(cls=JsonAwareCommand)
@project_dir_option
@target_path_option
@mappings_option
@click.option(
    "--remote",
    is_flag=True,
    help="Also ask Hex: each project exists, the token sees it, it is published; mappings with"
    " input params are checked with a dryRun (nothing runs); with manifest.json, where the"
    " mapping and what each app reads in Hex disagree (warnings; Hex Enterprise).",
)
@allow_insecure_http_option
@json_option
def validate(
    project_dir: Path | None,
    target_path: Path | None,
    mappings_file: Path | None,
    remote: bool,
    allow_insecure_http: bool,
    as_json: bool,
) -> None:
    """Check the mapping: selectors against manifest.json, typos, duplicates, exposures.

    Prints one line per finding as file:line: severity: message [code]. Exit code: 0 when
    there is no error (warnings allowed), 2 for errors in the mapping, 4 when Hex refuses.
    Run `dbt parse` first so that target/manifest.json is current.

    \b
    Example:
      dbt parse && hexdbt validate --remote
    """
    from hexdbt.clock import SystemClock, to_iso
    from hexdbt.mapping import resolve_mappings_path
    from hexdbt.validate import (
        check_drift,
        check_remote,
        in_file_order,
        summary_line,
        validate_mapping,
    )

    try:
        manifest, found_project_dir, manifest_problem = _manifest(project_dir, target_path)
        mappings_path, explicit = resolve_mappings_path(mappings_file)
        context = click.get_current_context()
        clock = (context.obj or {}).get("clock") if isinstance(context.obj, dict) else None
        use_file = explicit or mappings_path.exists()
        validation = validate_mapping(
            mappings_path if use_file else None,
            manifest,
            project_dir=found_project_dir,
            sample_started_at=to_iso((clock or SystemClock()).now()),
            manifest_problem=manifest_problem or "no manifest.json",
        )
        if remote and validation.projects:
            with hex_client(allow_insecure_http) as client:
                validation = validation.with_findings(check_remote(client, validation.projects))
                # Drift is worth reading once the mapping is sound and Hex accepted it.
                if manifest is not None and validation.exit_code == 0:
                    drift = check_drift(
                        client, validation.projects, manifest, file=str(mappings_path)
                    )
                    validation = validation.with_findings(drift)
    except HexdbtError as exc:
        if as_json:
            print_json({"error": error_payload(exc), "exitCode": exc.exit_code})
        raise
    findings = in_file_order(validation.findings)
    if as_json:
        print_json(
            {
                "exitCode": validation.exit_code,
                "projects": len(validation.projects),
                "mappingsFile": str(mappings_path) if use_file else None,
                "manifestChecked": validation.manifest_checked,
                "remote": remote,
                "findings": [finding.to_json() for finding in findings],
            }
        )
    else:
        for finding in findings:
            click.echo(finding.render())
        click.echo(
            summary_line(
                findings,
                validation.projects,
                mappings_file=str(mappings_path) if use_file else None,
                manifest_checked=validation.manifest_checked,
            )
        )
    raise SystemExit(validation.exit_code)


COMMANDS.append(validate)
