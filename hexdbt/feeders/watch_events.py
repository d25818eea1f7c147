"""Watchdog's events about a target folder, classified: pure, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from hexdbt.feeders.watch_targets import MANIFEST, RUN_RESULTS, WatchTarget


class Signal(StrEnum):
    CLOSED = "closed"  # run_results.json closed after writing: complete
    REPLACED = "replaced"  # renamed onto run_results.json: atomic, complete
    CHANGED = "changed"  # created or written: maybe half-written
    MANIFEST = "manifest"  # manifest.json closed after writing or renamed into place
    FOLDER = "folder"  # the target folder itself appeared, vanished or moved


@dataclass(frozen=True, slots=True)
class RawEvent:
    """What the observer thread queues: watchdog's event reduced to strings."""

    event_type: str
    src_path: str
    dest_path: str = ""
    is_directory: bool = False


def is_run_results(path: Path, target_dirs: Mapping[Path, WatchTarget]) -> WatchTarget | None:
    if path.name != RUN_RESULTS:
        return None
    return target_dirs.get(path.parent)


def classify(
    event: RawEvent, target_dirs: Mapping[Path, WatchTarget]
) -> list[tuple[WatchTarget, Signal]]:
    """Which targets an event concerns, and how. Events about anything else: an empty list."""
    src = Path(event.src_path)
    dest = Path(event.dest_path) if event.dest_path else None
    found: list[tuple[WatchTarget, Signal]] = []
    if event.is_directory:
        if event.event_type in ("created", "deleted", "moved"):
            for path in (src, dest):
                if path is not None and path in target_dirs:
                    found.append((target_dirs[path], Signal.FOLDER))
        return found
    if event.event_type == "closed":
        complete, signal = src, Signal.CLOSED
    elif event.event_type == "moved" and dest is not None:
        complete, signal = dest, Signal.REPLACED
    elif event.event_type in ("created", "modified"):
        target = is_run_results(src, target_dirs)
        return [(target, Signal.CHANGED)] if target is not None else []
    else:
        # Opened, closed-without-writing (our own reads), attribute changes and deletions of the
        # file say nothing new: the next write will.
        return []
    target = target_dirs.get(complete.parent)
    if target is not None and complete.name == RUN_RESULTS:
        found.append((target, signal))
    elif target is not None and complete.name == MANIFEST:
        found.append((target, Signal.MANIFEST))
    return found
