"""report.write_markdown: a GitHub step-summary section, appended as $GITHUB_STEP_SUMMARY expects."""

from __future__ import annotations

from pathlib import Path

import pytest

from hexdbt.errors import ConfigError
from hexdbt.outcomes import Outcome, OutcomeKind
from hexdbt.report import render_markdown, write_markdown

HEALTH = "5a8591dd-4039-49df-9202-96385ba3eff8"
FINANCE = "7c2e4b10-9d8a-4f3e-b6a1-2f0c3d9e8a11"
RUN_URL = f"https://app.hex.tech/acme/app/{HEALTH}/runs/run-1"

OUTCOMES = [
    Outcome(
        name="customer_health",
        project_id=HEALTH,
        kind=OutcomeKind.COMPLETED,
        reason="customers refreshed",
        run_id="run-1",
        run_url=RUN_URL,
        hex_status="COMPLETED",
        input_params={"region": "EU"},
        elapsed_s=83.4,
    ),
    Outcome(
        name="finance_overview",
        project_id=FINANCE,
        kind=OutcomeKind.ERRORED,
        reason=None,
        run_id="run-2",
        run_url="https://app.hex.tech/acme/app/x/runs/run-2",
        hex_status="ERRORED",
        trace_id="trace-9",
        elapsed_s=12.0,
    ),
    Outcome(
        name="marketing|attribution",
        project_id="b3d9f6a2-1e47-4c85-9a30-6e2f7d1c5b42",
        kind=OutcomeKind.SKIPPED,
        reason="no model refreshed <orders>\nsecond line",
    ),
]


def test_a_table_row_per_project_with_run_links(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    write_markdown(OUTCOMES, path, title="hexdbt run")
    assert path.read_text(encoding="utf-8") == (
        "### hexdbt run\n"
        "\n"
        "3 mapped Hex projects: 1 completed, 1 errored, 1 skipped (exit code 5)\n"
        "\n"
        "| | Hex project | Outcome | Hex status | Time | Run | Details |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| ✅ | customer_health<br>`{HEALTH}` | completed | COMPLETED | 1m 23s |"
        f" [run-1]({RUN_URL}) | customers refreshed; inputs: region=EU |\n"
        f"| ❌ | finance_overview<br>`{FINANCE}` | errored | ERRORED | 12s |"
        " [run-2](https://app.hex.tech/acme/app/x/runs/run-2) | traceId trace-9 |\n"
        "| ⏭️ | marketing\\|attribution<br>`b3d9f6a2-1e47-4c85-9a30-6e2f7d1c5b42` | skipped |"
        "  |  |  | no model refreshed &lt;orders&gt; second line |\n"
    )


def test_a_second_section_is_appended_after_a_blank_line(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    path.write_text("## dbt build\nall green", encoding="utf-8")
    write_markdown(OUTCOMES[:1], path, title="hexdbt run")
    write_markdown([], path, title="hexdbt trigger")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("## dbt build\nall green\n\n### hexdbt run\n\n1 mapped Hex project")
    assert text.endswith("region=EU |\n\n### hexdbt trigger\n\nno mapped Hex projects (all well)\n")


def test_a_file_ending_in_a_newline_gets_one_more(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    path.write_text("earlier step\n", encoding="utf-8")
    write_markdown([], path, title="hexdbt")
    assert path.read_text(encoding="utf-8") == (
        "earlier step\n\n### hexdbt\n\nno mapped Hex projects (all well)\n"
    )


def test_the_folder_is_created(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "ci" / "hex.md"
    write_markdown(OUTCOMES[:1], path)
    assert path.read_text(encoding="utf-8").startswith("### hexdbt\n")


def test_only_web_links_become_links() -> None:
    outcome = Outcome("app", HEALTH, OutcomeKind.STARTED, run_id="r", run_url="javascript:alert(1)")
    text = render_markdown([outcome], title="t")
    assert "](" not in text
    assert "| javascript:alert(1) |" in text


def test_a_run_url_with_parentheses_stays_one_link() -> None:
    outcome = Outcome("app", HEALTH, OutcomeKind.STARTED, run_id="r", run_url="https://h/a (1)")
    assert "[r](https://h/a%20%281%29)" in render_markdown([outcome], title="t")


def test_a_folder_in_place_of_the_report_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        write_markdown(OUTCOMES, tmp_path)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith(f"cannot write the Markdown report {tmp_path}: ")
