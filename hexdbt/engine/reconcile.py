"""The one answer to "did a RunProject whose answer was lost start a run?".

Hex's run objects do not say who started a run. What a lost answer leaves is the intent's time
(committed before the POST, on our clock) and the project's API runs in Hex's run list (on Hex's
clock), so the candidates are the runs no ledger row accounts for that Hex had not started before
the intent: still pending, or started at or after it. When the process that committed the intent
had read Hex's clock by then (the Date header of an earlier answer), the ledger keeps the offset
with the intent (``hex_clock_offset_s``), and whichever process reconciles, on whichever host,
compares the two clocks within ``MEASURED_SKEW_S``. When no answer had come yet and the process
that reconciles is the one that committed the intent (its first RunProject lost its answer), the
look-up's own answer tells Hex's clock, and that offset is used: a clock minutes ahead of Hex's
would otherwise push the intent past the run it created. Otherwise (the intent of another process,
maybe on another host, with a clock of its own) the clocks are compared within ``CLOCK_SKEW_S``.
No upper bound: a run may stay pending for minutes
before Hex starts it. docs/exactly-once.md argues the rule and states the
one risk it leaves.
"""

from __future__ import annotations

from collections.abc import Callable

from hexdbt.errors import HexAmbiguousRunError
from hexdbt.hex.budget import Slot
from hexdbt.hex.client import HexClient
from hexdbt.hex.models import RunStatus
from hexdbt.ledger import TriggerRecord

# Hex's clock and ours may disagree by this much when Hex's has not been read yet.
CLOCK_SKEW_S = 60.0
# How long after a RunProject's read deadline Hex may still create its run (a request Hex goes on
# handling after our read timeout gave up on it): the in-flight window's margin, by default
# (HEXDBT_WINDOW_MARGIN_S; docs/exactly-once.md argues the default).
WINDOW_MARGIN_S = 60.0
# Once Hex's clock is read from a Date header (the client keeps only a reading off by at most
# OFFSET_MAX_ERROR_S: whole seconds, at the middle of an exchange of up to 2 s).
MEASURED_SKEW_S = 2.0


def window_closes_at(record: TriggerRecord, window_s: float) -> float:
    """When the POST of ``record`` can no longer be in flight: only after it may a run list
    without the run mean that nothing started. The sender recorded it with the intent, by its
    own timeouts and margin (a reconciling process with shorter ones must not close it early);
    ``window_s``, this process's, only for a row a hexdbt before the window was recorded sent."""
    if record.window_closes_at is not None:
        return record.window_closes_at
    return (record.intent_at or record.created_at) + window_s


def _earliest_start(intent_at: float, offset_at_intent: float | None) -> float:
    """The earliest start time, on Hex's clock, that a run our POST created can have."""
    if offset_at_intent is None:
        return intent_at - CLOCK_SKEW_S
    return intent_at + offset_at_intent - MEASURED_SKEW_S


def find_run_of_lost_post(
    client: HexClient,
    record: TriggerRecord,
    known_run_ids: set[str],
    *,
    own_intent: bool = False,
    slot_for_page: Callable[[], Slot | None] | None = None,
) -> RunStatus | None:
    """The run a RunProject whose answer was lost started, or None when Hex lists none (yet).
    ``own_intent``: this process committed the intent (its clock is the intent's clock);
    ``slot_for_page``: the caller's budget slots (``HexClient.find_api_runs_since``).

    A lone candidate is adopted (another client's run started inside the window would be mistaken
    for ours: the one risk Hex's API leaves); several raise HexAmbiguousRunError.
    """
    intent_at = record.intent_at or record.created_at

    def earliest_start() -> float:
        offset = record.hex_clock_offset_s
        if offset is None and own_intent:
            offset = client.hex_clock_offset_s  # read from the look-up's own answer
        return _earliest_start(intent_at, offset)

    runs = client.find_api_runs_since(
        record.project_id, earliest_start, slot_for_page=slot_for_page
    )
    earliest = earliest_start()
    candidates = [
        run
        for run in runs
        if run.run_id not in known_run_ids
        and (run.start_time is None or run.start_time >= earliest)
    ]
    if len(candidates) > 1:
        urls = tuple(run.run_url or run.run_id for run in candidates)
        raise HexAmbiguousRunError(
            f"RunProject's answer was lost and {len(candidates)} API runs of project"
            f" {record.project_id} started after its intent: {', '.join(urls)}",
            run_urls=urls,
            hint="check those runs in Hex; nothing was sent again",
        )
    return candidates[0] if candidates else None
