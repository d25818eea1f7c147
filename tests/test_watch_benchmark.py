"""benchmarks/watch.py runs both watchers against the emulator and prints its table.

No timing is asserted here (speed is the benchmark's business, on a quiet machine): a few writes
check that the script, its two watcher processes and the table it prints stay in working order,
and that the baseline still syncs its intent before each POST, which makes it the fair one.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes: left out of make test-fast

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "watch.py"


def test_the_benchmark_times_both_watchers_and_prints_its_table() -> None:
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "--writes", "4", "--invocations", "14"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "RunProject at the emulator (4 writes)" in out
    for row in ("median", "p95"):
        assert re.search(
            rf"^{row} +[\d.]+ ms +[\d.]+ ms +[\d.]+x  <= 1\.5x (met|missed)$", out, re.MULTILINE
        )
    # The 4 timed writes and the 5 warm-up ones: the baseline synced an intent before each POST
    # (the benchmark checks its intent log line by line and exits non-zero otherwise).
    assert re.search(
        r"the minimal script's intents: 9 written and fdatasync'd, one before each POST;"
        r" fdatasync median [\d.]+ ms, p95 [\d.]+ ms",
        out,
    )
    assert re.search(r"after 10 invocations [\d.]+ MB, after 14 [\d.]+ MB", out)
