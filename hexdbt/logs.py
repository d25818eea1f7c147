"""Events as log lines on stderr: ``key=value`` text for people, one JSON object for shippers.

Every long-running command (``run``, ``dbt``, ``trigger --wait``, ``watch``) takes
``--log-format text|json``; with json, each line on stderr is one event object.
"""

from __future__ import annotations

import json
import sys
import threading
import traceback
from enum import StrEnum
from typing import IO, Any, Protocol

from hexdbt.clock import Clock, SystemClock, to_iso
from hexdbt.errors import HexdbtError


class EventLog(Protocol):
    def emit(self, event: str, level: str = "info", /, **fields: Any) -> None: ...


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class StreamEventLog:
    """Writes each event as one line: ``key=value`` text, or one JSON object for log shippers."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        *,
        log_format: LogFormat = LogFormat.TEXT,
        clock: Clock | None = None,
    ) -> None:
        self.stream = stream
        self.log_format = log_format
        # Log times are wall-clock times whatever clock the Hex side runs on.
        self.clock: Clock = clock or SystemClock()
        self._lock = threading.Lock()

    def emit(self, event: str, level: str = "info", /, **fields: Any) -> None:
        stamp = to_iso(self.clock.now())
        if self.log_format is LogFormat.JSON:
            line = json.dumps(
                {"time": stamp, "level": level, "event": event, **fields}, default=str
            )
        else:
            parts = [stamp, level.upper(), event]
            for key, value in fields.items():
                if value is None or value == [] or value == {}:
                    continue
                if isinstance(value, str):
                    text = value if value and " " not in value else json.dumps(value)
                else:
                    text = json.dumps(value, default=str, separators=(",", ":"))
                parts.append(f"{key}={text}")
            line = " ".join(parts)
        stream = self.stream or sys.stderr
        with self._lock:
            stream.write(line + "\n")
            stream.flush()


class MemoryEventLog:
    """Keeps events in a list; what tests read."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.changed = threading.Condition(self._lock)

    def emit(self, event: str, level: str = "info", /, **fields: Any) -> None:
        with self._lock:
            self.events.append({"event": event, "level": level, **fields})
            self.changed.notify_all()

    def of(self, event: str) -> list[dict[str, Any]]:
        with self._lock:
            return [item for item in self.events if item["event"] == event]


def error_fields(exc: BaseException) -> dict[str, Any]:
    """An error as log fields: its cause in one line, and a hint when ours has one."""
    fields: dict[str, Any] = {"error": str(exc), "error_type": type(exc).__name__}
    if isinstance(exc, HexdbtError) and exc.hint:
        fields["hint"] = exc.hint
    elif not isinstance(exc, HexdbtError):
        # Not an expected failure: keep where it happened, a bug report needs it.
        fields["where"] = "".join(traceback.format_tb(exc.__traceback__, limit=-3)).strip()
    return fields
