"""A hexdbt daemon (`watch`, `relay`, `serve`) with `--log-format json` in a process of its own,
its events read as they come."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class Daemon:
    """`hexdbt watch` (or `relay`) `--log-format json` in a process of its own, its events read
    as they come."""

    def __init__(
        self, args: list[str], env: dict[str, str], cwd: Path, *, command: str = "watch"
    ) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hexdbt", command, "--log-format", "json", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """A test that failed half-way leaves no process behind."""
        if self.process.poll() is None:
            self.kill()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def events(self, name: str) -> list[dict[str, Any]]:
        # Every line is an event (a scrape writes no access log line), but for the one error
        # line of a daemon that could not start, which wait_for shows when the process is gone.
        events = (json.loads(line) for line in list(self.lines) if line.startswith("{"))
        return [event for event in events if event["event"] == name]

    def wait_for(self, name: str, count: int = 1, timeout_s: float = 30) -> dict[str, Any]:
        """The first ``name`` event, once ``count`` of them have come."""
        deadline = time.monotonic() + timeout_s
        while len(self.events(name)) < count:
            assert self.process.poll() is None, "\n".join(self.lines)
            assert time.monotonic() < deadline, f"no {name} event:\n" + "\n".join(self.lines)
            time.sleep(0.02)
        return self.events(name)[0]

    def wait_for_exit(self, timeout_s: float = 30) -> int:
        """The exit code of a process that ends by itself (a crash point)."""
        self.process.wait(timeout=timeout_s)
        return self._ended()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self._ended()

    def kill(self) -> int:
        self.process.kill()
        return self._ended()

    def _ended(self) -> int:
        code = self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code
