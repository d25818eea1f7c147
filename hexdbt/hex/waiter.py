"""Wait on any number of Hex runs with one poller, inside the rate budget.

Each run is polled on its own schedule: short at first, growing with the run's age (and with what
the project's earlier runs took, when known), capped. All polls go through one loop that keeps a
minimum spacing between calls, so however many runs are open the waiter stays inside its share of
the budget; the shared budget behind the client is the hard guarantee on top.

The core never exits the process and never installs signal handlers: it takes a stop event, and
reports each run's end through a callback and its return value. The CLI adds signals and exit codes.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from hexdbt.clock import Clock
from hexdbt.errors import (
    HexApiError,
    HexdbtError,
    HexRejectedError,
    RunFailedError,
    RunTimeoutError,
)
from hexdbt.hex.budget import CallKind
from hexdbt.hex.client import HexClient
from hexdbt.hex.models import RunStatus, Status


@dataclass(frozen=True, slots=True)
class WatchedRun:
    """A run to wait on. ``started_at`` is when it was triggered, on the waiter's clock."""

    project_id: str
    run_id: str
    started_at: float
    run_url: str | None = None
    timeout_s: float | None = 3600.0
    label: str | None = None
    expected_duration_s: float | None = None
    started_by_us: bool = True
    # None: the waiter's own setting; a mapping can decide per project.
    cancel_on_timeout: bool | None = None


class Outcome(StrEnum):
    COMPLETED = "COMPLETED"
    FAILED = (
        "FAILED"  # ERRORED, KILLED, UNABLE_TO_ALLOCATE_KERNEL, or a status hexdbt does not know
    )
    TIMED_OUT = "TIMED_OUT"
    INTERRUPTED = "INTERRUPTED"  # the stop event was set before the run ended
    LOST = "LOST"  # polling kept failing (the token expired, the run vanished, Hex is down)


@dataclass(frozen=True, slots=True)
class RunResult:
    run: WatchedRun
    outcome: Outcome
    status: str | None  # the last status Hex gave, if any
    last: RunStatus | None
    ended_at: float  # when the waiter learnt the outcome
    polls: int
    cancel_sent: bool = False
    error: HexdbtError | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.COMPLETED


class PollSchedule(Protocol):
    def first_delay_s(self, expected_s: float | None) -> float: ...

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

    def first_delay_s(self, expected_s: float | None) -> float:
        return self.first_poll_s

    def interval_s(self, age_s: float, expected_s: float | None) -> float:
        reference = max(age_s, expected_s or 0.0)
        return min(self.max_interval_s, max(self.min_interval_s, self.age_fraction * reference))


@dataclass(frozen=True, slots=True)
class FixedSchedule:
    """The seed's schedule: every ``every_s`` seconds whatever the run's age."""

    every_s: float = 10.0

    def first_delay_s(self, expected_s: float | None) -> float:
        return self.every_s

    def interval_s(self, age_s: float, expected_s: float | None) -> float:
        return self.every_s


@dataclass(frozen=True, slots=True)
class RunView:
    """What a progress display shows of one run."""

    run: WatchedRun
    status: str | None
    outcome: Outcome | None
    polls: int
    error: str | None = None  # why the run did not end well, once it has an outcome


class Progress(Protocol):
    #: How often (clock seconds) the display wants ``refresh`` even without news.
    refresh_s: float

    def changed(self, view: RunView, now: float) -> None: ...

    def refresh(self, views: Sequence[RunView], now: float) -> None: ...

    def close(self, views: Sequence[RunView], now: float) -> None: ...


class NoProgress:
    refresh_s = 3600.0

    def changed(self, view: RunView, now: float) -> None:
        pass

    def refresh(self, views: Sequence[RunView], now: float) -> None:
        pass

    def close(self, views: Sequence[RunView], now: float) -> None:
        pass


def expected_duration_s(client: HexClient, project_id: str, *, sample: int = 10) -> float | None:
    """The median length of the project's recent COMPLETED runs, or None (never raises)."""
    try:
        page = client.get_project_runs(project_id, limit=sample, status_filter=Status.COMPLETED)
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

    def view(self, outcome: Outcome | None = None, error: str | None = None) -> RunView:
        return RunView(self.run, self.status, outcome, self.polls, error)


