"""run_results.json and manifest.json as small typed values.

Only what hexdbt needs is read; every other field (and every field a later dbt adds) is ignored.
A file that is missing, empty, truncated, not JSON or of an unknown schema stops with an
``ArtifactError`` (exit 3) naming the file.

Schemas read: run-results v4 (dbt 1.0-1.6), v5 (1.7), v6 (1.8 onwards); manifest v4 to v12.
"""

from __future__ import annotations

import gc
import json
import re
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hexdbt.clock import from_iso, to_iso
from hexdbt.errors import ArtifactError

RUN_RESULTS_VERSIONS = range(4, 7)
MANIFEST_VERSIONS = range(4, 13)

# Commands whose run_results.json says data was written. `retry` keeps the original command in
# args.which, so it is covered by these. compile, show, run-operation, docs generate ("generate"),
# test, list, clone and anything unknown refresh nothing: a Hex app must not refresh on them.
REFRESHING_COMMANDS = frozenset({"build", "run", "seed", "snapshot", "retry"})

# Statuses of models, seeds and snapshots.
REFRESHED_STATUSES = frozenset({"success"})
# partial success (microbatch) left some batches unwritten: the data is incomplete, so it counts
# as a failure. "skipped" for a model means an upstream node failed (or --fail-fast stopped dbt).
FAILED_STATUSES = frozenset({"error", "partial success", "skipped", "runtime error"})
# Test statuses that let a project with require_tests through: a warning is a pass by design.
PASSING_TEST_STATUSES = frozenset({"pass", "warn"})

# Resource types whose refresh changes data a Hex app can read.
DATA_RESOURCE_TYPES = frozenset({"model", "seed", "snapshot"})

_SCHEMA_VERSION = re.compile(r"/(?P<kind>[a-z-]+)/v(?P<version>\d+)\.json$")


@dataclass(frozen=True, slots=True)
class NodeResult:
    """What dbt did to one node in one invocation."""

    unique_id: str
    status: str
    started_at: str | None = None
    completed_at: str | None = None
    execution_time_s: float | None = None
    rows_affected: int | None = None
    message: str | None = None

    @property
    def resource_type(self) -> str:
        return self.unique_id.split(".", 1)[0]

    @property
    def name(self) -> str:
        """The node's name as dbt prints it (``orders``; a test's name without its hash)."""
        return node_name(self.unique_id)

    @property
    def refreshed(self) -> bool:
        return self.status in REFRESHED_STATUSES

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES


def node_name(unique_id: str) -> str:
    """``model.pkg.orders`` -> ``orders``; ``model.pkg.orders.v2`` -> ``orders``;
    ``test.pkg.unique_orders_id.9c1d3e`` -> ``unique_orders_id``."""
    parts = unique_id.split(".")
    return parts[2] if len(parts) > 2 else parts[-1]


def node_result(
    unique_id: str,
    status: str,
    *,
    started_at: str | None = None,
    completed_at: str | None = None,
    execution_time_s: float | None = None,
    rows_affected: int | None = None,
    message: str | None = None,
) -> NodeResult:
    """Build a NodeResult from its parts: the one place run_results.json and dbt's streamed
    ``NodeFinished`` events both go through, so both agree on what a status means."""
    return NodeResult(
        unique_id=unique_id,
        status=status.strip().lower(),
        started_at=started_at,
        completed_at=completed_at,
        execution_time_s=execution_time_s,
        rows_affected=rows_affected,
        message=message,
    )


