"""Where each model, seed, snapshot and source lives in the warehouse, and which of them a
warehouse table name means.

The relations are read from manifest.json on their own (by ``hexdbt discover`` and ``discover:
auto``), so that planning never pays for them. The matching is pure functions, no I/O.

Hex reports the tables a project reads as the warehouse writes them, and each warehouse has its
own rules, which these follow:

- one, two or three parts (``table``, ``schema.table``, ``database.table``'s ``db.schema.table``;
  BigQuery's ``project.dataset.table``); a shorter name matches every relation it is the end of;
- quoted parts (``"x"``, `` `x` ``, ``[x]``) keep their case; unquoted ones are folded as the
  warehouse folds them: Snowflake to upper case, Postgres, Redshift, DuckDB and most others to
  lower case; DuckDB, Databricks and Spark ignore case even quoted; BigQuery keeps the case (its
  datasets and tables are case-sensitive) and allows a whole dotted name in one pair of backticks.

A relation's own name is read the same way from dbt's ``relation_name`` (which carries dbt's
quoting), else from its database, schema and identifier as dbt holds them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from hexdbt.dbt.artifacts import (
    DATA_RESOURCE_TYPES,
    MANIFEST_VERSIONS,
    ArtifactMetadata,
    node_name,
    read_artifact,
    str_or_none,
    versioned_name,
)

TableParts = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Relation:
    """A warehouse relation that dbt builds (a model, seed or snapshot) or reads (a source).

    ``rendered`` is the name as dbt writes it in SQL (its ``relation_name``, quoting included)
    when the manifest has it; ``database``, ``schema`` and ``identifier`` are its parts as dbt
    holds them. ``name`` is a node's name (what a selector matches), a source's
    ``source.table``; ``label`` is what reports show."""

    unique_id: str
    resource_type: str
    name: str
    database: str | None
    schema: str | None
    identifier: str
    rendered: str | None

    @property
    def triggers(self) -> bool:
        """Whether dbt refreshes it: a source is read by dbt, never written."""
        return self.resource_type in DATA_RESOURCE_TYPES

    @property
    def label(self) -> str:
        """The name, with a model's version (``dim_accounts.v2``)."""
        return versioned_name(self.unique_id) if self.triggers else self.name


@dataclass(frozen=True, slots=True)
class Relations:
    """The manifest's relations and the warehouse they are in (dbt's adapter type)."""

    adapter_type: str | None
    relations: tuple[Relation, ...]


# -- reading them from manifest.json --------------------------------------------------------------


class _RelationNode(msgspec.Struct, gc=False):
    resource_type: Any = None
    name: Any = None
    source_name: Any = None
    database: Any = None
    schema: Any = None
    alias: Any = None
    identifier: Any = None
    relation_name: Any = None
    config: Any = None


class _RelationsFile(msgspec.Struct, gc=False):
    metadata: ArtifactMetadata | None = None
    nodes: dict[str, _RelationNode] | None = None
    sources: dict[str, _RelationNode] | None = None


_RELATIONS_DECODER = msgspec.json.Decoder(_RelationsFile)


def load_relations(path: str | Path) -> Relations:
    """The relations of a manifest.json (schema v4 to v12): models, seeds and snapshots (not
    ephemeral models, which build none) and sources."""
    path = Path(path)
    document: _RelationsFile
    document, _ = read_artifact(
        _RELATIONS_DECODER, path, "manifest.json", "manifest", MANIFEST_VERSIONS
    )
    assert document.metadata is not None  # read_artifact checked its schema version
    relations: list[Relation] = []
    for group in (document.nodes, document.sources):
        for unique_id, node in (group or {}).items():
            resource_type = node.resource_type
            is_source = resource_type == "source"
            if resource_type not in DATA_RESOURCE_TYPES and not is_source:
                continue
            config = node.config if isinstance(node.config, dict) else {}
            if config.get("materialized") == "ephemeral":
                continue
            name = str_or_none(node.name) or node_name(unique_id)
            identifier = str_or_none(node.identifier if is_source else node.alias) or name
            if is_source and isinstance(node.source_name, str):
                name = f"{node.source_name}.{name}"
            relations.append(
                Relation(
                    unique_id=unique_id,
                    resource_type=resource_type,
                    name=name,
                    database=str_or_none(node.database) or None,
                    schema=str_or_none(node.schema) or None,
                    identifier=identifier,
                    rendered=str_or_none(node.relation_name) or None,
                )
            )
    return Relations(str_or_none(document.metadata.adapter_type), tuple(relations))