class Waiter:
    """One poller for many runs. ``add`` may be called from another thread while ``wait`` runs."""

    def __init__(
        self,
        client: HexClient,
        *,
        clock: Clock | None = None,
        schedule: PollSchedule | None = None,
        cancel_on_timeout: bool = True,
        progress: Progress | None = None,
        budget_share: float = 0.9,
        max_poll_failures: int = 3,
        stop_check_s: float = 1.0,
        min_spacing_s: float | None = None,
    ) -> None:
        self.client = client
        self.clock: Clock = clock or client.clock
        self.schedule: PollSchedule = schedule or AdaptiveSchedule()
        self.cancel_on_timeout = cancel_on_timeout
        self.progress: Progress = progress or NoProgress()
        self.max_poll_failures = max_poll_failures
        self.stop_check_s = stop_check_s
        # Leave the rest of the budget to triggers, listings and other processes.
        rate = client.budget.limits.sustained_rate_per_s(CallKind.OTHER) if client.budget else 0.5
        self.min_spacing_s = (
            1.0 / (rate * budget_share) if min_spacing_s is None else max(0.0, min_spacing_s)
        )
        self._incoming: list[WatchedRun] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.polls = 0

    def add(self, run: WatchedRun) -> None:
        with self._lock:
            self._incoming.append(run)
        self.wake()

    def wake(self) -> None:
        """Cut the current sleep short: new work arrived (from any thread)."""
        self._wake.set()

    def wait(
        self,
        runs: Iterable[WatchedRun] = (),
        *,
        stop: threading.Event | None = None,
        on_result: Callable[[RunResult], None] | None = None,
        tick: Callable[[float], float | None] | None = None,
    ) -> list[RunResult]:
        """Poll until every run (given or added) has an outcome, or ``stop`` is set.

        ``tick(now)``, when given, is called on every turn of the loop, before polling: it may
        ``add`` runs (the dispatcher sends triggers from it) and returns when it next needs a turn,
        or None once it will add nothing more. The loop ends only when ``tick`` says None and no
        run is open.
        """
        for run in runs:
            self.add(run)
        open_runs: list[_Open] = []
        results: list[RunResult] = []
        last_poll_at = float("-inf")
        last_refresh = self.clock.now()

        def finish(item: _Open, result: RunResult) -> None:
            open_runs.remove(item)
            results.append(result)
            error = str(result.error) if result.error is not None else None
            self.progress.changed(item.view(result.outcome, error), self.clock.now())
            if on_result is not None:
                on_result(result)

        while True:
            next_tick = tick(self.clock.now()) if tick is not None else None
            with self._lock:
                incoming, self._incoming = self._incoming, []
            for run in incoming:
                first = run.started_at + self.schedule.first_delay_s(run.expected_duration_s)
                item = _Open(run, next_due=first)
                open_runs.append(item)
                self.progress.changed(item.view(), self.clock.now())
            now = self.clock.now()
            if not open_runs and next_tick is None:
                self.progress.close([], now)
                return results
            if stop is not None and stop.is_set():
                for item in list(open_runs):
                    finish(item, self._interrupted(item, now))
                self.progress.close([], now)
                return results
            if now - last_refresh >= self.progress.refresh_s:
                if open_runs:  # idle between submissions: no heartbeat about nothing
                    self.progress.refresh([item.view() for item in open_runs], now)
                last_refresh = now

            wake = last_refresh + self.progress.refresh_s
            if next_tick is not None:
                wake = min(wake, next_tick)
            if not open_runs:
                self._sleep(max(0.0, wake - now), stop)
                continue
            item = min(open_runs, key=lambda candidate: candidate.next_due)
            poll_at = max(item.next_due, last_poll_at + self.min_spacing_s)
            if poll_at > now:
                self._sleep(max(0.0, min(poll_at, wake) - now), stop)
                continue

            last_poll_at = now
            result = self._poll(item, now)
            if result is not None:
                finish(item, result)

    def _sleep(self, seconds: float, stop: threading.Event | None) -> None:
        """Sleep on the clock until ``seconds`` pass, ``wake`` is called or ``stop`` is set.

        A signal handler only sets ``stop``, so it is looked at every ``stop_check_s``.
        """
        remaining = seconds
        while remaining > 0 and not (stop is not None and stop.is_set()):
            piece = remaining if stop is None else min(remaining, self.stop_check_s)
            if self.clock.wait(self._wake, piece):
                break
            remaining -= piece
        self._wake.clear()

    def _poll(self, item: _Open, now: float) -> RunResult | None:
        run = item.run
        item.polls += 1
        self.polls += 1
        try:
            status = self.client.get_run_status(run.project_id, run.run_id)
        except HexApiError as exc:
            item.failures += 1
            if item.failures >= self.max_poll_failures:
                return RunResult(
                    run, Outcome.LOST, item.status, item.last, now, item.polls, error=exc
                )
            item.next_due = now + self.schedule.interval_s(now - run.started_at, None)
            return None
        item.failures = 0
        after = self.clock.now()
        if status.run_url and not run.run_url:
            item.run = run = replace(run, run_url=status.run_url)
        if status.status != item.status:
            item.status = status.status
            # A final status is shown once, with the run's outcome, when the run is finished.
            if not status.is_terminal:
                self.progress.changed(item.view(), after)
        item.last = status
        if status.is_terminal:
            return self._ended(item, status, after)
        deadline = None if run.timeout_s is None else run.started_at + run.timeout_s
        if deadline is not None and after >= deadline:
            return self._timed_out(item, status, after)
        interval = self.schedule.interval_s(after - run.started_at, run.expected_duration_s)
        item.next_due = after + interval
        if deadline is not None:
            item.next_due = min(item.next_due, deadline)
        return None

    def _ended(self, item: _Open, status: RunStatus, now: float) -> RunResult:
        run = item.run
        if status.is_success:
            return RunResult(run, Outcome.COMPLETED, status.status, status, now, item.polls)
        known = status.status in {value.value for value in Status}
        message = (
            f"run {run.run_id} of project {run.label or run.project_id} ended {status.status}"
            if known
            else f"run {run.run_id} of project {run.label or run.project_id} reports status"
            f" {status.status!r}, which hexdbt does not know; it is not counted as success"
        )
        error = RunFailedError(
            message,
            hint=f"see {status.run_url or run.run_url}" if status.run_url or run.run_url else None,
        )
        return RunResult(run, Outcome.FAILED, status.status, status, now, item.polls, error=error)

    def _timed_out(self, item: _Open, status: RunStatus, now: float) -> RunResult:
        run = item.run
        cancel_sent = False
        note = "left running (--no-cancel-on-timeout)"
        cancel = self.cancel_on_timeout if run.cancel_on_timeout is None else run.cancel_on_timeout
        if cancel:
            try:
                self.client.cancel_run(run.project_id, run.run_id)
                cancel_sent = True
                note = "cancelled"
            except HexRejectedError:
                note = "it ended just as hexdbt cancelled it"
            except HexApiError as exc:
                note = f"cancelling it failed: {exc}"
        minutes = (run.timeout_s or 0) / 60
        error = RunTimeoutError(
            f"run {run.run_id} of project {run.label or run.project_id} did not end within"
            f" {minutes:g} min (last status {status.status}); {note}",
            hint=f"see {run.run_url}" if run.run_url else None,
        )
        return RunResult(
            run,
            Outcome.TIMED_OUT,
            status.status,
            status,
            now,
            item.polls,
            cancel_sent=cancel_sent,
            error=error,
        )

    def _interrupted(self, item: _Open, now: float) -> RunResult:
        run = item.run
        return RunResult(
            run,
            Outcome.INTERRUPTED,
            item.status,
            item.last,
            now,
            item.polls,
            error=RunTimeoutError(
                f"stopped waiting on run {run.run_id} of project {run.label or run.project_id}"
            ),
        )


def cancel_runs(client: HexClient, results: Iterable[RunResult]) -> list[tuple[RunResult, str]]:
    """Cancel the interrupted runs this process started; returns (result, what happened)."""
    done: list[tuple[RunResult, str]] = []
    for result in results:
        if result.outcome is not Outcome.INTERRUPTED or not result.run.started_by_us:
            continue
        try:
            client.cancel_run(result.run.project_id, result.run.run_id)
            done.append((result, "cancelled"))
        except HexRejectedError:
            done.append((result, "already ended"))
        except HexApiError as exc:
            done.append((result, f"cancel failed: {exc}"))
    return done
