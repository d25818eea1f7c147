"""run_results.json and manifest.json as small typed values.

Only what hexdbt needs is read; every other field (and every field a later dbt adds) is ignored.
A file that is missing, empty, truncated, not JSON or of an unknown schema stops with an
``ArtifactError`` (exit 3) naming the file.

Schemas read: run-results v4 (dbt 1.0-1.6), v5 (1.7), v6 (1.8 onwards); manifest v4 to v12.
The files are decoded with msgspec into structs of the fields read (see "Reading" below), and
the records hexdbt keeps (NodeResult, ManifestNode) are msgspec structs too: reading both files
and planning takes under a third of a bare json.load's time and peak memory on a 20,000-model
project, and at 100,000 models too: memory grows linearly, time about so, less steeply than
json.load's (benchmarks/artifacts.py --big).
"""

from __future__ import annotations

import functools
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

import msgspec

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


class NodeResult(msgspec.Struct, frozen=True, gc=False):
    """What dbt did to one node in one invocation. A struct rather than a dataclass: tens of
    thousands are built per run_results.json, and a struct is built in C and is not tracked by
    the garbage collector (it holds no containers)."""

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


def versioned_name(unique_id: str) -> str:
    """A node's name as reports show it: a model version keeps its version, as dbt selects one
    (``model.pkg.dim_accounts.v2`` -> ``dim_accounts.v2``); any other node, its name. Versions
    of one model share a name, so the name alone blames them all."""
    parts = unique_id.split(".")
    if parts[0] == "model" and len(parts) > 3:  # dbt's id of a version: model.pkg.name.v<version>
        return ".".join(parts[2:])
    return node_name(unique_id)


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


class ManifestNode(msgspec.Struct, frozen=True, gc=False):
    """A model, seed or snapshot: what selectors look at. A struct for NodeResult's reasons
    (its tuples hold strings, its meta and config no reference back to it)."""

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
#
# The files are decoded by msgspec straight into the structs below, which name only the fields
# hexdbt reads: every other field (a manifest node's SQL, columns, checksums; most of a result)
# is skipped while parsing and never becomes a Python object. Fields whose type dbt's schemas
# fix and that are worth skipping when unused (a node's config, a result's timing) are typed;
# scalars are read as whatever they are and checked in Python, so that an odd adapter's value
# is read as absent rather than refusing the file. The structs are not tracked by the garbage
# collector: they hold no cycles.


class ArtifactMetadata(msgspec.Struct, gc=False):
    dbt_schema_version: Any = None
    dbt_version: Any = None
    generated_at: Any = None
    invocation_id: Any = None
    invocation_started_at: Any = None
    project_name: Any = None
    adapter_type: Any = None


class _Header(msgspec.Struct, gc=False):
    """What every artifact starts with: read alone to report a file of the wrong kind."""

    metadata: ArtifactMetadata | None = None


class _Timing(msgspec.Struct, gc=False):
    name: Any = None
    started_at: Any = None
    completed_at: Any = None


class _AdapterResponse(msgspec.Struct, gc=False):
    rows_affected: Any = None


class _Result(msgspec.Struct, gc=False):
    unique_id: str
    status: str
    timing: list[_Timing] = []
    execution_time: Any = None
    adapter_response: _AdapterResponse | None = None
    message: Any = None


class _Args(msgspec.Struct, gc=False):
    which: Any = None
    vars: Any = None


class _RunResultsFile(msgspec.Struct, gc=False):
    metadata: ArtifactMetadata | None = None
    results: list[_Result] | None = None
    args: _Args | None = None
    elapsed_time: Any = None


_NULL = msgspec.Raw(b"null")
# How dbt writes an empty meta (the file's bytes exactly: dbt writes no spaces inside).
_EMPTY_OBJECTS = frozenset({b"{}", b"null"})


_ABSENT: Any = msgspec.UNSET


@functools.lru_cache(maxsize=256)
def _member_decoder(key: str) -> msgspec.json.Decoder[Any]:
    """A decoder of one member of a JSON object: ``.value``, or _ABSENT if there is none."""
    member = msgspec.defstruct(
        "_Member", [("value", Any, _ABSENT)], rename={"value": key}, gc=False
    )
    return msgspec.json.Decoder(member)


