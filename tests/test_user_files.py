"""Files hexdbt writes for a user are written whole or not at all, keep what the user set on them,
and every way a write fails is one line and exit 2: on a full disk, past a file size limit, on a
read-only file or project, or into a path outside the dbt project."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from disk_helpers import (
    read_only,
    run_hexdbt_on_a_full_disk,
    run_hexdbt_with_a_file_size_limit,
)

from hexdbt.cli import main
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import CUSTOMER_HEALTH_ID
from hexdbt.errors import ConfigError, StateError
from hexdbt.files import write_whole

TOKEN = "hxtp_user_files_secret"
MACRO = Path("macros") / "hexdbt" / "hexdbt_outbox.sql"


def _entries(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


# -- the helper ----------------------------------------------------------------------------------


def test_a_rewrite_keeps_the_mode_and_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "hex_mappings.yml"
    target.write_text("version: 1\n")
    target.chmod(0o640)
    before = target.stat().st_ino
    write_whole(target, "version: 1\nprojects: []\n", what="the mapping file")
    assert target.read_text() == "version: 1\nprojects: []\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.stat().st_ino != before  # a new file took its place: never half of one
    assert _entries(tmp_path) == ["hex_mappings.yml"]


def test_a_symlink_stays_a_symlink_and_its_target_is_written(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    real = tmp_path / "shared" / "mappings.yml"
    real.write_text("old\n")
    link = tmp_path / "hex_mappings.yml"
    link.symlink_to(Path("shared") / "mappings.yml")
    write_whole(link, "new\n", what="the mapping file")
    assert link.is_symlink()
    assert real.read_text() == "new\n"
    assert _entries(tmp_path / "shared") == ["mappings.yml"]


def test_a_new_file_gets_the_mode_of_any_new_file_and_its_folders(tmp_path: Path) -> None:
    umask = os.umask(0o027)
    try:
        write_whole(tmp_path / "reports" / "hex.xml", b"<x/>", what="the JUnit report")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "reports" / "hex.xml").stat().st_mode) == 0o640


def test_a_read_only_file_is_refused_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "hex_mappings.yml"
    target.write_text("version: 1\n")
    with read_only(target), pytest.raises(ConfigError) as refused:
        write_whole(target, "version: 1\nprojects: []\n", what="the mapping file")
    assert str(refused.value) in (
        f"cannot write the mapping file {target}: Permission denied",  # mode 0o444
        f"cannot write the mapping file {target}: Operation not permitted",  # immutable, as root
    )
    assert target.read_text() == "version: 1\n"
    assert _entries(tmp_path) == ["hex_mappings.yml"]


def test_the_error_class_is_the_callers(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where a folder should be")
    with pytest.raises(StateError, match=r"^cannot write the discovery cache .*: Not a directory$"):
        write_whole(
            tmp_path / "state" / "discovery.json",
            "{}",
            what="the discovery cache",
            error=StateError,
        )


# -- reports -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "what"),
    [("--report-junit", "the JUnit report"), ("--report-markdown", "the Markdown report")],
)
def test_a_report_on_a_full_device_is_one_line_and_exit_2(
    hex_emulator: HexEmulator, tmp_path: Path, option: str, what: str
) -> None:
    """/dev/full answers every write with ENOSPC; a report linked to it is written through the
    link (a device cannot be replaced)."""
    report = tmp_path / "report"
    report.symlink_to("/dev/full")
    result = CliRunner().invoke(
        main,
        ["trigger", CUSTOMER_HEALTH_ID, option, str(report)],
        env={"HEX_BASE_URL": hex_emulator.url, "HEX_API_TOKEN": TOKEN},
        obj={"clock": hex_emulator.clock},
    )
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines()[-1] == (
        f"Error: cannot write {what} {report}: No space left on device"
    )
    assert report.is_symlink()


# -- hook install --------------------------------------------------------------------------------


def _project(tmp_path: Path, text: str = "name: shop\n") -> Path:
    project = tmp_path / "shop"
    project.mkdir()
    (project / "dbt_project.yml").write_text(text)
    return project


def _install(project: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["hook", "install", "--project-dir", str(project), "--write"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stderr


def test_hook_install_on_a_full_disk_leaves_no_empty_macro_and_one_line(tmp_path: Path) -> None:
    project = _project(tmp_path)
    done = run_hexdbt_on_a_full_disk(
        ["hook", "install", "--write"], full=project, cwd=project, env=os.environ
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        f"Error: cannot write the hook's macros {project / MACRO}: No space left on device\n"
    )
    assert not (project / MACRO).exists()  # no macro of 0 bytes
    assert _entries(project / MACRO.parent) == []
    assert (project / "dbt_project.yml").read_text() == "name: shop\n"


def test_hook_install_past_a_file_size_limit_leaves_no_cut_macro(tmp_path: Path) -> None:
    project = _project(tmp_path)
    done = run_hexdbt_with_a_file_size_limit(
        ["hook", "install", "--write"], limit_bytes=4096, cwd=project, env=os.environ
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == (
        f"Error: cannot write the hook's macros {project / MACRO}: File too large\n"
    )
    assert _entries(project / MACRO.parent) == []


def test_hook_install_on_a_read_only_project_is_one_line(tmp_path: Path) -> None:
    project = _project(tmp_path)
    with read_only(project / "dbt_project.yml", project):
        code, stderr = _install(project)
    assert code == 2
    assert stderr in (
        f"Error: cannot write the hook's macros {project / MACRO}: Permission denied\n",
        f"Error: cannot write the hook's macros {project / MACRO}: Operation not permitted\n",
    )
    assert _entries(project) == ["dbt_project.yml"]


def test_hook_install_refuses_a_read_only_dbt_project_file(tmp_path: Path) -> None:
    project = _project(tmp_path)
    with read_only(project / "dbt_project.yml"):
        code, stderr = _install(project)
    assert code == 2
    assert stderr.startswith(f"Error: cannot write the dbt project file {project}/dbt_project.yml:")
    assert (project / "dbt_project.yml").read_text() == "name: shop\n"


@pytest.mark.parametrize(
    ("macro_paths", "message"),
    [
        ("5", "macro-paths must be a list of folders, got 5"),
        ("[[macros]]", "macro-paths must be a list of folders, got [['macros']]"),
    ],
)
def test_hook_install_refuses_macro_paths_that_are_no_folders(
    tmp_path: Path, macro_paths: str, message: str
) -> None:
    project = _project(tmp_path, f"name: shop\nmacro-paths: {macro_paths}\n")
    code, stderr = _install(project)
    assert code == 2
    assert stderr == f"Error: {project / 'dbt_project.yml'}: {message}\n"
    assert _entries(project) == ["dbt_project.yml"]


@pytest.mark.parametrize("outside", ["../../../../outside", "../outside", "{tmp_path}/outside"])
def test_hook_install_writes_nothing_outside_the_dbt_project(tmp_path: Path, outside: str) -> None:
    """`../../../../tmp/x` was taken, and the macros were written there."""
    (tmp_path / "deep" / "er" / "still").mkdir(parents=True)
    project = _project(tmp_path / "deep" / "er" / "still")
    macro_paths = outside.format(tmp_path=tmp_path)
    (project / "dbt_project.yml").write_text(f'name: shop\nmacro-paths: ["{macro_paths}"]\n')
    code, stderr = _install(project)
    assert code == 2
    assert stderr == (
        f"Error: {project / 'dbt_project.yml'}: macro-paths {macro_paths!r} leads outside the"
        f" dbt project (to {(project / macro_paths).resolve() / 'hexdbt'}); hexdbt writes its"
        f" macros only inside {project.resolve()}\n"
    )
    assert _entries(project) == ["dbt_project.yml"]
    assert not (project / macro_paths).exists()


def test_hook_install_refuses_a_macro_folder_linked_outside_the_project(tmp_path: Path) -> None:
    project = _project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (project / "macros").symlink_to(elsewhere)
    code, stderr = _install(project)
    assert code == 2
    assert f"leads outside the dbt project (to {elsewhere.resolve()}/hexdbt)" in stderr
    assert _entries(elsewhere) == []


def test_hook_install_on_a_dbt_project_file_not_in_utf8_is_one_line(tmp_path: Path) -> None:
    project = tmp_path / "shop"
    project.mkdir()
    (project / "dbt_project.yml").write_bytes("name: café\n".encode("latin-1"))
    code, stderr = _install(project)
    assert code == 2
    assert stderr == f"Error: {project / 'dbt_project.yml'}: not UTF-8 text (byte 9)\n"
    assert _entries(project) == ["dbt_project.yml"]
