"""Disks that refuse a write, for real: a full one, a file size limit, a read-only file.

A full disk is a small tmpfs mounted over a folder in a mount namespace of its own (as root,
with util-linux's ``unshare``), filled up with zeros before hexdbt runs: every write there fails
with ENOSPC, as on a full disk. Elsewhere a process's file size limit (RLIMIT_FSIZE) cuts writes
for real, with EFBIG. A read-only file is immutable (``chattr +i``) as root, for whom the mode
bits do not count, and mode 0o444 for anyone else.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

# Runs as: sh -c SCRIPT sh FOLDER WORKDIR COMMAND...
_ON_A_FULL_DISK = r"""
set -e
folder=$1 workdir=$2
shift 2
stash=$(mktemp -d)
cp -a "$folder/." "$stash/"
mount -t tmpfs -o size=16m tmpfs "$folder"
cp -a "$stash/." "$folder/"
cat /dev/zero > "$folder/.filler" 2>/dev/null || true
set +e
cd "$workdir"
"$@"
code=$?
cd /
rm -f "$folder/.filler"
find "$stash" -mindepth 1 -delete
cp -a "$folder/." "$stash/"
umount "$folder"
find "$folder" -mindepth 1 -delete
cp -a "$stash/." "$folder/"
rm -rf "$stash"
exit $code
"""


@functools.cache
def full_disks_can_be_had() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    trial = subprocess.run(
        ["unshare", "--mount", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    return trial.returncode == 0


def run_hexdbt_on_a_full_disk(
    args: list[str], *, full: Path, cwd: Path, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """``python -m hexdbt ARGS`` in ``cwd`` while the folder ``full`` is a full disk; afterwards
    ``full`` holds what the full disk held (leftovers included)."""
    if not full_disks_can_be_had():
        pytest.skip("a full disk needs root and a mount namespace (unshare)")
    script = ["sh", "-c", _ON_A_FULL_DISK, "sh", str(full), str(cwd)]
    return subprocess.run(
        ["unshare", "--mount", *script, sys.executable, "-m", "hexdbt", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def run_hexdbt_with_a_file_size_limit(
    args: list[str], *, limit_bytes: int, cwd: Path, env: Mapping[str, str]
) -> subprocess.CompletedProcess[str]:
    """``python -m hexdbt ARGS`` in ``cwd``, unable to make any file longer than ``limit_bytes``
    (a write past it fails with EFBIG, rather than the signal that would kill the process)."""

    launcher = (
        "import resource, runpy, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))\n"
        "sys.argv[0] = 'hexdbt'\n"
        "runpy.run_module('hexdbt', run_name='__main__', alter_sys=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", launcher, *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """``paths`` (files or folders) cannot be written while the block runs, even by root."""
    as_root = os.geteuid() == 0
    modes = {path: path.stat().st_mode for path in paths}
    try:
        for path in paths:
            if as_root:
                done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
                if done.returncode != 0:
                    pytest.skip(f"chattr +i is refused here: {done.stderr.decode().strip()}")
            else:
                path.chmod(0o555 if path.is_dir() else 0o444)
        yield
    finally:
        for path in paths:
            if as_root:
                subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)
            else:
                path.chmod(modes[path])
