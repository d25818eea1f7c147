"""--report-junit and --report-markdown on `trigger` and `run`: the files CI systems read."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner
from engine_helpers import scenario, write_project

from hexdbt.cli import main
from hexdbt.emulator import HexEmulator
from hexdbt.emulator.scenario import CUSTOMER_HEALTH_ID, ERRORS_ID

TOKEN = "hxtp_reports_secret"


def _invoke(emulator: HexEmulator, args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(
        main,
        args,
        env={"HEX_API_TOKEN": TOKEN, "HEX_BASE_URL": emulator.url},
        obj={"clock": emulator.clock},
    )
    assert TOKEN not in result.output
    return result.exit_code, result.stdout


def test_trigger_writes_junit_and_appends_markdown(
    hex_emulator: HexEmulator, tmp_path: Path
) -> None:
    junit = tmp_path / "hex.xml"
    summary = tmp_path / "summary.md"
    summary.write_text("## Build\n")
    code, _ = _invoke(
        hex_emulator,
        [
            "trigger",
            f"{CUSTOMER_HEALTH_ID},{ERRORS_ID}",
            "--wait",
            "--report-junit",
            str(junit),
            "--report-markdown",
            str(summary),
        ],
    )
    assert code == 5
    cases = {case.get("name"): case for case in ET.parse(junit).getroot().iter("testcase")}
    assert cases[CUSTOMER_HEALTH_ID].find("failure") is None
    assert cases[ERRORS_ID].find("failure") is not None
    markdown = summary.read_text()
    assert markdown.startswith("## Build\n")
    assert "hexdbt trigger" in markdown
    assert f"{hex_emulator.url}/app/{CUSTOMER_HEALTH_ID}/runs/" in markdown
    assert "errored" in markdown


def test_run_writes_the_markdown_summary(
    hex_emulator_factory: Callable[..., HexEmulator], tmp_path: Path
) -> None:
    emulator = hex_emulator_factory(scenario=scenario(2))
    _, mappings = write_project(tmp_path, 2)
    summary = tmp_path / "summary.md"
    code, _ = _invoke(
        emulator,
        [
            "run",
            "--project-dir",
            str(tmp_path),
            "--mappings",
            str(mappings),
            "--report-markdown",
            str(summary),
        ],
    )
    assert code == 0
    markdown = summary.read_text()
    assert "hexdbt run" in markdown
    assert "app_0" in markdown
    assert "app_1" in markdown
    assert markdown.count(f"{emulator.url}/app/") == 2
