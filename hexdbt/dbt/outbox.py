"""Entries of the outbox table that hexdbt's dbt on-run-end hook writes, as an Invocation and a
Manifest: what run_results.json and manifest.json give ``hexdbt plan``, from one warehouse row set.

The hook (``hexdbt/dbt_package/macros/hexdbt_outbox.sql``) writes each dbt invocation as one JSON
document (format 1) split into numbered chunks, one row each::

    invocation_id, chunk_index (0..chunk_count-1), chunk_count, written_at (ISO, UTC), payload

The document holds the invocation (id, command, start, generation time, dbt version, target,
vars), a result for every node dbt ran, every model, seed and snapshot with what selectors read
(name, package, paths, fqn, tags, meta, the config keys the hook was told to keep, the tests
attached), and the exposures that declare Hex apps. An entry is complete only when all its
chunks are there; this module reads complete ones and never talks to a warehouse.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hexdbt.dbt.artifacts import (
    DATA_RESOURCE_TYPES,
    Exposure,
    Invocation,
    Manifest,
    ManifestNode,
    node_result,
)
from hexdbt.errors import ArtifactError

OUTBOX_FORMAT = 1
# More chunks than this no hook writes (a 1 GB entry in the hook's smallest chunks, 1,000
# characters): a count beyond it, or below 1, is a damaged row, not an entry still arriving.
MAX_CHUNKS = 1_000_000


@dataclass(frozen=True, slots=True)
class OutboxChunk:
    """One row of the outbox table."""

    invocation_id: str
    chunk_index: int
    chunk_count: int
    written_at: str
    payload: str | None  # None: a NULL someone wrote by hand


@dataclass(frozen=True, slots=True)
class EntrySummary:
    """What the outbox holds of one invocation, without its payload: enough to know whether it is
    complete and old enough to delete."""

    invocation_id: str
    chunks: int
    chunk_count: int
    written_at: str

    @property
    def complete(self) -> bool:
        return self.chunks == self.chunk_count

    @property
    def damage(self) -> str | None:
        """Why this entry can never be read, whatever chunks come later (None: it can be)."""
        if not 1 <= self.chunk_count <= MAX_CHUNKS:
            return f"its chunk count {self.chunk_count} is not between 1 and {MAX_CHUNKS:,}"
        if self.chunks > self.chunk_count:
            return f"it has {self.chunks} chunks for a count of {self.chunk_count}"
        return None


@dataclass(frozen=True, slots=True)
class RejectedEntry:
    """An outbox entry that cannot be read: set aside, never retried."""

    invocation_id: str
    written_at: str
    reason: str


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    invocation: Invocation
    manifest: Manifest
    target: str
    written_at: str


def assemble(
    chunks: Iterable[OutboxChunk], label: str
) -> tuple[list[OutboxEntry], list[RejectedEntry]]:
    """The complete entries among ``chunks``, in the order they were written, and those that
    cannot be read (damaged chunks, a payload that is no entry of this format), each with why.
    The chunks of an incomplete entry are left for a later read. ``label`` names the outbox."""
    by_invocation: dict[str, list[OutboxChunk]] = {}
    for chunk in chunks:
        by_invocation.setdefault(chunk.invocation_id, []).append(chunk)
    entries, rejected = [], []
    for invocation_id, parts in by_invocation.items():
        written_at = min(part.written_at for part in parts)
        count = max(part.chunk_count for part in parts)
        indexes = sorted(part.chunk_index for part in parts)
        if len(parts) < count and len(set(indexes)) == len(indexes):
            continue  # still arriving
        problem = None
        if indexes != list(range(count)) or any(p.chunk_count != count for p in parts):
            shown = ", ".join(str(index) for index in indexes[:5])
            problem = f"its chunk indexes {shown}{', ...' if len(indexes) > 5 else ''} are not 0 to {count - 1}"
        elif any(part.payload is None for part in parts):
            problem = "a chunk's payload is NULL"
        if problem is not None:
            rejected.append(RejectedEntry(invocation_id, written_at, problem))
            continue
        ordered = sorted(parts, key=lambda part: part.chunk_index)
        payload = "".join(part.payload or "" for part in ordered)
        try:
            entries.append(read_entry(payload, f"{label}: invocation {invocation_id}", written_at))
        except ArtifactError as exc:
            rejected.append(RejectedEntry(invocation_id, written_at, exc.message))
    return sorted(entries, key=lambda entry: entry.written_at), rejected


def read_entry(payload: str, label: str, written_at: str = "") -> OutboxEntry:
    """One entry's JSON document -> its Invocation and Manifest; ArtifactError naming ``label``
    when it is not a document of a format this hexdbt reads."""
    try:
        document = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{label}: not JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(document, dict):
        raise ArtifactError(f"{label}: expected a JSON object")
    version = document.get("format")
    if version != OUTBOX_FORMAT:
        raise ArtifactError(
            f"{label}: outbox format {version!r}: this hexdbt reads format {OUTBOX_FORMAT}",
            hint="install the hook of this hexdbt version again: hexdbt hook install",
        )
    invocation_id = _text(document, "invocation_id", label)
    results = tuple(
        node_result(
            _text(raw, "unique_id", label),
            _text(raw, "status", label),
            started_at=_optional_text(raw.get("started_at")),
            completed_at=_optional_text(raw.get("completed_at")),
            execution_time_s=_number(raw.get("execution_time")),
            rows_affected=raw.get("rows_affected")
            if type(raw.get("rows_affected")) is int
            else None,
            message=_optional_text(raw.get("message")),
        )
        for raw in _objects(document.get("results"), "results", label)
    )
    generated_at = _optional_text(document.get("generated_at")) or written_at
    variables = document.get("vars")
    invocation = Invocation(
        invocation_id=invocation_id,
        command=_optional_text(document.get("command")) or "unknown",
        started_at=_optional_text(document.get("started_at")) or generated_at,
        generated_at=generated_at,
        dbt_version=_optional_text(document.get("dbt_version")) or "unknown",
        vars=variables if isinstance(variables, dict) else {},
        results=results,
    )
    return OutboxEntry(
        invocation=invocation,
        manifest=_manifest(document, label, invocation.dbt_version),
        target=_optional_text(document.get("target")) or "",
        written_at=written_at or generated_at,
    )


def _manifest(document: Mapping[str, Any], label: str, dbt_version: str) -> Manifest:
    nodes: dict[str, ManifestNode] = {}
    tests_by_node: dict[str, tuple[str, ...]] = {}
    for unique_id, raw in _members(document.get("nodes"), "nodes", label):
        resource_type = _optional_text(raw.get("resource_type")) or unique_id.split(".", 1)[0]
        if resource_type not in DATA_RESOURCE_TYPES:
            continue
        meta, config = raw.get("meta"), raw.get("config")
        nodes[unique_id] = ManifestNode(
            unique_id,
            _text(raw, "name", label),
            resource_type,
            _optional_text(raw.get("package_name")) or "",
            _optional_text(raw.get("path")) or "",
            _optional_text(raw.get("original_file_path")) or "",
            _strings(raw.get("fqn")),
            _strings(raw.get("tags")),
            meta if isinstance(meta, dict) else {},
            config if isinstance(config, dict) else {},
            # Selectors do not follow lineage: the hook leaves depends_on out.
            (),
        )
        tests = _strings(raw.get("tests"))
        if tests:
            tests_by_node[unique_id] = tests
    exposures = {
        unique_id: Exposure(
            unique_id=unique_id,
            name=_text(raw, "name", label),
            label=_optional_text(raw.get("label")),
            type=_optional_text(raw.get("type")),
            url=_optional_text(raw.get("url")),
            package_name=_optional_text(raw.get("package_name")) or "",
            original_file_path=_optional_text(raw.get("original_file_path")) or "",
            meta=raw["meta"] if isinstance(raw.get("meta"), dict) else {},
            depends_on=_strings(raw.get("depends_on")),
        )
        for unique_id, raw in _members(document.get("exposures"), "exposures", label)
    }
    return Manifest(
        path=label,
        # The manifest schema the hook's dbt wrote is not known here; nothing plans by it.
        schema_version=0,
        dbt_version=dbt_version,
        project_name=_optional_text(document.get("project_name")),
        nodes=nodes,
        exposures=exposures,
        tests_by_node=tests_by_node,
    )


def _objects(value: Any, key: str, label: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ArtifactError(f"{label}: {key} is not a list of objects")
    return value


def _members(value: Any, key: str, label: str) -> Sequence[tuple[str, Mapping[str, Any]]]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(isinstance(item, dict) for item in value.values()):
        raise ArtifactError(f"{label}: {key} is not an object of objects")
    return list(value.items())


def _text(raw: Mapping[str, Any], key: str, label: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value:
        raise ArtifactError(f"{label}: {key} is missing")
    return value


def _optional_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    return float(value) if type(value) in (int, float) else None


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(item for item in value if isinstance(item, str)) if isinstance(value, list) else ()
