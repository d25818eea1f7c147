"""Builds of the sample dbt project that tests only read, made once a session in a background
process while the tests before them run.

A test module whose builds are data to read (not a build to watch) defines
``prebuild(folder: Path) -> object``: it builds into ``folder`` and returns what its tests read
(picklable). When the tests are collected, conftest starts one process, at a low priority, that
runs the ``prebuild`` of every module selected; the module's session fixture takes the result
with ``Prebuilds.result``. The builds (20 s and more) so use the CPU the rest of the suite leaves
idle, and a module whose builds are done when its turn comes waits for nothing.

    python prebuilt.py FOLDER MODULE...   (what the background process runs)
"""

from __future__ import annotations

import importlib
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
# How long a module waits for the background builds: they take about a minute on a busy machine.
WAIT_S = 300.0


class Prebuilds:
    def __init__(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="hexdbt-prebuilt-"))
        self._modules: list[str] = []
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, modules: list[str]) -> None:
        """Start building for ``modules`` (once a session: a later call builds what is missing)."""
        missing = [module for module in modules if module not in self._modules]
        if not missing:
            return
        self.wait()  # one build at a time: dbt in two processes would only share the CPU
        self._modules += missing
        with (self._folder / "build.log").open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, str(Path(__file__)), str(self._folder), *missing],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._folder,
                env=_clean_environment(),
            )

    def wait(self) -> None:
        if self._process is None:
            return
        try:
            self._process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            raise
        finally:
            self._process = None

    def result(self, module: str) -> Any:
        """What ``module``'s ``prebuild`` returned, once the background process has ended (it
        lets go of every DuckDB file then)."""
        self.start([module])
        self.wait()
        built = self._folder / f"{module}.pickle"
        assert built.exists(), (self._folder / "build.log").read_text()[-5000:]
        return pickle.loads(built.read_bytes())

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self._folder, ignore_errors=True)


def _clean_environment() -> dict[str, str]:
    """The machine's environment without what conftest's clean_environment takes from each test."""
    kept = {
        k: v for k, v in os.environ.items() if not k.startswith(("HEX_", "HEXDBT_", "DBT_", "PG"))
    }
    return {**kept, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"}


def _build(folder: Path, modules: list[str]) -> None:
    os.nice(10)  # the tests running meanwhile come first
    sys.path.insert(0, str(TESTS))
    for module in modules:
        began = time.monotonic()
        result = importlib.import_module(module).prebuild(folder / module)
        partial = folder / f"{module}.pickle.partial"
        partial.write_bytes(pickle.dumps(result))
        partial.rename(folder / f"{module}.pickle")
        print(f"prebuilt {module} in {time.monotonic() - began:.1f} s", flush=True)


if __name__ == "__main__":
    _build(Path(sys.argv[1]), sys.argv[2:])
