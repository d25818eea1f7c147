"""Named crash points: the process exits hard at a named point of the engine, for crash tests.

``HEXDBT_CRASH_AT=NAME`` (or ``NAME:N``, the N-th time the point is reached) makes
``crash_point(NAME)`` end the process at once with ``os._exit(CRASH_EXIT_CODE)``: no cleanup, no
flush, no ledger write, as a power cut or SIGKILL would. Unset (always, outside tests),
``crash_point`` is a function that does nothing. The points, in the order a trigger meets them:

    intent-synced     the plan and the claim to send are committed (synced) in the ledger
    before-post       the claim is committed; RunProject is about to be sent
    post-answered     Hex answered RunProject; the run id is not recorded yet
    run-id-recorded   the run id is committed in the ledger

and, for ``hexdbt serve``'s dbt Cloud feeder:

    dbt-cloud-before-plan   a dbt Cloud run is in the ledger (its webhook answered 200), about to
                            be planned
"""

from __future__ import annotations

import os
from collections.abc import Callable

from hexdbt.errors import ConfigError
from hexdbt.settings import resolve_crash_point

CRASH_EXIT_CODE = 86
POINTS = (
    "intent-synced",
    "before-post",
    "post-answered",
    "run-id-recorded",
    "dbt-cloud-before-plan",
)


def _nothing(name: str) -> None:
    """No crash point is set: nothing happens."""


def _crash_at(target: str, nth: int) -> Callable[[str], None]:
    reached = 0

    def crash_point(name: str) -> None:
        nonlocal reached
        if name != target:
            return
        reached += 1
        if reached == nth:
            os._exit(CRASH_EXIT_CODE)

    return crash_point


def _from_setting() -> Callable[[str], None]:
    setting = resolve_crash_point()
    if setting is None:
        return _nothing
    name, nth = setting
    if name not in POINTS:
        raise ConfigError(
            f"HEXDBT_CRASH_AT names no crash point: {name!r}", hint=f"one of {', '.join(POINTS)}"
        )
    return _crash_at(name, nth)


crash_point = _from_setting()
