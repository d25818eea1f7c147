"""dbt node selection, evaluated over the manifest without dbt.

Supported, with dbt's semantics (see docs/mapping.md):

    customers                 a node name
    marts.finance.*           a dotted fqn, with * ? [] wildcards; the package may be left out
    fqn:marts.finance         the same, explicitly
    tag:finance               a tag (wildcards allowed)
    path:models/marts         a file or a folder under the project root (everything below it)
    package:jaffle_shop       a package (``this`` is the root project)
    config.materialized:table a config value; ``config.meta.hex:true`` walks into dicts
    model.jaffle_shop.orders  an exact unique_id

Graph operators (``+orders``, ``orders+``, ``@orders``) and set operators are not supported:
a mapping lists the models a Hex app reads, not their lineage.

Without a manifest only bare names (and unique ids) can be matched, against the node names in
the invocation's results.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hexdbt.dbt.artifacts import DATA_RESOURCE_TYPES, Manifest, ManifestNode, node_name

METHODS = ("fqn", "tag", "path", "package", "config", "unique_id")
_WILDCARD = re.compile(r"[*?\[\]]")
_UNIQUE_ID = re.compile(r"^(model|seed|snapshot)\.[^.]+\.[^.]+(\.v\d+)?$")


class SelectorError(ValueError):
    """A selector that cannot be parsed; the mapping loader turns it into a ConfigError."""


@dataclass(frozen=True, slots=True)
class Selector:
    text: str
    method: str
    value: str
    config_key: tuple[str, ...] = ()

    @property
    def needs_manifest(self) -> bool:
        return not (self.method == "unique_id" or (self.method == "fqn" and self.is_bare_name))

    @property
    def is_bare_name(self) -> bool:
        return "." not in self.value and not _WILDCARD.search(self.value)


def parse_selector(text: str) -> Selector:
    text = text.strip()
    if not text:
        raise SelectorError("an empty selector")
    if text[0] in "+@" or text[-1] == "+" or " " in text or "," in text:
        raise SelectorError(
            f"{text!r}: graph and set operators (+, @, space, comma) are not supported; "
            "list each model the Hex app reads"
        )
    method, sep, value = text.partition(":")
    if not sep:
        if _UNIQUE_ID.match(text):
            return Selector(text, "unique_id", text)
        if "/" in text or "\\" in text or text.endswith((".sql", ".py", ".csv")):
            return Selector(text, "path", _normalize_path(text))
        return Selector(text, "fqn", text)
    if not value:
        raise SelectorError(f"{text!r}: nothing after {method}:")
    if method.startswith("config."):
        key = tuple(part for part in method.split(".")[1:])
        if not all(key):
            raise SelectorError(f"{text!r}: config needs a key, like config.materialized:table")
        return Selector(text, "config", value, key)
    if method not in METHODS:
        close = difflib.get_close_matches(method, [*METHODS, "config.<key>"], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SelectorError(
            f"{text!r}: unknown selector method {method!r}{hint}; "
            "use a name, fqn:, tag:, path:, package:, config.<key>: or a unique id"
        )
    if method == "path":
        value = _normalize_path(value)
    return Selector(text, method, value)


def _normalize_path(value: str) -> str:
    value = value.replace("\\", "/")
    while value.startswith("./"):
        value = value[2:]
    return value.rstrip("/")


def _config_value_matches(
    node_config: Mapping[str, Any], key: tuple[str, ...], wanted: str
) -> bool:
    value: Any = node_config
    for part in key:
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    candidates = value if isinstance(value, list | tuple) else [value]
    for candidate in candidates:
        if isinstance(candidate, bool):
            if str(candidate).lower() == wanted.lower():
                return True
        elif candidate is not None and str(candidate) == wanted:
            return True
    return False


def _fqn_matches(flat_fqn: tuple[str, ...], pattern_parts: list[str]) -> bool:
    """dbt's fqn rule: the pattern's parts match the fqn's leading parts one by one, except
    that from the first part with a wildcard on, the rest is matched as one dotted glob."""
    if len(flat_fqn) < len(pattern_parts):
        return False
    for index, part in enumerate(pattern_parts):
        if _WILDCARD.search(part):
            return fnmatch.fnmatchcase(".".join(flat_fqn[index:]), ".".join(pattern_parts[index:]))
        if flat_fqn[index] != part:
            return False
    return True


@dataclass
class SelectorIndex:
    """Selectors resolved over one manifest, with the lookups built once and results cached.

    A mapping file of hundreds of projects shares a few dozen distinct selectors; each distinct
    selector is resolved once, and names, tags, packages and folders are dictionary lookups.
    """

    manifest: Manifest
    _cache: dict[str, frozenset[str]] = field(default_factory=dict)
    _by_name: dict[str, set[str]] | None = None
    _by_tag: dict[str, set[str]] | None = None
    _by_folder: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    _by_fqn_prefix: dict[int, dict[tuple[str, ...], list[str]]] = field(default_factory=dict)

    def resolve(self, selector: Selector) -> frozenset[str]:
        cached = self._cache.get(selector.text)
        if cached is None:
            cached = frozenset(self._resolve(selector))
            self._cache[selector.text] = cached
        return cached

    def resolve_all(self, selectors: Iterable[Selector]) -> frozenset[str]:
        matched: set[str] = set()
        for selector in selectors:
            matched |= self.resolve(selector)
        return frozenset(matched)

    def _nodes(self) -> Iterable[ManifestNode]:
        return self.manifest.nodes.values()

    def _resolve(self, selector: Selector) -> set[str]:
        method, value = selector.method, selector.value
        if method == "unique_id":
            return {value} if value in self.manifest.nodes else set()
        if method == "fqn":
            return self._resolve_fqn(value)
        if method == "tag":
            if _WILDCARD.search(value):
                return {n.unique_id for n in self._nodes() if fnmatch.filter(n.tags, value)}
            return set(self._tags().get(value, ()))
        if method == "package":
            wanted = self.manifest.project_name if value == "this" else value
            return {
                n.unique_id
                for n in self._nodes()
                if wanted is not None and fnmatch.fnmatchcase(n.package_name, wanted)
            }
        if method == "path":
            if _WILDCARD.search(value):
                return {
                    n.unique_id
                    for n in self._nodes()
                    if fnmatch.fnmatchcase(n.original_file_path, value)
                    or fnmatch.fnmatchcase(n.original_file_path, value + "/*")
                }
            return set(self._folders(value.count("/") + 1).get(value, ()))
        if method == "config":
            return {
                n.unique_id
                for n in self._nodes()
                if _config_value_matches(n.config, selector.config_key, value)
            }
        raise AssertionError(f"unhandled selector method {method}")  # parse_selector guards

    def _resolve_fqn(self, value: str) -> set[str]:
        if selector_is_plain_name(value):
            return set(self._names().get(value, ()))
        parts = value.split(".")
        literal: list[str] = []
        for part in parts:
            if _WILDCARD.search(part):
                break
            literal.append(part)
        candidates: Iterable[ManifestNode]
        if len(parts) > 1 and literal:
            # Only nodes whose fqn starts with the literal head (or package + head) can match;
            # the prefix index turns a scan of every node into a lookup.
            heads = [tuple(literal)] + [(package, *literal) for package in self._packages()]
            ids = {uid for head in heads for uid in self._fqn_prefixes(len(head)).get(head, ())}
            candidates = [self.manifest.nodes[uid] for uid in ids]
        else:
            candidates = self._nodes()
        matched: set[str] = set()
        for node in candidates:
            flat = _flat_fqn(node)
            if (
                (len(parts) == 1 and fnmatch.fnmatchcase(node.name, value))
                or _fqn_matches(flat, parts)
                or _fqn_matches(flat, [node.package_name, *parts])
            ):
                matched.add(node.unique_id)
        return matched

    def _packages(self) -> set[str]:
        return {node.package_name for node in self._nodes()}

    def _fqn_prefixes(self, depth: int) -> dict[tuple[str, ...], list[str]]:
        """Nodes by the first ``depth`` parts of their fqn, built per depth when first asked."""
        index = self._by_fqn_prefix.get(depth)
        if index is None:
            index = self._by_fqn_prefix[depth] = {}
            for node in self._nodes():
                flat = _flat_fqn(node)
                if len(flat) >= depth:
                    index.setdefault(flat[:depth], []).append(node.unique_id)
        return index

    def _names(self) -> dict[str, set[str]]:
        if self._by_name is None:
            self._by_name = {}
            for node in self._nodes():
                self._by_name.setdefault(node.name, set()).add(node.unique_id)
                # A dotless selector is also an fqn prefix in dbt: the package itself, or (with
                # the package implied) a top folder, so `marts` selects models/marts/**.
                flat = _flat_fqn(node)
                for prefix in flat[:1] if flat[:1] != (node.package_name,) else flat[:2]:
                    self._by_name.setdefault(prefix, set()).add(node.unique_id)
        return self._by_name

    def _tags(self) -> dict[str, set[str]]:
        if self._by_tag is None:
            self._by_tag = {}
            for node in self._nodes():
                for tag in node.tags:
                    self._by_tag.setdefault(tag, set()).add(node.unique_id)
        return self._by_tag

    def _folders(self, depth: int) -> dict[str, list[str]]:
        """Nodes by the first ``depth`` parts of their file path (a folder, or the file itself),
        built per depth when first asked."""
        index = self._by_folder.get(depth)
        if index is None:
            index = self._by_folder[depth] = {}
            for node in self._nodes():
                parts = node.original_file_path.split("/", depth)
                if len(parts) >= depth:
                    index.setdefault("/".join(parts[:depth]), []).append(node.unique_id)
        return index


def selector_is_plain_name(value: str) -> bool:
    return "." not in value and not _WILDCARD.search(value)


def _flat_fqn(node: ManifestNode) -> tuple[str, ...]:
    # A versioned model's name may contain dots; dbt splits them as namespace parts.
    if node.fqn and "." in node.fqn[-1]:
        return tuple(item for segment in node.fqn for item in segment.split("."))
    return node.fqn


def resolve_without_manifest(
    selectors: Iterable[Selector], result_ids: Iterable[str]
) -> tuple[frozenset[str], tuple[Selector, ...]]:
    """Match bare names and unique ids against the invocation's node ids alone.

    Returns the matched ids and the selectors that need a manifest to be evaluated.
    """
    names: dict[str, set[str]] = {}
    for unique_id in result_ids:
        if unique_id.split(".", 1)[0] in DATA_RESOURCE_TYPES:
            names.setdefault(node_name(unique_id), set()).add(unique_id)
    all_ids = {uid for ids in names.values() for uid in ids}
    matched: set[str] = set()
    unresolved: list[Selector] = []
    for selector in selectors:
        if selector.method == "unique_id":
            if selector.value in all_ids:
                matched.add(selector.value)
        elif selector.method == "fqn" and selector.is_bare_name:
            matched |= names.get(selector.value, set())
        else:
            unresolved.append(selector)
    return frozenset(matched), tuple(unresolved)