class _JSONObject(Mapping[str, Any]):
    """A node's config (or meta), kept as the JSON text it was in the file and decoded on first
    use: selectors look at configs only for ``config.<key>`` selectors, and tens of thousands
    of decoded configs would be most of a big manifest's memory. ``member``: the object is that
    member of the decoded one (a meta written only inside the config). Anything
    that is not a JSON object reads as an empty one."""

    __slots__ = ("_member", "_text", "_value")

    def __init__(self, text: bytes, member: str | None = None) -> None:
        self._text: bytes | None = text
        self._member = member
        self._value: dict[str, Any] | None = None

    def _decoded(self) -> dict[str, Any]:
        if self._value is None:
            assert self._text is not None
            value = _ANY_DECODER.decode(self._text)
            if self._member is not None and type(value) is dict:
                value = value.get(self._member)
            self._value = value if type(value) is dict else {}
            self._text = None
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def get(self, key: str, default: Any = None) -> Any:
        # A config selector asks every node for one key: only that member is decoded (the
        # decoder skips the others), and the object stays undecoded.
        if self._value is None and self._member is None:
            assert self._text is not None
            try:
                value = _member_decoder(key).decode(self._text).value
            except msgspec.ValidationError:  # not a JSON object
                return default
            return default if value is _ABSENT else value
        return self._decoded().get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return repr(self._decoded())


class _Node(msgspec.Struct, gc=False):
    """A node of any resource type (its unique id is its key in ``nodes``). Its strings and
    short lists are read as they are; its meta and config are kept undecoded (a view of the
    file's bytes): selectors rarely look into them."""

    resource_type: Any = None
    name: Any = None
    package_name: Any = None
    path: Any = None
    original_file_path: Any = None
    attached_node: Any = None
    fqn: Any = None
    tags: Any = None
    meta: msgspec.Raw = _NULL
    config: msgspec.Raw = _NULL
    depends_on: Any = None
    # A test's arguments, read only for the rare test of dbt before 1.5 without attached_node.
    test_metadata: msgspec.Raw = _NULL


class _ManifestFile(msgspec.Struct, gc=False):
    metadata: ArtifactMetadata | None = None
    # Each node is decoded on its own, in turn, so that only one is alive at a time.
    nodes: dict[str, msgspec.Raw] | None = None
    # Exposures are few: read whole, as the plain JSON they are.
    exposures: Any = None


_RUN_RESULTS_DECODER = msgspec.json.Decoder(_RunResultsFile)
_MANIFEST_DECODER = msgspec.json.Decoder(_ManifestFile)
_HEADER_DECODER = msgspec.json.Decoder(_Header)
_NODE_DECODER = msgspec.json.Decoder(_Node)
_ANY_DECODER = msgspec.json.Decoder()

_MISSING_FIELD = re.compile(
    r"^Object missing required field `(?P<field>[^`]+)`(?: - at `\$(?P<at>.*)`)?$"
)
_WRONG_TYPE = re.compile(
    r"^Expected `(?P<expected>[^`]+)`, got `(?P<got>[^`]+)`(?: - at `\$(?P<at>.*)`)?$"
)


def _read_bytes(path: Path, what: str) -> bytes:
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
    return raw


