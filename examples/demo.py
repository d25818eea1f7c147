"""`make demo`: the whole loop on this machine, in under two minutes.

1. start a local Hex emulator (time runs 60x faster there, so Hex runs take seconds);
2. build the sample dbt project on DuckDB;
3. `hexdbt run`: plan from what dbt wrote, trigger the stale Hex apps, wait, report;
4. `hexdbt run` again: the same dbt invocation starts nothing new;
5. `hexdbt status`: what the ledger remembers;
6. `hexdbt dbt build`: dbt wrapped, each Hex app started the moment its models are done.

Every step prints the command it runs, so you can type them yourself afterwards.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TIME_SCALE = "60"


def say(text: str) -> None:
    bold = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    print(f"\n\033[1m{text}\033[0m" if bold else f"\n{text}", flush=True)


def run(command: list[str], environment: dict[str, str], *, check: bool = True) -> int:
    print("$ " + " ".join(shlex.quote(part) for part in command), flush=True)
    completed = subprocess.run(command, env=environment, cwd=ROOT, check=False)
    if check and completed.returncode != 0:
        raise SystemExit(f"demo: `{command[0]} {command[1]}` exited {completed.returncode}")
    return completed.returncode


def main() -> int:
    state_dir = Path(tempfile.mkdtemp(prefix="hexdbt-demo-state-"))
    # One timeline for the emulator and every hexdbt below: clocks scaled from each process's own
    # start would disagree by a minute for every real second between the starts.
    time_origin = repr(time.time())
    environment = {
        **os.environ,
        "HEX_API_TOKEN": "hxtp_demo_token",
        "HEXDBT_STATE_DIR": str(state_dir),
        # hexdbt's clock runs at the emulator's pace; never set this against the real Hex.
        "HEXDBT_TIME_SCALE": TIME_SCALE,
        "HEXDBT_TIME_ORIGIN": time_origin,
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        # The sample profile's DuckDB file, kept inside the project whatever the current folder.
        "DBT_DUCKDB_PATH": str(ROOT / "sample_dbt_project" / "hexdbt_sample.duckdb"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    say(f"1. A local Hex API (the emulator), {TIME_SCALE}x faster than real time")
    emulator_command = [
        "hexdbt",
        "emulator",
        "--port",
        "0",
        "--time-scale",
        TIME_SCALE,
        "--time-origin",
        time_origin,
        "--quiet",
    ]
    print("$ " + " ".join(emulator_command) + " &", flush=True)
    emulator = subprocess.Popen(
        emulator_command, env=environment, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert emulator.stdout is not None
        base_url = emulator.stdout.readline().strip()
        if not base_url.startswith("http://"):
            raise SystemExit("demo: the emulator did not start")
        environment["HEX_BASE_URL"] = base_url
        print(f"Hex is at {base_url}; state (ledger, budget) in {state_dir}")

        say("2. Build the sample dbt project on DuckDB")
        project = "sample_dbt_project"
        run(
            ["dbt", "build", "--project-dir", project, "--profiles-dir", project, "--quiet"],
            environment,
        )
        print("dbt wrote sample_dbt_project/target/run_results.json and manifest.json")

        say("3. Which Hex apps are stale now, and why (nothing is sent)")
        run(["hexdbt", "plan", "--project-dir", project], environment)

        say("4. Trigger them, wait for them under Hex's rate limits, report")
        code = run(["hexdbt", "run", "--project-dir", project], environment, check=False)

        say("5. The same dbt invocation again: nothing new starts (exactly once)")
        run(["hexdbt", "run", "--project-dir", project], environment, check=False)

        say("6. What the ledger remembers")
        run(["hexdbt", "status", "--limit", "1"], environment)

        say(
            "7. Wrapped around dbt: each Hex app starts as soon as its own models are done"
            " (the marketing model takes 5 s; watch customer_health start before it ends)"
        )
        wrapped = run(
            [
                "hexdbt",
                "dbt",
                "--no-wait",
                "--",
                "build",
                "--project-dir",
                project,
                "--profiles-dir",
                project,
                "--vars",
                "{slow_model_seconds: 5}",
            ],
            environment,
            check=False,
        )
        code = code or wrapped
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    say("Done. README.md explains what you just saw and how to point hexdbt at your own Hex.")
    return code


if __name__ == "__main__":
    sys.exit(main())
