"""One vocabulary for what became of a Hex project, from Hex's status to the exit code.

Every way in (``run``, ``dbt``, ``watch``, ``trigger``, the Python API) reports ``Outcome`` values;
the text table, ``--json``, JUnit, Markdown and the exit code are all made from them, and
``EXIT_CODES`` is the one table from an outcome to an exit code (a command exits with the highest).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hexdbt.errors import EXIT_SIGINT


class OutcomeKind(StrEnum):
    COMPLETED = "completed"
    STARTED = "started"  # sent and not waited on (--no-wait)
    DRY_RUN = "dry_run"  # Hex validated the request; nothing ran
    SKIPPED = "skipped"  # the plan did not trigger it; the reason says why
    QUEUED = "queued"  # waiting in the ledger for the budget; a later run or watch sends it
    IN_PROGRESS_ELSEWHERE = "in_progress_elsewhere"  # another live hexdbt process is sending it
    ERRORED = "errored"
    KILLED = "killed"
    UNABLE_TO_ALLOCATE_KERNEL = "unable_to_allocate_kernel"
    UNKNOWN_STATUS = "unknown_status"  # Hex answered a status this hexdbt does not know
    TIMEOUT = "timeout"
    FAILED_TO_START = "failed_to_start"  # Hex refused the run; nothing was started
    AMBIGUOUS = "ambiguous"  # the POST's answer was lost and Hex's run list could not tell
    EXPIRED = "expired"  # queued past its deadline without fitting the budget
    # A later build's trigger of the same mapping entry took it over before it was sent: that
    # one's run covers this build too (the reason names it).
    SUPERSEDED = "superseded"
    POLL_FAILED = "poll_failed"  # started, but its status could not be read (token, outage)
    PLAN_ERROR = "plan_error"  # the mapping could not be planned (template error, bad selector)
    # SIGINT or SIGTERM stopped the wait on a live run (cancelled in Hex, or left running: the
    # reason says which); the command exits 130 or 143 whatever else happened.
    INTERRUPTED = "interrupted"


EXIT_CODES: dict[OutcomeKind, int] = {
    OutcomeKind.COMPLETED: 0,
    OutcomeKind.STARTED: 0,
    OutcomeKind.DRY_RUN: 0,
    OutcomeKind.SKIPPED: 0,
    OutcomeKind.QUEUED: 0,
    OutcomeKind.IN_PROGRESS_ELSEWHERE: 0,
    OutcomeKind.SUPERSEDED: 0,
    OutcomeKind.PLAN_ERROR: 2,
    OutcomeKind.FAILED_TO_START: 4,
    OutcomeKind.POLL_FAILED: 4,
    OutcomeKind.AMBIGUOUS: 4,
    OutcomeKind.EXPIRED: 4,
    OutcomeKind.ERRORED: 5,
    OutcomeKind.KILLED: 5,
    OutcomeKind.UNABLE_TO_ALLOCATE_KERNEL: 5,
    OutcomeKind.UNKNOWN_STATUS: 5,
    OutcomeKind.TIMEOUT: 6,
    OutcomeKind.INTERRUPTED: EXIT_SIGINT,
}

_HEX_FINAL_STATUS_KINDS = {
    "COMPLETED": OutcomeKind.COMPLETED,
    "ERRORED": OutcomeKind.ERRORED,
    "KILLED": OutcomeKind.KILLED,
    "UNABLE_TO_ALLOCATE_KERNEL": OutcomeKind.UNABLE_TO_ALLOCATE_KERNEL,
}


def kind_of_final_status(hex_status: str | None) -> OutcomeKind:
    """The outcome of a run that ended with this Hex status; one hexdbt does not know is not
    success."""
    return _HEX_FINAL_STATUS_KINDS.get(hex_status or "", OutcomeKind.UNKNOWN_STATUS)


@dataclass(frozen=True, slots=True)
class Outcome:
    name: str
    project_id: str
    kind: OutcomeKind
    reason: str | None = None
    run_id: str | None = None
    run_url: str | None = None
    hex_status: str | None = None
    trace_id: str | None = None
    input_params: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "projectId": self.project_id,
            "outcome": self.kind.value,
            "reason": self.reason,
            "runId": self.run_id,
            "runUrl": self.run_url,
            "status": self.hex_status,
            "traceId": self.trace_id,
            "inputParams": self.input_params,
            "elapsedSeconds": self.elapsed_s,
        }


def exit_code_of(outcomes: Iterable[Outcome]) -> int:
    """The highest exit code among the outcomes; 0 when all is well."""
    return max((outcome.exit_code for outcome in outcomes), default=0)
