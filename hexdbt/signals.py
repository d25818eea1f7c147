"""SIGINT and SIGTERM as a stop event, so loops end cleanly instead of dying mid-write.

The core never installs handlers itself: commands do, around the part that should stop cleanly.
A blocking call that a signal should end at once (an HTTP request that may take its whole read
timeout) runs inside ``interruptible()``: while the main thread is in one, the first signal raises
``Interrupted`` there, after setting ``stop``, instead of letting the call run on.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from hexdbt.errors import EXIT_SIGINT, EXIT_SIGTERM, Interrupted

# How deep the main thread is inside calls a signal may cut short (signal handlers run there).
_interruptible_depth = 0


@contextmanager
def interruptible() -> Iterator[None]:
    """Around a blocking call on the main thread that a SIGINT or SIGTERM should end at once."""
    global _interruptible_depth
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _interruptible_depth += 1
    try:
        yield
    finally:
        _interruptible_depth -= 1


class Signals:
    """The first SIGINT/SIGTERM sets ``stop`` (and calls ``on_first``).

    ``forward``, when given, receives every signal (the dbt wrapper passes each one to dbt, which
    decides how to wind down). Without it, a second Ctrl-C gets Python's default behaviour: the
    person really wants out.
    """

    def __init__(
        self,
        *,
        forward: Callable[[int], None] | None = None,
        on_first: Callable[[], None] | None = None,
    ) -> None:
        self.stop = threading.Event()
        self.signum: int | None = None
        self._forward = forward
        self._on_first = on_first

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._forward is not None:
            self._forward(signum)
        if self.signum is not None:
            return
        self.signum = signum
        self.stop.set()
        if self._on_first is not None:
            self._on_first()
        if self._forward is None:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if _interruptible_depth > 0:
            raise Interrupted(
                f"stopped by {signal.Signals(signum).name} during a call to Hex",
                exit_code=self.exit_code,
            )

    @contextmanager
    def installed(self) -> Iterator[Signals]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:
            signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @property
    def exit_code(self) -> int:
        return EXIT_SIGTERM if self.signum == signal.SIGTERM else EXIT_SIGINT
