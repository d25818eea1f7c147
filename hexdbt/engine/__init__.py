"""The engine: one loop that sends triggers within Hex's budget, follows their runs and records
everything in the ledger (``loop``, composing the parts its docstring lists), the one reconcile
of a lost RunProject answer (``reconcile``), and the ledger rows and outcomes it writes and reads
(``records``)."""

from __future__ import annotations

from hexdbt.engine.loop import Engine
from hexdbt.engine.reconcile import (
    CLOCK_SKEW_S,
    MEASURED_SKEW_S,
    WINDOW_MARGIN_S,
    find_run_of_lost_post,
    window_closes_at,
)
from hexdbt.engine.records import dry_run_outcomes, new_trigger, outcome_of, skipped_outcomes
from hexdbt.engine.work import EngineSettings, Log

__all__ = [
    "CLOCK_SKEW_S",
    "MEASURED_SKEW_S",
    "WINDOW_MARGIN_S",
    "Engine",
    "EngineSettings",
    "Log",
    "dry_run_outcomes",
    "find_run_of_lost_post",
    "new_trigger",
    "outcome_of",
    "skipped_outcomes",
    "window_closes_at",
]
