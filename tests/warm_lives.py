"""Lives of the hexdbt command forked from one warm process, for stall and crash rounds.

A new ``python -m hexdbt`` spends about a second importing before it does anything; a test of
twenty rounds of two processes would spend most of its time there. ``WarmLives`` starts one
Python process that imports hexdbt's CLI once, then forks a child per life on request: each
child takes its own environment, arguments and output files, and runs the command as a new
process would (its own pid, its own crash and stop points, read at its first point). The warm
process has no threads, so forking it is safe; the test reads each child's pid at its start and
its exit code at its end, and may stop and continue it with signals meanwhile.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

# The warm process: one JSON request per line on stdin; "pid N" when a life starts, "exit N C"
# when it ends (C: its exit code, or 128 + the signal that ended it).
_SERVER = r"""
import json, os, sys
from hexdbt.cli import main

for line in sys.stdin:
    if line.strip() == "WAIT":  # block until a life ends
        ended, status = os.waitpid(-1, 0)
        code = os.waitstatus_to_exitcode(status)
        print(f"exit {ended} {code if code >= 0 else 128 - code}", flush=True)
        continue
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.environ.clear()
        os.environ.update(request["env"])
        out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdin.close()
        code = 1
        try:
            main.main(args=request["args"], prog_name="hexdbt", standalone_mode=True)
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(f"pid {pid}", flush=True)
    # Report the ends of lives as they come; the next request waits until the test sends it.
    while True:
        ended, status = os.waitpid(-1, os.WNOHANG)
        if ended == 0:
            break
        code = os.waitstatus_to_exitcode(status)
        print(f"exit {ended} {code if code >= 0 else 128 - code}", flush=True)
"""


@dataclass
class Life:
    pid: int
    stdout: Path
    stderr: Path

    def stopped(self) -> bool:
        """Whether it is stopped by a signal (``T`` in /proc)."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "T"

    def output(self) -> str:
        return self.stdout.read_text()

    def errors(self) -> str:
        return self.stderr.read_text()


class WarmLives:
    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._count = 0
        self._ended: dict[int, int] = {}
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )

    def __enter__(self) -> WarmLives:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def start(self, args: list[str], env: dict[str, str]) -> Life:
        self._count += 1
        life = Life(
            0,
            self._folder / f"life-{self._count}.out",
            self._folder / f"life-{self._count}.err",
        )
        request = {"args": args, "env": env, "stdout": str(life.stdout), "stderr": str(life.stderr)}
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(request) + "\n")
        self._process.stdin.flush()
        life.pid = int(self._next_line("pid").split()[1])
        return life

    def wait(self, life: Life) -> int:
        """Its exit code, once it has ended."""
        while life.pid not in self._ended:
            self._ask_for_ends()
        return self._ended.pop(life.pid)

    def _ask_for_ends(self) -> None:
        # A blocking wait for any life (a stopped one does not count), made by the warm process.
        assert self._process.stdin is not None
        self._process.stdin.write("WAIT\n")
        self._process.stdin.flush()
        self._next_line("exit")

    def _next_line(self, kind: str) -> str:
        assert self._process.stdout is not None
        while True:
            line = self._process.stdout.readline()
            if not line:
                raise RuntimeError("the warm process ended")
            if line.startswith("exit "):
                _, pid, code = line.split()
                self._ended[int(pid)] = int(code)
                if kind == "exit":
                    return line
            elif line.startswith(kind):
                return line

    def close(self) -> None:
        """End the warm process (the lives still running are the test's to end first)."""
        assert self._process.stdin is not None
        assert self._process.stdout is not None
        self._process.stdin.close()
        self._process.wait(timeout=30)
        self._process.stdout.close()
