"""benchmarks/artifacts.py runs, prints its table, and its exit code says whether targets were met.

No timing is asserted here (speed is the benchmark's business, on a quiet machine): a tiny
project checks that the script and the table it prints stay in working order.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real processes: left out of make test-fast

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "artifacts.py"


@pytest.mark.parametrize("order", [[], ["--manifest-first"]])
def test_the_benchmark_prints_its_table_and_exits_by_its_verdict(order: list[str]) -> None:
    args = ["--models", "300", "--projects", "20", "--rounds", "1", *order]
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )
    out = completed.stdout
    assert completed.stderr == ""
    assert "300 models + 300 tests, 20 projects" in out
    expected_order = "manifest then run_results" if order else "run_results then manifest"
    assert f"read {expected_order}" in out
    for row in (
        "bare json.load of both (baseline)",
        "make_plan (20 projects)",
        "load + plan (timed together)",
        "peak memory (tracemalloc)",
    ):
        assert row in out
    verdict = out.strip().splitlines()[-1]
    if completed.returncode == 0:
        assert verdict == "targets met"
    else:
        assert completed.returncode == 1
        assert verdict.startswith("TARGETS MISSED (load + plan ")


def test_the_big_size_prints_its_table_and_the_growth_per_model() -> None:
    args = ["--models", "200", "--projects", "10", "--rounds", "1"]
    big = ["--big", "--big-models", "600", "--big-rounds", "1"]
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), *args, *big], capture_output=True, text=True, timeout=120
    )
    out = completed.stdout
    assert completed.stderr == ""
    assert "200 models + 200 tests, 10 projects" in out
    assert "600 models + 600 tests, 10 projects" in out
    assert "growth from 200 to 600 models (3.0x), per model:" in out
    growth = out.split("per model:", 1)[1].strip().splitlines()[:4]
    assert [line.rsplit(" ", 1)[0].strip() for line in growth] == [
        "load + plan time",
        "load + plan peak memory",
        "bare json.load time",
        "bare json.load peak memory",
    ]
    assert all(line.endswith("x") for line in growth)
    verdict = out.strip().splitlines()[-1]
    if completed.returncode == 0:
        assert verdict == "targets met at every size"
    else:
        assert completed.returncode == 1
        assert verdict.startswith("TARGETS MISSED at ")
