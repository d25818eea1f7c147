"""A hexdbt command run on a real pseudo-terminal, as a person at a terminal runs it."""

from __future__ import annotations

import os
import pty
import subprocess
import sys


def run_in_a_terminal(args: list[str], environment: dict[str, str]) -> tuple[int, bytes]:
    """Exit code and all ``hexdbt ARGS`` writes to a pseudo-terminal (stdout and stderr both)."""
    leader, follower = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "hexdbt", *args],
            stdin=subprocess.DEVNULL,
            stdout=follower,
            stderr=follower,
            env=environment,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end closed
                break
            if not chunk:
                break
            chunks.append(chunk)
        code = process.wait(timeout=60)
    finally:
        os.close(leader)
    return code, b"".join(chunks)
