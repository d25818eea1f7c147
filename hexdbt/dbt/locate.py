"""Where dbt puts its artifacts, resolved the way dbt resolves it.

Project folder: ``--project-dir``, else ``DBT_PROJECT_DIR``, else the nearest parent of the
current folder holding ``dbt_project.yml``. Target folder: ``--target-path``, else
``DBT_TARGET_PATH``, else ``target-path`` in dbt_project.yml, else ``target``; a relative target
path is taken from the project folder.

What the environment says arrives as a ``DbtEnvironment``; left out, ``hexdbt.settings`` reads
it, the one place that reads hexdbt's environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hexdbt.errors import ConfigError
from hexdbt.settings import DBT_PROJECT_DIR_ENV, DbtEnvironment, dbt_environment

PROJECT_FILE = "dbt_project.yml"


@dataclass(frozen=True, slots=True)
class ArtifactPaths:
    project_dir: Path
    target_dir: Path

    @property
    def run_results(self) -> Path:
        return self.target_dir / "run_results.json"

    @property
    def manifest(self) -> Path:
        return self.target_dir / "manifest.json"


def find_project_dir(
    flag_value: str | Path | None = None,
    *,
    cwd: Path | None = None,
    environment: DbtEnvironment | None = None,
) -> Path:
    explicit = flag_value or (environment or dbt_environment()).project_dir
    if explicit:
        project_dir = Path(explicit).expanduser()
        if not (project_dir / PROJECT_FILE).is_file():
            source = "--project-dir" if flag_value else DBT_PROJECT_DIR_ENV
            raise ConfigError(f"{source} {project_dir}: no {PROJECT_FILE} there")
        return project_dir
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    raise ConfigError(
        f"no {PROJECT_FILE} in {start} or any parent folder",
        hint="run from inside the dbt project or pass --project-dir",
    )


def _target_path_in_project(project_dir: Path) -> str | None:
    """``target-path`` from dbt_project.yml, if set to a plain string."""
    import yaml

    project_file = project_dir / PROJECT_FILE
    try:
        document = yaml.safe_load(project_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{project_file}: cannot read it: {exc}") from exc
    value = document.get("target-path") if isinstance(document, dict) else None
    # A Jinja-templated target-path needs dbt to render it; dbt's default is then the best guess.
    if isinstance(value, str) and value.strip() and "{{" not in value:
        return value.strip()
    return None


def locate_artifacts(
    project_dir: str | Path | None = None,
    target_path: str | Path | None = None,
    *,
    cwd: Path | None = None,
    environment: DbtEnvironment | None = None,
) -> ArtifactPaths:
    environment = environment or dbt_environment()
    project = find_project_dir(project_dir, cwd=cwd, environment=environment)
    target = target_path or environment.target_path or _target_path_in_project(project) or "target"
    target_dir = Path(target).expanduser()
    if not target_dir.is_absolute():
        target_dir = project / target_dir
    return ArtifactPaths(project_dir=project, target_dir=target_dir)
