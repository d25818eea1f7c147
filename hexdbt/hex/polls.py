"""When to poll each open Hex run, and what one poll means: a passive scheduler, no loop.

Each run is polled on its own schedule: short at first, growing with the run's age (and with what
the project's earlier runs took, when known), capped. Polls keep a minimum spacing between them,
so however many runs are open they stay inside their share of Hex's budget of other calls; the
shared budget behind the client is the hard guarantee on top.

The engine owns the loop: it asks ``next_poll_at`` when to come back, takes a budget slot, and
calls ``poll`` for the run most due. Nothing here sleeps, and nothing here knows the ledger.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from hexdbt.clock import Clock
from hexdbt.errors import (
    HexApiError,
    HexdbtError,
    HexRateLimitedError,
    HexTransportError,
    HexUnavailableError,
    RunFailedError,
    RunTimeoutError,
)
from hexdbt.hex.budget import CallKind, Slot
from hexdbt.hex.client import HexClient
from hexdbt.hex.models import RunStatus, Status
from hexdbt.outcomes import Outcome, OutcomeKind, kind_of_final_status


@dataclass(frozen=True, slots=True)
class WatchedRun:
    """A run to follow. ``started_at`` is when it was triggered, on the engine's clock."""

    project_id: str
    run_id: str
    started_at: float
    run_url: str | None = None
    timeout_s: float | None = 3600.0
    label: str | None = None
    cancel_on_timeout: bool = True


@dataclass(frozen=True, slots=True)
class RunEnd:
    """How following a run ended: Hex's final status, a timeout, or polls that kept failing."""

    run: WatchedRun
    kind: OutcomeKind  # COMPLETED, a failed final status, TIMEOUT or POLL_FAILED
    status: str | None  # the last status Hex gave, if any
    last: RunStatus | None
    polls: int
    cancel_sent: bool = False
    error: HexdbtError | None = None
    # A timeout whose run is to be cancelled: the engine cancels it on a slot of its own, then
    # ends it with ``cancelled``.
    cancel_wanted: bool = False

    def cancelled(self, note: str, *, sent: bool) -> RunEnd:
        """This timeout, once the engine has tried to cancel its run (``note`` says how)."""
        assert self.last is not None
        return replace(
            self,
            cancel_wanted=False,
            cancel_sent=sent,
            error=_timeout_error(self.run, self.last, note),
        )


class PollSchedule(Protocol):
    @property
    def uses_history(self) -> bool:
        """Whether intervals use what the project's earlier runs took (a lookup per project)."""
        ...

    def first_delay_s(self) -> float: ...

    def interval_s(self, age_s: float, expected_s: float | None) -> float: ...


@dataclass(frozen=True, slots=True)
class AdaptiveSchedule:
    """Intervals of ``age_fraction`` of the run's age (or of its expected length), clamped.

    A detection delay of at most a tenth of a run's length costs about
    ``1/age_fraction * ln(length / knee)`` polls instead of ``length / 10 s``.
    """

    first_poll_s: float = 5.0
    min_interval_s: float = 10.0
    max_interval_s: float = 120.0
    age_fraction: float = 0.1
    uses_history: bool = True

    def first_delay_s(self) -> float:
        return self.first_poll_s

    def interval_s(self, age_s: float, expected_s: float | None) -> float:
        reference = max(age_s, expected_s or 0.0)
        return min(self.max_interval_s, max(self.min_interval_s, self.age_fraction * reference))


@dataclass(frozen=True, slots=True)
class FixedSchedule:
    """The seed's schedule: every ``every_s`` seconds whatever the run's age."""

    every_s: float = 10.0
    uses_history: bool = False

    def first_delay_s(self) -> float:
        return self.every_s

    def interval_s(self, age_s: float, expected_s: float | None) -> float:
        return self.every_s


@dataclass(frozen=True, slots=True)
class RunView:
    """What a progress display shows of one run."""

    run: WatchedRun
    status: str | None
    outcome: OutcomeKind | None
    polls: int
    error: str | None = None  # why the run did not end well, once it has an outcome
    expected_s: float | None = None  # what the project's recent completed runs took, if known


class WaitCause(StrEnum):
    """Why triggers the engine means to send have not been sent yet."""

    BUDGET = "budget"  # Hex's RunProject budget has no slot yet
    PLACES = "places"  # max_live_runs runs are live


