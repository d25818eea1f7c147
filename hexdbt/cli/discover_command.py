"""`hexdbt discover`: learn from Hex which dbt models each app reads, and propose the mapping."""

from __future__ import annotations

from pathlib import Path

import click

from hexdbt.cli._common import (
    JsonAwareCommand,
    allow_insecure_http_option,
    err_line,
    error_payload,
    hex_client,
    json_option,
    mappings_option,
    print_json,
    project_dir_option,
    target_path_option,
)
from hexdbt.errors import HexdbtError
from hexdbt.wording import counted

COMMANDS: list[click.Command] = []


@click.command(cls=JsonAwareCommand)
@project_dir_option
@target_path_option
@mappings_option
@click.option(
    "--write",
    is_flag=True,
    help="Merge the result into the mapping file: new apps as `discovered: true` entries;"
    " comments and hand-written keys and models are kept.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 when the mapping and Hex disagree (for CI), printing each difference.",
)
@allow_insecure_http_option
@json_option
def discover(
    project_dir: Path | None,
    target_path: Path | None,
    mappings_file: Path | None,
    write: bool,
    check: bool,
    allow_insecure_http: bool,
    as_json: bool,
) -> None:
    """Ask Hex which tables each published app reads, and match them to dbt's models.

    Prints, per app, the models it reads, the sources (reported, never triggering) and the
    tables that are no relation of the dbt project, then where the mapping disagrees. Needs a
    Hex Enterprise workspace (GetQueriedTables) and a current manifest.json (`dbt parse`).
    The answer is cached in the state folder for `discover: auto`.

    \b
    Examples:
      dbt parse && hexdbt discover
      hexdbt discover --write          # add what is missing to hex_mappings.yml
      hexdbt discover --check          # in CI: exit 1 when the mapping has drifted
    """
    from hexdbt.dbt.artifacts import load_manifest
    from hexdbt.dbt.locate import locate_artifacts
    from hexdbt.dbt.relations import load_relations
    from hexdbt.discovery.cache import write_cache
    from hexdbt.discovery.fetch import fetch_discovery
    from hexdbt.discovery.proposal import entry_name, find_drift, propose
    from hexdbt.errors import ArtifactError, ConfigError
    from hexdbt.mapping import SelectorIndex, load_mappings, resolve_mappings_path

    try:
        if write and check:
            raise ConfigError("--write and --check cannot be used together")
        paths = locate_artifacts(project_dir, target_path)
        if not paths.manifest.is_file():
            raise ArtifactError(
                f"{paths.manifest}: manifest.json not found",
                hint="run `dbt parse` (or any dbt command) first",
            )
        manifest = load_manifest(paths.manifest)
        relations = load_relations(paths.manifest)
        mappings_path, explicit = resolve_mappings_path(mappings_file)
        use_file = explicit or mappings_path.exists()
        mappings = load_mappings(mappings_path if use_file else None, manifest)
        with hex_client(allow_insecure_http) as client:
            discovery = fetch_discovery(client, log=err_line)
        cache = write_cache(discovery)
        proposal = propose(discovery, relations)
        selectors = SelectorIndex(manifest)
        drift = find_drift(proposal, mappings.projects, selectors)
        written = None
        if write:
            from hexdbt.discovery.write import write_proposal

            written = write_proposal(mappings_path, proposal, mappings.projects, selectors)
    except HexdbtError as exc:
        if as_json:
            print_json({"error": error_payload(exc), "exitCode": exc.exit_code})
        raise
    exit_code = 1 if check and drift else 0
    name_of = {mapping.project_id: mapping.name for mapping in mappings}
    taken = list(name_of.values())
    if as_json:
        print_json(
            {
                "exitCode": exit_code,
                "apps": [
                    {"name": name_of.get(app.project_id), **app.to_json()} for app in proposal.apps
                ],
                "unpublished": list(proposal.unpublished),
                "drift": [item.to_json() for item in drift],
                "mappingsFile": str(mappings_path),
                "added": list(written.added) if written else [],
                "updated": list(written.updated) if written else [],
                "cache": str(cache),
            }
        )
    else:
        for app in proposal.apps:
            if not (app.models or app.sources or app.unmatched):
                continue
            name = name_of.get(app.project_id)
            if name is None:
                name = entry_name(app.title, taken)
                taken.append(name)
                label = f"{name} (not mapped)"
            else:
                label = name
            click.echo(f"{label}: {app.title!r} {app.project_id}")
            if app.models:
                click.echo("  models:  " + ", ".join(r.label for r in app.models))
            if app.sources:
                click.echo(
                    "  sources: " + ", ".join(r.label for r in app.sources) + " (never trigger)"
                )
            if app.unmatched:
                click.echo("  tables matching no dbt relation: " + ", ".join(app.unmatched))
        for item in drift:
            where = f"{item.source}: " if item.source else ""
            click.echo(f"{where}drift: {item.message}; hint: {item.hint} [{item.kind.value}]")
        if written is not None:
            click.echo(
                f"{mappings_path}: {counted(len(written.added), 'entry', 'entries')} added"
                + (f" ({', '.join(written.added)})" if written.added else "")
                + f", {len(written.updated)} updated"
                + (f" ({', '.join(written.updated)})" if written.updated else "")
            )
        elif not drift:
            click.echo(f"{mappings_path if use_file else 'the dbt exposures'} and Hex agree")
    if check and drift:
        err_line(f"Error: the mapping and Hex disagree ({len(drift)} differences)")
    raise SystemExit(exit_code)


COMMANDS.append(discover)
