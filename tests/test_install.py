"""hexdbt as a user installs it: the sdist carries what the README and the docs link to, and the
wheel built from that sdist works in a fresh virtualenv that cannot see this checkout.

Nothing here needs the network: the wheel is built with the setuptools of the test environment
(no isolated build environment), installed with ``--no-deps --no-index``, and its dependencies
are the test environment's packages, seen through a ``.pth`` file. The editable hexdbt of the
test environment stays out of sight: a directory named in a ``.pth`` file is only appended to
``sys.path``, its own ``.pth`` files (the editable install's finder) are not run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
from pathlib import Path

import pytest
import yaml
from emulator_helpers import CUSTOMER_HEALTH, EXECUTIVE_KPIS, FINANCE_OVERVIEW

from hexdbt import __version__

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_dbt_project"
TOKEN = "hxtp_install_test"
# [text](target): the targets of Markdown links, and the documents whose links a reader follows.
LINK = re.compile(r"\]\(([^)\s]+)\)")
LINKING_DOCUMENTS = ("README.md", "CHANGELOG.md", "docs/*.md", "examples/**/*.md")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sdist")
    built = subprocess.run(
        [sys.executable, "-c",
         "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))",
         str(folder)],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    # setuptools warns of what will stop working (the license table it once took, say).
    assert "Deprecat" not in built.stderr, built.stderr
    return folder / built.stdout.strip().splitlines()[-1]


def _members(sdist: Path) -> set[str]:
    """The sdist's files, as paths from the project's root."""
    with tarfile.open(sdist) as archive:
        return {name.partition("/")[2] for name in archive.getnames()}


def test_the_sdist_carries_every_file_the_readme_and_the_docs_link_to(sdist: Path) -> None:
    members = _members(sdist)
    documents = sorted({path for pattern in LINKING_DOCUMENTS for path in ROOT.glob(pattern)})
    assert len(documents) > 10  # README, CHANGELOG, docs/, examples/ and examples/systemd
    checked = 0
    for document in documents:
        assert document.relative_to(ROOT).as_posix() in members
        for target in LINK.findall(document.read_text(encoding="utf-8")):
            path = target.partition("#")[0]
            if not path or "://" in path or path.startswith("mailto:"):
                continue
            resolved = os.path.relpath(os.path.normpath(document.parent / path), ROOT)
            where = f"{document.relative_to(ROOT)} links {target}"
            assert not resolved.startswith(".."), f"{where}, outside the project"
            assert resolved in members or any(
                member.startswith(resolved + "/") for member in members
            ), f"{where}, which the sdist does not carry"
            checked += 1
    assert checked > 30
    assert {"LICENSE", "CHANGELOG.md", "examples/systemd/hexdbt-relay.service"} <= members
    # What a build or a test run leaves behind is not the source.
    assert not [
        m for m in members if "__pycache__" in m or m.startswith("sample_dbt_project/target")
    ]


def _scenario_of_the_sample_apps(venv_bin: Path, folder: Path) -> Path:
    """The installed emulator's default scenario cut to the sample project's Hex apps, so that
    `validate --remote` reads four apps' tables, not 37 at Hex's 30 calls a minute."""
    printed = subprocess.run(
        [venv_bin / "hexdbt", "emulator", "--print-default-scenario"],
        capture_output=True, text=True, check=True, timeout=60, cwd=folder,
    )  # fmt: skip
    document = yaml.safe_load(printed.stdout)
    wanted = set(re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", (ROOT / "hex_mappings.yml").read_text()))
    wanted.add(EXECUTIVE_KPIS)  # declared by the sample project's dbt exposure
    document["projects"] = [p for p in document["projects"] if p["id"] in wanted]
    assert len(document["projects"]) == 4
    path = folder / "scenario.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_the_wheel_from_the_sdist_runs_in_a_fresh_virtualenv_without_the_checkout(
    sdist: Path, tmp_path: Path
) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "--wheel-dir", str(wheels), str(sdist)],
        cwd=tmp_path, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    (wheel,) = wheels.glob(f"hexdbt-{__version__}-py3-none-any.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "--quiet", str(wheel)],
        cwd=tmp_path, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    site_packages = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
    )  # fmt: skip
    (site_packages / "test-environment.pth").write_text(sysconfig.get_path("purelib") + "\n")

    environment = {
        name: value
        for name, value in os.environ.items()
        if name != "PYTHONPATH" and not name.startswith(("HEX_", "HEXDBT_", "DBT_"))
    }
    environment.update(HEXDBT_STATE_DIR=str(tmp_path / "state"), PYTHONUNBUFFERED="1")

    def hexdbt(*args: str, **more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [venv / "bin" / "hexdbt", *args], cwd=tmp_path, env={**environment, **more},
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip

    imported = subprocess.run(
        [python, "-c", "import hexdbt; print(hexdbt.__file__, hexdbt.__version__)"],
        cwd=tmp_path, env=environment, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert imported.stdout.split() == [str(site_packages / "hexdbt" / "__init__.py"), __version__]

    helped = hexdbt("--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("Usage: hexdbt [OPTIONS] COMMAND")

    # A dbt project of the user's: the sample's sources and the manifest of one of its builds.
    project = tmp_path / "project"
    shutil.copytree(SAMPLE, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
    (project / "target").mkdir()
    shutil.copy(ROOT / "tests/fixtures/sample_build/manifest.json", project / "target")
    shutil.copy(ROOT / "hex_mappings.yml", project)

    installed = hexdbt("hook", "install", "--project-dir", str(project), "--write")
    assert installed.returncode == 0, installed.stderr
    macro = project / "macros" / "hexdbt" / "hexdbt_outbox.sql"
    # The wheel's copy of the macros, under the line that says which hexdbt installed them.
    stamp, _, copied = macro.read_text().partition("\n")
    assert stamp.startswith(f"{{#- Installed by hexdbt {__version__} ")
    assert copied == (ROOT / "hexdbt/dbt_package/macros/hexdbt_outbox.sql").read_text()
    assert "hexdbt_on_run_end(results)" in (project / "dbt_project.yml").read_text()

    scenario = _scenario_of_the_sample_apps(venv / "bin", tmp_path)
    emulator = subprocess.Popen(
        [venv / "bin" / "hexdbt", "emulator", "--port", "0", "--scenario", str(scenario)],
        cwd=tmp_path, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert emulator.stdout is not None
        url = emulator.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (
            emulator.stderr.read() if emulator.stderr else ""
        )
        validated = hexdbt(
            "validate", "--remote", "--json", "--project-dir", str(project),
            "--mappings", str(project / "hex_mappings.yml"),
            HEX_API_TOKEN=TOKEN, HEX_BASE_URL=url,
        )  # fmt: skip
    finally:
        emulator.send_signal(signal.SIGTERM)
        _, emulator_log = emulator.communicate(timeout=10)
    assert validated.returncode == 0, validated.stderr
    report = json.loads(validated.stdout)
    assert (report["exitCode"], report["projects"], report["remote"]) == (0, 4, True), report
    assert report["findings"] == []
    assert emulator.returncode == 0, emulator_log
    # The installed validate asked the installed emulator about each mapped app.
    for project_id in (CUSTOMER_HEALTH, FINANCE_OVERVIEW, EXECUTIVE_KPIS):
        assert f"GET /api/v1/projects/{project_id} -> 200" in emulator_log
    assert TOKEN not in validated.stdout + validated.stderr + emulator_log


def test_the_readme_names_the_dbt_core_that_the_tests_run_on() -> None:
    """constraints.txt pins the test environment's dbt-core; the README tells users that one."""
    (pin,) = re.findall(r"^dbt-core>=(\d+\.\d+),", (ROOT / "constraints.txt").read_text(), re.M)
    readme = (ROOT / "README.md").read_text()
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert f"**dbt-core {pin}**" in install
    assert f"'dbt-core~={pin}.0'" in install
