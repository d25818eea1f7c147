"""The status page as HTML, rendered on the server with Jinja2.

Every value that came from dbt, the mapping or Hex goes through Jinja's autoescape (a model or
project named ``<script>`` is text), and a link's target only when it is http(s)
(``read_model.safe_link``). Times are written in UTC, readable without JavaScript; the page's
small script shows them in the browser's zone and keeps UTC on hover. The timeline is inline SVG
whose geometry is worked out here, so the templates only draw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import markupsafe

from hexdbt.page.read_model import InvocationView, PageView, RunView, TimelineRow

# The timeline's drawing, in SVG user units (it scales to the page's width).
_WIDTH = 1000.0
_LABEL_W = 220.0
_RIGHT_PAD = 12.0
_ROW_H = 24.0
_AXIS_H = 26.0
_BAR_H = 12.0
_MIN_BAR_W = 3.0
_MAX_LABEL_CHARS = 30


def utc_text(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def moment_html(at: float) -> markupsafe.Markup:
    """A moment as ``<time>``: UTC as text, which the page's script shows in the browser's zone."""
    return markupsafe.Markup('<time datetime="{}" data-utc>{}</time>').format(iso(at), utc_text(at))


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    outcome: str
    title: str
    href: str | None


@dataclass(frozen=True, slots=True)
class Mark:
    x: float
    y: float
    title: str
    superseded: bool
    href: str | None


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    at: float


@dataclass(frozen=True, slots=True)
class Lane:
    y: float
    label: str
    name: str


@dataclass(frozen=True, slots=True)
class Timeline:
    height: float
    plot_left: float
    plot_right: float
    lanes: tuple[Lane, ...]
    bars: tuple[Bar, ...]
    marks: tuple[Mark, ...]
    ticks: tuple[Tick, ...]
    now_x: float


def _run_title(name: str, run: RunView, now: float) -> str:
    end = run.ended_at if run.ended_at is not None else now
    ended = utc_text(run.ended_at) if run.ended_at is not None else "still running"
    return (
        f"{name}: run {run.run_id}, {run.status}; started {utc_text(run.started_at)},"
        f" ended {ended}; {duration_text(end - run.started_at)}"
    )


def timeline_of(view: PageView, *, links: bool) -> Timeline:
    """The timeline's shapes: a lane per app, a bar per run, a mark per build. ``links``: bars
    and marks link to the invocation's page (the served page), else a bar to its Hex run."""
    start, end = view.window_start, view.now
    left, right = _LABEL_W, _WIDTH - _RIGHT_PAD
    scale = (right - left) / (end - start)

    def x_of(at: float) -> float:
        return round(left + (min(max(at, start), end) - start) * scale, 1)

    lanes, bars, marks = [], [], []
    for index, row in enumerate(view.timeline):
        top = _AXIS_H + index * _ROW_H
        label = row.name if len(row.name) <= _MAX_LABEL_CHARS else row.name[:29] + "…"
        lanes.append(Lane(top, label, row.name))
        bars.extend(_bars(row, top, x_of, view.now, links))
        for build in row.builds:
            marks.append(
                Mark(
                    x=x_of(build.at),
                    y=top,
                    title=f"{row.name}: dbt build {build.invocation_id} refreshed its models,"
                    f" {utc_text(build.at)}"
                    + ("; superseded by a later build" if build.superseded else ""),
                    superseded=build.superseded,
                    href=_invocation_href(build.invocation_id) if links else None,
                )
            )
    step_h = max(1, view.window_h // 8)
    first_tick = (int(start // 3600) + 1) * 3600
    ticks = tuple(Tick(x_of(at), at) for at in range(first_tick, int(end) + 1, step_h * 3600))
    return Timeline(
        height=_AXIS_H + len(lanes) * _ROW_H + 4,
        plot_left=left,
        plot_right=right,
        lanes=tuple(lanes),
        bars=tuple(bars),
        marks=tuple(marks),
        ticks=ticks,
        now_x=x_of(end),
    )


def _bars(
    row: TimelineRow, top: float, x_of: Callable[[float], float], now: float, links: bool
) -> list[Bar]:
    found = []
    for run in row.runs:
        x = x_of(run.started_at)
        width = max(_MIN_BAR_W, x_of(run.ended_at if run.ended_at is not None else now) - x)
        href = _invocation_href(run.invocation_id) if links else run.run_url
        found.append(
            Bar(
                x,
                top + (_ROW_H - _BAR_H) / 2,
                round(width, 1),
                run.outcome,
                _run_title(row.name, run, now),
                href,
            )
        )
    return found


def _invocation_href(invocation_id: str) -> str:
    return "invocations/" + quote(invocation_id, safe="")


@cache
def _environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("hexdbt.page", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["utc"] = utc_text
    environment.filters["iso"] = iso
    environment.filters["moment"] = moment_html
    environment.filters["duration"] = duration_text
    environment.globals["invocation_href"] = _invocation_href
    return environment


@cache
def asset(name: str) -> str:
    """The page's script or style sheet (``page.js``, ``page.css``)."""
    return resources.files("hexdbt.page").joinpath("templates", name).read_text("utf-8")


def _query(view: PageView) -> str:
    params: dict[str, Any] = {}
    if view.project_dir is not None:
        params["project"] = view.project_dir
    params["hours"] = view.window_h
    return urlencode(params)


def _context(view: PageView, *, links: bool, refresh_s: float | None) -> dict[str, Any]:
    return {
        "view": view,
        "timeline": timeline_of(view, links=links),
        "links": links,
        "refresh_s": refresh_s,
        "query": _query(view),
    }


def render_page(view: PageView, *, refresh_s: float, fragment: str | None = None) -> str:
    """The whole page, served at ``/`` (its script and style are served beside it), around
    ``fragment`` (``render_fragment(view)``, rendered here when not given)."""
    context = _context(view, links=True, refresh_s=refresh_s)
    context["fragment"] = markupsafe.Markup(
        fragment if fragment is not None else render_fragment(view)
    )
    return _environment().get_template("page.html").render(context)


def render_fragment(view: PageView) -> str:
    """The part of the page that refreshes in place."""
    return (
        _environment()
        .get_template("fragment.html")
        .render(_context(view, links=True, refresh_s=None))
    )


def render_invocation(invocation: InvocationView, *, now: float) -> str:
    return (
        _environment()
        .get_template("invocation.html")
        .render({"inv": invocation, "now": now, "refresh_s": None, "links": True})
    )


def render_export(view: PageView) -> str:
    """One self-contained file of the apps table and the timeline (``hexdbt status --html``):
    its style and script inline, nothing loaded from anywhere, links only to Hex."""
    context: Mapping[str, Any] = {
        **_context(view, links=False, refresh_s=None),
        "inline_css": asset("page.css"),
        "inline_js": asset("page.js"),
    }
    return _environment().get_template("export.html").render(context)
