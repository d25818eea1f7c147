"""The status page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright;
.ci/run installs it when missing), while real runs are live on the Hex emulator and after they
end: rows, timeline bars, a link to an invocation, the stale app on top, the update in place,
axe-core's accessibility rules, hostile names, and `hexdbt status --html` opened offline."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from engine_helpers import scenario, write_project
from page_helpers import new_trigger, plan, run, serving
from playwright.sync_api import Browser, Page, sync_playwright

from hexdbt.cli import main
from hexdbt.clock import ManualClock, SystemClock
from hexdbt.emulator import HexEmulator
from hexdbt.engine import Engine, EngineSettings
from hexdbt.factory import open_client
from hexdbt.hex.budget import SharedBudget
from hexdbt.ledger import Ledger, TriggerState
from hexdbt.mapping import load_mappings
from hexdbt.page.routes import page_routes
from hexdbt.planner.files import plan_from_files
from hexdbt.settings import parse_state_url

CHROMIUM = Path("/usr/bin/chromium")
# No download, no update, no sync, no QUIC: nothing leaves 127.0.0.1.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = Path(__file__).parent / "fixtures" / "axe-core" / "axe.min.js"
HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_MODEL = """o'r"<d>ers"""
TOKEN = "hxtp_page_browser_token"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)", pytrace=False
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def _seed_history(state_url: str, now: float) -> None:
    """From three hours ago: finance's run completed; a hostile name's build has waited unsent
    for two hours, past its 10-minute target."""
    clock = ManualClock(start=now - 3 * 3600)
    with Ledger.open(parse_state_url(state_url), clock=clock) as ledger:
        finance = new_trigger("finance", "old-1", freshness_s=86400)
        plan(ledger, "old-1", [finance])
        run(ledger, clock, finance, length_s=900)
        clock.advance(3600)
        hostile = new_trigger(HOSTILE_NAME, "old-2", models=[HOSTILE_MODEL], freshness_s=600)
        plan(ledger, "old-2", [hostile])


def _axe_violations(page: Page) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.html).slice(0, 3)}))"
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


