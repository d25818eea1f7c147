"""How long `hexdbt --help` and `hexdbt trigger --help` take, next to `import requests`.

Every command runs as a fresh process (what a person or a scheduler pays); the best of N runs is
kept, since the minimum is the least disturbed by other work on the machine. The baseline,
`python -c "import requests"`, is measured in the same run: a CLI that talks HTTP cannot start
faster than its HTTP library imports, so that is the yardstick.

    .venv/bin/python benchmarks/startup.py [--repeat 15]

Target (issue 8): `hexdbt --help` and `hexdbt trigger --help` at most 2x the baseline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TARGET_RATIO = 2.0


def best_of(command: list[str], repeat: int) -> float:
    environment = {**os.environ, "NO_COLOR": "1"}
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=environment)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="runs per command (best kept)")
    options = parser.parse_args()

    python = sys.executable
    script = shutil.which("hexdbt", path=str(Path(python).parent)) or shutil.which("hexdbt")
    hexdbt = [script] if script else [python, "-m", "hexdbt"]
    cases: list[tuple[str, list[str], bool]] = [
        ('python -c "pass"', [python, "-c", "pass"], False),
        ('python -c "import requests"  (baseline)', [python, "-c", "import requests"], False),
        ('python -c "import hexdbt"', [python, "-c", "import hexdbt"], False),
        ("hexdbt --version", [*hexdbt, "--version"], False),
        ("hexdbt --help", [*hexdbt, "--help"], True),
        ("hexdbt trigger --help", [*hexdbt, "trigger", "--help"], True),
        ("hexdbt validate --help", [*hexdbt, "validate", "--help"], False),
    ]
    # One warm-up each, so the first case does not pay for a cold file cache alone.
    for _, command, _ in cases:
        best_of(command, 1)
    results = [(label, best_of(command, options.repeat), gated) for label, command, gated in cases]
    baseline = results[1][1]

    print(f"best of {options.repeat} runs, each a fresh process ({python})\n")
    print(f"| {'command':<42} | {'ms':>7} | {'vs import requests':>18} | target |")
    print(f"|{'-' * 44}|{'-' * 9}|{'-' * 20}|--------|")
    failed = False
    for label, seconds, gated in results:
        ratio = seconds / baseline
        verdict = ""
        if gated:
            verdict = "ok" if ratio <= TARGET_RATIO else "MISSED"
            failed |= ratio > TARGET_RATIO
        print(f"| {label:<42} | {seconds * 1000:7.1f} | {ratio:17.2f}x | {verdict:<6} |")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
