"""What a plan needs besides the invocation, kept parsed between invocations: a target's
manifest.json, its selector index and the mapping (with the exposures and discovery it merges)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from hexdbt.dbt.artifacts import Invocation, Manifest, load_manifest
from hexdbt.files import FileSignature, signature_of
from hexdbt.mapping import MappingSet, resolve_mappings_path
from hexdbt.mapping.selectors import SelectorIndex
from hexdbt.planner.files import load_mapping_set
from hexdbt.planner.rules import Plan, make_plan


class PlanInputs:
    """One target's manifest.json and the mapping, each parsed once per version of its file.

    Every invocation is planned from them; a real manifest is tens of MB, and parsing it again
    after each run_results.json would stand between dbt's close and the trigger. dbt writes
    manifest.json just before run_results.json, so the watch loop parses it on its close, ahead
    of the invocation. Otherwise a file counts as unchanged while its inode, size and mtime are;
    the signature is taken before the read, so a write during the read makes the next use read
    again. Errors are not kept: the next use reads again.
    """

    def __init__(self, manifest_path: Path, mappings_file: Path | None) -> None:
        self.manifest_path = manifest_path
        self.mappings_file = mappings_file
        self._manifest: tuple[FileSignature, Manifest, SelectorIndex] | None = None
        self._mappings: tuple[Path, FileSignature | None, Manifest, MappingSet] | None = None

    def manifest(self, *, written: bool = False) -> Manifest:
        """The parsed manifest.json; ``written``: it was just closed after writing, so it is read
        even if it looks unchanged (a rewrite of the same size within the file system's clock
        tick keeps the old mtime)."""
        signature = signature_of(self.manifest_path)
        if not written and self._manifest is not None and signature == self._manifest[0]:
            return self._manifest[1]
        self._manifest = None
        manifest = load_manifest(self.manifest_path)
        if signature is not None:
            self._manifest = (signature, manifest, SelectorIndex(manifest))
        return manifest

    def selectors(self, manifest: Manifest) -> SelectorIndex:
        """The selector index kept with ``manifest``: each selector is resolved once per version."""
        if self._manifest is not None and self._manifest[1] is manifest:
            return self._manifest[2]
        return SelectorIndex(manifest)

    def mappings(self, manifest: Manifest) -> MappingSet:
        """The mapping file (or the exposures alone), merged with ``manifest``'s Hex exposures."""
        mappings_path, _explicit = resolve_mappings_path(self.mappings_file)
        signature = signature_of(mappings_path)
        cached = self._mappings
        if (
            cached is not None
            and cached[:2] == (mappings_path, signature)
            and cached[2] is manifest
        ):
            return cached[3]
        mappings, _path, _used = load_mapping_set(self.mappings_file, manifest)
        self._mappings = (mappings_path, signature, manifest, mappings)
        return mappings

    def plan(self, invocation: Invocation, *, environ: Mapping[str, str] | None = None) -> Plan:
        """As ``planner.files.plan_from_files``, on the invocation already read and the parsed
        inputs."""
        manifest = self.manifest()
        return make_plan(
            invocation,
            self.mappings(manifest),
            manifest,
            environ=environ,
            selectors=self.selectors(manifest),
        )
