"""benchmarks/watch.py runs both watchers against the emulator and prints its table.

No timing is asserted here (speed is the benchmark's business, on a quiet machine): a few writes
check that the script, its two watcher processes and the table it prints stay in working order.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
        assert re.search(rf"^{row} +[\d.]+ ms +[\d.]+ ms +[\d.]+x  <= 2x$", out, re.MULTILINE)
    assert re.search(r"after 10 invocations [\d.]+ MB, after 14 [\d.]+ MB", out)
    assert re.search(
        r"the disk's fdatasync of 4 KB between rounds: median [\d.]+ ms, p95 [\d.]+ ms", out
    )
