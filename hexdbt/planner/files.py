"""Read what dbt wrote and the mapping, and make the plan: the input side of run, watch and dbt."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from hexdbt.dbt.artifacts import Invocation, Manifest, load_manifest, load_run_results
from hexdbt.dbt.locate import locate_artifacts
from hexdbt.errors import ConfigError
from hexdbt.mapping import MappingSet, load_mappings, resolve_mappings_path
from hexdbt.planner.rules import Plan, make_plan


@dataclass(frozen=True, slots=True)
class PlannedInvocation:
    invocation: Invocation
    # None when dbt's target folder holds run_results.json alone.
    manifest: Manifest | None
    mappings: MappingSet
    plan: Plan
    mappings_path: Path
    # False when no mapping file exists and the dbt exposures alone are the mapping.
    used_mapping_file: bool
    # The dbt project built, where known (the ledger records it with the invocation).
    project_dir: Path | None = None


def load_mapping_set(
    mappings_file: Path | None, manifest: Manifest | None
) -> tuple[MappingSet, Path, bool]:
    """The mapping file (or, without one, the dbt exposures that declare Hex apps), and with
    ``discover: auto`` in its defaults, the unmapped apps of the last discovery."""
    mappings_path, explicit = resolve_mappings_path(mappings_file)
    use_file = explicit or mappings_path.exists()
    mappings = load_mappings(mappings_path if use_file else None, manifest)
    if mappings.discover_auto and manifest is not None:
        from hexdbt.discovery.auto import with_discovered

        mappings = with_discovered(mappings, Path(manifest.path))
    if not mappings.projects:
        raise ConfigError(
            f"no mappings: {mappings_path} does not exist and no dbt exposure declares a Hex project",
            hint="create hex_mappings.yml (see docs/mapping.md) or pass --mappings",
        )
    return mappings, mappings_path, use_file


def mappings_of_project(
    project_dir: Path | None, target_path: Path | None, mappings_file: Path | None
) -> MappingSet:
    """The mapping a plan of this dbt project would use, with the exposures of its manifest when
    dbt has written one; a mapping file alone when no dbt project is found."""
    try:
        manifest_path = locate_artifacts(project_dir, target_path).manifest
    except ConfigError:
        if project_dir is not None or target_path is not None:
            raise
        manifest_path = None  # status --apps beside a mapping file, outside any dbt project
    manifest = load_manifest(manifest_path) if manifest_path and manifest_path.exists() else None
    return load_mapping_set(mappings_file, manifest)[0]


def plan_from_artifacts(
    project_dir: Path | None, target_path: Path | None, mappings_file: Path | None
) -> PlannedInvocation:
    """Plan from run_results.json and manifest.json where dbt put them (resolved as dbt does);
    without manifest.json, from run_results.json alone."""
    paths = locate_artifacts(project_dir, target_path)
    planned = plan_from_files(paths.run_results, paths.manifest, mappings_file)
    return replace(planned, project_dir=paths.project_dir.resolve())


def plan_from_files(
    run_results: Path, manifest_path: Path, mappings_file: Path | None
) -> PlannedInvocation:
    invocation = load_run_results(run_results)
    # Some teams keep run_results.json only (artifact uploads, --no-write-json pipelines, dbt
    # Cloud's run artifacts): names are then matched by the node names in its unique ids, and
    # each project whose selectors need the manifest is skipped with that reason.
    manifest = load_manifest(manifest_path) if manifest_path.exists() else None
    mappings, mappings_path, used_file = load_mapping_set(mappings_file, manifest)
    return PlannedInvocation(
        invocation=invocation,
        manifest=manifest,
        mappings=mappings,
        plan=make_plan(invocation, mappings, manifest),
        mappings_path=mappings_path,
        used_mapping_file=used_file,
    )
