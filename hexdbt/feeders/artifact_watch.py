"""The watch loop: dbt target folders -> complete run_results.json files -> planned invocations.

Three threads, each with one job (the shape of watchfiles):

- watchdog's observer thread only puts raw events on a queue (``_EventQueue.dispatch``);
- the watch loop (``ArtifactWatcher.run``, a worker thread) turns them into debounced looks at
  each target's run_results.json, reads it once it is complete, and plans the new invocation (pure
  work: files in, ``ReadyInvocation`` out);
- the main thread runs the engine's one loop (``Engine.run``), which records, sends and polls.
  Ready invocations go into the engine's inbox, which wakes the loop at once, so every ledger
  write happens on one thread and reaction time is not the loop's turn time.

When is run_results.json complete? dbt truncates it and streams JSON into it in place. With
inotify, the close-after-write event says so, and the writes themselves are not watched (see
``ArtifactWatcher._arm``): a write never closed is found by the check every ``rearm_check_s``
and looked at ``close_fallback_s`` later. With ``--polling`` (or no close events) the file is
re-read after ``debounce_s`` of quiet until it parses *and* its size/mtime did not change since
the previous look. A file that stays unreadable once complete is reported once and the
watcher goes on.

Which invocations count: not the one already in a target when the watcher started (unless
``replay_latest``, or unless the ledger says it was missed: see ``ArtifactWatcher``), not one
this process already took, not one already in the ledger (another process or an earlier daemon
handled it), and not a command that refreshes nothing (``compile``, ``show``, ``docs generate``,
``run-operation``): those are logged as skipped and deliberately not recorded in the ledger,
because they can start nothing and an IDE running ``dbt compile`` all day would bury the
invocations that matter in ``hexdbt status``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hexdbt.clock import Clock, SystemClock
from hexdbt.dbt.artifacts import Invocation, load_run_results
from hexdbt.errors import ArtifactError, HexdbtError
from hexdbt.feeders.watch_events import RawEvent, Signal, classify
from hexdbt.feeders.watch_targets import WatchTarget
from hexdbt.files import FileSignature, signature_of
from hexdbt.logs import EventLog, error_fields
from hexdbt.planner.inputs import PlanInputs

if TYPE_CHECKING:
    from hexdbt.ledger import Ledger
    from hexdbt.planner.rules import Plan


class RecentIds:
    """The invocation ids this process took, the most recent ``keep`` of them.

    Bounded so a daemon that lives for months does not grow; an id that falls out is still
    caught by the ledger (refreshing commands) or harmless (the others trigger nothing).
    """

    def __init__(self, keep: int = 4096) -> None:
        self.keep = keep
        self.ids: dict[str, None] = {}

    def add(self, invocation_id: str) -> None:
        self.ids.pop(invocation_id, None)
        self.ids[invocation_id] = None
        while len(self.ids) > self.keep:
            del self.ids[next(iter(self.ids))]


@dataclass(frozen=True, slots=True)
class ReadyInvocation:
    """A new invocation, planned, for the engine."""

    target: WatchTarget
    plan: Plan
    results: int  # nodes in run_results.json


@dataclass
class _TargetState:
    target: WatchTarget
    inputs: PlanInputs
    due_at: float | None = None
    complete_hint: bool = False  # a close (or rename) was seen since the last read
    last_signature: FileSignature | None = None
    # The file as last seen (at start, at a look, at the check for writes never closed).
    seen_signature: FileSignature | None = None
    bad_signature: FileSignature | None = None
    manifest_failures: int = 0
    # manifest.json was closed (or renamed into place): parse it now, before run_results.json.
    manifest_written: bool = False
    armed_inode: int | None = None
    armed_before: bool = False
    # The folder came or went: re-arm even if a recreated folder got the old inode number back.
    rearm: bool = False
    watch: Any = None  # watchdog's ObservedWatch on the folder


@dataclass(frozen=True, slots=True)
class WatchOptions:
    targets: tuple[WatchTarget, ...]
    mappings_file: Path | None = None
    polling: bool = False
    replay_latest: bool = False
    # Quiet time before a file without a close event is read, and between re-reads.
    debounce_s: float = 0.2
    # With close events, a write not followed by a close is still looked at after this.
    close_fallback_s: float = 2.0
    # How often target folders are checked for having been deleted and recreated and, with
    # close events, run_results.json for a write never closed.
    rearm_check_s: float = 1.0
    polling_interval_s: float = 0.5
    manifest_attempts: int = 5
    environ: Mapping[str, str] | None = None


class _EventQueue:
    """The handler watchdog calls: it queues and returns, nothing else happens on that thread."""

    def __init__(self, events: queue.SimpleQueue[RawEvent | None]) -> None:
        self._events = events

    def dispatch(self, event: Any) -> None:
        dest = getattr(event, "dest_path", "") or ""
        self._events.put(
            RawEvent(
                event.event_type,
                os.fsdecode(event.src_path),
                os.fsdecode(dest),
                bool(event.is_directory),
            )
        )


class ArtifactWatcher:
    """The watch loop: events -> debounced looks at run_results.json -> planned invocations.

    ``deliver`` receives each new invocation (from this loop's thread). Without an observer
    (``start_observer=False``) the loop is driven by ``feed``: the scripted tests do that.

    The run_results.json found in a target at start is the baseline, left alone, unless the
    ``ledger`` shows it was missed: the ledger has invocations the watcher took from that target
    and not this one. The newest of those was read from this very file, so the file was written
    after it, while no watcher recorded it (one was killed between dbt's write and the ledger's).
    A target the ledger has nothing from has never been watched: its file predates the watcher.
    """

    def __init__(
        self,
        options: WatchOptions,
        deliver: Callable[[ReadyInvocation], None],
        log: EventLog,
        *,
        clock: Clock | None = None,
        close_events: bool | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.options = options
        self.deliver = deliver
        self.log = log
        self.ledger = ledger
        # File events happen in real time; this clock only spaces looks and debounces.
        self.clock: Clock = clock or SystemClock()
        self.events: queue.SimpleQueue[RawEvent | None] = queue.SimpleQueue()
        self.stop_event = threading.Event()
        self._states = {
            t.target_dir: _TargetState(t, PlanInputs(t.manifest, options.mappings_file))
            for t in options.targets
        }
        self._target_dirs = {t.target_dir: t for t in options.targets}
        self._baseline: set[str] = set()
        self.taken = RecentIds()
        self._observer: Any = None
        self._parent_watches: dict[Path, Any] = {}
        self._handler = _EventQueue(self.events)
        self._close_events = close_events
        self._next_rearm_check = 0.0

    @property
    def close_events(self) -> bool:
        if self._close_events is not None:
            return self._close_events
        if self._observer is None:
            return False
        from watchdog.observers.inotify import InotifyObserver

        return isinstance(self._observer, InotifyObserver)

    # -- start and stop ---------------------------------------------------------------------------

    def start(self, *, start_observer: bool = True) -> None:
        """Take the baseline, arm the watches. Call before ``run``."""
        if start_observer:
            self._observer = self._make_observer()
            self._observer.start()
        now = self.clock.now()
        for state in self._states.values():
            self._take_baseline(state, now)
            if start_observer:
                self._arm(state, now)
        self._next_rearm_check = now + self.options.rearm_check_s
        mode = (
            "polling"
            if self.options.polling
            else ("close events" if self.close_events else "debounce")
        )
        for target in self.options.targets:
            self.log.emit("watching", target=str(target.target_dir), mode=mode)

    def _make_observer(self) -> Any:
        if self.options.polling:
            from watchdog.observers.polling import PollingObserver

            return PollingObserver(timeout=self.options.polling_interval_s)
        from watchdog.observers import Observer

        return Observer()

    def stop(self) -> None:
        self.stop_event.set()
        self.events.put(None)

    def close(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def _take_baseline(self, state: _TargetState, now: float) -> None:
        path = state.target.run_results
        state.seen_signature = signature_of(path)
        if state.seen_signature is None:
            return
        if self.options.replay_latest:
            state.due_at = now
            state.complete_hint = True
            return
        try:
            invocation = load_run_results(path)
        except ArtifactError:
            # Half-written right now (it ends after our start: it counts) or broken: either way
            # the next write is looked at.
            return
        state.last_signature = signature_of(path)
        newest = self._missed_since(state.target, invocation)
        if newest is None:
            self._baseline.add(invocation.invocation_id)
            return
        self.log.emit(
            "invocation_missed",
            target=str(state.target.target_dir),
            invocation_id=invocation.invocation_id,
            reason=f"written after {newest}, the newest invocation the ledger has from this"
            " target, and never recorded: a watcher stopped in between",
        )
        state.due_at = now
        state.complete_hint = True

    def _missed_since(self, target: WatchTarget, invocation: Invocation) -> str | None:
        """When ``invocation`` (the one in the target's run_results.json now) was missed: the id
        of the newest invocation the ledger has from ``target``, written before it. None when
        the ledger has ``invocation``, or nothing from ``target``."""
        if self.ledger is None or self.ledger.has_invocation(invocation.invocation_id):
            return None
        newest = self.ledger.newest_invocation_from(target.ledger_source)
        return newest.invocation_id if newest is not None else None

    # -- arming the folder watches ----------------------------------------------------------------

    def _arm(self, state: _TargetState, now: float) -> None:
        """(Re-)watch a target folder, and its parent to see the folder come and go."""
        from watchdog.events import (
            DirCreatedEvent,
            DirDeletedEvent,
            DirMovedEvent,
            FileClosedEvent,
            FileCreatedEvent,
            FileModifiedEvent,
            FileMovedEvent,
        )

        # With close events the writes themselves are not watched: watchdog gathers events that
        # come within a millisecond of each other and waits out another millisecond for more
        # before handing them on, so the events of dbt's last writes held up its close by that
        # millisecond, a third of the time from the close to the POST. A write never closed is
        # found by the check every rearm_check_s instead (``_notice_unclosed_write``).
        writes = [] if self.close_events else [FileCreatedEvent, FileModifiedEvent]
        folder = state.target.target_dir
        parent = folder.parent
        try:
            if parent not in self._parent_watches and parent.is_dir():
                self._parent_watches[parent] = self._observer.schedule(
                    self._handler,
                    str(parent),
                    recursive=False,
                    event_filter=[DirCreatedEvent, DirDeletedEvent, DirMovedEvent],
                )
        except OSError as exc:
            self.log.emit("watch_failed", "error", target=str(parent), **error_fields(exc))
        inode = None
        with contextlib.suppress(OSError):
            inode = folder.stat().st_ino if folder.is_dir() else None
        forced, state.rearm = state.rearm, False
        if not forced and inode == state.armed_inode and (inode is None or state.watch is not None):
            return
        if state.watch is not None:
            # A deleted folder's emitter has stopped; drop it so scheduling again starts a new one.
            with contextlib.suppress(KeyError, OSError):
                self._observer.unschedule(state.watch)
            state.watch = None
        state.armed_inode = None
        if inode is None:
            self.log.emit("target_missing", target=str(folder))
            return
        try:
            state.watch = self._observer.schedule(
                self._handler,
                str(folder),
                recursive=False,
                event_filter=[
                    *writes,
                    FileClosedEvent,
                    FileMovedEvent,
                    DirDeletedEvent,  # the folder itself, deleted
                ],
            )
        except OSError as exc:
            self.log.emit("watch_failed", "error", target=str(folder), **error_fields(exc))
            return
        state.armed_inode = inode
        if state.armed_before:
            self.log.emit("target_rearmed", target=str(folder))
        state.armed_before = True
        # The folder may have been recreated and written before this watch existed.
        state.due_at = now
        state.complete_hint = False

    # -- the loop ---------------------------------------------------------------------------------

    def run(self) -> None:
        """Until ``stop``: take events, look at files when due. Never raises."""
        while not self.stop_event.is_set():
            try:
                self.turn()
            except Exception as exc:  # the loop must outlive any one bad turn
                self.log.emit("error", "error", during="watch loop", **error_fields(exc))
                self.stop_event.wait(self.options.debounce_s)

    def turn(self, *, block: bool = True) -> None:
        now = self.clock.now()
        timeout = max(0.0, self.next_wake(now) - now) if block else 0.0
        try:
            item = self.events.get(timeout=timeout) if block else self.events.get_nowait()
        except queue.Empty:
            item = None
        while item is not None:
            self.feed(item)
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                item = None
        self.process_due(self.clock.now())

    def next_wake(self, now: float) -> float:
        due = [s.due_at for s in self._states.values() if s.due_at is not None]
        due.append(self._next_rearm_check if self._observer is not None else now + 1.0)
        return max(now, min(due))

    def feed(self, event: RawEvent) -> None:
        now = self.clock.now()
        for target, signal in classify(event, self._target_dirs):
            state = self._states[target.target_dir]
            if signal is Signal.FOLDER:
                state.rearm = True
                self._next_rearm_check = now
            elif signal is Signal.MANIFEST:
                state.manifest_written = True
            elif signal in (Signal.CLOSED, Signal.REPLACED):
                state.complete_hint = True
                state.due_at = now
            else:
                self._changed(state, now)

    def _changed(self, state: _TargetState, now: float) -> None:
        """run_results.json was written, maybe only in part."""
        if not self.close_events:
            state.due_at = now + self.options.debounce_s
        elif state.due_at is None:
            # The close is coming; look anyway later, should it never come.
            state.due_at = now + self.options.close_fallback_s

    def _notice_unclosed_write(self, state: _TargetState, now: float) -> None:
        """With close events: a run_results.json changed since it was last seen is written by a
        writer that has not closed it (yet), as a write event would have told."""
        signature = signature_of(state.target.run_results)
        if signature == state.seen_signature:
            return
        state.seen_signature = signature
        if signature is not None:
            self._changed(state, now)

    def process_due(self, now: float) -> None:
        if self._observer is not None and now >= self._next_rearm_check:
            self._next_rearm_check = now + self.options.rearm_check_s
            close_events = self.close_events
            for state in self._states.values():
                self._arm(state, now)
                if close_events:
                    self._notice_unclosed_write(state, now)
        for state in self._states.values():
            if state.manifest_written:
                state.manifest_written = False
                # Half-written or broken: planning reads it again, and reports what is wrong.
                with contextlib.suppress(ArtifactError):
                    state.inputs.manifest(written=True)
            if state.due_at is not None and state.due_at <= now:
                state.due_at = None
                try:
                    self.look(state, now)
                except Exception as exc:
                    self.log.emit(
                        "error",
                        "error",
                        during="reading the artifacts",
                        target=str(state.target.target_dir),
                        **error_fields(exc),
                    )

    # -- one look at a run_results.json -----------------------------------------------------------

    def look(self, state: _TargetState, now: float) -> None:
        """Read run_results.json if it is complete: closed (or renamed into place) since the
        last look, or unchanged since then. A file that is unchanged and still unreadable is
        reported once; anything else is looked at again after the debounce."""
        path = state.target.run_results
        signature = state.seen_signature = signature_of(path)
        complete_hint, state.complete_hint = state.complete_hint, False
        if signature is None:
            state.last_signature = None
            return
        stable = signature == state.last_signature
        state.last_signature = signature
        try:
            invocation = load_run_results(path)
        except ArtifactError as exc:
            # Even after a close: a writer may close between chunks. Only a file that stopped
            # changing is a bad file.
            if not stable:
                state.due_at = now + self.options.debounce_s
            elif signature != state.bad_signature:
                state.bad_signature = signature
                self.log.emit("file_error", "error", path=str(path), **error_fields(exc))
            return
        if invocation.invocation_id in self.taken.ids:
            return
        if not (complete_hint or stable):
            state.due_at = now + self.options.debounce_s
            return
        self.consider(state, invocation, now)

    def consider(self, state: _TargetState, invocation: Invocation, now: float) -> None:
        invocation_id = invocation.invocation_id
        if invocation_id in self.taken.ids:
            return
        fields = {
            "target": str(state.target.target_dir),
            "invocation_id": invocation_id,
            "command": invocation.command,
        }
        if invocation_id in self._baseline:
            self.taken.add(invocation_id)
            self.log.emit(
                "invocation_skipped",
                **fields,
                reason="it was there before the watcher started (use --replay-latest to act on it)",
            )
            return
        if not invocation.refreshes_data:
            self.taken.add(invocation_id)
            self.log.emit(
                "invocation_skipped",
                **fields,
                reason=f"dbt {invocation.command} refreshes no model",
            )
            return
        try:
            plan = state.inputs.plan(invocation, environ=self.options.environ)
        except ArtifactError as exc:
            state.manifest_failures += 1
            if state.manifest_failures < self.options.manifest_attempts:
                # dbt writes manifest.json just before run_results.json: it may still be in
                # flight, or (polling) not yet seen complete.
                state.due_at = now + self.options.debounce_s * state.manifest_failures
                state.complete_hint = True
                return
            state.manifest_failures = 0
            self.taken.add(invocation_id)
            self.log.emit("invocation_failed", "error", **fields, **error_fields(exc))
            return
        except HexdbtError as exc:
            # A bad mapping or template: this invocation cannot be planned; the next may be.
            state.manifest_failures = 0
            self.taken.add(invocation_id)
            self.log.emit("invocation_failed", "error", **fields, **error_fields(exc))
            return
        state.manifest_failures = 0
        self.taken.add(invocation_id)
        self.deliver(ReadyInvocation(state.target, plan, len(invocation.results)))