class Progress(Protocol):
    """What the engine tells a display (or the metrics of a daemon) while it works: the runs it
    follows (``changed``, ``refresh``), and the triggers it has no run to follow of yet
    (``waiting``) or ever (``settled``)."""

    #: How often (clock seconds) the display wants ``refresh`` even without news.
    refresh_s: float

    def changed(self, view: RunView, now: float) -> None: ...

    def refresh(self, views: Sequence[RunView], now: float) -> None: ...

    def waiting(self, triggers: Sequence[tuple[str, str]], cause: WaitCause, now: float) -> None:
        """Triggers (name, project id) that wait to be sent, told once per trigger and cause."""
        ...

    def settled(self, outcome: Outcome, now: float) -> None:
        """A trigger this engine is done with and follows no run of: Hex refused it, it expired
        or was left queued, it ended elsewhere, or it was sent and its run is not waited on."""
        ...

    def close(self, now: float) -> None: ...


class NoProgress:
    refresh_s = 3600.0

    def changed(self, view: RunView, now: float) -> None:
        pass

    def refresh(self, views: Sequence[RunView], now: float) -> None:
        pass

    def waiting(self, triggers: Sequence[tuple[str, str]], cause: WaitCause, now: float) -> None:
        pass

    def settled(self, outcome: Outcome, now: float) -> None:
        pass

    def close(self, now: float) -> None:
        pass


def expected_duration_s(
    client: HexClient, project_id: str, *, slot: Slot | None = None, sample: int = 10
) -> float | None:
    """The median length of the project's recent COMPLETED runs, or None (never raises)."""
    try:
        page = client.get_project_runs(
            project_id, limit=sample, status_filter=Status.COMPLETED, slot=slot
        )
    except HexdbtError:
        return None
    lengths = [run.elapsed_time_ms / 1000 for run in page.runs if run.elapsed_time_ms]
    return statistics.median(lengths) if lengths else None


@dataclass
class _Open:
    run: WatchedRun
    next_due: float
    polls: int = 0
    status: str | None = None
    last: RunStatus | None = None
    failures: int = 0