def _rows(page: Page) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = page.eval_on_selector_all(
        "table.apps tbody tr",
        "rows => rows.map(r => ({name: r.querySelector('th').innerText.replace(/ stale$/, ''),"
        " run: r.cells[3].querySelector('.status').innerText,"
        " outcome: r.cells[3].querySelector('.status').className, stale: r.classList.contains('stale') ? 'yes' : 'no'}))",
    )
    return rows


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    done = threading.Event()
    for _ in range(int(timeout_s * 10)):
        if condition():
            return
        done.wait(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_page_in_a_browser_while_runs_are_live_and_after_they_end(
    browser: Browser, hex_emulator_factory: Callable[..., HexEmulator], tmp_path: Path
) -> None:
    state_url = f"sqlite://{tmp_path / 'state'}"
    clock = SystemClock()
    _seed_history(state_url, clock.now())
    emulator = hex_emulator_factory(scenario=scenario(3, running_s=5), clock=clock)
    shop = tmp_path / "shop"
    target, mappings = write_project(shop, 3, statuses={"model.shop.m2": "error"})
    planned = plan_from_files(target / "run_results.json", target / "manifest.json", mappings).plan
    assert [skip.name for skip in planned.skipped] == ["app_2"]

    state = parse_state_url(state_url)
    ledger = Ledger.open(state, clock=clock)
    budget = SharedBudget.open(state, TOKEN, emulator.url, clock=clock)
    client = open_client(token=TOKEN, base_url=emulator.url, clock=clock, state=state)
    engine = Engine(client, ledger, settings=EngineSettings())
    engine.submit(planned, source="run", project_dir=str(shop))
    engine.close()
    running = threading.Thread(target=engine.run, name="engine")
    running.start()
    routes = page_routes(
        ledger,
        mappings=load_mappings(mappings),
        budget=budget,
        clock=clock,
        refresh_s=1,
        cache_s=0,
    )
    dialogs: list[str] = []
    try:
        with serving(routes) as url:
            _wait_for(lambda: len(ledger.in_state(TriggerState.STARTED)) == 2, "both runs to start")
            context = browser.new_context(bypass_csp=True, viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(url)

            rows = _rows(page)
            names = [row["name"] for row in rows]
            assert names[0] == HOSTILE_NAME  # the stale app on top, its name as text
            assert rows[0]["stale"] == "yes"
            assert set(names) == {HOSTILE_NAME, "finance", "app_0", "app_1", "app_2"}
            live = {
                row["name"]: row["outcome"] for row in rows if row["name"] in ("app_0", "app_1")
            }
            assert live == {"app_0": "status live", "app_1": "status live"}
            bars = page.eval_on_selector_all(
                "svg.timeline .bar", "bars => bars.map(b => b.getAttribute('class'))"
            )
            assert sorted(bars) == ["bar completed", "bar live", "bar live"]
            assert page.locator("svg.timeline .build").count() == 4  # one per planned build
            # Focusing a bar tells its run.
            page.focus("svg.timeline a.bar.completed")
            assert "finance: run" in page.inner_text("#bar-details")

            # A run ends: the page says so without being reloaded.
            page.evaluate("window.__sameDocument = true")
            page.wait_for_function(
                "() => [...document.querySelectorAll('table.apps tbody tr')]"
                ".filter(r => /app_[01]/.test(r.cells[0].innerText))"
                ".every(r => r.cells[3].innerText.includes('COMPLETED'))",
                timeout=60_000,
            )
            assert page.evaluate("window.__sameDocument") is True
            assert (
                sorted(
                    page.eval_on_selector_all(
                        "svg.timeline .bar", "bars => bars.map(b => b.getAttribute('class'))"
                    )
                )
                == ["bar completed"] * 3
            )

            # Nothing hostile ran or became an element; the model's quotes are text.
            assert dialogs == []
            assert page.locator("img").count() == 0
            assert HOSTILE_MODEL in page.inner_text("table.apps")
            assert _axe_violations(page) == []
            page.screenshot(path=str(tmp_path / "status-page.png"), full_page=True)
            page_rows = _rows(page)

            # From an app's newest run to its dbt invocation: the plan, with the skipped app.
            page.click('table.apps tr[data-entry$="/app_0"] a:text-is("build")')
            page.wait_for_url("**/invocations/**")
            assert planned.invocation_id in page.inner_text("h1")
            plan_text = page.inner_text("table.plan")
            assert "app_2" in plan_text
            assert "skipped" in plan_text
            assert "m2" in plan_text  # the planner's reason names the failed model
            assert "COMPLETED" in page.inner_text("table.runs")
            assert _axe_violations(page) == []
            page.screenshot(path=str(tmp_path / "invocation-page.png"), full_page=True)

            # The export, opened offline: the same apps and runs.
            export = tmp_path / "export" / "apps.html"
            result = CliRunner().invoke(
                main,
                [
                    "status",
                    "--html",
                    str(export),
                    "--state-url",
                    state_url,
                    "--mappings",
                    str(mappings),
                ],
            )
            assert result.exit_code == 0, result.output
            offline = browser.new_context(offline=True)
            requests_made: list[str] = []
            offline.on("request", lambda request: requests_made.append(request.url))
            exported = offline.new_page()
            exported.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            exported.goto(export.as_uri())
            assert _rows(exported) == page_rows
            assert exported.locator("svg.timeline .bar").count() == 3
            assert requests_made == [export.as_uri()]
            assert dialogs == []
            assert _axe_violations(exported) == []
            offline.close()
            context.close()
    finally:
        engine.request_stop()
        running.join(timeout=30)
        client.close()
        budget.close()
        ledger.close()