# -- matching table names -------------------------------------------------------------------------


_QUOTES = {'"': '"', "`": "`", "[": "]"}
# Warehouses that ignore the case of every identifier, quoted or not (DuckDB keeps it, but
# matches without it).
_CASE_BLIND = frozenset({"databricks", "spark", "duckdb"})


def _fold_for(adapter_type: str | None) -> Callable[[str], str]:
    """How the warehouse folds an unquoted identifier."""
    adapter = (adapter_type or "").lower()
    if adapter == "snowflake":
        return str.upper
    if adapter == "bigquery":
        return str
    return str.lower


def parse_table_name(text: str, adapter_type: str | None) -> TableParts | None:
    """The parts of a table name, each as the warehouse resolves it; None when ``text`` is not a
    table name of one to three parts (an unclosed quote, an empty part, four parts)."""
    fold = _fold_for(adapter_type)
    case_blind = (adapter_type or "").lower() in _CASE_BLIND
    parts: list[str] = []
    position, length = 0, len(text := text.strip())
    while True:
        if position < length and text[position] in _QUOTES:
            closing = _QUOTES[text[position]]
            position += 1
            value = ""
            while True:
                end = text.find(closing, position)
                if end < 0:
                    return None
                value += text[position:end]
                position = end + 1
                # A doubled closing quote is the quote itself ("a""b" is a"b).
                if text.startswith(closing, position) and closing != "]":
                    value += closing
                    position += 1
                    continue
                break
            if not value:
                return None
            # BigQuery: `project.dataset.table` quotes the whole name at once.
            pieces = value.split(".") if closing == "`" and "." in value else [value]
            parts.extend(piece.lower() if case_blind else piece for piece in pieces)
        else:
            end = text.find(".", position)
            end = length if end < 0 else end
            value = text[position:end].strip()
            if not value or any(quote in value for quote in _QUOTES):
                return None
            parts.append(fold(value))
            position = end
        if position >= length:
            break
        if text[position] != ".":
            return None
        position += 1
    if not 1 <= len(parts) <= 3 or any(not part for part in parts):
        return None
    return tuple(parts)


def relation_parts(relation: Relation, adapter_type: str | None) -> TableParts:
    """The relation's database, schema and identifier as the warehouse resolves them."""
    if relation.rendered:
        parsed = parse_table_name(relation.rendered, adapter_type)
        if parsed is not None:
            return parsed
    fold = _fold_for(adapter_type)
    given = (relation.database, relation.schema, relation.identifier)
    return tuple(fold(part) for part in given if part)


@dataclass(frozen=True, slots=True)
class RelationIndex:
    """Relations by the last part of their name, to match table names against."""

    adapter_type: str | None
    by_identifier: Mapping[str, tuple[tuple[TableParts, Relation], ...]]

    @classmethod
    def of(cls, relations: Iterable[Relation], adapter_type: str | None) -> RelationIndex:
        by_identifier: defaultdict[str, list[tuple[TableParts, Relation]]] = defaultdict(list)
        for relation in relations:
            parts = relation_parts(relation, adapter_type)
            by_identifier[parts[-1]].append((parts, relation))
        return cls(adapter_type, {key: tuple(value) for key, value in by_identifier.items()})

    def match(self, table_name: str) -> tuple[Relation, ...]:
        """The relations ``table_name`` may mean: every one whose name ends with its parts."""
        parts = parse_table_name(table_name, self.adapter_type)
        if parts is None:
            return ()
        return tuple(
            relation
            for candidate, relation in self.by_identifier.get(parts[-1], ())
            if candidate[-len(parts) :] == parts
        )
