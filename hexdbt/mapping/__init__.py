"""Which Hex projects read which dbt models: hex_mappings.yml, dbt exposures, selectors and
sandboxed parameter templates."""

from __future__ import annotations

from hexdbt.mapping.loader import (
    DEFAULT_MAPPINGS_FILE,
    load_mappings,
    mappings_from_exposures,
    parse_mappings,
    project_id_from_url,
    resolve_mappings_path,
)
from hexdbt.mapping.model import MappingSet, ProjectMapping, TriggerRule
from hexdbt.mapping.selectors import Selector, SelectorIndex, parse_selector

__all__ = [
    "DEFAULT_MAPPINGS_FILE",
    "MappingSet",
    "ProjectMapping",
    "Selector",
    "SelectorIndex",
    "TriggerRule",
    "load_mappings",
    "mappings_from_exposures",
    "parse_mappings",
    "parse_selector",
    "project_id_from_url",
    "resolve_mappings_path",
]
