"""The streaming planner: which Hex projects a running dbt invocation has made stale, so far.

Fed dbt's events one by one (from the wrapper's JSON log lines or a dbtRunner callback's queue),
it decides each mapped project as soon as the nodes finished so far settle its trigger rule, and
hands back the triggers to send while dbt keeps building. When dbt ends, ``settle`` plans the
projects still undecided from the final run_results.json.

Which nodes will still run. dbt announces no list of selected nodes; it announces how many
(``ConcurrencyLine.node_count``) and each node as it starts (``NodeStart``). Until every selected
node has started, any node of the manifest that has not finished may still run, so a project is
decidable only once all its mapped models (and, with require_tests, their tests) have finished, or
one of them failed. That count is not of every node that starts: unit tests, ephemeral models and
the batches of a microbatch model start without being counted (``COUNTED_KINDS`` says what dbt
counts). So only the started nodes of the kinds dbt counts are counted against it; once they
reach ``node_count`` the selection is known exactly, and what never started never will. A kind
hexdbt does not know is not counted: the count then stays short, and the end of the invocation
decides. More counted nodes than announced mean the count is not what hexdbt takes it for, and it
is trusted no longer. This needs no second dbt process (``dbt ls`` would cost a full dbt start and
parse, and would have to be given the build's selection flags translated), and it errs only on
the side of deciding later, never wrongly: a project decided early is decided on final results of
every node that could change its decision.

What finishes. Only what run_results.json will hold counts as finished: an ephemeral model's
NodeFinished is not (it builds nothing, and dbt leaves it out of run_results.json), nor is a
microbatch batch's (each batch starts and finishes under its model's id, inside the model's own
NodeStart and NodeFinished; the model's is the result).

Same decisions as ``hexdbt run``. The rules are ``plan.decide`` (with the nodes still pending)
and the triggers are built by ``plan.make_plan`` over the nodes finished so far, restricted to the
projects just found decidable; so a trigger built here has the key the final plan gives it (same
invocation id, project id and rendered params). A project decided while streaming is never
planned again at the end, whatever the templates render then.

Templates while streaming see ``invocation.started_at`` as the time of dbt's first event (dbt
writes the exact start only into run_results.json; the two differ by milliseconds) and
``invocation.generated_at`` as the time of the event that made the project decidable.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hexdbt.dbt.artifacts import (
    REFRESHING_COMMANDS,
    Invocation,
    Manifest,
    NodeResult,
    load_manifest,
)
from hexdbt.dbt.events import (
    DbtEvent,
    dbt_version,
    finished_node,
    selected_node_count,
    started_node,
    written_artifact,
)
from hexdbt.errors import ArtifactError, HexdbtError
from hexdbt.mapping import MappingSet
from hexdbt.mapping.model import ProjectMapping
from hexdbt.mapping.selectors import SelectorIndex
from hexdbt.planner.rules import FinishedNodes, Plan, Skipped, Trigger, decide, make_plan

Log = Callable[[str], None]
MappingLoader = Callable[[Manifest | None], MappingSet]

# The kinds of node dbt counts in ConcurrencyLine.node_count, by the first part of their unique
# id, as read in dbt-core 1.8 to 1.11: every node of its queue of selected nodes but ephemeral
# models (which are models: told apart by the manifest). A build runs unit tests outside that
# queue, just before their model, and adds them to its count only after announcing it (in
# `dbt test` they are counted: leaving them out only makes the count fall short).
COUNTED_KINDS = frozenset({"model", "seed", "snapshot", "test", "saved_query", "exposure"})


@dataclass(frozen=True, slots=True)
class Settlement:
    """What the end of the invocation adds: the triggers still to send, and the whole plan
    (streamed and settled decisions together, one per mapped project) for the report."""

    plan: Plan
    new_triggers: tuple[Trigger, ...]


@dataclass
class _Watched:
    """A mapped project and the nodes that can still change its decision."""

    mapping: ProjectMapping
    matched: frozenset[str]
    relevant: frozenset[str]  # matched models and the tests attached to them


@dataclass
class StreamPlanner:
    """Decide mapped Hex projects while a dbt invocation runs. Used from one thread.

    ``load_mappings(manifest)`` gives the mapping set once dbt has written the manifest (the
    manifest is needed for exposures and selectors); ``manifest_path`` is where to look for the
    manifest when dbt does not say (dbt before 1.9 has no ``ArtifactWritten`` event).
    """

    load_mappings: MappingLoader
    command: str
    dbt_vars: Mapping[str, Any] = field(default_factory=dict)
    manifest_path: Path | None = None
    environ: Mapping[str, str] | None = None
    log: Log = field(default=lambda _message: None)

    invocation_id: str | None = field(default=None, init=False)
    manifest: Manifest | None = field(default=None, init=False)
    mappings: MappingSet | None = field(default=None, init=False)
    run_results_path: Path | None = field(default=None, init=False)
    dbt_version: str = field(default="unknown", init=False)
    started_at: str = field(default="", init=False)
    node_count: int | None = field(default=None, init=False)
    decided: dict[str, Trigger | Skipped] = field(default_factory=dict, init=False)
    # When each streamed trigger was decided (the event's timestamp), for reports and benchmarks.
    decided_at: dict[str, str] = field(default_factory=dict, init=False)
    _finished: FinishedNodes = field(default_factory=FinishedNodes, init=False)
    _results: list[NodeResult] = field(default_factory=list, init=False)
    _started: set[str] = field(default_factory=set, init=False)
    _counted_started: set[str] = field(default_factory=set, init=False)
    # NodeStarts not yet followed by their NodeFinished, by node: above one, batches run inside.
    _running: Counter[str] = field(default_factory=Counter, init=False)
    _watched: list[_Watched] = field(default_factory=list, init=False)
    _watchers_of: dict[str, list[_Watched]] = field(default_factory=dict, init=False)
    _emitted_keys: dict[str, str] = field(default_factory=dict, init=False)
    _streaming: bool = field(default=True, init=False)

    @property
    def selection_known(self) -> bool:
        """Every node dbt counted has started: what has not started will not run."""
        return self.node_count is not None and len(self._counted_started) == self.node_count

    @property
    def finished_results(self) -> tuple[NodeResult, ...]:
        return tuple(self._results)

    # -- feeding ----------------------------------------------------------------------------------

    def feed(self, event: DbtEvent) -> list[Trigger]:
        """Take one event; return the triggers it made decidable (usually none)."""
        if self.invocation_id is None and event.invocation_id:
            self.invocation_id = event.invocation_id
            self.started_at = event.ts
        elif event.invocation_id and event.invocation_id != self.invocation_id:
            return []  # a nested invocation's events; not this command's nodes
        version = dbt_version(event)
        if version:
            self.dbt_version = version
            return []
        artifact = written_artifact(event)
        if artifact is not None:
            self._on_artifact(Path(artifact))
            return []
        count = selected_node_count(event)
        if count is not None:
            self.node_count = count
            self._ensure_manifest()
            return self._evaluate(self._watched, event) if self.selection_known else []
        unique_id = started_node(event)
        if unique_id is not None:
            self._ensure_manifest()
            self._running[unique_id] += 1
            return self._evaluate(self._watched, event) if self._note_started(unique_id) else []
        result = finished_node(event)
        if result is not None:
            if self._running[result.unique_id] > 1:
                self._running[result.unique_id] -= 1
                return []  # a batch of a microbatch model: the model's own result comes last
            self._running.pop(result.unique_id, None)
            became_known = self._note_started(result.unique_id)
            if self._builds_nothing(result.unique_id):
                self._started.discard(result.unique_id)  # ran, and leaves no result to wait for
                return self._evaluate(self._watched, event) if became_known else []
            self._finished.add(result)
            self._results.append(result)
            candidates = self._watched if became_known else self._watchers_of.get(result.unique_id)
            return self._evaluate(candidates or (), event)
        return []

    def _note_started(self, unique_id: str) -> bool:
        """Take note of a node that started; True when that makes the selection known."""
        was_known = self.selection_known
        self._started.add(unique_id)
        if self._counted_by_dbt(unique_id):
            self._counted_started.add(unique_id)
        return self.selection_known and not was_known

    def _counted_by_dbt(self, unique_id: str) -> bool:
        kind = unique_id.split(".", 1)[0]
        if kind != "model":
            return kind in COUNTED_KINDS
        # A model the manifest does not know cannot be told from an ephemeral one: not counted.
        return self._materialization(unique_id) not in (None, "ephemeral")

    def _builds_nothing(self, unique_id: str) -> bool:
        """An ephemeral model: dbt runs it, but it writes no data and no run_results.json entry."""
        return self._materialization(unique_id) == "ephemeral"

    def _materialization(self, unique_id: str) -> str | None:
        node = self.manifest.nodes.get(unique_id) if self.manifest is not None else None
        if node is None:
            return None
        materialized = node.config.get("materialized")
        return materialized if isinstance(materialized, str) else ""

    def _on_artifact(self, path: Path) -> None:
        if path.name == "manifest.json" and self.manifest is None:
            self._load_manifest(path)
        elif path.name == "run_results.json":
            self.run_results_path = path

    def _ensure_manifest(self) -> None:
        """Without an ArtifactWritten event, read the manifest dbt wrote after parsing."""
        if self.manifest is None and self._streaming and self.manifest_path is not None:
            self._load_manifest(self.manifest_path)

    def _load_manifest(self, path: Path) -> None:
        try:
            self.manifest = load_manifest(path)
            self.mappings = self.load_mappings(self.manifest)
        except HexdbtError as exc:
            # Streaming is an optimisation: the end of the invocation plans everything anyway,
            # and reports the error then if it persists.
            self._streaming = False
            self.manifest = None
            self.mappings = None
            self.log(f"cannot plan while dbt runs ({exc}); planning when dbt ends")
            return
        self._watch(self.manifest, self.mappings)

    def _watch(self, manifest: Manifest, mappings: MappingSet) -> None:
        if self.command not in REFRESHING_COMMANDS:
            return  # nothing to trigger; the final plan says why for each project
        index = SelectorIndex(manifest)
        for mapping in mappings.projects:
            if not mapping.enabled:
                continue
            matched = index.resolve_all(mapping.models)
            if not matched:
                continue  # a selector matching nothing: the final plan reports it
            tests = {test for model in matched for test in manifest.tests_of(model)}
            watched = _Watched(mapping, matched, frozenset(matched | tests))
            self._watched.append(watched)
            for unique_id in watched.relevant:
                self._watchers_of.setdefault(unique_id, []).append(watched)

    # -- deciding ---------------------------------------------------------------------------------

    def _pending(self, watched: _Watched) -> frozenset[str]:
        done = self._finished.results
        if self.selection_known:
            return frozenset(uid for uid in watched.relevant & self._started if uid not in done)
        return frozenset(uid for uid in watched.relevant if uid not in done)

    def _evaluate(self, candidates: Sequence[_Watched], event: DbtEvent) -> list[Trigger]:
        if not self._streaming or self.manifest is None:
            return []
        manifest = self.manifest
        decidable = [
            watched.mapping
            for watched in candidates
            if watched.mapping.name not in self.decided
            and decide(
                watched.mapping,
                watched.matched,
                self._finished,
                manifest.tests_of,
                self._pending(watched),
            )
            is not None
        ]
        if not decidable:
            return []
        plan = make_plan(
            self._invocation_so_far(event.ts),
            MappingSet(projects=tuple(decidable)),
            manifest,
            environ=self._environ(),
        )
        for skipped in plan.skipped:
            self.decided[skipped.name] = skipped
        return self._emit(plan.triggers, decided_at=event.ts)

    def _emit(self, triggers: Sequence[Trigger], *, decided_at: str | None) -> list[Trigger]:
        """Keep each trigger key once per invocation: a second mapping of the same project and
        params is reported as such, exactly as make_plan does within one plan."""
        fresh = []
        for trigger in triggers:
            first = self._emitted_keys.get(trigger.trigger_key)
            if first is not None and first != trigger.name:
                self.decided[trigger.name] = Skipped(
                    trigger.name,
                    trigger.project_id,
                    f"same Hex project and params as {first}: triggered once",
                )
                continue
            self._emitted_keys[trigger.trigger_key] = trigger.name
            self.decided[trigger.name] = trigger
            if decided_at is not None:
                self.decided_at[trigger.name] = decided_at
            fresh.append(trigger)
        return fresh

    def _environ(self) -> Mapping[str, str]:
        return dict(os.environ) if self.environ is None else self.environ

    def _invocation_so_far(self, now_ts: str) -> Invocation:
        return Invocation(
            invocation_id=self.invocation_id or "unknown",
            command=self.command,
            started_at=self.started_at,
            generated_at=now_ts,
            dbt_version=self.dbt_version,
            vars=dict(self.dbt_vars),
            results=tuple(self._results),
        )

    # -- the end ----------------------------------------------------------------------------------

    def settle(
        self,
        final: Invocation | None,
        *,
        manifest: Manifest | None = None,
        undecided_reason: str | None = None,
    ) -> Settlement:
        """Plan what the stream left undecided, from the invocation's run_results.json.

        ``final`` None (dbt wrote no run_results.json for this invocation) or an
        ``undecided_reason`` (dbt was interrupted) leaves every undecided project skipped with
        that reason: nothing new starts after an interruption.
        """
        manifest = self.manifest or manifest
        mappings = self.mappings
        if mappings is None:
            mappings = self.load_mappings(manifest)
        command = final.command if final is not None else self.command
        invocation_id = final.invocation_id if final is not None else self.invocation_id
        if final is not None and undecided_reason is None:
            full = make_plan(final, mappings, manifest, environ=self._environ())
            settled: dict[str, Trigger | Skipped] = {t.name: t for t in full.triggers}
            settled.update({s.name: s for s in full.skipped})
        else:
            reason = undecided_reason or "dbt wrote no run_results.json for this invocation"
            settled = {m.name: Skipped(m.name, m.project_id, reason) for m in mappings.projects}

        new_triggers: list[Trigger] = []
        for mapping in mappings.projects:
            streamed = self.decided.get(mapping.name)
            final_decision = settled.get(mapping.name)
            if streamed is not None:
                if final is not None and isinstance(streamed, Trigger) != isinstance(
                    final_decision, Trigger
                ):
                    self.log(
                        f"{mapping.name}: decided while dbt ran"
                        f" ({'triggered' if isinstance(streamed, Trigger) else 'skipped'});"
                        " the final results would decide otherwise; kept as decided"
                    )
                continue
            if isinstance(final_decision, Trigger):
                new_triggers.extend(self._emit([final_decision], decided_at=None))
            elif final_decision is not None:
                self.decided[mapping.name] = final_decision

        ordered = [self.decided[m.name] for m in mappings.projects if m.name in self.decided]
        plan = Plan(
            invocation_id=invocation_id or "unknown",
            command=command,
            triggers=tuple(d for d in ordered if isinstance(d, Trigger)),
            skipped=tuple(d for d in ordered if isinstance(d, Skipped)),
        )
        return Settlement(plan=plan, new_triggers=tuple(new_triggers))


def load_final_invocation(path: Path, invocation_id: str | None) -> Invocation | None:
    """run_results.json if dbt wrote it for this invocation (a crash can leave an older one)."""
    from hexdbt.dbt.artifacts import load_run_results

    try:
        invocation = load_run_results(path)
    except ArtifactError:
        return None
    if invocation_id is not None and invocation.invocation_id != invocation_id:
        return None
    return invocation
