"""What ``hexdbt watch`` watches: dbt target folders, resolved as dbt resolves them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hexdbt.errors import ConfigError

RUN_RESULTS = "run_results.json"
MANIFEST = "manifest.json"
# How the ledger names the watcher's invocations: by their target folder, so that a restarted
# watcher knows which targets it has handled before.
WATCH_SOURCE = "watch {target_dir}"


@dataclass(frozen=True, slots=True)
class WatchTarget:
    """One dbt target folder (absolute)."""

    target_dir: Path
    project_dir: Path | None = None

    @property
    def run_results(self) -> Path:
        return self.target_dir / RUN_RESULTS

    @property
    def manifest(self) -> Path:
        return self.target_dir / MANIFEST

    @property
    def ledger_source(self) -> str:
        return WATCH_SOURCE.format(target_dir=self.target_dir)


def resolve_targets(
    project_dirs: Sequence[Path], target_paths: Sequence[Path], *, cwd: Path | None = None
) -> list[WatchTarget]:
    """The target folders to watch, resolved as dbt resolves them.

    No option: the project found from the current folder. Projects only: each one's target
    folder. Target paths only: relative ones are taken from the project found from the current
    folder (absolute ones need no project). One project and several target paths: each target
    under that project. As many target paths as projects: paired in order.
    """
    from hexdbt.dbt.locate import locate_artifacts

    base = cwd or Path.cwd()
    pairs: list[tuple[Path | None, Path | None]]
    if not target_paths:
        pairs = [(project, None) for project in project_dirs] or [(None, None)]
    elif len(project_dirs) <= 1:
        project = project_dirs[0] if project_dirs else None
        pairs = [(project, target) for target in target_paths]
    elif len(project_dirs) == len(target_paths):
        pairs = list(zip(project_dirs, target_paths, strict=True))
    else:
        raise ConfigError(
            f"{len(project_dirs)} --project-dir and {len(target_paths)} --target-path:"
            " cannot tell which target folder belongs to which project",
            hint="give one --target-path per --project-dir (paired in order), or one"
            " --project-dir with several --target-path",
        )
    targets: list[WatchTarget] = []
    for project, target in pairs:
        if project is None and target is not None and target.expanduser().is_absolute():
            targets.append(WatchTarget(target.expanduser()))
            continue
        paths = locate_artifacts(project, target, cwd=base)
        target_dir = paths.target_dir if paths.target_dir.is_absolute() else base / paths.target_dir
        project_dir = (
            paths.project_dir if paths.project_dir.is_absolute() else base / paths.project_dir
        )
        targets.append(WatchTarget(Path(os.path.abspath(target_dir)), project_dir))
    unique = list({watched.target_dir: watched for watched in targets}.values())
    for watched in unique:
        if not watched.target_dir.parent.is_dir():
            raise ConfigError(
                f"cannot watch {watched.target_dir}: its parent folder"
                f" {watched.target_dir.parent} does not exist",
                hint="check --project-dir / --target-path",
            )
    return unique
