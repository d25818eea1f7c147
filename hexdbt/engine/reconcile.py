"""The one answer to "did a RunProject whose answer was lost start a run?".

Hex's run objects do not say who started a run. What a lost answer leaves is the intent's time
(committed before the POST) and the project's API runs in Hex's run list, so the candidates are
the runs no ledger row accounts for that started inside the POST's window: from the intent (less
the clock skew) to the moment its answer could last have come (plus the skew). docs/exactly-once.md
argues the window and states the one risk it leaves.
"""

from __future__ import annotations

from hexdbt.errors import HexAmbiguousRunError
from hexdbt.hex.client import HexClient
from hexdbt.hex.models import RunStatus
from hexdbt.ledger import TriggerRecord

# Hex's clock and ours may disagree by this much: one margin, wherever a run's start is compared
# with our intent.
CLOCK_SKEW_S = 60.0


def window_closes_at(client: HexClient, record: TriggerRecord) -> float:
    """When the POST of ``record`` can no longer be in flight, on our clock plus the skew: only
    after it may a run list without the run mean that nothing started."""
    return (record.intent_at or record.created_at) + client.longest_request_s + CLOCK_SKEW_S


def find_run_of_lost_post(
    client: HexClient, record: TriggerRecord, known_run_ids: set[str]
) -> RunStatus | None:
    """The run a RunProject whose answer was lost started, or None when Hex lists none (yet).

    A lone candidate is adopted (another client's run started inside the window would be mistaken
    for ours: the one risk Hex's API leaves); several raise HexAmbiguousRunError.
    """
    intent_at = record.intent_at or record.created_at
    window_end = window_closes_at(client, record)
    candidates = [
        run
        for run in client.find_api_runs_since(record.project_id, intent_at - CLOCK_SKEW_S)
        if run.run_id not in known_run_ids
        and (run.start_time is None or run.start_time <= window_end)
    ]
    if len(candidates) > 1:
        urls = tuple(run.run_url or run.run_id for run in candidates)
        raise HexAmbiguousRunError(
            f"RunProject's answer was lost and {len(candidates)} API runs of project"
            f" {record.project_id} started inside its window: {', '.join(urls)}",
            run_urls=urls,
            hint="check those runs in Hex; nothing was sent again",
        )
    return candidates[0] if candidates else None
