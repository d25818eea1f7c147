"""Files hexdbt writes for a user (the mapping file, the dbt project's files, reports): whole or
not at all. And how a file that hexdbt reads again and again (dbt's artifacts, the mapping) is
told to have changed: by its signature.

A file cut short by a full disk is worse than none: a hex_mappings.yml cut mid-line fails every
later ``hexdbt run``. So the new content goes to a temporary file beside the target, which then
replaces it in one rename. The replacement keeps what a person set on the file: its mode, its
owner where allowed, and a symlink stays a symlink (its target is the file replaced). A file
that cannot be written in place (read-only, on a read-only disk) is refused, not replaced, as an
``open(path, "w")`` would refuse it. A stream is not replaced but added to: what is not a regular
file (a terminal, a pipe), and the process's own streams (``/dev/stdout``, even when the shell
sent it to a file: replacing that file would leave the process writing to a deleted one).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from hexdbt.errors import ConfigError, HexdbtError


def write_whole(
    path: Path,
    content: str | bytes,
    *,
    what: str,
    error: type[HexdbtError] = ConfigError,
) -> None:
    """Write ``content`` (text as UTF-8) to ``path``, creating missing folders. Any OSError is
    raised as ``error`` with one line: ``cannot write WHAT PATH: cause``."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    target = Path(os.path.realpath(path))
    try:
        existing = _stat(target)
        if _is_stream(path, existing):
            with open(path, "ab") as stream:
                stream.write(data)
            return
        if existing is not None:
            # Refused where an in-place write would be, though a rename needs only the folder.
            os.close(os.open(target, os.O_WRONLY))
        target.parent.mkdir(parents=True, exist_ok=True)
        _replace(target, data, existing)
    except OSError as exc:
        raise error(f"cannot write {what} {path}: {exc.strerror or exc}") from exc


def current_bytes(path: Path, *, what: str, error: type[HexdbtError] = ConfigError) -> bytes:
    """What ``path`` holds now, for a writer that adds to it; empty when it does not exist or is
    not a regular file (a pipe or a terminal is not read back)."""
    try:
        if _is_stream(path, _stat(path)):
            return b""
        return Path(path).read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def _is_stream(path: Path, existing: os.stat_result | None) -> bool:
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        return True
    return Path(path).absolute().parts[1:2] in (("dev",), ("proc",))


def _replace(target: Path, data: bytes, existing: os.stat_result | None) -> None:
    partial = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    # 0o666 as open() creates a file: the umask applies to a new file as it would to any other.
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            if existing is not None:
                os.fchmod(stream.fileno(), stat.S_IMODE(existing.st_mode))
                if (existing.st_uid, existing.st_gid) != (os.geteuid(), os.getegid()):
                    # Root (or a member of the file's group) rewriting it leaves it its owner's.
                    with contextlib.suppress(PermissionError):
                        os.fchown(stream.fileno(), existing.st_uid, existing.st_gid)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


# -- telling a file changed -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileSignature:
    """What changes when a file is written: a file is taken as unchanged while it stays the same."""

    inode: int
    size: int
    mtime_ns: int


def signature_of(path: Path) -> FileSignature | None:
    """None when the file cannot be seen (missing, no access)."""
    try:
        status = path.stat()
    except OSError:
        return None
    return FileSignature(status.st_ino, status.st_size, status.st_mtime_ns)
