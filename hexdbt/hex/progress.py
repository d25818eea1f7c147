"""Progress a person can see while runs are waited on, always on stderr, where no terminal
draws it (a terminal gets ``hexdbt.cli.live_view``, the only user of rich).

- ``LineProgress`` (CI logs, pipes, ``TERM=dumb``): one line per status change, and a heartbeat
  line at least every ``heartbeat_s`` (60 s by default), never truncating ids or URLs.
- ``EventProgress`` (``--log-format json``, the watcher): one event per change.

Neither says anything of ``waiting`` or ``settled`` triggers: the engine's own log lines name them
already (waiting for the budget, queued, refused, expired, started).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hexdbt.hex.polls import RunView, WaitCause
from hexdbt.logs import EventLog
from hexdbt.outcomes import Outcome, OutcomeKind, kind_of_final_status
from hexdbt.wording import counted


def format_elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def state_of(view: RunView) -> str:
    """Hex's status; for an outcome that is not Hex's final status, the outcome with it."""
    if view.outcome is not None and view.outcome is not kind_of_final_status(view.status):
        return f"{view.outcome.value.upper()} ({view.status or 'no status yet'})"
    return view.status or "TRIGGERED"


class LineProgress:
    def __init__(self, write: Callable[[str], None], *, heartbeat_s: float = 60.0) -> None:
        self._write = write
        self.refresh_s = heartbeat_s
        self._last_line_at: float | None = None

    def changed(self, view: RunView, now: float) -> None:
        run = view.run
        name = run.label or run.project_id
        self._write(
            f"{name}: run {run.run_id} {state_of(view)} after"
            f" {format_elapsed(now - run.started_at)}" + (f"  {run.run_url}" if run.run_url else "")
        )
        self._last_line_at = now

    def refresh(self, views: Sequence[RunView], now: float) -> None:
        if self._last_line_at is not None and now - self._last_line_at < self.refresh_s:
            return
        counts: dict[str, int] = {}
        for view in views:
            counts[state_of(view)] = counts.get(state_of(view), 0) + 1
        summary = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
        oldest = max((now - view.run.started_at for view in views), default=0.0)
        waiting_on = counted(len(views), "run")
        self._write(f"waiting on {waiting_on}: {summary}; longest {format_elapsed(oldest)}")
        self._last_line_at = now

    def waiting(self, triggers: Sequence[tuple[str, str]], cause: WaitCause, now: float) -> None:
        pass

    def settled(self, outcome: Outcome, now: float) -> None:
        pass

    def close(self, now: float) -> None:
        pass


class EventProgress:
    """For ``--log-format json`` and the watcher: each change in a run's life is one event.

    ``run_followed`` (waiting on it begins), ``run_status`` (a new live status), ``run_ended``
    (with its outcome, and the error when it did not complete), ``run_left_running`` (waiting
    stopped first), and a ``waiting`` heartbeat.
    """

    def __init__(self, log: EventLog, *, heartbeat_s: float = 60.0) -> None:
        self._log = log
        self.refresh_s = heartbeat_s

    def changed(self, view: RunView, now: float) -> None:
        run = view.run
        fields = {
            "name": run.label or run.project_id,
            "project_id": run.project_id,
            "run_id": run.run_id,
            "run_url": run.run_url,
            "status": view.status,
            "elapsed_s": round(now - run.started_at, 1),
        }
        if view.outcome is None:
            self._log.emit("run_followed" if view.status is None else "run_status", **fields)
        elif view.outcome is OutcomeKind.INTERRUPTED:
            self._log.emit("run_left_running", **fields)
        else:
            level = "info" if view.outcome is OutcomeKind.COMPLETED else "warning"
            self._log.emit(
                "run_ended", level, outcome=view.outcome.value, error=view.error, **fields
            )

    def refresh(self, views: Sequence[RunView], now: float) -> None:
        counts: dict[str, int] = {}
        for view in views:
            counts[state_of(view)] = counts.get(state_of(view), 0) + 1
        self._log.emit("waiting", runs=len(views), states=counts)

    def waiting(self, triggers: Sequence[tuple[str, str]], cause: WaitCause, now: float) -> None:
        pass

    def settled(self, outcome: Outcome, now: float) -> None:
        pass

    def close(self, now: float) -> None:
        pass
