"""Time, injected. Nothing else in hexdbt calls ``time.time`` or ``time.sleep``.

A clock gives ``now()`` (seconds since the epoch, UTC) and ``sleep(seconds)``. Three kinds:

- ``SystemClock``: the real one.
- ``ScaledClock``: real time multiplied by a factor, so an hour of Hex passes in a minute
  (the emulator's ``--time-scale``, the demo, the benchmarks). Both sides of a conversation must
  use the same factor for their notions of time to agree, and the same origin
  (``ScaledClock.since``) for their readings to agree.
- ``ManualClock``: time moves only when told; ``sleep`` advances it at once. Tests and the
  emulator's ``--manual-clock`` use it, so a one-hour timeout is checked in milliseconds.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch, UTC."""
        ...

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of this clock's time pass."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Like ``sleep``, but cut short when ``event`` is set; True if it was."""
        ...

    def from_real_s(self, seconds: float) -> float:
        """How much of this clock's time passes in ``seconds`` of real time (an HTTP timeout is
        real time; the windows computed from it are on this clock)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))

    def from_real_s(self, seconds: float) -> float:
        return seconds


class ScaledClock:
    """Real time multiplied by ``factor``, starting from the real time of creation."""

    def __init__(self, factor: float, *, start: float | None = None) -> None:
        if factor <= 0:
            raise ValueError(f"time scale must be positive, got {factor}")
        self.factor = factor
        self._start = time.time() if start is None else start
        self._real_start = time.monotonic()

    @classmethod
    def since(cls, origin: float, factor: float) -> ScaledClock:
        """The scaled clock that read real time at ``origin`` (epoch s). Clocks made with one
        origin and factor agree, in any process; two made at different moments without one
        drift apart by ``factor - 1`` seconds per real second between their creations."""
        return cls(factor, start=origin + (time.time() - origin) * factor)

    def now(self) -> float:
        return self._start + (time.monotonic() - self._real_start) * self.factor

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds / self.factor)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds) / self.factor)

    def from_real_s(self, seconds: float) -> float:
        return seconds * self.factor


class ManualClock:
    """A clock that moves only when advanced; ``sleep`` advances it instantly.

    Thread-safe, so one instance can be shared by an in-process emulator and the client under
    test: the client's waits then move the emulator's time too. ``real_wait_s`` gives another
    thread (a file watcher, a dbt process) a real moment to set the event before ``wait`` lets
    the time pass, so a loop fed from outside does not race through its clock.
    """

    def __init__(
        self, start: float = 1_767_225_600.0, *, real_wait_s: float = 0.0
    ) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._lock = threading.Lock()
        self.real_wait_s = real_wait_s
        self.sleeps: list[float] = []

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            if seconds > 0:
                self._now += seconds

    def wait(self, event: threading.Event, seconds: float) -> bool:
        if event.wait(self.real_wait_s):
            return True
        self.sleep(seconds)
        return False

    def from_real_s(self, seconds: float) -> float:
        # Time passes only when told: a real moment counts as what it is, the safe side for a
        # window that must cover a request's real duration.
        return seconds

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds} s)")
        with self._lock:
            self._now += seconds


def to_iso(seconds: float, *, digits: int = 3) -> str:
    """ISO-8601 UTC with a ``Z``, to the millisecond (``2026-01-31T08:00:00.123Z``) or, with
    ``digits=6``, to the microsecond."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}"[:digits] + "Z"


def from_iso(text: str) -> float:
    """Parse ISO-8601 (``Z`` or an offset; a naive time is taken as UTC) to epoch seconds."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