def _decode(decoder: msgspec.json.Decoder[Any], raw: bytes, path: Path, what: str) -> Any:
    """Decode, turning msgspec's errors into one ArtifactError naming the file (and the field)."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _invalid(str(exc), path, what, raw) from None
    except msgspec.DecodeError as exc:
        raise _not_json(raw, path, what, exc) from None


def _invalid(message: str, path: Path, what: str, raw: bytes) -> ArtifactError:
    missing = _MISSING_FIELD.match(message)
    if missing:
        at = (missing["at"] or "").lstrip(".")
        return ArtifactError(f"{path}: {at + '.' if at else ''}{missing['field']} is missing")
    wrong = _WRONG_TYPE.match(message)
    if wrong:
        at = (wrong["at"] or "").lstrip(".")
        if not at:
            # Said as the standard library would if it is not JSON at all (nested too deeply).
            return _json_error(raw, path, what) or ArtifactError(
                f"{path}: {what} is not a JSON object"
            )
        # An optional object or list is `object | null` to msgspec: null is as good as absent.
        expected = {"object": "an object", "array": "a list"}.get(
            wrong["expected"].removesuffix(" | null")
        )
        if expected is None:
            return ArtifactError(f"{path}: {at} is {wrong['got']}, expected {wrong['expected']}")
        return ArtifactError(f"{path}: {at} is not {expected}")
    return ArtifactError(f"{path}: {what} is not readable: {message}")


def _not_json(raw: bytes, path: Path, what: str, error: msgspec.DecodeError) -> ArtifactError:
    """Why a file msgspec could not decode is not JSON, in the words of the standard library
    (which says where, by line): parsed again only on this error path."""
    return _json_error(raw, path, what) or ArtifactError(f"{path}: {what} is not JSON ({error})")


def _json_error(raw: bytes, path: Path, what: str) -> ArtifactError | None:
    """What the standard library finds wrong with the text, or None if it reads it."""
    try:
        json.loads(raw)
    except UnicodeDecodeError:
        return ArtifactError(f"{path}: {what} is not JSON (not UTF-8 text)")
    except RecursionError:
        return ArtifactError(
            f"{path}: {what} is nested too deeply to be one dbt wrote"
            f" (more than {sys.getrecursionlimit()} levels)"
        )
    except json.JSONDecodeError as exc:
        # A decode error at the very end of the text is a cut-off file, the common case while
        # dbt is still streaming it; anything earlier is a file that never was JSON.
        text_end = len(raw.rstrip()) - 1
        cut_off = exc.pos >= text_end or exc.msg.startswith("Unterminated string")
        if cut_off and raw.lstrip()[:1] in (b"{", b"["):
            return ArtifactError(
                f"{path}: {what} is truncated (JSON ends early at line {exc.lineno})",
                hint="dbt may still be writing it; read it once dbt ends",
            )
        return ArtifactError(
            f"{path}: {what} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        )
    return None


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while an artifact is decoded into records.

    Reading a large manifest makes hundreds of thousands of objects (the lists decoded from
    each node, the selectors' lookups) and frees almost none, none of them in a cycle: the
    collections those allocations trigger walk everything made so far to free nothing, a cost
    that grows faster than the manifest. The records are untracked structs, so this matters
    only for large projects: load_manifest on the 100,000-model benchmark took 3.27 s with the
    collector on against 2.65 s paused (20,000 models: no measurable difference). A caller that
    turned the collector off finds it off afterwards.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def read_artifact(
    decoder: msgspec.json.Decoder[Any], path: Path, what: str, kind: str, supported: range
) -> tuple[Any, int]:
    """The file decoded into its struct, and its schema version. The schema is checked first:
    a file of another kind or version is reported as such, not by a field it lacks."""
    raw = _read_bytes(path, what)
    try:
        document = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        header: _Header = _decode(_HEADER_DECODER, raw, path, what)
        _schema_version(header.metadata, path, kind, supported)
        raise _invalid(str(exc), path, what, raw) from None
    except msgspec.DecodeError as exc:
        raise _not_json(raw, path, what, exc) from None
    return document, _schema_version(document.metadata, path, kind, supported)


def _schema_version(
    metadata: ArtifactMetadata | None, path: Path, kind: str, supported: range
) -> int:
    declared = metadata.dbt_schema_version if metadata is not None else None
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


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _execute_timing(timing: list[_Timing]) -> tuple[str | None, str | None]:
    """Start and end of the node's work: the execute phase, else the span of all phases."""
    started: str | None = None
    completed: str | None = None
    for phase in timing:
        phase_started = phase.started_at
        phase_completed = phase.completed_at
        if type(phase_started) is not str:
            phase_started = None
        if type(phase_completed) is not str:
            phase_completed = None
        if phase.name == "execute":
            return phase_started, phase_completed
        started = started or phase_started
        completed = phase_completed or completed
    return started, completed


_NUMBER_TYPES = (float, int)  # not bool, which isinstance(x, int) would let through


def _results(raw_results: list[_Result]) -> tuple[NodeResult, ...]:
    # The hot loop of a large run_results.json: NodeResult is built directly rather than through
    # node_result(), with the same normalisation, and type() checks stand in for isinstance
    # (JSON gives exact types). The decoder makes a new string for every value: statuses and
    # messages repeat from node to node, so each is kept once; unique ids are interned, so that
    # the manifest read next shares them.
    results: list[NodeResult] = []
    append = results.append
    intern = sys.intern
    statuses: dict[str, str] = {}
    messages: dict[str, str] = {}
    for raw in raw_results:
        started_at, completed_at = _execute_timing(raw.timing)
        adapter_response = raw.adapter_response
        rows = adapter_response.rows_affected if adapter_response is not None else None
        execution_time = raw.execution_time
        status = statuses.get(raw.status)
        if status is None:
            status = statuses[raw.status] = intern(raw.status.strip().lower())
        message = raw.message
        append(
            NodeResult(
                intern(raw.unique_id),
                status,
                started_at,
                completed_at,
                float(execution_time) if type(execution_time) in _NUMBER_TYPES else None,
                rows if type(rows) is int else None,
                messages.setdefault(message, message) if type(message) is str else None,
            )
        )
    return tuple(results)


