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

import bisect
import difflib
import fnmatch
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hexdbt.dbt.artifacts import (
    DATA_RESOURCE_TYPES,
    Manifest,
    ManifestNode,
    NodeLookups,
    node_name,
)

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
    selector is resolved once. Names, tags, packages and fqn heads are dictionary lookups in the
    manifest's NodeLookups (gathered while it was read). The rest is built on first use, in one
    pass over the nodes: fqns and file paths as sorted lists in which a folder or an fqn prefix
    is a contiguous range found by bisection, and per ``config.<key>`` a dictionary from value to
    nodes. So a plan costs a few passes over the manifest, however many selectors it has.
    """

    manifest: Manifest
    _cache: dict[str, frozenset[str]] = field(default_factory=dict)
    _gathered: NodeLookups | None = None
    _fqns: _SortedKeys | None = None
    _paths: _SortedKeys | None = None
    _by_config: dict[tuple[str, ...], _ConfigValues] = field(default_factory=dict)

    def resolve(self, selector: Selector) -> frozenset[str]:
        cached = self._cache.get(selector.text)
        if cached is None:
            cached = frozenset(self._resolve(selector))
            self._cache[selector.text] = cached
        return cached

    def resolve_all(self, selectors: Iterable[Selector]) -> frozenset[str]:
        resolved = sorted((self.resolve(selector) for selector in selectors), key=len)
        if not resolved:
            return frozenset()
        # One copy of the largest set (a tag can match thousands of nodes, a name one).
        return resolved[-1].union(*resolved[:-1])

    def _nodes(self) -> Iterable[ManifestNode]:
        return self.manifest.nodes.values()

    def _resolve(self, selector: Selector) -> Iterable[str]:
        method, value = selector.method, selector.value
        if method == "unique_id":
            return (value,) if value in self.manifest.nodes else ()
        if method == "fqn":
            return self._resolve_fqn(value)
        if method == "tag":
            if _WILDCARD.search(value):
                return [n.unique_id for n in self._nodes() if fnmatch.filter(n.tags, value)]
            return self._tags().get(value, ())
        if method == "package":
            wanted = self.manifest.project_name if value == "this" else value
            if wanted is None:
                return ()
            by_package = self._packages()
            if not _WILDCARD.search(wanted):
                return by_package.get(wanted, ())
            return [
                uid
                for package, ids in by_package.items()
                if fnmatch.fnmatchcase(package, wanted)
                for uid in ids
            ]
        if method == "path":
            if _WILDCARD.search(value):
                return [
                    n.unique_id
                    for n in self._nodes()
                    if fnmatch.fnmatchcase(n.original_file_path, value)
                    or fnmatch.fnmatchcase(n.original_file_path, value + "/*")
                ]
            # The file itself, or everything in the folder (not a folder merely starting so).
            return self._file_paths().under(value, "/")
        if method == "config":
            return self._config_values(selector.config_key).matching(value)
        raise AssertionError(f"unhandled selector method {method}")  # parse_selector guards

    def _resolve_fqn(self, value: str) -> set[str]:
        if selector_is_plain_name(value):
            # A dotless selector is a node name, and also an fqn head in dbt: the package
            # itself, or (with the package implied) a top folder, so `marts` selects
            # models/marts/**.
            return {*self._names().get(value, ()), *self._fqn_heads().get(value, ())}
        parts = value.split(".")
        literal: list[str] = []
        for part in parts:
            if _WILDCARD.search(part):
                break
            literal.append(part)
        candidates: Iterable[ManifestNode]
        if len(parts) > 1 and literal:
            # Only nodes whose fqn starts with the literal head (or package + head) can match;
            # the sorted fqns turn a scan of every node into a few bisections.
            head = ".".join(literal)
            fqns = self._fqn_keys()
            ids = set(fqns.under(head, "."))
            for package in self._packages():
                ids.update(fqns.under(f"{package}.{head}", "."))
            candidates = [self.manifest.nodes[uid] for uid in ids]
        else:
            candidates = self._nodes()
        matched: set[str] = set()
        if len(parts) == len(literal) + 1 and parts[-1] == "*" and len(parts) > 1:
            # `marts.finance.*`, the usual form: a trailing * matches any rest, so a node
            # matches when its fqn (or its fqn after the package) starts with the head and goes on.
            head_parts = tuple(literal)
            size = len(head_parts)
            for node in candidates:
                flat = _flat_fqn(node)
                if (len(flat) > size and flat[:size] == head_parts) or (
                    len(flat) > size + 1
                    and flat[0] == node.package_name
                    and flat[1 : size + 1] == head_parts
                ):
                    matched.add(node.unique_id)
            return matched
        for node in candidates:
            flat = _flat_fqn(node)
            if (
                (len(parts) == 1 and fnmatch.fnmatchcase(node.name, value))
                or _fqn_matches(flat, parts)
                or _fqn_matches(flat, [node.package_name, *parts])
            ):
                matched.add(node.unique_id)
        return matched

    def _lookups(self) -> NodeLookups:
        if self._gathered is None:
            self._gathered = self.manifest.lookups or _gather_lookups(self.manifest.nodes)
        return self._gathered

    def _names(self) -> Mapping[str, list[str]]:
        return self._lookups().by_name

    def _tags(self) -> Mapping[str, list[str]]:
        return self._lookups().by_tag

    def _packages(self) -> Mapping[str, list[str]]:
        return self._lookups().by_package

    def _fqn_heads(self) -> Mapping[str, list[str]]:
        return self._lookups().by_fqn_head

    def _fqn_keys(self) -> _SortedKeys:
        # Joining the fqn on dots flattens a versioned name's dots too, like _flat_fqn.
        if self._fqns is None:
            nodes = self.manifest.nodes
            self._fqns = _SortedKeys([".".join(node.fqn) for node in nodes.values()], list(nodes))
        return self._fqns

    def _file_paths(self) -> _SortedKeys:
        if self._paths is None:
            nodes = self.manifest.nodes
            self._paths = _SortedKeys(
                [node.original_file_path for node in nodes.values()], list(nodes)
            )
        return self._paths

    def _config_values(self, key: tuple[str, ...]) -> _ConfigValues:
        values = self._by_config.get(key)
        if values is None:
            values = self._by_config[key] = _ConfigValues(key, self.manifest.nodes)
        return values


def _gather_lookups(nodes: Mapping[str, ManifestNode]) -> NodeLookups:
    """What load_manifest gathers as it reads, for a Manifest built without it."""
    by_name: dict[str, list[str]] = {}
    by_tag: dict[str, list[str]] = {}
    by_package: dict[str, list[str]] = {}
    by_fqn_head: dict[str, list[str]] = {}
    for uid, node in nodes.items():
        by_name.setdefault(node.name, []).append(uid)
        by_package.setdefault(node.package_name, []).append(uid)
        for tag in node.tags:
            by_tag.setdefault(tag, []).append(uid)
        flat = _flat_fqn(node)
        if flat:
            by_fqn_head.setdefault(flat[0], []).append(uid)
            if flat[0] == node.package_name and len(flat) > 1:
                by_fqn_head.setdefault(flat[1], []).append(uid)
    return NodeLookups(by_name, by_tag, by_package, by_fqn_head)


class _SortedKeys:
    """Node ids sorted by a string key (a dotted fqn, a file path), so that every key equal to
    ``prefix`` or starting with ``prefix + separator`` is one contiguous range."""

    __slots__ = ("_ids", "_keys")

    def __init__(self, keys: list[str], ids: list[str]) -> None:
        # Sorting positions rather than (key, id) pairs: no tuple per node, so no work for the
        # garbage collector, which a plan over a large manifest otherwise pays for.
        order = sorted(range(len(keys)), key=keys.__getitem__)
        self._keys = [keys[position] for position in order]
        self._ids = [ids[position] for position in order]

    def under(self, prefix: str, separator: str) -> list[str]:
        keys = self._keys
        start = bisect.bisect_left(keys, prefix)
        exact = bisect.bisect_right(keys, prefix, start)
        # Keys starting with prefix + separator sort from there to prefix + the next character.
        first = bisect.bisect_left(keys, prefix + separator, exact)
        end = bisect.bisect_left(keys, prefix + chr(ord(separator) + 1), first)
        return self._ids[start:exact] + self._ids[first:end]


_MISSING: Any = object()


def _add_config_value(
    texts: defaultdict[str, list[str]], booleans: defaultdict[str, list[str]], value: Any, uid: str
) -> None:
    # dbt compares config values as text, booleans case-insensitively; None matches nothing.
    if value is True:
        booleans["true"].append(uid)
    elif value is False:
        booleans["false"].append(uid)
    elif value is not None:
        texts[value if type(value) is str else str(value)].append(uid)


class _ConfigValues:
    """For one ``config.<key>`` path: which nodes hold which value there (each item of a list
    counted), compared as dbt does, as text, and booleans case-insensitively."""

    __slots__ = ("_booleans", "_texts")

    def __init__(self, key: tuple[str, ...], nodes: Mapping[str, ManifestNode]) -> None:
        # A config selector costs one pass over every node's config, whatever it asks for; it
        # walks the key one level at a time over all nodes (list comprehensions, no object made
        # per node), which is several times faster than walking each node's key in turn.
        configs = [node.config for node in nodes.values()]
        # Nodes with the same config text share one config object (load_manifest): each
        # distinct object is looked into once.
        distinct = {id(config): config for config in configs}
        values: list[Any] = list(distinct.values())
        for part in key:
            # type() first: JSON gives dicts, and isinstance against an ABC is slow.
            values = [
                value.get(part, _MISSING)
                if type(value) is dict or isinstance(value, Mapping)
                else _MISSING
                for value in values
            ]
        value_of = dict(zip(distinct, values, strict=True))
        values = [value_of[id(config)] for config in configs]
        texts: defaultdict[str, list[str]] = defaultdict(list)
        booleans: defaultdict[str, list[str]] = defaultdict(list)
        for uid, value in zip(nodes, values, strict=True):
            kind = type(value)
            if kind is str:  # the usual cases first, inline
                texts[value].append(uid)
            elif kind is bool:
                booleans["true" if value else "false"].append(uid)
            elif kind is list or kind is tuple:
                for candidate in value:
                    _add_config_value(texts, booleans, candidate, uid)
            elif value is not _MISSING:
                _add_config_value(texts, booleans, value, uid)
        self._texts = dict(texts)
        self._booleans = dict(booleans)

    def matching(self, wanted: str) -> set[str]:
        return {*self._texts.get(wanted, ()), *self._booleans.get(wanted.lower(), ())}


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
