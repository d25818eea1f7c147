"""The status page without a browser: what the read model finds in a real ledger, that every value
is escaped, the access guard, the fragment's ETag, and `hexdbt status --html`'s file and errors.
The page is served by a real uvicorn on 127.0.0.1 (``page_helpers.serving``)."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from click.testing import CliRunner
from engine_helpers import write_project
from page_helpers import new_trigger, plan, run, serving
from postgres_server import PostgresServer
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from hexdbt.cli import main
from hexdbt.clock import ManualClock
from hexdbt.errors import ConfigError
from hexdbt.hex.budget import CallKind, SharedBudget
from hexdbt.ledger import Ledger, PlanSkip
from hexdbt.page.access import REFUSAL, page_secrets
from hexdbt.page.read_model import read_invocation, read_page
from hexdbt.page.render import render_export, render_invocation, render_page
from hexdbt.page.routes import page_routes
from hexdbt.settings import StateLocation, parse_state_url

HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_MODEL = """o'r"<d>ers"""
START = 1_800_000_000.0
TOKEN = "hxtp_page_test_token"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=START)


@pytest.fixture
def ledger(state_location: StateLocation, clock: ManualClock) -> Iterator[Ledger]:
    with Ledger.open(state_location, clock=clock) as opened:
        yield opened


def _history(ledger: Ledger, clock: ManualClock) -> None:
    """Three apps over three builds: finance ran and is fresh; a hostile name's run failed, and
    its next build has waited past its 10-minute target; marketing was skipped by the first plan
    and waits on the second (another dbt project's)."""
    hostile = new_trigger(HOSTILE_NAME, "inv-1", models=[HOSTILE_MODEL], freshness_s=600)
    finance = new_trigger("finance", "inv-1", freshness_s=3600)
    skip = PlanSkip("marketing", "p-marketing", "orders failed; a Hex app on broken data is worse")
    plan(ledger, "inv-1", [hostile, finance], skipped=[skip])
    run(ledger, clock, hostile, length_s=120, status="ERRORED")
    run(ledger, clock, finance, length_s=60)
    clock.advance(3600)
    plan(
        ledger,
        "inv-2",
        [new_trigger("marketing", "inv-2", priority=2)],
        project_dir="/work/marketing",
        source="watch /work/marketing/target",
    )
    plan(
        ledger,
        "inv-3",
        [new_trigger(HOSTILE_NAME, "inv-3", models=[HOSTILE_MODEL], freshness_s=600)],
    )
    clock.advance(1200)


def test_the_read_model_puts_the_stale_app_first_and_says_what_waits(
    ledger: Ledger, clock: ManualClock, state_location: StateLocation
) -> None:
    _history(ledger, clock)
    budget = SharedBudget.open(state_location, TOKEN, "http://127.0.0.1:1", clock=clock)
    try:
        assert len(budget.take_now(CallKind.RUN_PROJECT, 20)) == 20  # the minute's all spent
        view = read_page(ledger, now=clock.now(), budget=budget)
    finally:
        budget.close()
    names = [app.name for app in view.apps]
    assert names[0] == HOSTILE_NAME
    assert view.apps[0].breached
    assert view.apps[0].newest_run is not None
    assert view.apps[0].newest_run.outcome == "failed"
    assert view.apps[0].link == f"https://app.hex.tech/acme/app/p-{HOSTILE_NAME}/"
    (marketing,) = [app for app in view.apps if app.name == "marketing"]
    assert marketing.waiting is not None
    assert marketing.waiting.kind == "waiting for the budget"
    assert marketing.waiting.estimated_start == pytest.approx(clock.now() + 61.0)
    assert [entry.name for entry in view.queue] == ["marketing", HOSTILE_NAME]  # priority 2
    assert view.budget is not None
    assert [(use.calls, use.used) for use in view.budget.run_project] == [(20, 20), (60, 20)]
    assert {row.name for row in view.timeline} == {HOSTILE_NAME, "finance", "marketing"}
    assert view.project_dirs == ("/work/marketing", "/work/shop")
    # Filtered by dbt project: only the apps and invocations of that project.
    only = read_page(ledger, now=clock.now(), project_dir="/work/marketing")
    assert [app.name for app in only.apps] == ["marketing"]
    assert [inv.invocation_id for inv in only.invocations] == ["inv-2"]


