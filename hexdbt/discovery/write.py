"""``hexdbt discover --write``: the proposal merged into hex_mappings.yml.

A round-trip YAML parser (ruamel.yaml, imported here only) keeps every comment, key, order and
quoting of the file. New apps are appended as ``discovered: true`` entries; an app already
mapped gets the models it reads that its entry lacks; only a ``discovered: true`` entry loses
the models its app no longer reads: a hand-written model is never removed.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hexdbt.discovery.proposal import Proposal, entry_name
from hexdbt.errors import ConfigError
from hexdbt.files import write_whole
from hexdbt.mapping.model import ProjectMapping
from hexdbt.mapping.selectors import SelectorIndex

_SEQUENCE_ITEM = re.compile(r"^( *)- ", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class WriteResult:
    added: tuple[str, ...]  # names of the new entries
    updated: tuple[str, ...]  # names of the entries whose models changed


def write_proposal(
    path: Path,
    proposal: Proposal,
    mappings: tuple[ProjectMapping, ...],
    selectors: SelectorIndex,
) -> WriteResult:
    """Merge ``proposal`` into the file at ``path`` (created when missing). ``mappings`` are the
    file's entries and the exposures, in the file's order: an app an exposure maps is left to it."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    text = path.read_text(encoding="utf-8") if path.exists() else "version: 1\n"
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a hand-written line
    item = _SEQUENCE_ITEM.search(text)
    offset = len(item.group(1)) if item else 2
    yaml.indent(mapping=2, sequence=offset + 2, offset=offset)
    document = yaml.load(text)
    if not isinstance(document, CommentedMap):
        raise ConfigError(f"{path}: expected a mapping with version and projects")
    entries = document.get("projects")
    if entries is None:
        entries = document["projects"] = CommentedSeq()

    by_project = {mapping.project_id: mapping for mapping in mappings}
    entry_of = {
        str(entry.get("project_id")): entry for entry in entries if isinstance(entry, CommentedMap)
    }
    names = [mapping.name for mapping in mappings]
    added: list[str] = []
    updated: list[str] = []
    for app in proposal.apps:
        wanted = [proposal.selector_of(relation) for relation in app.models]
        mapping = by_project.get(app.project_id)
        entry = entry_of.get(app.project_id)
        if mapping is None:
            if not wanted:
                continue
            name = entry_name(app.title, names)
            names.append(name)
            new = CommentedMap()
            new["name"] = name
            new["project_id"] = app.project_id
            new["models"] = _flow(CommentedSeq(wanted))
            new["discovered"] = True
            new.yaml_set_start_comment(f"{app.title}: added by hexdbt discover", indent=offset)
            entries.append(new)
            added.append(name)
            continue
        if entry is None:
            continue  # mapped by a dbt exposure
        models = entry.get("models")
        if isinstance(models, str):
            models = entry["models"] = _flow(CommentedSeq([models]))
        mapped = selectors.resolve_all(mapping.models)
        changed = False
        for relation, selector in zip(app.models, wanted, strict=True):
            if relation.unique_id not in mapped:
                models.append(selector)
                changed = True
        if entry.get("discovered") is True:
            read = app.model_ids
            for text_selector in list(models):
                resolved = selectors.resolve_all(
                    [selector for selector in mapping.models if selector.text == text_selector]
                )
                if resolved and not resolved & read:
                    models.remove(text_selector)
                    changed = True
        if changed:
            updated.append(mapping.name)
    if added or updated:
        buffer = io.StringIO()
        yaml.dump(document, buffer)
        write_whole(path, buffer.getvalue(), what="the mapping file")
    return WriteResult(tuple(added), tuple(updated))


def _flow(sequence: Any) -> Any:
    sequence.fa.set_flow_style()
    return sequence
