"""``hexdbt run``: once after the build, from the run_results.json dbt wrote."""

from __future__ import annotations

from collections.abc import Callable

from hexdbt.engine import Engine
from hexdbt.outcomes import Outcome
from hexdbt.planner.rules import Plan


def run_after_build(
    engine: Engine,
    plan: Plan,
    *,
    log: Callable[[str], None],
    project_dir: str | None = None,
) -> tuple[list[Outcome], list[Outcome]]:
    """Send the plan's triggers and take up what earlier processes left queued or live, until
    all is done (or stop is requested). Returns the plan's outcomes, one per mapped project, and
    those of the earlier triggers this process took up. Call on the engine's thread."""
    if engine.ledger.has_invocation(plan.invocation_id):
        log(
            f"dbt invocation {plan.invocation_id} was handled before: nothing new is started;"
            " reporting its runs (and waiting on live ones)"
        )
    engine.submit(plan, source="run", project_dir=project_dir)
    resumed = engine.resume()
    engine.close()
    engine.run()
    mine = {trigger.trigger_key for trigger in plan.triggers}
    earlier = [
        engine.outcome(engine.ledger.get(record.trigger_key))
        for record in resumed.result()
        if record.trigger_key not in mine
    ]
    return engine.outcomes_of(plan), earlier
