"""Finding dbt's artifacts as dbt does: flags, then DBT_PROJECT_DIR/DBT_TARGET_PATH via settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from hexdbt.cli import main
from hexdbt.dbt.locate import locate_artifacts
from hexdbt.errors import ConfigError
from hexdbt.settings import DbtEnvironment, dbt_environment


def _project(folder: Path, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dbt_project.yml").write_text(f"name: shop\n{extra}", encoding="utf-8")
    return folder


def test_dbt_project_dir_and_target_path_are_honoured_through_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _project(tmp_path / "shop")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("DBT_TARGET_PATH", "build/out")
    assert dbt_environment() == DbtEnvironment(project_dir=str(project), target_path="build/out")
    paths = locate_artifacts(cwd=elsewhere)
    assert paths.project_dir == project
    assert paths.target_dir == project / "build" / "out"


def test_flags_win_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from_env = _project(tmp_path / "from_env")
    from_flag = _project(tmp_path / "from_flag")
    monkeypatch.setenv("DBT_PROJECT_DIR", str(from_env))
    monkeypatch.setenv("DBT_TARGET_PATH", "env_target")
    paths = locate_artifacts(from_flag, "flag_target")
    assert paths.target_dir == from_flag / "flag_target"


def test_an_empty_variable_counts_as_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = _project(tmp_path / "shop", "target-path: compiled\n")
    monkeypatch.setenv("DBT_PROJECT_DIR", "")
    monkeypatch.setenv("DBT_TARGET_PATH", "")
    assert dbt_environment() == DbtEnvironment()
    (project / "models").mkdir()
    paths = locate_artifacts(cwd=project / "models")
    assert paths.target_dir == project.resolve() / "compiled"


def test_a_given_environment_replaces_the_process_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """locate reads no variable itself: a caller's DbtEnvironment is all it consults."""
    project = _project(tmp_path / "shop")
    monkeypatch.setenv("DBT_PROJECT_DIR", str(tmp_path / "missing"))
    given = DbtEnvironment(project_dir=str(project), target_path="/abs/target")
    paths = locate_artifacts(environment=given)
    assert paths.target_dir == Path("/abs/target")


def test_target_path_in_dbt_project_yml_unless_templated(tmp_path: Path) -> None:
    plain = _project(tmp_path / "plain", "target-path: compiled\n")
    templated = _project(tmp_path / "templated", "target-path: \"{{ env_var('OUT') }}\"\n")
    assert locate_artifacts(plain).target_dir == plain / "compiled"
    assert locate_artifacts(templated).target_dir == templated / "target"


def test_a_dbt_project_dir_without_dbt_project_yml_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBT_PROJECT_DIR", str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        locate_artifacts()
    assert caught.value.message == f"DBT_PROJECT_DIR {tmp_path}: no dbt_project.yml there"
    result = CliRunner().invoke(main, ["validate"], catch_exceptions=False)
    assert result.exit_code == 2
    assert result.stderr == f"Error: DBT_PROJECT_DIR {tmp_path}: no dbt_project.yml there\n"
