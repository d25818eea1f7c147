"""The store of runs: each run's lifecycle on the emulator's clock, and the records tests read.

A run's status is never stored: it is computed from its creation time and behaviour at the
moment asked, so a manual clock moves runs exactly and a scaled clock makes an hour of Hex pass
in a minute.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hexdbt.clock import to_iso
from hexdbt.emulator.exchange import JsonObject
from hexdbt.emulator.scenario import (
    TERMINAL_STATUSES,
    HistoryRun,
    ProjectSpec,
    RunBehaviour,
    Scenario,
)
from hexdbt.hex.models import RunNotification


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as the emulator knows it, for tests ("started exactly once") and the admin API."""

    run_id: str
    project_id: str
    status: str
    run_trigger: str
    created_at: str
    start_time: str | None
    end_time: str | None
    input_params: Mapping[str, Any]
    update_published_results: bool
    use_cached_sql_results: bool
    view_id: str | None
    token_fingerprint: str | None

    def to_json(self) -> JsonObject:
        return {
            "runId": self.run_id,
            "projectId": self.project_id,
            "status": self.status,
            "runTrigger": self.run_trigger,
            "createdAt": self.created_at,
            "startTime": self.start_time,
            "endTime": self.end_time,
            "inputParams": dict(self.input_params),
            "updatePublishedResults": self.update_published_results,
            "useCachedSqlResults": self.use_cached_sql_results,
            "viewId": self.view_id,
            "tokenFingerprint": self.token_fingerprint,
        }


@dataclass(slots=True)
class Run:
    """One run, mutable only by a cancel (``killed_at``)."""

    run_id: str
    project_id: str
    project_version: int | str
    user: str
    run_trigger: str
    created_at: float
    behaviour: RunBehaviour
    sequence: int
    input_params: JsonObject = field(default_factory=dict)
    update_published_results: bool = False
    use_cached_sql_results: bool = True
    view_id: str | None = None
    notifications: list[RunNotification] | None = None
    token_fingerprint: str | None = None
    # The trace id of the request that started the run; GetProjectRuns' items carry it.
    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    from_history: bool = False
    killed_at: float | None = None

    def timeline(self, now: float) -> tuple[str, float | None, float | None]:
        """(status, start time, end time) at ``now``."""
        pending_end = self.created_at + self.behaviour.pending_s
        if self.killed_at is not None:
            started = pending_end if self.killed_at >= pending_end else None
            return "KILLED", started, self.killed_at
        if now < pending_end:
            return "PENDING", None, None
        if self.behaviour.outcome == "UNABLE_TO_ALLOCATE_KERNEL":
            return "UNABLE_TO_ALLOCATE_KERNEL", None, pending_end
        running_end = pending_end + self.behaviour.running_s
        if now < running_end:
            return "RUNNING", pending_end, None
        return self.behaviour.outcome, pending_end, running_end

    def is_live(self, now: float) -> bool:
        return self.timeline(now)[0] not in TERMINAL_STATUSES

    def record(self, now: float) -> RunRecord:
        status, started, ended = self.timeline(now)
        return RunRecord(
            run_id=self.run_id,
            project_id=self.project_id,
            status=status,
            run_trigger=self.run_trigger,
            created_at=to_iso(self.created_at),
            start_time=None if started is None else to_iso(started),
            end_time=None if ended is None else to_iso(ended),
            input_params=copy.deepcopy(self.input_params),
            update_published_results=self.update_published_results,
            use_cached_sql_results=self.use_cached_sql_results,
            view_id=self.view_id,
            token_fingerprint=self.token_fingerprint,
        )


class RunStore:
    """Every run the emulator knows, scenario history included. Not locked: the service's is."""

    def __init__(self) -> None:
        self._runs: dict[str, Run] = {}
        self._run_counts: dict[str, int] = {}
        # Never reset, so creation order holds across scenario loads.
        self._sequence = 0

    def load(self, scenario: Scenario, now: float) -> None:
        """Forget every run and start from the scenario's history, placed before ``now``."""
        self._runs.clear()
        self._run_counts.clear()
        for project in scenario.projects:
            for past in sorted(project.history, key=lambda h: -h.started_ago_s):
                self._add_history_run(project, past, now)

    def _add_history_run(self, project: ProjectSpec, past: HistoryRun, now: float) -> None:
        self._sequence += 1
        run = Run(
            run_id=str(uuid.uuid4()),
            project_id=project.id,
            project_version=project.version,
            user="",
            run_trigger=past.run_trigger,
            created_at=now - past.started_ago_s,
            behaviour=RunBehaviour(pending_s=0.0, running_s=past.duration_s, outcome=past.status),
            sequence=self._sequence,
            from_history=True,
        )
        self._runs[run.run_id] = run

    def start(
        self,
        project: ProjectSpec,
        *,
        user: str,
        now: float,
        input_params: JsonObject,
        update_published_results: bool,
        use_cached_sql_results: bool,
        view_id: str | None,
        notifications: list[RunNotification] | None,
        token_fingerprint: str,
        trace_id: str,
    ) -> Run:
        """A new API run, unfolding as the project's behaviour for its n-th run says."""
        number = self._run_counts.get(project.id, 0)
        self._run_counts[project.id] = number + 1
        self._sequence += 1
        run = Run(
            run_id=str(uuid.uuid4()),
            project_id=project.id,
            project_version=project.version,
            user=user,
            run_trigger="API",
            created_at=now,
            behaviour=project.behaviour_for(number),
            sequence=self._sequence,
            input_params=input_params,
            update_published_results=update_published_results,
            use_cached_sql_results=use_cached_sql_results,
            view_id=view_id,
            notifications=notifications,
            token_fingerprint=token_fingerprint,
            trace_id=trace_id,
        )
        self._runs[run.run_id] = run
        return run

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def in_order(
        self, project_id: str | None = None, *, include_history: bool = False
    ) -> list[Run]:
        """Runs in creation order (oldest first); scenario history only when asked for."""
        return sorted(
            (
                run
                for run in self._runs.values()
                if (project_id is None or run.project_id == project_id)
                and (include_history or not run.from_history)
            ),
            key=lambda run: run.sequence,
        )

    def live_count(self, user: str, now: float) -> int:
        return sum(1 for run in self._runs.values() if run.user == user and run.is_live(now))