@dataclass(frozen=True, slots=True)
class Invocation:
    """One dbt command, as its run_results.json (or its event stream) tells it."""

    invocation_id: str
    command: str
    started_at: str
    generated_at: str
    dbt_version: str
    vars: Mapping[str, Any]
    results: tuple[NodeResult, ...]
    _by_id: Mapping[str, NodeResult] = field(init=False, repr=False, compare=False)
    _refreshed_ids: frozenset[str] = field(init=False, repr=False, compare=False)
    _failed_ids: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Completion order is kept in `results`; lookups by id go through this index. A node
        # reported twice (dbt retry) counts by its last result. The refreshed and failed sets
        # are gathered here, while the results just made are still in the CPU's cache: a plan
        # asks about them for every project.
        by_id = {result.unique_id: result for result in self.results}
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(
            self,
            "_refreshed_ids",
            frozenset(
                [uid for uid, result in by_id.items() if result.status in REFRESHED_STATUSES]
            ),
        )
        object.__setattr__(
            self,
            "_failed_ids",
            frozenset(
                [
                    uid
                    for uid, result in by_id.items()
                    if result.status in FAILED_STATUSES and result.status not in REFRESHED_STATUSES
                ]
            ),
        )

    @property
    def refreshes_data(self) -> bool:
        return self.command in REFRESHING_COMMANDS

    def result(self, unique_id: str) -> NodeResult | None:
        return self._by_id.get(unique_id)

    @property
    def results_by_id(self) -> Mapping[str, NodeResult]:
        return self._by_id

    @property
    def refreshed_ids(self) -> frozenset[str]:
        """The nodes whose last result says their data was written (NodeResult.refreshed)."""
        return self._refreshed_ids

    @property
    def failed_ids(self) -> frozenset[str]:
        """The nodes whose last result is a failure (NodeResult.failed)."""
        return self._failed_ids


@dataclass(frozen=True, slots=True)
class ManifestNode:
    """A model, seed or snapshot: what selectors look at."""

    unique_id: str
    name: str
    resource_type: str
    package_name: str
    path: str
    original_file_path: str
    fqn: tuple[str, ...]
    tags: tuple[str, ...]
    meta: Mapping[str, Any]
    config: Mapping[str, Any]
    depends_on: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Exposure:
    unique_id: str
    name: str
    label: str | None
    type: str | None
    url: str | None
    package_name: str
    original_file_path: str
    meta: Mapping[str, Any]
    depends_on: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NodeLookups:
    """Data node ids by name, tag, package and fqn head, gathered while the manifest is read
    (the loop over its nodes is there anyway), so that selectors are dictionary lookups.

    ``by_fqn_head`` holds what a dotless selector matches besides a name, in dbt's rule: the
    first part of each fqn and, when that is the node's package, the second (a top folder).
    A list may name a node twice (a folder named like its package).
    """

    by_name: Mapping[str, list[str]]
    by_tag: Mapping[str, list[str]]
    by_package: Mapping[str, list[str]]
    by_fqn_head: Mapping[str, list[str]]


@dataclass(frozen=True, slots=True)
class Manifest:
    path: str
    schema_version: int
    dbt_version: str
    project_name: str | None
    nodes: Mapping[str, ManifestNode]
    exposures: Mapping[str, Exposure]
    tests_by_node: Mapping[str, tuple[str, ...]]
    # None for a Manifest built by hand: SelectorIndex then gathers the same from the nodes.
    lookups: NodeLookups | None = field(default=None, repr=False, compare=False)

    def tests_of(self, unique_id: str) -> tuple[str, ...]:
        return self.tests_by_node.get(unique_id, ())


