"""Named points of the engine where a test makes the process crash or stall.

``HEXDBT_CRASH_AT=NAME`` (or ``NAME:N``, the N-th time the point is reached) makes
``crash_point(NAME)`` end the process at once with ``os._exit(CRASH_EXIT_CODE)``: no cleanup, no
flush, no ledger write, as a power cut or SIGKILL would. ``HEXDBT_STOP_AT`` (same form) makes it
stop the process with SIGSTOP instead, as a GC pause, a suspended VM or a closed laptop lid
would: the test lets it go on with SIGCONT. Unset (always, outside tests), ``crash_point`` is a
function that does nothing (the setting is read at the first point met). The points, in the order a trigger meets them:

    planned           the plan is recorded, and the triggers that go at once are claimed (not
                      yet armed: nothing may have been sent)
    armed             a trigger is armed (its intent synced, its fence raised); RunProject is
                      about to be sent
    post-answered     Hex answered RunProject; the run id is not recorded yet
    run-id-recorded   the run id is committed in the ledger

and, for ``hexdbt serve``'s dbt Cloud feeder:

    dbt-cloud-before-plan   a dbt Cloud run is in the ledger (its webhook answered 200), about to
                            be planned
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hexdbt.errors import ConfigError
from hexdbt.settings import CRASH_AT_ENV, STOP_AT_ENV, resolve_crash_point, resolve_stop_point

CRASH_EXIT_CODE = 86
# The engine's points, met by every way in, in the order a trigger meets them.
ENGINE_POINTS = ("planned", "armed", "post-answered", "run-id-recorded")
POINTS = (*ENGINE_POINTS, "dbt-cloud-before-plan")


def _nothing(name: str) -> None:
    """No point is set: nothing happens."""


def _crash() -> None:
    os._exit(CRASH_EXIT_CODE)


# Held by a thread of the engine while it writes beside the engine's own thread (the lease
# keeper's renewal): a stall waits for it. Stopped inside a write, a process would hold SQLite's
# write lock, and every other process's writes with it, which is not the stall being tested
# (docs/exactly-once.md says what such a stall does).
_writing_beside = threading.Lock()


@contextmanager
def no_stall_meanwhile() -> Iterator[None]:
    """A stall at a crash point waits for the end of this block."""
    with _writing_beside:
        yield


def _stall() -> None:
    with _writing_beside:
        os.kill(os.getpid(), signal.SIGSTOP)


def _at(target: str, nth: int, act: Callable[[], None]) -> Callable[[str], None]:
    reached = 0

    def crash_point(name: str) -> None:
        nonlocal reached
        if name != target:
            return
        reached += 1
        if reached == nth:
            act()

    return crash_point


def _from_settings() -> Callable[[str], None]:
    """The point the environment names, read at the first ``crash_point``: a test may fork
    lives from a warm process and give each its own."""
    for env, setting, act in (
        (CRASH_AT_ENV, resolve_crash_point(), _crash),
        (STOP_AT_ENV, resolve_stop_point(), _stall),
    ):
        if setting is None:
            continue
        name, nth = setting
        if name not in POINTS:
            raise ConfigError(f"{env} names no point: {name!r}", hint=f"one of {', '.join(POINTS)}")
        return _at(name, nth, act)
    return _nothing


_point: Callable[[str], None] | None = None


def crash_point(name: str) -> None:
    global _point
    if _point is None:
        _point = _from_settings()
    _point(name)