def _invocation_started_at(
    metadata: ArtifactMetadata, results: Iterable[NodeResult], generated_at: str, elapsed: Any
) -> str:
    """dbt 1.10+ writes invocation_started_at; older files get the earliest node start, else
    generated_at minus elapsed_time, else generated_at."""
    declared = metadata.invocation_started_at
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
    with _collector_paused():
        return _load_run_results(Path(path))


def _load_run_results(path: Path) -> Invocation:
    document: _RunResultsFile
    document, _ = read_artifact(
        _RUN_RESULTS_DECODER, path, "run_results.json", "run-results", RUN_RESULTS_VERSIONS
    )
    metadata = document.metadata
    assert metadata is not None  # read_artifact checked its schema version
    invocation_id = metadata.invocation_id
    if not isinstance(invocation_id, str) or not invocation_id:
        raise ArtifactError(f"{path}: metadata.invocation_id is missing")
    if document.results is None:
        raise ArtifactError(f"{path}: results is missing")
    results = _results(document.results)
    args = document.args or _Args()
    command = args.which
    generated_at = str_or_none(metadata.generated_at) or ""
    return Invocation(
        invocation_id=invocation_id,
        command=command if isinstance(command, str) and command else "unknown",
        started_at=_invocation_started_at(metadata, results, generated_at, document.elapsed_time),
        generated_at=generated_at,
        dbt_version=str_or_none(metadata.dbt_version) or "unknown",
        vars=args.vars if isinstance(args.vars, dict) else {},
        results=results,
    )


def _string_tuple(value: Any) -> tuple[str, ...]:
    if type(value) is list:
        return tuple([item for item in value if type(item) is str])
    if isinstance(value, str):
        return (value,)
    return ()


def _interned_strings(value: Any) -> tuple[str, ...]:
    """_string_tuple, each string interned (see _load_manifest)."""
    if type(value) is list:
        return tuple([sys.intern(item) for item in value if type(item) is str])
    if type(value) is str:
        return (sys.intern(value),)
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


def _invalid_node(error: msgspec.ValidationError, unique_id: str, path: Path) -> ArtifactError:
    message = str(error).replace("`$", f"`$.nodes[{unique_id!r}]", 1)
    if " - at `" not in message:
        message += f" - at `$.nodes[{unique_id!r}]`"
    return _invalid(message, path, "manifest.json", b"")


def _test_target(raw: _Node, by_name: Mapping[str, list[str]]) -> str | None:
    """The node a test checks (when it has no ``attached_node``, before dbt 1.5): the model in
    the test's ``model`` argument, else its only parent."""
    test_metadata = _ANY_DECODER.decode(raw.test_metadata)
    kwargs = test_metadata.get("kwargs") if isinstance(test_metadata, dict) else None
    model_arg = kwargs.get("model") if isinstance(kwargs, dict) else None
    if isinstance(model_arg, str):
        match = _REF_IN_KWARGS.search(model_arg)
        if match and match[1] in by_name:
            return by_name[match[1]][-1]
    parents = [
        parent
        for parent in _depends_on({"depends_on": raw.depends_on})
        if not parent.startswith("source.")
    ]
    return parents[0] if len(parents) == 1 else None


def load_manifest(path: str | Path) -> Manifest:
    """Read a manifest.json (schema v4 to v12): data nodes, exposures, and tests per node."""
    with _collector_paused():
        return _load_manifest(Path(path))