# ----------------------------------------------------------------------------------------------
# Reading


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ArtifactError(
            f"{path}: {what} not found",
            hint="run dbt first (e.g. dbt build), or point --project-dir / --target-path at its target folder",
        ) from None
    except IsADirectoryError:
        raise ArtifactError(f"{path}: is a folder, not {what}") from None
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read {what}: {exc.strerror}") from exc
    if not raw.strip():
        raise ArtifactError(
            f"{path}: {what} is empty", hint="dbt may still be writing it; read it once dbt ends"
        )
    try:
        document = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path}: {what} is not JSON (not UTF-8 text)") from exc
    except RecursionError:
        raise ArtifactError(
            f"{path}: {what} is nested too deeply to be one dbt wrote"
            f" (more than {sys.getrecursionlimit()} levels)"
        ) from None
    except json.JSONDecodeError as exc:
        # A decode error at the very end of the text is a cut-off file, the common case while
        # dbt is still streaming it; anything earlier is a file that never was JSON.
        text_end = len(raw.rstrip()) - 1
        cut_off = exc.pos >= text_end or exc.msg.startswith("Unterminated string")
        if cut_off and raw.lstrip()[:1] in (b"{", b"["):
            raise ArtifactError(
                f"{path}: {what} is truncated (JSON ends early at line {exc.lineno})",
                hint="dbt may still be writing it; read it once dbt ends",
            ) from exc
        raise ArtifactError(
            f"{path}: {what} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    if not isinstance(document, dict):
        raise ArtifactError(f"{path}: {what} is not a JSON object")
    return document


def _schema_version(document: Mapping[str, Any], path: Path, kind: str, supported: range) -> int:
    metadata = document.get("metadata")
    declared = metadata.get("dbt_schema_version") if isinstance(metadata, dict) else None
    match = _SCHEMA_VERSION.search(declared) if isinstance(declared, str) else None
    if match is None:
        raise ArtifactError(
            f"{path}: unknown schema: no metadata.dbt_schema_version (expected a dbt {kind} file)"
        )
    version = int(match["version"])
    if match["kind"] != kind:
        raise ArtifactError(
            f"{path}: unknown schema {match['kind']}/v{version}: expected dbt {kind} "
            f"v{supported.start} to v{supported.stop - 1}"
        )
    if version not in supported:
        raise ArtifactError(
            f"{path}: unknown schema {kind}/v{version}: hexdbt reads {kind} "
            f"v{supported.start} to v{supported.stop - 1}",
            hint="a newer dbt may need a newer hexdbt",
        )
    return version


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a parsed artifact is turned into records.

    The conversion keeps tens of thousands of new objects while the parsed JSON (millions of
    objects, none of them in a cycle) is still alive; those allocations would trigger a full
    collection that walks the whole document (about 0.2 s for a 70 MB manifest) to free
    nothing. Paused, the collection comes later, once the document is gone. json.loads itself
    runs with the collector on, as it does for anyone. A caller that turned the collector off
    finds it off afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _execute_timing(timing: Any) -> tuple[str | None, str | None]:
    """Start and end of the node's work: the execute phase, else the span of all phases."""
    if type(timing) is not list:
        return None, None
    started: str | None = None
    completed: str | None = None
    for phase in timing:
        if type(phase) is not dict:
            continue
        phase_started = phase.get("started_at")
        phase_completed = phase.get("completed_at")
        if type(phase_started) is not str:
            phase_started = None
        if type(phase_completed) is not str:
            phase_completed = None
        if phase.get("name") == "execute":
            return phase_started, phase_completed
        started = started or phase_started
        completed = phase_completed or completed
    return started, completed


_NUMBER_TYPES = (float, int)  # not bool, which isinstance(x, int) would let through


def _results_from_json(raw_results: list[Any], path: Path) -> tuple[NodeResult, ...]:
    # The hot loop of a large run_results.json: NodeResult is built directly rather than through
    # node_result(), with the same normalisation, and type() checks stand in for isinstance
    # (JSON gives exact types).
    results: list[NodeResult] = []
    append = results.append
    for index, raw in enumerate(raw_results):
        if type(raw) is not dict:
            raise ArtifactError(f"{path}: results[{index}] is not an object")
        unique_id = raw.get("unique_id")
        status = raw.get("status")
        if type(unique_id) is not str or type(status) is not str:
            raise ArtifactError(f"{path}: results[{index}] has no unique_id or status")
        started_at, completed_at = _execute_timing(raw.get("timing"))
        adapter_response = raw.get("adapter_response")
        rows = adapter_response.get("rows_affected") if type(adapter_response) is dict else None
        execution_time: Any = raw.get("execution_time")
        message = raw.get("message")
        append(
            NodeResult(
                unique_id,
                status.strip().lower(),
                started_at,
                completed_at,
                float(execution_time) if type(execution_time) in _NUMBER_TYPES else None,
                rows if type(rows) is int else None,
                message if type(message) is str else None,
            )
        )
    return tuple(results)


def _invocation_started_at(
    metadata: Mapping[str, Any], results: Iterable[NodeResult], generated_at: str, elapsed: Any
) -> str:
    """dbt 1.10+ writes invocation_started_at; older files get the earliest node start, else
    generated_at minus elapsed_time, else generated_at."""
    declared = metadata.get("invocation_started_at")
    if isinstance(declared, str) and declared:
        return declared
    starts = [result.started_at for result in results if result.started_at]
    if starts:
        return min(starts, key=_sortable_time)
    if isinstance(elapsed, int | float) and generated_at:
        try:
            return to_iso(from_iso(generated_at) - float(elapsed))
        except ValueError:
            pass
    return generated_at


def _sortable_time(text: str) -> float:
    try:
        return from_iso(text)
    except ValueError:
        return float("inf")


def load_run_results(path: str | Path) -> Invocation:
    """Read a run_results.json (schema v4 to v6) into an Invocation."""
    path = Path(path)
    document = _read_json(path, "run_results.json")
    with _collector_paused():
        return _invocation_from_json(document, path)


def _invocation_from_json(document: dict[str, Any], path: Path) -> Invocation:
    _schema_version(document, path, "run-results", RUN_RESULTS_VERSIONS)
    metadata: Mapping[str, Any] = document["metadata"]
    invocation_id = metadata.get("invocation_id")
    if not isinstance(invocation_id, str) or not invocation_id:
        raise ArtifactError(f"{path}: metadata.invocation_id is missing")
    raw_results = document.get("results")
    if not isinstance(raw_results, list):
        raise ArtifactError(f"{path}: results is missing or not a list")
    results = _results_from_json(raw_results, path)
    args = document.get("args")
    args = args if isinstance(args, dict) else {}
    command = args.get("which")
    dbt_vars = args.get("vars")
    generated_at = _str_or_none(metadata.get("generated_at")) or ""
    return Invocation(
        invocation_id=invocation_id,
        command=command if isinstance(command, str) and command else "unknown",
        started_at=_invocation_started_at(
            metadata, results, generated_at, document.get("elapsed_time")
        ),
        generated_at=generated_at,
        dbt_version=_str_or_none(metadata.get("dbt_version")) or "unknown",
        vars=dbt_vars if isinstance(dbt_vars, dict) else {},
        results=results,
    )


def _string_tuple(value: Any) -> tuple[str, ...]:
    if type(value) is list:
        return tuple([item for item in value if type(item) is str])
    if isinstance(value, str):
        return (value,)
    return ()


def _depends_on(raw: Mapping[str, Any]) -> tuple[str, ...]:
    depends_on = raw.get("depends_on")
    return _string_tuple(depends_on.get("nodes")) if isinstance(depends_on, dict) else ()


def _meta(raw: Mapping[str, Any], config: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = raw.get("meta")
    if isinstance(meta, dict) and meta:
        return meta
    config_meta = config.get("meta")
    return config_meta if isinstance(config_meta, dict) else {}


_REF_IN_KWARGS = re.compile(r"ref\(\s*['\"]([^'\"]+)['\"]\s*\)")


def _test_target(raw: Mapping[str, Any], by_name: Mapping[str, list[str]]) -> str | None:
    """The node a test checks: ``attached_node`` (dbt 1.5+), else the model in the test's
    ``model`` argument, else its only parent."""
    attached = raw.get("attached_node")
    if isinstance(attached, str) and attached:
        return attached
    test_metadata = raw.get("test_metadata")
    kwargs = test_metadata.get("kwargs") if isinstance(test_metadata, dict) else None
    model_arg = kwargs.get("model") if isinstance(kwargs, dict) else None
    if isinstance(model_arg, str):
        match = _REF_IN_KWARGS.search(model_arg)
        if match and match[1] in by_name:
            return by_name[match[1]][-1]
    parents = [parent for parent in _depends_on(raw) if not parent.startswith("source.")]
    return parents[0] if len(parents) == 1 else None


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest.json (schema v4 to v12): data nodes, exposures, and tests per node."""
    path = Path(path)
    document = _read_json(path, "manifest.json")
    with _collector_paused():
        return _manifest_from_json(document, path)


def _manifest_from_json(document: dict[str, Any], path: Path) -> Manifest:
    version = _schema_version(document, path, "manifest", MANIFEST_VERSIONS)
    metadata: Mapping[str, Any] = document["metadata"]
    raw_nodes = document.get("nodes")
    if not isinstance(raw_nodes, dict):
        raise ArtifactError(f"{path}: nodes is missing or not an object")

    nodes: dict[str, ManifestNode] = {}
    raw_tests: list[Mapping[str, Any]] = []
    by_name: defaultdict[str, list[str]] = defaultdict(list)
    by_tag: defaultdict[str, list[str]] = defaultdict(list)
    by_package: defaultdict[str, list[str]] = defaultdict(list)
    by_fqn_head: defaultdict[str, list[str]] = defaultdict(list)
    # The hot loop of a large manifest (tens of thousands of nodes): type() checks and local
    # names instead of helper calls, with the same results as _str_or_none and _string_tuple.
    for unique_id, raw in raw_nodes.items():
        if type(raw) is not dict:
            raise ArtifactError(f"{path}: nodes[{unique_id!r}] is not an object")
        resource_type = raw.get("resource_type")
        if resource_type == "test":
            raw_tests.append(raw)
            continue
        if resource_type not in DATA_RESOURCE_TYPES:
            continue
        config = raw.get("config")
        if type(config) is not dict:
            config = {}
        name = raw.get("name")
        if type(name) is not str or not name:
            name = node_name(unique_id)
        package_name = raw.get("package_name")
        if type(package_name) is not str:
            package_name = ""
        node_path = raw.get("path")
        original_file_path = raw.get("original_file_path")
        fqn = _string_tuple(raw.get("fqn"))
        tags = _string_tuple(raw.get("tags"))
        meta = raw.get("meta")
        if type(meta) is not dict or not meta:
            meta = config.get("meta")
            if type(meta) is not dict:
                meta = {}
        depends_on = raw.get("depends_on")
        nodes[unique_id] = ManifestNode(
            unique_id,
            name,
            resource_type,
            package_name,
            node_path if type(node_path) is str else "",
            original_file_path if type(original_file_path) is str else "",
            fqn,
            tags,
            meta,
            config,
            _string_tuple(depends_on.get("nodes")) if type(depends_on) is dict else (),
        )
        by_name[name].append(unique_id)
        by_package[package_name].append(unique_id)
        for tag in tags:
            by_tag[tag].append(unique_id)
        if fqn:
            if "." in fqn[-1]:  # a versioned name: dbt splits its dots as parts
                fqn = tuple(part for segment in fqn for part in segment.split("."))
            by_fqn_head[fqn[0]].append(unique_id)
            if fqn[0] == package_name and len(fqn) > 1:
                by_fqn_head[fqn[1]].append(unique_id)

    tests_by_node: defaultdict[str, list[str]] = defaultdict(list)
    for raw in raw_tests:
        test_id = raw.get("unique_id")
        if type(test_id) is not str:
            continue
        target = raw.get("attached_node")  # dbt 1.5+: the common case, read here directly
        if type(target) is not str or not target:
            target = _test_target(raw, by_name)
        if target is not None:
            tests_by_node[target].append(test_id)

    exposures: dict[str, Exposure] = {}
    raw_exposures = document.get("exposures")
    for unique_id, raw in (raw_exposures if isinstance(raw_exposures, dict) else {}).items():
        if not isinstance(raw, dict):
            continue
        config = raw.get("config")
        exposures[unique_id] = Exposure(
            unique_id=unique_id,
            name=_str_or_none(raw.get("name")) or node_name(unique_id),
            label=_str_or_none(raw.get("label")),
            type=_str_or_none(raw.get("type")),
            url=_str_or_none(raw.get("url")),
            package_name=_str_or_none(raw.get("package_name")) or "",
            original_file_path=_str_or_none(raw.get("original_file_path")) or "",
            meta=_meta(raw, config if isinstance(config, dict) else {}),
            depends_on=_depends_on(raw),
        )

    project_name = metadata.get("project_name")
    if not isinstance(project_name, str):
        # Manifests before v10 do not name the root project; the package of most nodes is it.
        packages = Counter(node.package_name for node in nodes.values())
        project_name = packages.most_common(1)[0][0] if packages else None
    return Manifest(
        path=str(path),
        schema_version=version,
        dbt_version=_str_or_none(metadata.get("dbt_version")) or "unknown",
        project_name=project_name,
        nodes=nodes,
        exposures=exposures,
        tests_by_node={node: tuple(tests) for node, tests in tests_by_node.items()},
        # Plain dicts: a lookup of a missing key must not add it.
        lookups=NodeLookups(dict(by_name), dict(by_tag), dict(by_package), dict(by_fqn_head)),
    )
