"""The watch loop driven by scripted event sequences: no observer, a manual clock, real files.

Each test writes the file state a moment of dbt's writing leaves behind, feeds the event watchdog
would deliver, and lets the clock move: the edge cases (empty file, half-written file, a close
between chunks, a missing manifest, a folder coming and going) without timing luck.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from dbt_shapes import manifest_document, model, run_results_document, write_json

from hexdbt.clock import ManualClock
from hexdbt.errors import ConfigError
from hexdbt.feeders.artifact_watch import ArtifactWatcher, ReadyInvocation, RecentIds, WatchOptions
from hexdbt.feeders.watch_events import RawEvent, Signal, classify
from hexdbt.feeders.watch_targets import WatchTarget, resolve_targets
from hexdbt.logs import LogFormat, MemoryEventLog, StreamEventLog
from hexdbt.planner.inputs import PlanInputs

MAPPINGS = """\
version: 1
projects:
  - name: health
    project_id: p-health
    models: [customers]
"""
BUILD = run_results_document({"model.shop.customers": "success"}, invocation_id="inv-1")


class Script:
    def __init__(self, tmp_path: Path, *, close_events: bool, replay_latest: bool = False) -> None:
        self.folder = tmp_path / "target"
        self.folder.mkdir(exist_ok=True)
        write_json(self.folder / "manifest.json", manifest_document([model("customers")]))
        mappings = tmp_path / "hex_mappings.yml"
        mappings.write_text(MAPPINGS, encoding="utf-8")
        self.target = WatchTarget(self.folder)
        self.clock = ManualClock()
        self.log = MemoryEventLog()
        self.ready: list[ReadyInvocation] = []
        self.watcher = ArtifactWatcher(
            WatchOptions(
                targets=(self.target,),
                mappings_file=mappings,
                debounce_s=0.2,
                close_fallback_s=2.0,
                replay_latest=replay_latest,
                environ={},
            ),
            self.ready.append,
            self.log,
            clock=self.clock,
            close_events=close_events,
        )
        self.watcher.start(start_observer=False)

    @property
    def results(self) -> Path:
        return self.target.run_results

    def event(self, event_type: str, path: Path | None = None, dest: Path | None = None) -> None:
        self.watcher.feed(
            RawEvent(event_type, str(path or self.results), str(dest) if dest else "")
        )
        self.watcher.process_due(self.clock.now())

    def after(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.watcher.process_due(self.clock.now())

    def delivered(self) -> list[str]:
        return [item.plan.invocation_id for item in self.ready]


def test_close_events_act_on_the_close_not_on_the_partial_writes(tmp_path: Path) -> None:
    script = Script(tmp_path, close_events=True)
    text = json.dumps(BUILD)
    script.results.write_text("")
    script.event("modified")
    script.results.write_text(text[:40])
    script.event("modified")
    assert script.delivered() == []
    script.results.write_text(text)
    script.event("modified")
    script.event("closed")
    assert script.delivered() == ["inv-1"]
    # Our own read closes the file without writing: classified as nothing.
    script.event("closed_no_write")
    script.after(5)
    assert script.delivered() == ["inv-1"]
    assert script.log.of("file_error") == []


def test_a_close_between_chunks_waits_for_the_file_to_stop_changing(tmp_path: Path) -> None:
    """A writer closing after half the JSON: not a bad file, just not done yet."""
    script = Script(tmp_path, close_events=True)
    text = json.dumps(BUILD)
    script.results.write_text(text[:50])
    script.event("closed")
    assert script.delivered() == []
    script.results.write_text(text)  # appended and closed again before the re-read
    script.event("closed")
    assert script.delivered() == ["inv-1"]
    assert script.log.of("file_error") == []


def test_without_close_events_the_file_is_read_once_stable(tmp_path: Path) -> None:
    script = Script(tmp_path, close_events=False)
    script.results.write_text("")
    script.event("modified")
    script.after(0.1)
    assert script.delivered() == []  # still inside the debounce
    script.after(0.2)
    assert script.delivered() == []  # empty: looked again later
    write_json(script.results, BUILD)
    script.event("modified")
    script.after(0.25)
    assert script.delivered() == []  # parses, but changed since the last look
    script.after(0.25)
    assert script.delivered() == ["inv-1"]


def test_a_write_with_no_close_is_still_read_after_the_fallback(tmp_path: Path) -> None:
    script = Script(tmp_path, close_events=True)
    write_json(script.results, BUILD)
    script.event("modified")
    script.after(1.0)
    assert script.delivered() == []
    script.after(1.1)
    script.after(0.25)
    assert script.delivered() == ["inv-1"]


def test_a_corrupt_file_is_reported_once_when_it_stops_changing(tmp_path: Path) -> None:
    script = Script(tmp_path, close_events=True)
    script.results.write_text('{"metadata": oops}')
    script.event("closed")
    assert script.log.of("file_error") == []
    script.after(0.25)
    script.event("closed")  # closed again, unchanged
    script.after(0.25)
    (error,) = script.log.of("file_error")
    assert "run_results.json is not JSON" in error["error"]
    write_json(script.results, BUILD)
    script.event("closed")
    assert script.delivered() == ["inv-1"]


def test_a_rename_into_place_is_complete_at_once(tmp_path: Path) -> None:
    script = Script(tmp_path, close_events=False)
    staged = script.folder / "run_results.json.tmp"
    write_json(staged, BUILD)
    staged.rename(script.results)
    script.event("moved", staged, script.results)
    assert script.delivered() == ["inv-1"]


def test_a_manifest_still_missing_is_waited_for(tmp_path: Path) -> None:
    script = Script(tmp_path, close_events=True)
    manifest = script.folder / "manifest.json"
    content = manifest.read_text()
    manifest.unlink()
    write_json(script.results, BUILD)
    script.event("closed")
    assert script.delivered() == []
    manifest.write_text(content)
    script.after(0.25)
    assert script.delivered() == ["inv-1"]


def test_a_manifest_that_never_comes_fails_the_invocation_once(tmp_path: Path) -> None:
    script = Script(tmp_path, close_events=True)
    (script.folder / "manifest.json").unlink()
    write_json(script.results, BUILD)
    script.event("closed")
    for _ in range(10):
        script.after(2)
    (failed,) = script.log.of("invocation_failed")
    assert "manifest.json not found" in failed["error"]
    assert script.delivered() == []


def _overwrite_keeping_signature(path: Path, text: str) -> None:
    """Rewrite a file in place with text of the same length and put its mtime back: the file
    looks unchanged to a stat, so only a parse made earlier can still see the old content."""
    before = path.stat()
    assert len(text.encode()) == before.st_size
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_closed_manifest_is_parsed_before_run_results_arrives(tmp_path: Path) -> None:
    script = Script(tmp_path, close_events=True)
    manifest = script.folder / "manifest.json"
    script.event("closed", manifest)
    # From here on only the parse taken at the close can plan the invocation.
    _overwrite_keeping_signature(manifest, "x" * manifest.stat().st_size)
    write_json(script.results, BUILD)
    script.event("closed")
    assert script.delivered() == ["inv-1"]


def test_the_selector_index_is_kept_while_the_manifest_is_unchanged(tmp_path: Path) -> None:
    manifest_path = tmp_path / "manifest.json"
    write_json(manifest_path, manifest_document([model("customers")]))
    inputs = PlanInputs(manifest_path, None)
    manifest = inputs.manifest()
    assert inputs.manifest() is manifest
    assert inputs.selectors(manifest) is inputs.selectors(manifest)
    write_json(manifest_path, manifest_document([model("customers"), model("orders")]))
    changed = inputs.manifest()
    assert changed is not manifest
    assert len(changed.nodes) == 2
    assert inputs.selectors(changed).manifest is changed


@pytest.mark.parametrize("closed", [False, True])
def test_a_rewritten_manifest_is_parsed_again(tmp_path: Path, closed: bool) -> None:
    script = Script(tmp_path, close_events=True)
    manifest = script.folder / "manifest.json"
    write_json(script.results, BUILD)
    script.event("closed")
    if closed:
        # Rewritten within the clock tick: same size and mtime; only the close tells.
        _overwrite_keeping_signature(manifest, "x" * manifest.stat().st_size)
        script.event("closed", manifest)
    else:
        manifest.write_text("{not json", encoding="utf-8")
    later = run_results_document({"model.shop.customers": "success"}, invocation_id="inv-2")
    write_json(script.results, later)
    script.event("closed")
    for _ in range(10):
        script.after(2)
    (failed,) = script.log.of("invocation_failed")
    assert failed["invocation_id"] == "inv-2"
    assert "manifest.json is" in failed["error"]
    assert script.delivered() == ["inv-1"]


def _projects_of_two_builds(script: Script, between: Callable[[], None]) -> list[list[str]]:
    """The Hex projects planned for two builds, with ``between`` done after the first."""
    write_json(script.results, BUILD)
    script.event("closed")
    between()
    later = run_results_document({"model.shop.customers": "success"}, invocation_id="inv-2")
    write_json(script.results, later)
    script.event("closed")
    return [[trigger.project_id for trigger in item.plan.triggers] for item in script.ready]


def test_an_edited_mapping_applies_to_the_next_invocation(tmp_path: Path) -> None:
    script = Script(tmp_path, close_events=True)
    mappings = tmp_path / "hex_mappings.yml"
    edited = MAPPINGS.replace("p-health", "p-health-v2")
    assert _projects_of_two_builds(
        script, lambda: mappings.write_text(edited, encoding="utf-8")
    ) == [["p-health"], ["p-health-v2"]]


def test_an_unchanged_mapping_is_not_read_again(tmp_path: Path) -> None:
    script = Script(tmp_path, close_events=True)
    mappings = tmp_path / "hex_mappings.yml"
    disguised = MAPPINGS.replace("p-health", "p-wrong!")
    assert _projects_of_two_builds(
        script, lambda: _overwrite_keeping_signature(mappings, disguised)
    ) == [["p-health"], ["p-health"]]


def test_the_same_invocation_closed_twice_is_taken_once(tmp_path: Path) -> None:
    script = Script(tmp_path, close_events=True)
    write_json(script.results, BUILD)
    script.event("closed")
    script.event("closed")
    assert script.delivered() == ["inv-1"]


def test_the_file_present_at_start_is_skipped_and_later_ones_are_not(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    write_json(tmp_path / "target" / "run_results.json", BUILD)
    script = Script(tmp_path, close_events=True)
    script.event("closed")  # e.g. touched
    assert script.delivered() == []
    (skipped,) = script.log.of("invocation_skipped")
    assert "before the watcher started" in skipped["reason"]
    later = run_results_document({"model.shop.customers": "success"}, invocation_id="inv-2")
    write_json(script.results, later)
    script.event("closed")
    assert script.delivered() == ["inv-2"]


def test_replay_latest_acts_on_the_file_present_at_start(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    write_json(tmp_path / "target" / "run_results.json", BUILD)
    script = Script(tmp_path, close_events=True, replay_latest=True)
    script.after(0)
    assert script.delivered() == ["inv-1"]


@pytest.mark.parametrize("command", ["compile", "show", "docs", "run-operation", "test"])
def test_commands_that_refresh_nothing_are_skipped(tmp_path: Path, command: str) -> None:
    script = Script(tmp_path, close_events=True)
    document = run_results_document(
        {"model.shop.customers": "success"}, invocation_id="inv-c", command=command
    )
    write_json(script.results, document)
    script.event("closed")
    assert script.delivered() == []
    (skipped,) = script.log.of("invocation_skipped")
    assert skipped["reason"] == f"dbt {command} refreshes no model"


def test_a_deleted_and_recreated_folder_is_followed_by_its_next_file(tmp_path: Path) -> None:
    script = Script(tmp_path, close_events=True)
    write_json(script.results, BUILD)
    script.event("closed")
    for child in script.folder.iterdir():
        child.unlink()
    script.folder.rmdir()
    script.watcher.feed(RawEvent("deleted", str(script.folder), "", True))
    script.after(0.5)  # a look at a missing file is nothing
    script.folder.mkdir()
    script.watcher.feed(RawEvent("created", str(script.folder), "", True))
    write_json(script.folder / "manifest.json", manifest_document([model("customers")]))
    later = run_results_document({"model.shop.customers": "success"}, invocation_id="inv-2")
    write_json(script.results, later)
    script.event("created")
    script.event("closed")
    assert script.delivered() == ["inv-1", "inv-2"]


def test_classify_keeps_only_what_concerns_a_target(tmp_path: Path) -> None:
    target = WatchTarget(tmp_path / "target")
    targets = {target.target_dir: target}
    results = str(target.run_results)

    def kinds(event: RawEvent) -> list[Signal]:
        return [signal for _, signal in classify(event, targets)]

    assert kinds(RawEvent("closed", results)) == [Signal.CLOSED]
    assert kinds(RawEvent("modified", results)) == [Signal.CHANGED]
    assert kinds(RawEvent("created", results)) == [Signal.CHANGED]
    assert kinds(RawEvent("moved", results + ".tmp", results)) == [Signal.REPLACED]
    assert kinds(RawEvent("opened", results)) == []
    assert kinds(RawEvent("closed_no_write", results)) == []
    assert kinds(RawEvent("deleted", results)) == []
    assert kinds(RawEvent("closed", str(target.manifest))) == [Signal.MANIFEST]
    assert kinds(RawEvent("moved", str(target.manifest) + ".tmp", str(target.manifest))) == [
        Signal.MANIFEST
    ]
    assert kinds(RawEvent("modified", str(target.manifest))) == []
    assert kinds(RawEvent("closed", str(tmp_path / "other" / "run_results.json"))) == []
    assert kinds(RawEvent("deleted", str(target.target_dir), "", True)) == [Signal.FOLDER]
    assert kinds(RawEvent("created", str(target.target_dir), "", True)) == [Signal.FOLDER]
    assert kinds(RawEvent("moved", str(tmp_path / "x"), str(target.target_dir), True)) == [
        Signal.FOLDER
    ]
    assert kinds(RawEvent("modified", str(target.target_dir), "", True)) == []


def test_recent_ids_keep_only_the_newest() -> None:
    recent = RecentIds(keep=3)
    for name in "abcda":
        recent.add(name)
    assert list(recent.ids) == ["c", "d", "a"]


def _project(folder: Path, target_path: str | None = None) -> Path:
    folder.mkdir(parents=True)
    text = "name: shop\n" + (f"target-path: {target_path}\n" if target_path else "")
    (folder / "dbt_project.yml").write_text(text, encoding="utf-8")
    return folder


def test_targets_resolve_as_dbt_resolves_them(tmp_path: Path) -> None:
    one = _project(tmp_path / "one")
    two = _project(tmp_path / "two", "build")
    assert resolve_targets([one, two], [], cwd=tmp_path) == [
        WatchTarget(one / "target", one),
        WatchTarget(two / "build", two),
    ]
    assert [t.target_dir for t in resolve_targets([one], [Path("a"), Path("b")])] == [
        one / "a",
        one / "b",
    ]
    assert [t.target_dir for t in resolve_targets([one, two], [Path("x"), Path("y")])] == [
        one / "x",
        two / "y",
    ]
    absolute = tmp_path / "elsewhere" / "target"
    absolute.parent.mkdir()
    assert resolve_targets([], [absolute], cwd=tmp_path) == [WatchTarget(absolute)]
    assert resolve_targets([], [], cwd=one / "target")[0].target_dir == one / "target"


def test_unpairable_targets_are_a_usage_error(tmp_path: Path) -> None:
    one, two = _project(tmp_path / "one"), _project(tmp_path / "two")
    with pytest.raises(ConfigError, match=r"2 --project-dir and 3 --target-path") as caught:
        resolve_targets([one, two], [Path("a"), Path("b"), Path("c")])
    assert caught.value.exit_code == 2


def test_a_target_whose_parent_is_missing_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "target"
    with pytest.raises(ConfigError, match=r"its parent folder .*nowhere does not exist"):
        resolve_targets([], [missing])


def test_json_log_lines_are_one_object_each(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    with path.open("w", encoding="utf-8") as stream:
        log = StreamEventLog(stream, log_format=LogFormat.JSON, clock=ManualClock())
        log.emit("invocation_skipped", invocation_id="i", reason="dbt compile refreshes no model")
        log.emit("file_error", "error", path="/x/run_results.json", error="boom")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {
            "time": "2026-01-01T00:00:00.000Z",
            "level": "info",
            "event": "invocation_skipped",
            "invocation_id": "i",
            "reason": "dbt compile refreshes no model",
        },
        {
            "time": "2026-01-01T00:00:00.000Z",
            "level": "error",
            "event": "file_error",
            "path": "/x/run_results.json",
            "error": "boom",
        },
    ]


def test_text_log_lines_read_as_key_value_pairs(tmp_path: Path) -> None:
    path = tmp_path / "log.txt"
    with path.open("w", encoding="utf-8") as stream:
        log = StreamEventLog(stream, clock=ManualClock())
        log.emit("invocation_submitted", invocation_id="i", triggers=["a", "b"], skipped=[])
        log.emit("invocation_skipped", reason="dbt compile refreshes no model")
    assert path.read_text().splitlines() == [
        '2026-01-01T00:00:00.000Z INFO invocation_submitted invocation_id=i triggers=["a","b"]',
        '2026-01-01T00:00:00.000Z INFO invocation_skipped reason="dbt compile refreshes no model"',
    ]
