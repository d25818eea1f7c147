"""What a daemon (``hexdbt watch``, ``hexdbt relay``) tells Prometheus, and its health check.

A daemon makes one ``DaemonMetrics``, on a registry of its own (two daemons, or two tests, in one
process never share a counter), and wires it in four places::

    metrics = DaemonMetrics("watch")
    progress = metrics.observe(progress)   # the engine's progress: counted, then passed on
    metrics.invocation_seen("submitted")   # each dbt invocation handed to the engine
    metrics.set_healthy(True)              # while its engine runs; False once it stops

``hexdbt.web`` serves them over HTTP, with the daemon's other routes:

``GET /metrics`` (Prometheus' text format):

- ``hexdbt_daemon_info{daemon, version}``: 1, which daemon and hexdbt version this is.
- ``hexdbt_invocations_total{result}``: dbt invocations handed to the engine: ``submitted``
  (recorded), ``skipped`` (the ledger had it: another process saw to it), ``failed`` (the ledger
  could not record it), ``rejected`` (an outbox entry that cannot be read, set aside).
- ``hexdbt_triggers_total{outcome}``: triggers the engine saw to an end, by outcome (the values of
  ``hexdbt.outcomes.OutcomeKind``: ``completed``, ``errored``, ``failed_to_start``, ``started``
  for a run not waited on, ``queued`` for a later process, ``interrupted`` at stop, ...).
- ``hexdbt_live_runs``: Hex runs followed now.
- ``hexdbt_budget_waits_total``: triggers that had to wait for Hex's RunProject budget (once per
  trigger and wait).
- ``hexdbt_webhooks_total{result}``: dbt Cloud webhook deliveries answered (``hexdbt serve``):
  ``accepted`` (recorded), ``duplicate`` (an eventId seen before), ``ignored`` (a job or event
  not acted on), ``refused`` (unsigned, badly signed, malformed, too large, another account),
  ``unavailable`` (the state could not be reached: 503).
- ``hexdbt_last_dispatch_timestamp_seconds``: when the newest trigger this daemon saw sent was
  sent (its intent, committed just before the RunProject), in seconds since the epoch; 0 until one.

- ``hexdbt_app_lag_seconds{project, name}``: each Hex app of the state (every mapping entry that
  was ever planned, by any process), its lag: from its models' oldest refresh that no run covers
  to now, or to the start of the run that covers it (``hexdbt.freshness``); read from the ledger
  at each scrape.
- ``hexdbt_app_freshness_breached{project, name}``: 1 while that lag is past the app's
  ``freshness_minutes``, else 0 (always 0 without a target).
- ``hexdbt_superseded_triggers_total``: triggers a later build's trigger superseded, in the
  whole state.

``GET /healthz`` (``healthy``): 200 ``ok`` while the daemon's engine runs, else 503
``not running``.

Only a daemon that serves HTTP imports this module (and prometheus-client with it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from hexdbt._version import __version__
from hexdbt.hex.polls import Progress, RunView, WaitCause
from hexdbt.outcomes import Outcome, OutcomeKind

InvocationResult = Literal["submitted", "skipped", "failed", "rejected"]
WEBHOOK_RESULTS = ("accepted", "duplicate", "ignored", "refused", "unavailable")
DBT_CLOUD_POLL_RESULTS = ("listed", "cool_down", "failed")
DBT_CLOUD_RUN_OUTCOMES = ("planned", "not_planned", "given_up")


@dataclass(frozen=True, slots=True)
class AppLag:
    """What the metrics say of one Hex app of the state."""

    name: str
    project_id: str
    lag_s: float | None
    breached: bool


@dataclass(frozen=True, slots=True)
class StateFigures:
    """What the daemon reads from the state at each scrape."""

    apps: Sequence[AppLag]
    superseded: int


class _StateCollector:
    """The figures of the state, read when Prometheus scrapes (a failed read gives none)."""

    def __init__(self, read: Callable[[], StateFigures | None]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:
        return []  # the series depend on the state: nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        figures = self._read()
        if figures is None:
            return
        labels = ["project", "name"]
        lag = GaugeMetricFamily(
            "hexdbt_app_lag_seconds",
            "How far each Hex app is behind its models' oldest refresh no run covers.",
            labels=labels,
        )
        breached = GaugeMetricFamily(
            "hexdbt_app_freshness_breached",
            "1 while the app's lag is past its freshness_minutes.",
            labels=labels,
        )
        for app in figures.apps:
            if app.lag_s is not None:
                lag.add_metric([app.project_id, app.name], app.lag_s)
            breached.add_metric([app.project_id, app.name], float(app.breached))
        yield lag
        yield breached
        yield CounterMetricFamily(
            "hexdbt_superseded_triggers",
            "Triggers a later build's trigger of the same mapping entry superseded.",
            value=figures.superseded,
        )


class DaemonMetrics:
    """The metrics of one daemon (``daemon``: its name, as in ``hexdbt_daemon_info``)."""

    def __init__(self, daemon: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        info = Gauge(
            "hexdbt_daemon_info",
            "Which hexdbt daemon this is, and its version.",
            ["daemon", "version"],
            registry=self.registry,
        )
        info.labels(daemon, __version__).set(1)
        self.invocations = Counter(
            "hexdbt_invocations",
            "dbt invocations handed to the engine, by result.",
            ["result"],
            registry=self.registry,
        )
        self.triggers = Counter(
            "hexdbt_triggers",
            "Triggers the engine saw to an end, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.live_runs = Gauge("hexdbt_live_runs", "Hex runs followed now.", registry=self.registry)
        self.budget_waits = Counter(
            "hexdbt_budget_waits",
            "Triggers that had to wait for Hex's RunProject budget.",
            registry=self.registry,
        )
        self.webhooks = Counter(
            "hexdbt_webhooks",
            "dbt Cloud webhook deliveries answered, by result.",
            ["result"],
            registry=self.registry,
        )
        self.dbt_cloud_polls = Counter(
            "hexdbt_dbt_cloud_polls",
            "Polls of dbt Cloud's runs, by result.",
            ["result"],
            registry=self.registry,
        )
        self.dbt_cloud_runs = Counter(
            "hexdbt_dbt_cloud_runs",
            "dbt Cloud runs this process settled, by outcome (given_up: its artifacts could not"
            " be had in time).",
            ["outcome"],
            registry=self.registry,
        )
        self.last_dispatch = Gauge(
            "hexdbt_last_dispatch_timestamp_seconds",
            "When the newest trigger seen sent was sent (seconds since the epoch; 0: none yet).",
            registry=self.registry,
        )
        # Every series exists from the start, at 0: a first increase is an increase to rate().
        for result in ("submitted", "skipped", "failed", "rejected"):
            self.invocations.labels(result)
        for kind in OutcomeKind:
            self.triggers.labels(kind.value)
        for result in WEBHOOK_RESULTS:
            self.webhooks.labels(result)
        for result in DBT_CLOUD_POLL_RESULTS:
            self.dbt_cloud_polls.labels(result)
        for outcome in DBT_CLOUD_RUN_OUTCOMES:
            self.dbt_cloud_runs.labels(outcome)
        self._healthy = threading.Event()

    def track_state(self, read: Callable[[], StateFigures | None]) -> None:
        """Export what ``read`` finds in the state (the apps' lags, the supersedes) at each
        scrape; ``read`` answers None when the state cannot be read now."""
        self.registry.register(_StateCollector(read))

    def observe(self, progress: Progress) -> Progress:
        """``progress``, counted: give the result to the engine's ``Polls``."""
        return _CountedProgress(progress, self)

    def invocation_seen(self, result: InvocationResult) -> None:
        self.invocations.labels(result).inc()

    def webhook_answered(self, result: str) -> None:
        self.webhooks.labels(result).inc()

    def dbt_cloud_polled(self, result: str) -> None:
        self.dbt_cloud_polls.labels(result).inc()

    def dbt_cloud_run_settled(self, outcome: str) -> None:
        self.dbt_cloud_runs.labels(outcome).inc()

    def set_healthy(self, healthy: bool) -> None:
        if healthy:
            self._healthy.set()
        else:
            self._healthy.clear()

    @property
    def healthy(self) -> bool:
        return self._healthy.is_set()

    def exposition(self) -> bytes:
        """``/metrics``' body: every metric in Prometheus' text format."""
        return generate_latest(self.registry)


class _CountedProgress:
    """A progress that counts what the engine tells it, then passes it on."""

    def __init__(self, inner: Progress, metrics: DaemonMetrics) -> None:
        self._inner = inner
        self._metrics = metrics
        self._live: set[str] = set()  # run ids followed now
        self._newest_dispatch = 0.0
        self.refresh_s = inner.refresh_s

    def changed(self, view: RunView, now: float) -> None:
        run_id = view.run.run_id
        if view.outcome is None:
            if run_id not in self._live and view.status is None:  # just followed
                self._dispatched(view.run.started_at)
            self._live.add(run_id)
        elif run_id in self._live:
            self._live.discard(run_id)
            self._metrics.triggers.labels(view.outcome.value).inc()
        self._metrics.live_runs.set(len(self._live))
        self._inner.changed(view, now)

    def refresh(self, views: Sequence[RunView], now: float) -> None:
        self._inner.refresh(views, now)

    def waiting(self, triggers: Sequence[tuple[str, str]], cause: WaitCause, now: float) -> None:
        if cause is WaitCause.BUDGET:
            self._metrics.budget_waits.inc(len(triggers))
        self._inner.waiting(triggers, cause, now)

    def settled(self, outcome: Outcome, now: float) -> None:
        self._metrics.triggers.labels(outcome.kind.value).inc()
        if outcome.kind is OutcomeKind.STARTED:  # sent just now, its run not waited on
            self._dispatched(now)
        self._inner.settled(outcome, now)

    def close(self, now: float) -> None:
        self._inner.close(now)

    def _dispatched(self, sent_at: float) -> None:
        if sent_at > self._newest_dispatch:
            self._newest_dispatch = sent_at
            self._metrics.last_dispatch.set(sent_at)
