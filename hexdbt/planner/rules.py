"""From what dbt did to which Hex projects to run: a pure function, no I/O and no clock.

    make_plan(invocation, mappings, manifest) -> Plan(triggers, skipped)

The rules, per mapped project (docs/mapping.md has the user's version):

1. a disabled mapping, or a command that refreshes nothing (compile, show, test, ...) -> skipped;
2. one of its models failed (error, partial success) or was skipped because something upstream
   failed -> skipped, whatever the trigger rule: a Hex app on broken data is worse than a stale one;
3. ``any``: at least one of its models refreshed (status success); ``all``: every one of them did;
4. ``require_tests``: every test attached to a refreshed model ran in this invocation and passed
   (``warn`` counts as a pass);
5. its input params render; a template error skips this project only, marked as an error.

One Hex project with the same rendered params is triggered once per invocation (by trigger key).
``decide`` is the rule evaluation on its own; given the nodes still to run (``pending``) it says
whether a project is decidable yet, which is what a streaming wrapper needs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hexdbt.dbt.artifacts import (
    FAILED_STATUSES,
    PASSING_TEST_STATUSES,
    REFRESHED_STATUSES,
    Invocation,
    Manifest,
    NodeResult,
    node_name,
)
from hexdbt.hex.models import Notification, RunRequest
from hexdbt.mapping.model import MappingSet, ProjectMapping, TriggerRule
from hexdbt.mapping.selectors import SelectorIndex, resolve_without_manifest
from hexdbt.mapping.templates import TemplateError, build_context, render_value


@dataclass(frozen=True, slots=True)
class Trigger:
    """One Hex project to run, with the RunProject body it is sent with (the ledger keeps it)."""

    name: str
    project_id: str
    request: RunRequest
    wait: bool
    timeout_minutes: float
    cancel_on_timeout: bool
    trigger_key: str
    reason: str
    # The mapped models whose refresh made this project stale.
    models: tuple[str, ...] = ()
    # Mapped by `discover: auto` (from the discovery cache), not by the file or an exposure.
    discovered: bool = False
    # The mapping entry it comes from (None: asked for directly, not mapped).
    entry_key: str | None = None
    # Whether a later build's trigger of the same entry supersedes it while it waits unsent.
    coalesce: bool = False
    # When more triggers wait than the budget allows, higher goes first.
    priority: int = 0
    # The entry's app is started at most this often.
    min_interval_s: float | None = None
    # The app's freshness target (kept with the trigger, so the state alone can judge it).
    freshness_s: float | None = None

    @property
    def input_params(self) -> Mapping[str, Any]:
        return self.request.input_params


@dataclass(frozen=True, slots=True)
class Skipped:
    name: str
    project_id: str
    reason: str
    # True when the project was not triggered because something is wrong (a template error, a
    # selector matching nothing), as opposed to simply not being stale.
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    invocation_id: str
    command: str
    triggers: tuple[Trigger, ...]
    skipped: tuple[Skipped, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "invocation_id": self.invocation_id,
            "command": self.command,
            "triggers": [
                {
                    "name": trigger.name,
                    "project_id": trigger.project_id,
                    "input_params": dict(trigger.input_params),
                    "reason": trigger.reason,
                    "trigger_key": trigger.trigger_key,
                    "models": list(trigger.models),
                    "discovered": trigger.discovered,
                    "coalesce": trigger.coalesce,
                    "priority": trigger.priority,
                    "update_published_results": trigger.request.update_published_results,
                    "use_cached_sql_results": trigger.request.use_cached_sql_results,
                    "view_id": trigger.request.view_id,
                    "notifications": [item.to_api() for item in trigger.request.notifications],
                    "wait": trigger.wait,
                    "timeout_minutes": trigger.timeout_minutes,
                    "cancel_on_timeout": trigger.cancel_on_timeout,
                }
                for trigger in self.triggers
            ],
            "skipped": [
                {
                    "name": skipped.name,
                    "project_id": skipped.project_id,
                    "reason": skipped.reason,
                    "is_error": skipped.is_error,
                }
                for skipped in self.skipped
            ],
        }


@dataclass(frozen=True, slots=True)
class Decision:
    trigger: bool
    reason: str
    refreshed: tuple[str, ...] = ()


def trigger_key(invocation_id: str, project_id: str, input_params: Mapping[str, Any]) -> str:
    """A stable hash of (invocation, project, params): the ledger's once-only key."""
    canonical = json.dumps(
        [invocation_id, project_id, input_params],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def entry_key(mapping: ProjectMapping) -> str:
    """The identity of a mapping entry across builds: its Hex project under its name (a file's
    entry, or an exposure's)."""
    return f"{mapping.project_id}/{mapping.name}"


def _names(unique_ids: Sequence[str], limit: int = 3) -> str:
    # Only the names shown are worked out: a tag can match thousands of models.
    names = [node_name(unique_id) for unique_id in unique_ids[:limit]]
    if len(unique_ids) <= limit:
        return ", ".join(names)
    return f"{', '.join(names)} and {len(unique_ids) - limit} more"


def _failure_reason(failures: list[NodeResult]) -> str:
    """``orders failed; revenue_daily was skipped (an upstream node failed)``."""
    parts = []
    errored = [
        result.unique_id
        for result in failures
        if result.status not in ("skipped", "partial success")
    ]
    partial = [result.unique_id for result in failures if result.status == "partial success"]
    skipped = [result.unique_id for result in failures if result.status == "skipped"]
    if errored:
        parts.append(f"{_names(errored)} failed")
    if partial:
        parts.append(f"{_names(partial)} only partly succeeded")
    if skipped:
        verb = "was" if len(skipped) == 1 else "were"
        parts.append(f"{_names(skipped)} {verb} skipped (an upstream node failed)")
    return "; ".join(parts)


class FinishedNodes:
    """The nodes an invocation has finished so far, with the sets the rules ask about.

    Built once per plan (or grown with ``add`` as a streaming wrapper hears of each node), so
    each project's rules are set intersections rather than scans of every result.
    """

    def __init__(self, results: Iterable[NodeResult] = ()) -> None:
        # Comprehensions rather than add() per result: a build of 40,000 nodes is planned in
        # a fraction of the time. The last result of a node counts, as in add().
        self.results: dict[str, NodeResult] = {result.unique_id: result for result in results}
        self.refreshed: set[str] = {
            uid for uid, result in self.results.items() if result.status in REFRESHED_STATUSES
        }
        self.failed: set[str] = {
            uid
            for uid, result in self.results.items()
            if result.status in FAILED_STATUSES and result.status not in REFRESHED_STATUSES
        }

    @classmethod
    def of_invocation(cls, invocation: Invocation) -> FinishedNodes:
        """The nodes a whole invocation finished; the same as ``FinishedNodes(invocation.results)``
        but from the sets the Invocation gathered as it was read."""
        finished = cls()
        finished.results = dict(invocation.results_by_id)
        finished.refreshed = set(invocation.refreshed_ids)
        finished.failed = set(invocation.failed_ids)
        return finished

    def add(self, result: NodeResult) -> None:
        previous = self.results.get(result.unique_id)
        if previous is not None:  # dbt retry can report a node again: the last word counts
            self.refreshed.discard(previous.unique_id)
            self.failed.discard(previous.unique_id)
        self.results[result.unique_id] = result
        if result.refreshed:
            self.refreshed.add(result.unique_id)
        elif result.failed:
            self.failed.add(result.unique_id)


def decide(
    mapping: ProjectMapping,
    matched: frozenset[str] | set[str],
    finished: FinishedNodes,
    tests_of: Callable[[str], tuple[str, ...]] | None,
    pending: frozenset[str] = frozenset(),
) -> Decision | None:
    """Apply the trigger rules to one project's matched models.

    ``finished`` holds the nodes finished so far, ``pending`` the nodes the invocation will still
    run (empty once it has ended). None means "not decidable yet": a pending model could still
    fail, or a pending test decide require_tests.
    """
    results = finished.results
    failed_ids = matched & finished.failed
    if failed_ids:
        return Decision(False, _failure_reason([results[uid] for uid in sorted(failed_ids)]))
    if pending and not pending.isdisjoint(matched):
        return None
    refreshed = tuple(sorted(matched & finished.refreshed))
    if not refreshed:
        ran = [results[uid] for uid in sorted(matched) if uid in results]
        if ran:
            statuses = ", ".join(f"{result.name}: {result.status}" for result in ran[:3])
            return Decision(False, f"no mapped model refreshed ({statuses})")
        return Decision(False, "no mapped model ran")
    if mapping.trigger is TriggerRule.ALL and len(refreshed) < len(matched):
        missing = sorted(matched.difference(refreshed))
        return Decision(False, f"trigger is all, and {_names(missing)} did not refresh")
    if mapping.require_tests:
        if tests_of is None:
            return Decision(False, "require_tests needs manifest.json to know each model's tests")
        for model_id in refreshed:
            for test_id in tests_of(model_id):
                test = results.get(test_id)
                if test is None:
                    if test_id in pending:
                        return None
                    return Decision(
                        False,
                        f"require_tests: tests of {node_name(model_id)} did not run in this invocation",
                    )
                if test.status not in PASSING_TEST_STATUSES:
                    verb = "was skipped" if test.status == "skipped" else f"ended {test.status}"
                    return Decision(
                        False, f"require_tests: test {test.name} on {node_name(model_id)} {verb}"
                    )
    suffix = " and their tests passed" if mapping.require_tests else ""
    return Decision(True, f"{_names(refreshed)} refreshed{suffix}", refreshed)


def invocation_context(invocation: Invocation) -> dict[str, Any]:
    return {
        "id": invocation.invocation_id,
        "invocation_id": invocation.invocation_id,
        "command": invocation.command,
        "started_at": invocation.started_at,
        "generated_at": invocation.generated_at,
        "dbt_version": invocation.dbt_version,
        "vars": dict(invocation.vars),
    }


def _model_context(result: NodeResult) -> dict[str, Any]:
    return {
        "unique_id": result.unique_id,
        "name": result.name,
        "status": result.status,
        "started_at": result.started_at,
        "completed_at": result.completed_at,
        "execution_time_s": result.execution_time_s,
        "rows_affected": result.rows_affected,
        "message": result.message,
    }


def render_params(
    mapping: ProjectMapping,
    invocation_ctx: Mapping[str, Any],
    models: Sequence[Mapping[str, Any]],
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The mapping's input params with templates rendered; raises TemplateError naming the param."""
    context = build_context(
        invocation=invocation_ctx,
        models=models,
        project={"name": mapping.name, "project_id": mapping.project_id},
        environ=environ,
    )
    rendered: dict[str, Any] = {}
    for name, value in mapping.params.items():
        try:
            rendered[name] = render_value(value, context)
        except TemplateError as exc:
            raise TemplateError(f"input param {name!r}: {exc}") from None
    return rendered


def make_plan(
    invocation: Invocation,
    mappings: MappingSet,
    manifest: Manifest | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    selectors: SelectorIndex | None = None,
    template_invocation: Mapping[str, Any] | None = None,
) -> Plan:
    """Decide, for every mapped Hex project, whether this invocation makes it stale.

    ``environ`` feeds templates' env_var (default: the process environment). ``selectors``: an
    index over ``manifest`` kept from earlier plans (the watcher keeps one per manifest version,
    so each selector is resolved once); made here when not given. ``template_invocation``: what
    templates see as ``invocation`` when it is not the invocation planned (a dbt Cloud run is
    planned as one unit of its steps; its templates see its last dbt step, plus ``dbt_cloud``).
    """
    results = invocation.results_by_id
    finished = FinishedNodes.of_invocation(invocation)
    # Many projects read the same models: each model's template context is made once.
    model_contexts: dict[str, dict[str, Any]] = {}
    index = selectors
    if index is None and manifest is not None:
        index = SelectorIndex(manifest)
    if index is not None and index.manifest is not manifest:
        raise ValueError("the selector index was made over another manifest")
    tests_of = manifest.tests_of if manifest is not None else None
    invocation_ctx = (
        invocation_context(invocation) if template_invocation is None else template_invocation
    )
    triggers: list[Trigger] = []
    skipped: list[Skipped] = []
    first_with_key: dict[str, str] = {}

    for mapping in mappings.projects:

        def skip(reason: str, *, is_error: bool = False, mapping: ProjectMapping = mapping) -> None:
            skipped.append(Skipped(mapping.name, mapping.project_id, reason, is_error))

        if not mapping.enabled:
            skip(f"disabled ({mapping.source})" if mapping.source else "disabled")
            continue
        if not invocation.refreshes_data:
            skip(f"command was {invocation.command}: it refreshes no data")
            continue
        if index is not None:
            matched = index.resolve_all(mapping.models)
            if not matched:
                texts = ", ".join(selector.text for selector in mapping.models)
                skip(f"no model in manifest.json matches {texts}", is_error=True)
                continue
        else:
            matched, unresolved = resolve_without_manifest(mapping.models, results)
            if unresolved:
                # Not an error of the mapping: the manifest was not kept (artifact uploads,
                # dbt Cloud's run artifacts). The project is skipped rather than planned on
                # part of its models.
                texts = ", ".join(selector.text for selector in unresolved)
                verb = "needs" if len(unresolved) == 1 else "need"
                skip(
                    f"no manifest.json: {texts} {verb} it"
                    " (without it, only model names and unique ids are matched)"
                )
                continue
        decision = decide(mapping, matched, finished, tests_of)
        if decision is None:  # cannot happen once the invocation has ended (nothing pending)
            raise AssertionError(f"undecidable mapping {mapping.name} with nothing pending")
        if not decision.trigger:
            skip(decision.reason)
            continue
        ran_models = []
        for uid in sorted(matched):
            context = model_contexts.get(uid)
            if context is None:
                result = results.get(uid)
                if result is None:
                    continue
                context = model_contexts[uid] = _model_context(result)
            ran_models.append(context)
        try:
            params = render_params(mapping, invocation_ctx, ran_models, environ)
        except TemplateError as exc:
            skip(f"{mapping.name}: {exc}", is_error=True)
            continue
        key = trigger_key(invocation.invocation_id, mapping.project_id, params)
        if key in first_with_key:
            skip(f"same Hex project and params as {first_with_key[key]}: triggered once")
            continue
        first_with_key[key] = mapping.name
        triggers.append(
            Trigger(
                name=mapping.name,
                project_id=mapping.project_id,
                request=RunRequest(
                    input_params=params,
                    update_published_results=mapping.update_published_results,
                    use_cached_sql_results=mapping.use_cached_sql_results,
                    view_id=mapping.view_id,
                    notifications=tuple(Notification.from_api(n) for n in mapping.notifications),
                ),
                wait=mapping.wait,
                timeout_minutes=mapping.timeout_minutes,
                cancel_on_timeout=mapping.cancel_on_timeout,
                trigger_key=key,
                reason=f"{decision.reason}; mapped by discovery ({mapping.source})"
                if mapping.discovered
                else decision.reason,
                models=decision.refreshed,
                discovered=mapping.discovered,
                entry_key=entry_key(mapping),
                coalesce=mapping.coalesces,
                priority=mapping.priority,
                min_interval_s=None
                if mapping.min_interval_minutes is None
                else mapping.min_interval_minutes * 60,
                freshness_s=None
                if mapping.freshness_minutes is None
                else mapping.freshness_minutes * 60,
            )
        )
    return Plan(
        invocation_id=invocation.invocation_id,
        command=invocation.command,
        triggers=tuple(triggers),
        skipped=tuple(skipped),
    )