def test_an_invocation_page_shows_the_whole_plan_with_the_planners_reasons(
    ledger: Ledger, clock: ManualClock
) -> None:
    _history(ledger, clock)
    found = read_invocation(ledger, "inv-1")
    assert found is not None
    html = render_invocation(found, now=clock.now())
    assert "orders failed; a Hex app on broken data is worse" in html
    assert "finance" in html
    assert "orders refreshed" in html  # the planner's reason for a trigger
    assert read_invocation(ledger, "inv-404") is None


def test_every_value_from_dbt_the_mapping_or_hex_is_text(
    ledger: Ledger, clock: ManualClock
) -> None:
    _history(ledger, clock)
    hostile = new_trigger("evil-link", "inv-4")
    plan(ledger, "inv-4", [hostile])
    armed = ledger.claim_for_sending(hostile.trigger_key)
    assert armed is not None
    ledger.mark_started(
        hostile.trigger_key,
        fence=armed.fence,
        run_id="r-1",
        run_url="javascript:alert(1)",
        trace_id=None,
    )
    view = read_page(ledger, now=clock.now())
    found = read_invocation(ledger, "inv-1")
    assert found is not None
    for html in (
        render_page(view, refresh_s=15),
        render_export(view),
        render_invocation(found, now=clock.now()),
    ):
        assert "<img" not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "javascript:" not in html
        assert HOSTILE_MODEL not in html
    assert "o&#39;r&#34;&lt;d&gt;ers" in render_page(view, refresh_s=15)


def test_the_served_page_its_fragment_and_an_invocation(ledger: Ledger, clock: ManualClock) -> None:
    _history(ledger, clock)
    with serving(page_routes(ledger, clock=clock)) as url:
        page = requests.get(url, timeout=10)
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert "<script>" not in page.text  # no inline script: the policy allows none
        fragment = requests.get(url + "page/fragment", timeout=10)
        assert fragment.status_code == 200
        again = requests.get(
            url + "page/fragment", headers={"If-None-Match": fragment.headers["etag"]}, timeout=10
        )
        assert (again.status_code, again.content) == (304, b"")
        invocation = requests.get(url + "invocations/inv-1", timeout=10)
        assert invocation.status_code == 200
        assert "orders failed" in invocation.text
        missing = requests.get(url + "invocations/nope", timeout=10)
        assert missing.status_code == 404
        assert missing.text == "hexdbt: the ledger has no dbt invocation with this id\n"
        filtered = requests.get(url, params={"project": "/work/marketing"}, timeout=10)
        rows = re.findall(r'<tr class="app[^"]*" data-entry="([^"]+)"', filtered.text)
        assert rows == ["p-marketing/marketing"]


def test_the_guard_asks_for_the_token_or_password_and_leaves_healthz_open(ledger: Ledger) -> None:
    token, password = "t" * 24, "p" * 16
    health = Route("/healthz", lambda _request: PlainTextResponse("ok"))
    with serving([*page_routes(ledger), health], secrets=page_secrets(token, password)) as url:
        refused = requests.get(url, timeout=10)
        assert refused.status_code == 401
        assert refused.text == REFUSAL
        assert refused.headers["www-authenticate"].startswith("Basic")
        assert token not in refused.text
        assert password not in refused.text
        wrong = requests.get(url, headers={"Authorization": "Bearer " + "x" * 24}, timeout=10)
        assert wrong.status_code == 401
        bearer = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert bearer.status_code == 200
        assert requests.get(url, auth=("anyone", password), timeout=10).status_code == 200
        assert requests.get(url, auth=("anyone", token), timeout=10).status_code == 200
        garbled = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}
        assert requests.get(url, headers=garbled, timeout=10).status_code == 401
        assert requests.get(url + "healthz", timeout=10).text == "ok"


