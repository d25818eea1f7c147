"""How much earlier `hexdbt dbt build` starts each Hex project than `dbt build && hexdbt run`.

Builds sample_dbt_project/ (a copy) twice against the emulator, with the slow marketing model
taking --slow seconds:

  streamed:    hexdbt dbt build ...               (projects start as their models finish)
  after-build: dbt build ... && hexdbt run ...    (the baseline: everything after the build)

and prints, per mapped project, the seconds from the start of the build to its RunProject in each
variant, the lead gained, and for the streamed variant the delay from the dbt event that made the
project decidable (its last model's or test's NodeFinished) to its RunProject.
Target: that delay is under 1 s.

    .venv/bin/python benchmarks/stream.py [--slow 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hexdbt.clock import from_iso
from hexdbt.emulator.server import HexEmulator

REPO_ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = str(REPO_ROOT / "hex_mappings.yml")
DBT = str(Path(sys.executable).parent / "dbt")


def _environment(emulator: HexEmulator, state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "HEX_", "HEXDBT_"))}
    env.update(
        HEX_API_TOKEN="hxtp_benchmark",
        HEX_BASE_URL=emulator.url,
        HEXDBT_STATE_DIR=str(state_dir),
        DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    )
    return env


def _run_projects(emulator: HexEmulator, since: float) -> dict[str, float]:
    """project id -> seconds from ``since`` to its RunProject (the journal's times are real)."""
    times: dict[str, float] = {}
    for entry in emulator.journal():
        if entry["operation"] == "RunProject":
            project_id = entry["path"].split("/")[4]
            times.setdefault(project_id, from_iso(entry["time"]) - since)
    return times


def _fresh_project(root: Path, name: str) -> Path:
    project = root / name
    shutil.copytree(
        REPO_ROOT / "sample_dbt_project",
        project,
        ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*", ".user.yml"),
    )
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=float, default=5.0, help="seconds of the slow model")
    options = parser.parse_args()
    variables = f"{{slow_model_seconds: {options.slow}}}"

    with tempfile.TemporaryDirectory() as temp, HexEmulator(time_scale=30.0) as emulator:
        root = Path(temp)

        project = _fresh_project(root, "streamed")
        env = _environment(emulator, root / "state-streamed")
        started = time.time()
        completed = subprocess.run(
            [sys.executable, "-m", "hexdbt", "dbt", "--mappings", MAPPINGS, "--no-wait",
             "--json", "build", "--profiles-dir", ".", "--vars", variables],
            cwd=project, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if completed.returncode != 0:
            raise SystemExit(f"hexdbt dbt failed:\n{completed.stderr[-3000:]}")
        report = json.loads(completed.stdout)
        streamed = _run_projects(emulator, started)
        streamed_build_s = time.time() - started
        decided = {
            p["projectId"]: from_iso(p["decidedAt"]) - started
            for p in report["projects"]
            if p.get("decidedAt")
        }
        names = {p["projectId"]: p["name"] for p in report["projects"]}
        emulator.reset()

        project = _fresh_project(root, "after_build")
        env = _environment(emulator, root / "state-after")
        started = time.time()
        subprocess.run(
            [DBT, "build", "--profiles-dir", ".", "--vars", variables],
            cwd=project, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        completed = subprocess.run(
            [sys.executable, "-m", "hexdbt", "run", "--mappings", MAPPINGS, "--no-wait", "--json"],
            cwd=project, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if completed.returncode != 0:
            raise SystemExit(f"hexdbt run failed:\n{completed.stderr[-3000:]}")
        after = _run_projects(emulator, started)

    print(f"sample_dbt_project, slow model {options.slow:g} s; seconds from the start of the build")
    print(f"(streamed build with hexdbt took {streamed_build_s:.1f} s in all)\n")
    header = ("project", "streamed", "after-build", "lead", "ratio", "event->RunProject")
    rows = [header]
    for project_id, name in names.items():
        if project_id not in streamed or project_id not in after:
            continue
        lead = after[project_id] - streamed[project_id]
        lag = streamed[project_id] - decided[project_id] if project_id in decided else None
        rows.append(
            (
                name,
                f"{streamed[project_id]:.2f}",
                f"{after[project_id]:.2f}",
                f"{lead:+.2f}",
                f"{after[project_id] / streamed[project_id]:.2f}x",
                f"{lag:.3f}" if lag is not None else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
