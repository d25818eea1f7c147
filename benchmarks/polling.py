"""Status calls and detection delay: hexdbt's adaptive schedule vs the seed's fixed 10 s and 3 s.

Runs of 1, 10 and 60 minutes, and 30 runs of 10 minutes waited on at once, on an in-process
emulator sharing a ManualClock with the client (an hour passes in well under a second).

    .venv/bin/python benchmarks/polling.py

Targets (issue 3): hexdbt spends at most a quarter of the fixed-10 s schedule's status calls,
detects the end within max(10 s, 10 % of the run), and gets no 429 with 30 runs at once.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hexdbt.clock import ManualClock, from_iso
from hexdbt.emulator import HexEmulator
from hexdbt.hex.budget import SharedBudget
from hexdbt.hex.client import HexClient
from hexdbt.hex.waiter import (
    AdaptiveSchedule,
    FixedSchedule,
    PollSchedule,
    Waiter,
    WatchedRun,
    expected_duration_s,
)

TOKEN = "hxtp_benchmark"
CASES = [
    ("1 min", 60.0, 1),
    ("10 min", 600.0, 1),
    ("60 min", 3600.0, 1),
    ("30 x 10 min", 600.0, 30),
]


def _scenario(length_s: float, count: int) -> dict[str, Any]:
    projects = [
        {
            "id": f"bench-{number:02d}",
            "title": f"Bench {number}",
            "runs": {"pending_s": 2, "running_s": length_s - 2, "outcome": "COMPLETED"},
            # What the project's earlier runs took: yesterday's and the day before's.
            "history": [
                {
                    "status": "COMPLETED",
                    "run_trigger": "SCHEDULED",
                    "started_ago_s": 86_400 * day,
                    "duration_s": length_s,
                }
                for day in (1, 2)
            ],
        }
        for number in range(count)
    ]
    return {"projects": projects, "settings": {"max_live_runs": 100}}


@dataclass
class Row:
    case: str
    schedule: str
    status_calls: int
    lookups: int
    max_delay_s: float
    rate_limited: int
    lost: int


def _measure(
    case: str,
    length_s: float,
    count: int,
    name: str,
    schedule: PollSchedule,
    budgeted: bool,
    history: bool,
) -> Row:
    clock = ManualClock()
    with (
        HexEmulator(scenario=_scenario(length_s, count), clock=clock) as emu,
        tempfile.TemporaryDirectory() as state,
    ):
        budget = SharedBudget(Path(state) / "budget.sqlite3", TOKEN, emu.url, clock=clock)
        trigger_client = HexClient(emu.url, TOKEN, clock=clock, budget=budget)
        watched = []
        for number in range(count):
            project_id = f"bench-{number:02d}"
            started = clock.now()
            run = trigger_client.run_project(project_id)
            expected = expected_duration_s(trigger_client, project_id) if history else None
            watched.append(
                WatchedRun(
                    project_id,
                    run.run_id,
                    started,
                    timeout_s=4 * length_s,
                    expected_duration_s=expected,
                )
            )
        before = len(emu.journal())
        # The seed's schedules poll without a budget (as the seed and Hex's integrations do).
        poll_client = HexClient(emu.url, TOKEN, clock=clock, budget=budget if budgeted else None)
        waiter = Waiter(poll_client, schedule=schedule, min_spacing_s=None if budgeted else 0.0)
        results = waiter.wait(watched)
        ends = {
            record.run_id: from_iso(record.end_time) for record in emu.runs() if record.end_time
        }
        journal = emu.journal()
        wait_phase = journal[before:]
        return Row(
            case,
            name,
            status_calls=sum(1 for entry in wait_phase if entry["operation"] == "GetRunStatus"),
            lookups=sum(1 for entry in journal if entry["operation"] == "GetProjectRuns"),
            max_delay_s=max(
                (result.ended_at - ends[result.run.run_id] for result in results if result.ok),
                default=float("nan"),
            ),
            rate_limited=sum(1 for entry in wait_phase if entry["status"] == 429),
            lost=sum(1 for result in results if not result.ok),
        )


def main() -> None:
    schedules: list[tuple[str, PollSchedule, bool, bool]] = [
        ("hexdbt", AdaptiveSchedule(), True, True),
        ("hexdbt, no history", AdaptiveSchedule(), True, False),
        ("fixed 10 s", FixedSchedule(10.0), False, False),
        ("fixed 3 s", FixedSchedule(3.0), False, False),
    ]
    rows = [
        _measure(case, length, count, name, schedule, budgeted, history)
        for case, length, count in CASES
        for name, schedule, budgeted, history in schedules
    ]
    header = f"{'runs':<12} {'schedule':<20} {'status calls':>12} {'vs fixed 10 s':>13} {'+lookups':>8} {'max delay':>10} {'target':>7} {'429s':>5} {'not seen to end':>15}"
    print(header)
    print("-" * len(header))
    for case, length, _ in CASES:
        baseline = next(row for row in rows if row.case == case and row.schedule == "fixed 10 s")
        for row in (row for row in rows if row.case == case):
            target = max(10.0, 0.1 * length)
            ratio = row.status_calls / baseline.status_calls
            print(
                f"{row.case:<12} {row.schedule:<20} {row.status_calls:>12} {ratio:>12.2f}x"
                f" {row.lookups:>8} {row.max_delay_s:>9.1f}s {target:>6.0f}s {row.rate_limited:>5} {row.lost:>15}"
            )
    print()
    print("status calls: GetRunStatus during the wait; +lookups: GetProjectRuns for the history")
    print("max delay: latest detection after a run's real end; target: max(10 s, 10 % of the run)")
    print("not seen to end: runs whose polling failed (429s past the retries) before they ended")


if __name__ == "__main__":
    main()
