"""Direct triggers: Hex projects run without dbt (``hexdbt trigger``, ``trigger_hex_project``).

They go through the engine and the ledger like everything else: each call is one invocation in
the ledger, ``trigger:<key>``, with one trigger per project. The key is the caller's idempotency
key when given (a retried CI step that passes the same ``--idempotency-key`` follows the run its
first try started instead of starting another), else a fresh one.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from hexdbt.engine import Engine
from hexdbt.errors import ConfigError
from hexdbt.hex.models import RunRequest
from hexdbt.outcomes import Outcome
from hexdbt.planner.rules import Plan, Trigger, trigger_key

DIRECT_COMMAND = "trigger"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+=-]{0,199}")


def direct_plan(
    project_ids: Sequence[str],
    request: RunRequest,
    *,
    idempotency_key: str | None,
    timeout_minutes: float,
    cancel_on_timeout: bool,
) -> Plan:
    """One trigger per project, under the invocation the idempotency key names. Whether to wait
    is the engine's setting alone (a mapping's own ``wait: false`` has no direct counterpart),
    so a retry with ``--wait`` of a first try without it does wait."""
    if idempotency_key is not None and not _KEY.fullmatch(idempotency_key):
        raise ConfigError(
            f"--idempotency-key {idempotency_key!r}: expected 1 to 200 letters, digits or"
            " ._:/@+=- (starting with a letter or digit)",
            hint='a key that stays the same when the step is retried, e.g. "$GITHUB_RUN_ID"',
        )
    invocation_id = f"{DIRECT_COMMAND}:{idempotency_key or uuid.uuid4().hex}"
    triggers = tuple(
        Trigger(
            name=project_id,
            project_id=project_id,
            request=request,
            wait=True,
            timeout_minutes=timeout_minutes,
            cancel_on_timeout=cancel_on_timeout,
            trigger_key=trigger_key(invocation_id, project_id, request.input_params),
            reason="asked for directly",
        )
        for project_id in project_ids
    )
    return Plan(invocation_id=invocation_id, command=DIRECT_COMMAND, triggers=triggers, skipped=())


def run_direct(engine: Engine, plan: Plan) -> list[Outcome]:
    """Send the plan's triggers, follow them to their end (as the engine's settings say), and
    return one outcome per project. Call on the thread that should run the engine's loop."""
    engine.submit(plan, source=DIRECT_COMMAND)
    engine.close()
    engine.run()
    return engine.outcomes_of(plan)