class Polls:
    """The open runs and when each is due. Used from the engine's thread only."""

    def __init__(
        self,
        client: HexClient,
        *,
        schedule: PollSchedule | None = None,
        progress: Progress | None = None,
        budget_share: float = 0.9,
        max_poll_failures: int | None = None,
        min_spacing_s: float | None = None,
    ) -> None:
        self.client = client
        self.clock: Clock = client.clock
        self.schedule: PollSchedule = schedule or AdaptiveSchedule()
        self.progress: Progress = progress or NoProgress()
        # A poll on the engine's slot is one attempt (the client retries none of them): by
        # default a run is given up after as many failed polls in a row as three polls of the
        # client's own attempts would make, not after three failed requests.
        self.max_poll_failures = (
            3 * client.get_attempts if max_poll_failures is None else max_poll_failures
        )
        # Leave the rest of the budget to triggers, listings and other processes.
        rate = client.budget.limits.sustained_rate_per_s(CallKind.OTHER) if client.budget else 0.5
        self.min_spacing_s = (
            1.0 / (rate * budget_share) if min_spacing_s is None else max(0.0, min_spacing_s)
        )
        self._open: dict[str, _Open] = {}
        # Project id -> the median length of its recent completed runs (None: none known).
        self._expected: dict[str, float | None] = {}
        self._last_poll_at = float("-inf")
        self._last_refresh_at = self.clock.now()
        self.polls = 0

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._open

    def add(self, run: WatchedRun) -> None:
        if run.run_id in self._open:
            return
        first = run.started_at + self.schedule.first_delay_s()
        item = _Open(run, next_due=first)
        self._open[run.run_id] = item
        self.progress.changed(self._view(item), self.clock.now())

    def next_poll_at(self) -> float | None:
        """When the run most due may be polled (None: no run is open)."""
        if not self._open:
            return None
        due = min(item.next_due for item in self._open.values())
        return max(due, self._last_poll_at + self.min_spacing_s)

    def next_refresh_at(self) -> float:
        return self._last_refresh_at + self.progress.refresh_s

    def refresh(self, now: float) -> None:
        """The progress heartbeat, when it is due (none about nothing)."""
        if now < self.next_refresh_at():
            return
        if self._open:
            self.progress.refresh([self._view(item) for item in self._open.values()], now)
        self._last_refresh_at = now

    def poll(self, slot: Slot | None) -> RunEnd | None:
        """Poll the run most due, on ``slot`` (a budget slot the engine took); its end, if it
        ended (or timed out, or could not be polled ``max_poll_failures`` times in a row). The
        first time a project's run is due, the slot goes to the project's history instead (what
        its earlier runs took stretches the intervals); the run is polled on the next slot."""
        item = min(self._open.values(), key=lambda candidate: candidate.next_due)
        run = item.run
        now = self.clock.now()
        self._last_poll_at = now
        if self.schedule.uses_history and run.project_id not in self._expected:
            self._expected[run.project_id] = expected_duration_s(
                self.client, run.project_id, slot=slot
            )
            return None
        item.polls += 1
        self.polls += 1
        try:
            status = self.client.get_run_status(run.project_id, run.run_id, slot=slot)
        except HexApiError as exc:
            # A poll is one request on the engine's slot: a passing fault (5xx, 429, no answer)
            # counts as one failed attempt, a lasting one (401, 403, 404) as a whole poll's.
            passing = isinstance(exc, HexUnavailableError | HexRateLimitedError | HexTransportError)
            item.failures += 1 if passing else self.client.get_attempts
            if item.failures >= self.max_poll_failures:
                end = RunEnd(
                    run, OutcomeKind.POLL_FAILED, item.status, item.last, item.polls, error=exc
                )
                return self._finish(item, end)
            expected = self._expected.get(run.project_id)
            item.next_due = now + self.schedule.interval_s(now - run.started_at, expected)
            return None
        item.failures = 0
        after = self.clock.now()
        if status.run_url and not run.run_url:
            item.run = run = replace(run, run_url=status.run_url)
        if status.status != item.status:
            item.status = status.status
            # A final status is shown once, with the run's outcome, when the run is finished.
            if not status.is_terminal:
                self.progress.changed(self._view(item), after)
        item.last = status
        if status.is_terminal:
            return self._finish(item, self._ended(item, status))
        deadline = None if run.timeout_s is None else run.started_at + run.timeout_s
        if deadline is not None and after >= deadline:
            return self._finish(item, self._timed_out(item, status))
        expected = self._expected.get(run.project_id)
        interval = self.schedule.interval_s(after - run.started_at, expected)
        item.next_due = after + interval
        if deadline is not None:
            item.next_due = min(item.next_due, deadline)
        return None

    def close_all(self) -> list[WatchedRun]:
        """Stop following every open run (the engine was stopped); the runs that were open."""
        now = self.clock.now()
        for item in self._open.values():
            self.progress.changed(self._view(item, OutcomeKind.INTERRUPTED), now)
        runs = [item.run for item in self._open.values()]
        self._open.clear()
        return runs

    def _finish(self, item: _Open, end: RunEnd) -> RunEnd:
        del self._open[item.run.run_id]
        error = str(end.error) if end.error is not None else None
        self.progress.changed(self._view(item, end.kind, error), self.clock.now())
        return end

    def _view(
        self, item: _Open, outcome: OutcomeKind | None = None, error: str | None = None
    ) -> RunView:
        expected_s = self._expected.get(item.run.project_id)
        return RunView(item.run, item.status, outcome, item.polls, error, expected_s)

    def _ended(self, item: _Open, status: RunStatus) -> RunEnd:
        run = item.run
        kind = kind_of_final_status(status.status)
        if kind is OutcomeKind.COMPLETED:
            return RunEnd(run, kind, status.status, status, item.polls)
        message = (
            f"run {run.run_id} of project {run.label or run.project_id} ended {status.status}"
            if kind is not OutcomeKind.UNKNOWN_STATUS
            else f"run {run.run_id} of project {run.label or run.project_id} reports status"
            f" {status.status!r}, which hexdbt does not know; it is not counted as success"
        )
        url = status.run_url or run.run_url
        error = RunFailedError(message, hint=f"see {url}" if url else None)
        return RunEnd(run, kind, status.status, status, item.polls, error=error)

    def _timed_out(self, item: _Open, status: RunStatus) -> RunEnd:
        """A run past its timeout. Its cancel is the engine's to send, on a budget slot of its
        own: waiting for one here would hold up the engine's thread."""
        run = item.run
        note = "left running (cancel_on_timeout is off)"
        return RunEnd(
            run,
            OutcomeKind.TIMEOUT,
            status.status,
            status,
            item.polls,
            error=_timeout_error(run, status, note),
            cancel_wanted=run.cancel_on_timeout,
        )


def _timeout_error(run: WatchedRun, status: RunStatus, note: str) -> RunTimeoutError:
    minutes = (run.timeout_s or 0) / 60
    return RunTimeoutError(
        f"run {run.run_id} of project {run.label or run.project_id} did not end within"
        f" {minutes:g} min (last status {status.status}); {note}",
        hint=f"see {run.run_url}" if run.run_url else None,
    )
