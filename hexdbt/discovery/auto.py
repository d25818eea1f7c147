"""``discover: auto``: the mapping set plus the apps the cached discovery found unmapped."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hexdbt.clock import Clock, SystemClock, to_iso
from hexdbt.dbt.relations import load_relations
from hexdbt.discovery.cache import read_cache
from hexdbt.discovery.proposal import entry_name, propose
from hexdbt.hex.client import normalize_base_url
from hexdbt.mapping.loader import discovered_mapping
from hexdbt.mapping.model import MappingSet
from hexdbt.mapping.selectors import Selector
from hexdbt.settings import resolve_base_url


def with_discovered(
    mappings: MappingSet,
    manifest_path: Path,
    *,
    clock: Clock | None = None,
    cache: Path | None = None,
) -> MappingSet:
    """``mappings`` with one entry (``discovered``) per app of the cache that reads dbt models
    and that nothing maps. A cache that is missing, of another Hex, or older than the file's
    ``discover_max_age_hours`` adds nothing, and says so in ``notes``."""
    discovery = read_cache(cache)
    hint = "run `hexdbt discover` to refresh it"
    if discovery is None:
        return _noted(mappings, f"discover: auto: no discovery cache yet; {hint}")
    if discovery.hex_url != _hex_address():
        return _noted(
            mappings, f"discover: auto: the discovery cache is of {discovery.hex_url}; {hint}"
        )
    age_h = ((clock or SystemClock()).now() - discovery.fetched_at) / 3600
    if age_h > mappings.discover_max_age_hours:
        return _noted(
            mappings,
            f"discover: auto: the discovery cache is {age_h:.0f} hours old (more than"
            f" discover_max_age_hours, {mappings.discover_max_age_hours:g}); {hint}",
        )
    proposal = propose(discovery, load_relations(manifest_path))
    mapped = {mapping.project_id for mapping in mappings}
    names = [mapping.name for mapping in mappings]
    added = []
    source = f"discovered {to_iso(discovery.fetched_at)}"
    for app in proposal.apps:
        if app.project_id in mapped or not app.models:
            continue
        name = entry_name(app.title, names)
        names.append(name)
        selectors = tuple(
            Selector(relation.unique_id, "unique_id", relation.unique_id) for relation in app.models
        )
        added.append(discovered_mapping(mappings, name, app.project_id, selectors, source))
    return replace(mappings, projects=(*mappings.projects, *added))


def _hex_address() -> str:
    """The Hex this process talks to, as a client names it (``HexClient.base_url``)."""
    return normalize_base_url(resolve_base_url(), allow_insecure_http=True)[: -len("/api/v1")]


def _noted(mappings: MappingSet, note: str) -> MappingSet:
    return replace(mappings, notes=(*mappings.notes, note))
