"""Real dbt commands run inside the test process, for tests whose subject is what a build leaves
behind (artifacts, the outbox), not dbt as a process.

dbt's start-up (Python and dbt's imports) costs about 3 s a process; through dbtRunner it is paid
once a session, and a build of the sample project takes 2-3 s instead of 5-6. What a process
would start without, or let go of at its exit, is reset here before and after each command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest


class _LoopsClosedAfter(asyncio.DefaultEventLoopPolicy):
    """dbt-duckdb gives each thread that runs a Python model an event loop and never closes it
    (a process's exit does): this policy remembers the loops it makes, to close them."""

    def __init__(self) -> None:
        super().__init__()
        self.made: list[asyncio.AbstractEventLoop] = []

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        self.made.append(loop)
        return loop


def dbt_in_process(
    project: Path,
    arguments: list[str],
    target: Path,
    *,
    must_succeed: bool = False,
    callbacks: Sequence[Callable[[Any], None]] = (),
) -> Path:
    """Run ``dbt <arguments>`` on ``project`` (profiles.yml inside it) into ``target``, as a
    process would: from the project folder, with no DBT_*, HEX_* or HEXDBT_* variables of the
    machine. Returns the target folder, which must hold run_results.json. dbt must end without
    an error of its own (a failing hook is one; a failing node is a result, not an error), and
    with ``must_succeed``, as with exit code 0. ``callbacks`` get each of dbt's events, as
    dbtRunner's do."""
    from dbt.adapters.factory import reset_adapters
    from dbt.cli.main import dbtRunner
    from dbt_common.events.event_manager_client import cleanup_event_logger, get_event_manager

    # dbt keeps an adapter registered before it (hexdbt's WarehouseOutbox reads through one) and
    # would build with that adapter's profile.
    reset_adapters()  # type: ignore[no-untyped-call]
    policy = _LoopsClosedAfter()
    previous_policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(policy)
    try:
        with pytest.MonkeyPatch.context() as patch, contextlib.chdir(project):
            for name in list(os.environ):
                if name.startswith(("DBT_", "HEX_", "HEXDBT_")):
                    patch.delenv(name)
            patch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
            done = dbtRunner(callbacks=list(callbacks)).invoke(
                [*arguments, "--profiles-dir", str(project), "--project-dir", str(project),
                 "--target-path", str(target)]
            )  # fmt: skip
    finally:
        asyncio.set_event_loop_policy(previous_policy)
        for loop in policy.made:
            loop.close()
        # dbt's events went to this test's captured output and to logs/dbt.log: close the file
        # and let go of both.
        for event_logger in get_event_manager().loggers:
            for handler in logging.getLogger(event_logger.name).handlers:
                handler.close()
        cleanup_event_logger()
    assert (target / "run_results.json").exists(), (arguments, done.exception)
    assert done.exception is None, (arguments, done.exception)
    assert done.success or not must_succeed, arguments
    return target
