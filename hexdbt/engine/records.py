"""What the engine writes of a trigger and reads back: ledger rows in, outcomes out."""

from __future__ import annotations

from dataclasses import replace

from hexdbt.errors import HexApiError
from hexdbt.hex.client import HexClient
from hexdbt.ledger import NewTrigger, PlanSkip, TriggerOptions, TriggerRecord, TriggerState
from hexdbt.outcomes import Outcome, OutcomeKind, kind_of_final_status
from hexdbt.planner.rules import Plan, Skipped, Trigger


def new_trigger(trigger: Trigger, base_url: str) -> NewTrigger:
    """What the ledger records of a planned trigger."""
    return NewTrigger(
        trigger_key=trigger.trigger_key,
        name=trigger.name,
        project_id=trigger.project_id,
        base_url=base_url,
        request=trigger.request.to_api(),
        options=TriggerOptions(
            wait=trigger.wait,
            timeout_minutes=trigger.timeout_minutes,
            cancel_on_timeout=trigger.cancel_on_timeout,
            priority=trigger.priority,
            min_interval_s=trigger.min_interval_s,
            freshness_s=trigger.freshness_s,
        ),
        entry_key=trigger.entry_key,
        coalesce=trigger.coalesce,
        models=trigger.models,
        plan_reason=trigger.reason,
    )


def plan_skip(skipped: Skipped) -> PlanSkip:
    """What the ledger records of a plan's entry that was not triggered."""
    return PlanSkip(skipped.name, skipped.project_id, skipped.reason, skipped.is_error)


def outcome_of(record: TriggerRecord) -> Outcome:
    """What a ledger row means for the user right now."""
    kind: OutcomeKind
    if record.state is TriggerState.ENDED:
        kind = OutcomeKind.TIMEOUT if record.timed_out else kind_of_final_status(record.hex_status)
    else:
        kind = {
            # Started and not (yet) ended: the command did not wait.
            TriggerState.STARTED: OutcomeKind.STARTED,
            # Planned but never claimed: a later run or watch sends it, like a queued one.
            TriggerState.PLANNED: OutcomeKind.QUEUED,
            TriggerState.QUEUED: OutcomeKind.QUEUED,
            TriggerState.SENDING: OutcomeKind.IN_PROGRESS_ELSEWHERE,
            TriggerState.FAILED: OutcomeKind.FAILED_TO_START,
            TriggerState.AMBIGUOUS: OutcomeKind.AMBIGUOUS,
            TriggerState.EXPIRED: OutcomeKind.EXPIRED,
            TriggerState.SUPERSEDED: OutcomeKind.SUPERSEDED,
        }[record.state]
    elapsed = None
    if record.ended_at is not None and record.intent_at is not None:
        elapsed = round(record.ended_at - record.intent_at, 3)
    return Outcome(
        name=record.name,
        project_id=record.project_id,
        kind=kind,
        reason=record.reason,
        run_id=record.run_id,
        run_url=record.run_url,
        hex_status=record.hex_status,
        trace_id=record.trace_id,
        input_params=dict(record.request.get("inputParams") or {}),
        elapsed_s=elapsed,
    )


def skipped_outcomes(plan: Plan) -> list[Outcome]:
    return [
        Outcome(
            name=skipped.name,
            project_id=skipped.project_id,
            kind=OutcomeKind.PLAN_ERROR if skipped.is_error else OutcomeKind.SKIPPED,
            reason=skipped.reason,
        )
        for skipped in plan.skipped
    ]


def dry_run_outcomes(plan: Plan, client: HexClient) -> list[Outcome]:
    """Ask Hex to validate each trigger (``dryRun``): nothing runs, nothing is recorded."""
    outcomes = []
    for trigger in plan.triggers:
        outcome = Outcome(
            trigger.name,
            trigger.project_id,
            OutcomeKind.DRY_RUN,
            reason=trigger.reason,
            input_params=dict(trigger.input_params),
        )
        try:
            run = client.run_project(trigger.project_id, replace(trigger.request, dry_run=True))
        except HexApiError as exc:
            outcomes.append(
                replace(
                    outcome,
                    kind=OutcomeKind.FAILED_TO_START,
                    reason=str(exc),
                    trace_id=exc.trace_id,
                )
            )
            continue
        outcomes.append(replace(outcome, trace_id=run.trace_id))
    return outcomes + skipped_outcomes(plan)