def test_a_short_page_secret_is_refused() -> None:
    with pytest.raises(ConfigError, match="HEXDBT_PAGE_PASSWORD is shorter than 12 characters"):
        page_secrets(None, "short")
    assert page_secrets(None, None) == ()


def test_env_var_refuses_the_pages_secrets(tmp_path: Path) -> None:
    from hexdbt.mapping.templates import is_secret_variable

    assert is_secret_variable("HEXDBT_PAGE_TOKEN")
    assert is_secret_variable("HEXDBT_PAGE_PASSWORD")


def test_status_html_writes_one_file_of_the_apps_and_their_timeline(tmp_path: Path) -> None:
    _target, mappings = write_project(tmp_path, 2)
    state = tmp_path / "state"
    clock = ManualClock()
    with Ledger.open(parse_state_url(f"sqlite://{state}"), clock=clock) as ledger:
        _history(ledger, clock)
    out = tmp_path / "reports" / "apps.html"
    result = CliRunner().invoke(
        main,
        ["status", "--html", str(out), "--mappings", str(mappings)],
        env={"HEXDBT_STATE_DIR": str(state)},
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Wrote {out}: 5 apps, 1 past the freshness target\n"
    html = out.read_text()
    # Self-contained: its style and script inline, nothing to load.
    assert "<style>" in html
    assert "<script>" in html
    assert not re.search(r'(src|href)="(?!https://app\.hex\.tech/)', html)
    for name in ("app_0", "app_1", "finance", "marketing", "&lt;img src=x"):
        assert name in html


def test_status_html_that_cannot_be_written_leaves_nothing_and_exits_2(tmp_path: Path) -> None:
    _target, mappings = write_project(tmp_path, 1)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = CliRunner().invoke(
        main, ["status", "--html", str(blocker / "apps.html"), "--mappings", str(mappings)]
    )
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        f"Error: cannot write the status page {blocker / 'apps.html'}: Not a directory"
    )
    assert "Traceback" not in result.output


def test_status_html_without_the_state_exits_7(tmp_path: Path) -> None:
    _target, mappings = write_project(tmp_path, 1)
    out = tmp_path / "apps.html"
    result = CliRunner().invoke(
        main,
        ["status", "--html", str(out), "--mappings", str(mappings)],
        env={"HEXDBT_STATE_URL": "postgresql://hexdbt:s3cret@127.0.0.1:1/hexdbt"},
    )
    assert result.exit_code == 7, result.output
    assert result.stderr.startswith("Error: ")
    assert "s3cret" not in result.output
    assert not out.exists()


def test_status_html_with_json_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["status", "--html", str(tmp_path / "x.html"), "--json"])
    assert result.exit_code == 2
    assert "--html goes without --apps and --json" in result.stderr


def test_the_page_answers_503_in_one_line_while_the_state_is_lost(
    postgres_server: PostgresServer, postgres_state_url: str
) -> None:
    password = urlsplit(postgres_state_url).password
    assert password
    with Ledger.open(parse_state_url(postgres_state_url)) as ledger:
        _history(ledger, ManualClock(start=START))
        with serving(page_routes(ledger, cache_s=0)) as url:
            assert requests.get(url, timeout=10).status_code == 200
            postgres_server.stop()
            try:
                lost = requests.get(url, timeout=120)
                lost_invocation = requests.get(url + "invocations/inv-1", timeout=120)
            finally:
                postgres_server.start()
            for answer in (lost, lost_invocation):
                assert answer.status_code == 503
                assert answer.text.startswith("hexdbt: cannot read the state: ")
                assert answer.text.count("\n") == 1
                assert "Traceback" not in answer.text
                assert f":{password}@" not in answer.text
            # Back with the server, once the store's next reconnect is due (within 5 s).
            back = threading.Event()
            for _ in range(150):
                if requests.get(url, timeout=30).status_code == 200:
                    back.set()
                    break
                back.wait(0.1)
            assert back.is_set()
