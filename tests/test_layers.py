"""The layers are a checked contract: import-linter (configured in pyproject.toml) passes on the
package, and fails when an import runs back up."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_the_package_keeps_its_layers() -> None:
    completed = _lint(REPO_ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "0 broken" in completed.stdout


def test_an_import_from_dbt_into_the_planner_breaks_the_contract(tmp_path: Path) -> None:
    """dbt/ only reads dbt: an import of the planner from there is caught, and named."""
    shutil.copytree(REPO_ROOT / "hexdbt", tmp_path / "hexdbt")
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    artifacts = tmp_path / "hexdbt" / "dbt" / "artifacts.py"
    artifacts.write_text(artifacts.read_text() + "\nimport hexdbt.planner.rules  # noqa\n")
    completed = _lint(tmp_path)
    assert completed.returncode != 0
    assert "hexdbt.dbt is not allowed to import hexdbt.planner" in completed.stdout
    assert "hexdbt.dbt.artifacts -> hexdbt.planner.rules" in completed.stdout
