"""What the on-run-end hook costs a dbt build, and how soon `hexdbt relay` reacts to it.

    python benchmarks/hook.py [--models 2000] [--poll-interval 2]

Prints, from one run: the build time of the sample project and of a generated DuckDB project of
``--models`` table models, each without and with the hook (target: at most 5 % or 2 s more,
whichever is larger); and the relay's reaction time, from the outbox commit (the entry's
written_at) to RunProject at an emulator, in poll intervals (target: at most one interval + 1 s).
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

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from hexdbt.clock import from_iso  # noqa: E402
from hexdbt.emulator.server import HexEmulator  # noqa: E402

DBT = Path(sys.executable).parent / "dbt"
HOOK_LINE = '\non-run-end: "{{ hexdbt_on_run_end(results) }}"\n'


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DBT_", "HEX_", "HEXDBT_"))}
    return {**env, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false", **extra}


def _generated(root: Path, models: int) -> Path:
    project = root / "generated"
    (project / "models").mkdir(parents=True)
    (project / "dbt_project.yml").write_text(
        "name: generated\nprofile: generated\nconfig-version: 2\n"
        "models:\n  generated:\n    +materialized: table\n"
    )
    (project / "profiles.yml").write_text(
        f"generated:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        f"      path: {project / 'g.duckdb'}\n      threads: 4\n"
    )
    for index in range(models):
        parent = f"select * from {{{{ ref('m{index - 1}') }}}}" if index % 10 else "select 1 as id"
        (project / "models" / f"m{index}.sql").write_text(parent + "\n")
    return project


def _sample(root: Path) -> Path:
    project = root / "sample"
    shutil.copytree(REPO_ROOT / "sample_dbt_project", project,
                    ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))  # fmt: skip
    profiles = (project / "profiles.yml").read_text()
    (project / "profiles.yml").write_text(
        profiles.replace(
            "{{ env_var('DBT_DUCKDB_PATH', 'hexdbt_sample.duckdb') }}", str(project / "s.duckdb")
        )
    )
    return project


def _build(project: Path, *args: str) -> float:
    started = time.perf_counter()
    subprocess.run([str(DBT), "build", "--project-dir", str(project), "--profiles-dir",
                    str(project), "--vars", "{slow_model_seconds: 0}", *args],
                   env=_env(), cwd=project, capture_output=True, check=True)  # fmt: skip
    return time.perf_counter() - started


def _with_hook(project: Path) -> Path:
    hooked = project.with_name(project.name + "_hooked")
    shutil.copytree(project, hooked, ignore=shutil.ignore_patterns("target", "*.duckdb*"))
    profiles = hooked / "profiles.yml"
    profiles.write_text(profiles.read_text().replace(str(project), str(hooked)))
    subprocess.run([sys.executable, "-m", "hexdbt", "hook", "install", "--project-dir",
                    str(hooked), "--write"], env=_env(PYTHONPATH=str(REPO_ROOT)), check=True,
                   capture_output=True)  # fmt: skip
    return hooked


def _reaction(project: Path, poll_interval: float, rounds: int) -> list[float]:
    """Seconds from each build's outbox commit to its first RunProject."""
    emulator = HexEmulator(time_scale=60.0).start()
    state = project.parent / "state"
    relay = subprocess.Popen(
        [sys.executable, "-m", "hexdbt", "relay", "--project-dir", str(project), "--profiles-dir",
         str(project), "--mappings", str(REPO_ROOT / "hex_mappings.yml"), "--poll-interval",
         str(poll_interval)],
        env=_env(PYTHONPATH=str(REPO_ROOT), HEX_API_TOKEN="hxtp_bench", HEX_BASE_URL=emulator.url,
                 HEXDBT_STATE_DIR=str(state)),
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    reactions = []
    try:
        time.sleep(4)  # the relay's start (dbt's import)
        for _ in range(rounds):
            seen = len(emulator.journal())
            _build(project)
            # The hook commits just before dbt writes run_results.json (milliseconds apart).
            results = json.loads((project / "target" / "run_results.json").read_text())
            written = from_iso(results["metadata"]["generated_at"])
            deadline = time.monotonic() + poll_interval + 30
            while time.monotonic() < deadline:
                runs = [e for e in emulator.journal()[seen:] if e["operation"] == "RunProject"]
                if runs:
                    reactions.append(from_iso(runs[0]["time"]) - written)
                    break
                time.sleep(0.05)
            time.sleep(poll_interval * 0.37)  # builds land at varied points of the poll cycle
    finally:
        relay.terminate()
        relay.wait(timeout=30)
        emulator.stop()
    return reactions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=2000)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        rows = []
        for label, project in (("sample project", _sample(root)),
                               (f"{options.models} models", _generated(root, options.models))):  # fmt: skip
            hooked = _with_hook(project)
            _build(project), _build(hooked)  # warm: parse caches, the outbox table
            plain, with_hook = _build(project), _build(hooked)
            limit = max(plain * 0.05, 2.0)
            verdict = "ok" if with_hook - plain <= limit else "OVER"
            rows.append(f"| {label} | {plain:.1f} s | {with_hook:.1f} s | {with_hook - plain:+.1f} s"
                        f" (limit {limit:.1f} s) | {verdict} |")  # fmt: skip
        print("| build | without hook | with hook | added | target |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))
        reactions = _reaction(root / "sample_hooked", options.poll_interval, options.rounds)
        worst = max(reactions) if reactions else float("nan")
        print(f"\nrelay reaction, poll interval {options.poll_interval:g} s, {len(reactions)} builds:"
              f" worst {worst:.2f} s = {worst / options.poll_interval:.2f} intervals"
              f" (target: at most {options.poll_interval + 1:g} s)")  # fmt: skip


if __name__ == "__main__":
    main()