def _load_manifest(path: Path) -> Manifest:
    document: _ManifestFile
    document, version = read_artifact(
        _MANIFEST_DECODER, path, "manifest.json", "manifest", MANIFEST_VERSIONS
    )
    metadata = document.metadata
    assert metadata is not None  # read_artifact checked its schema version
    if document.nodes is None:
        raise ArtifactError(f"{path}: nodes is missing")

    nodes: dict[str, ManifestNode] = {}
    # Each test with the node it checks or, without attached_node (dbt before 1.5, singular
    # tests), the test itself, to find that node once all names are known.
    tests: list[tuple[str, str | _Node]] = []
    by_name: defaultdict[str, list[str]] = defaultdict(list)
    by_tag: defaultdict[str, list[str]] = defaultdict(list)
    by_package: defaultdict[str, list[str]] = defaultdict(list)
    by_fqn_head: defaultdict[str, list[str]] = defaultdict(list)
    # The decoder makes a new string for every value. Ids, packages, folders and tags repeat
    # from node to node (and ids from run_results.json, read first): interned, each is kept
    # once. Configs and metas repeat too (most nodes take their folder's config): one lazy
    # object per distinct text.
    intern = sys.intern
    json_objects: dict[bytes, _JSONObject] = {}
    config_metas: dict[bytes, _JSONObject] = {}
    # The hot loop of a large manifest (tens of thousands of nodes): type() checks and local
    # names instead of helper calls, with the same results as str_or_none.
    decode_node = _NODE_DECODER.decode
    for unique_id, node_text in document.nodes.items():
        try:  # free in Python 3.11+ while nothing is raised
            raw = decode_node(node_text)
        except msgspec.ValidationError as exc:
            raise _invalid_node(exc, unique_id, path) from None
        resource_type = raw.resource_type
        if resource_type == "test":
            target = raw.attached_node  # dbt 1.5+: the common case
            tests.append((unique_id, target if type(target) is str and target else raw))
            continue
        if resource_type not in DATA_RESOURCE_TYPES:
            continue
        unique_id = intern(unique_id)
        name = raw.name
        if type(name) is not str or not name:
            name = node_name(unique_id)
        package_name = raw.package_name
        package_name = intern(package_name) if type(package_name) is str else ""
        node_path = raw.path
        original_file_path = raw.original_file_path
        fqn = _interned_strings(raw.fqn)
        tags = _interned_strings(raw.tags)
        depends_on = raw.depends_on
        parents = _interned_strings(depends_on.get("nodes")) if type(depends_on) is dict else ()
        config_text = bytes(raw.config)
        config = json_objects.get(config_text)
        if config is None:
            config = json_objects[config_text] = _JSONObject(config_text)
        meta_text = bytes(raw.meta)
        # An empty (or absent) meta is read from config.meta, where dbt 1.10 and later keep it.
        if meta_text in _EMPTY_OBJECTS:
            meta = config_metas.get(config_text)
            if meta is None:
                meta = config_metas[config_text] = _JSONObject(config_text, "meta")
        else:
            meta = json_objects.get(meta_text)
            if meta is None:
                meta = json_objects[meta_text] = _JSONObject(meta_text)
        nodes[unique_id] = ManifestNode(
            unique_id,
            name,
            intern(resource_type),
            package_name,
            node_path if type(node_path) is str else "",
            original_file_path if type(original_file_path) is str else "",
            fqn,
            tags,
            meta,
            config,
            parents,
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
    for test_id, attached in tests:
        target = attached if isinstance(attached, str) else _test_target(attached, by_name)
        if target is not None:
            tests_by_node[intern(target)].append(intern(test_id))

    exposures: dict[str, Exposure] = {}
    raw_exposures = document.exposures
    for unique_id, raw_exposure in (
        raw_exposures if isinstance(raw_exposures, dict) else {}
    ).items():
        if not isinstance(raw_exposure, dict):
            continue
        exposure_config = raw_exposure.get("config")
        exposures[unique_id] = Exposure(
            unique_id=unique_id,
            name=str_or_none(raw_exposure.get("name")) or node_name(unique_id),
            label=str_or_none(raw_exposure.get("label")),
            type=str_or_none(raw_exposure.get("type")),
            url=str_or_none(raw_exposure.get("url")),
            package_name=str_or_none(raw_exposure.get("package_name")) or "",
            original_file_path=str_or_none(raw_exposure.get("original_file_path")) or "",
            meta=_meta(raw_exposure, exposure_config if isinstance(exposure_config, dict) else {}),
            depends_on=_depends_on(raw_exposure),
        )

    project_name = metadata.project_name
    if not isinstance(project_name, str):
        # Manifests before v10 do not name the root project; the package of most nodes is it.
        packages = Counter(node.package_name for node in nodes.values())
        project_name = packages.most_common(1)[0][0] if packages else None
    return Manifest(
        path=str(path),
        schema_version=version,
        dbt_version=str_or_none(metadata.dbt_version) or "unknown",
        project_name=project_name,
        nodes=nodes,
        exposures=exposures,
        tests_by_node={node: tuple(tests) for node, tests in tests_by_node.items()},
        # Plain dicts: a lookup of a missing key must not add it.
        lookups=NodeLookups(dict(by_name), dict(by_tag), dict(by_package), dict(by_fqn_head)),
    )
