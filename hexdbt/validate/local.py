"""The mapping checked on its own and against dbt's manifest.json: what loads, what each
selector matches, project ids, duplicates, and params rendered with a sample invocation."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hexdbt.errors import ConfigError
from hexdbt.validate.findings import Finding, MappedProject, Severity, Validation

if TYPE_CHECKING:
    from hexdbt.dbt.artifacts import Manifest
    from hexdbt.mapping.model import ProjectMapping
    from hexdbt.mapping.selectors import Selector, SelectorIndex

# Hex project ids are UUIDs (the path segment after /app/ or /hex/ in a link).
_HEX_ID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_LOCATED = re.compile(r"^(?P<line>\d+): (?P<message>.*)$", re.DOTALL)


# ----------------------------------------------------------------------------------------------
# Line numbers of a mapping file's entries


@dataclass
class _Lines:
    """Lines of ``projects[i]`` and ``projects[i].models[j]`` in the mapping file."""

    projects: dict[int, int] = field(default_factory=dict)
    selectors: dict[tuple[int, int], int] = field(default_factory=dict)

    @classmethod
    def of(cls, text: str) -> _Lines:
        import yaml

        lines = cls()
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError:
            return lines
        if not isinstance(root, yaml.MappingNode):
            return lines
        for key, value in root.value:
            if key.value != "projects" or not isinstance(value, yaml.SequenceNode):
                continue
            for index, project in enumerate(value.value):
                lines.projects[index] = project.start_mark.line + 1
                if not isinstance(project, yaml.MappingNode):
                    continue
                for project_key, project_value in project.value:
                    if project_key.value != "models":
                        continue
                    items = (
                        project_value.value
                        if isinstance(project_value, yaml.SequenceNode)
                        else [project_value]
                    )
                    for position, item in enumerate(items):
                        lines.selectors[(index, position)] = item.start_mark.line + 1
        return lines


def _exposure_line(project_dir: Path | None, relative_file: str, name: str) -> int | None:
    """The line of ``- name: <exposure>`` in the dbt YAML file that declares it."""
    if project_dir is None:
        return None
    try:
        text = (project_dir / relative_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    pattern = re.compile(rf"^\s*(-\s+)?name:\s*['\"]?{re.escape(name)}['\"]?\s*(#.*)?$")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return None


# ----------------------------------------------------------------------------------------------
# The mapping against the manifest


def validate_mapping(
    mappings_path: Path | None,
    manifest: Manifest | None,
    *,
    project_dir: Path | None = None,
    sample_started_at: str = "2026-01-01T00:00:00Z",
    environ: Mapping[str, str] | None = None,
    manifest_problem: str = "no manifest.json",
) -> Validation:
    """Every finding about the mapping file (``None``: none, exposures only) and the manifest's
    Hex exposures. ``sample_started_at`` is the start time of the sample invocation with which
    input param templates are rendered; ``manifest_problem`` says why ``manifest`` is None."""
    from hexdbt.mapping.loader import parse_mappings

    findings: list[Finding] = []
    projects: list[MappedProject] = []
    label = str(mappings_path) if mappings_path is not None else "hex_mappings.yml"
    if mappings_path is not None:
        text = _read_mapping_file(mappings_path, findings)
        if text is not None:
            try:
                file_projects = parse_mappings(text, label).projects
            except ConfigError as exc:
                findings.append(_loader_finding(exc, label))
                file_projects = ()
            lines = _Lines.of(text)
            for index, mapping in enumerate(file_projects):
                projects.append(
                    MappedProject(mapping, label, lines.projects.get(index), file_index=index)
                )
        else:
            lines = _Lines()
    else:
        lines = _Lines()

    if manifest is not None:
        projects.extend(_exposure_projects(manifest, projects, project_dir, findings))
    if not projects and not findings:
        findings.append(
            Finding(
                Severity.ERROR,
                "no-mappings",
                label,
                None,
                "no mapping file, and no dbt exposure declares a Hex project",
                hint="create hex_mappings.yml (see docs/mapping.md) or pass --mappings",
            )
        )

    if manifest is None:
        findings.append(
            Finding(
                Severity.WARNING,
                "manifest-missing",
                label,
                None,
                f"{manifest_problem}: selectors were not checked against the dbt project",
                hint="run `dbt parse` (or any dbt command) first, or pass --project-dir",
            )
        )
        findings.extend(_needs_manifest_findings(projects, lines))
    else:
        findings.extend(_selector_findings(projects, manifest, lines))
    findings.extend(_project_id_findings(projects))
    findings.extend(_interval_findings(projects))
    findings.extend(_duplicate_findings(projects))
    projects = _with_sample_params(projects, manifest, sample_started_at, environ, findings)
    return Validation(tuple(findings), tuple(projects), manifest_checked=manifest is not None)


def _read_mapping_file(path: Path, findings: list[Finding]) -> str | None:
    problem: str | None = None
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problem = "mapping file not found"
    except IsADirectoryError:
        problem = "is a folder, not a mapping file"
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except OSError as exc:
        problem = f"cannot read the mapping file: {exc.strerror}"
    findings.append(
        Finding(
            Severity.ERROR,
            "mapping-unreadable",
            str(path),
            None,
            problem,
            hint="create it (see docs/mapping.md) or point --mappings / HEXDBT_MAPPINGS at it",
        )
    )
    return None


def _loader_finding(exc: ConfigError, label: str) -> Finding:
    message = exc.message
    line: int | None = None
    if message.startswith(f"{label}:"):
        rest = message[len(label) + 1 :]
        located = _LOCATED.match(rest)
        if located:
            line = int(located["line"])
            message = located["message"]
        else:
            message = rest.strip()
    return Finding(Severity.ERROR, "mapping-invalid", label, line, message, hint=exc.hint)


def _exposure_projects(
    manifest: Manifest,
    file_projects: Sequence[MappedProject],
    project_dir: Path | None,
    findings: list[Finding],
) -> list[MappedProject]:
    """Each exposure on its own, so that one malformed meta.hex does not hide the others."""
    from hexdbt.mapping.loader import mappings_from_exposures

    mapped_ids = {entry.mapping.project_id for entry in file_projects}
    used_names = {entry.mapping.name for entry in file_projects}
    kept: list[MappedProject] = []
    for unique_id, exposure in manifest.exposures.items():
        file = (
            str(project_dir / exposure.original_file_path)
            if project_dir is not None
            else exposure.original_file_path
        )
        line = _exposure_line(project_dir, exposure.original_file_path, exposure.name)
        try:
            mappings = mappings_from_exposures(replace(manifest, exposures={unique_id: exposure}))
        except ConfigError as exc:
            # The loader names the manifest and the exposure; the file and line say it here.
            message = exc.message
            marker = f"({exposure.original_file_path}): "
            if marker in message:
                message = message.split(marker, 1)[1]
            findings.append(
                Finding(
                    Severity.ERROR,
                    "exposure-invalid",
                    file,
                    line,
                    f"exposure {exposure.name}: {message}",
                    hint=exc.hint or "see docs/mapping.md (exposures)",
                )
            )
            continue
        for mapping in mappings:
            if mapping.project_id in mapped_ids:
                continue  # the mapping file wins over the exposure, as when planning
            if mapping.name in used_names:
                mapping = replace(mapping, name=f"exposure:{mapping.name}")
            used_names.add(mapping.name)
            kept.append(MappedProject(mapping, file, line))
    return kept


def _needs_manifest_findings(projects: Sequence[MappedProject], lines: _Lines) -> list[Finding]:
    """Selectors that a plan from run_results.json alone cannot resolve: their projects are
    skipped while manifest.json is missing."""
    findings: list[Finding] = []
    for entry in projects:
        for position, selector in enumerate(entry.mapping.models):
            if not selector.needs_manifest:
                continue
            line = (
                lines.selectors.get((entry.file_index, position), entry.line)
                if entry.file_index is not None
                else entry.line
            )
            findings.append(
                Finding(
                    Severity.WARNING,
                    "selector-needs-manifest",
                    entry.file,
                    line,
                    f"{entry.mapping.name}: selector {selector.text!r} needs manifest.json:"
                    " without it this project is skipped",
                    hint="keep target/manifest.json beside run_results.json, or select by model name",
                )
            )
    return findings


def _selector_findings(
    projects: Sequence[MappedProject], manifest: Manifest, lines: _Lines
) -> list[Finding]:
    from hexdbt.mapping.selectors import SelectorIndex

    index = SelectorIndex(manifest)
    suggestions = _Suggestions(manifest)
    findings: list[Finding] = []
    for entry in projects:
        mapping = entry.mapping
        empty: list[tuple[int, Selector]] = []
        for position, selector in enumerate(mapping.models):
            if not index.resolve(selector):
                empty.append((position, selector))
        if not empty:
            continue
        all_empty = len(empty) == len(mapping.models)
        for position, selector in empty:
            line = (
                lines.selectors.get((entry.file_index, position), entry.line)
                if entry.file_index is not None
                else entry.line
            )
            close = suggestions.for_selector(selector)
            if close:
                findings.append(
                    Finding(
                        Severity.ERROR,
                        "selector-typo",
                        entry.file,
                        line,
                        f"{mapping.name}: selector {selector.text!r} matches no model"
                        f" (did you mean {close!r}?)",
                    )
                )
            elif not all_empty:
                findings.append(
                    Finding(
                        Severity.WARNING,
                        "selector-no-match",
                        entry.file,
                        line,
                        f"{mapping.name}: selector {selector.text!r} matches no model in"
                        " manifest.json",
                    )
                )
        if all_empty and not any(suggestions.for_selector(s) for _, s in empty):
            selectors = ", ".join(repr(selector.text) for selector in mapping.models)
            findings.append(
                Finding(
                    Severity.ERROR,
                    "project-no-match",
                    entry.file,
                    entry.line,
                    f"{mapping.name}: no model in manifest.json matches {selectors}: this Hex"
                    " project would never be triggered",
                    hint="list the models the Hex app reads (see docs/mapping.md, selectors)",
                )
            )
    return findings


class _Suggestions:
    """Close names for a selector that matched nothing: model names, tags, folders, packages."""

    def __init__(self, manifest: Manifest) -> None:
        from hexdbt.dbt.artifacts import DATA_RESOURCE_TYPES

        nodes = [
            node for node in manifest.nodes.values() if node.resource_type in DATA_RESOURCE_TYPES
        ]
        self._names = sorted({node.name for node in nodes})
        self._ids = sorted(node.unique_id for node in nodes)
        self._tags = sorted({tag for node in nodes for tag in node.tags})
        self._packages = sorted({node.package_name for node in nodes})
        paths: set[str] = set()
        for node in nodes:
            parts = node.original_file_path.split("/")
            paths.update("/".join(parts[:end]) for end in range(1, len(parts) + 1))
        self._paths = sorted(paths)
        # Every dotted head of every fqn, with and without the package: `marts.core` as well
        # as `marts.core.customers` and `shop.marts`.
        fqns: set[str] = set()
        for node in nodes:
            for start in (0, 1):
                fqn = node.fqn[start:]
                fqns.update(".".join(fqn[:end]) for end in range(2, len(fqn) + 1))
        self._fqns = sorted(fqns)

    def for_selector(self, selector: Selector) -> str | None:
        method, value = selector.method, selector.value
        if method == "fqn":
            if selector.is_bare_name:
                return _closest(value, self._names)
            if "*" in value or "?" in value or "[" in value:
                return None
            return _closest(value, self._fqns)
        if method == "unique_id":
            return _closest(value, self._ids)
        if method == "tag":
            close = _closest(value, self._tags)
            return f"tag:{close}" if close else None
        if method == "path":
            close = _closest(value, self._paths)
            return f"path:{close}" if close else None
        if method == "package":
            close = _closest(value, self._packages)
            return f"package:{close}" if close else None
        return None


def _closest(value: str, candidates: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(value, candidates, n=1, cutoff=0.75)
    return close[0] if close else None


def _project_id_findings(projects: Sequence[MappedProject]) -> list[Finding]:
    from hexdbt.mapping.loader import project_id_from_url

    findings = []
    for entry in projects:
        project_id = entry.mapping.project_id
        if _HEX_ID.match(project_id):
            continue
        from_link = project_id_from_url(project_id)
        if from_link:
            findings.append(
                Finding(
                    Severity.ERROR,
                    "project-id-is-link",
                    entry.file,
                    entry.line,
                    f"{entry.mapping.name}: project_id is a Hex link, not an id",
                    hint=f"use project_id: {from_link}",
                )
            )
            continue
        findings.append(
            Finding(
                Severity.WARNING,
                "project-id-format",
                entry.file,
                entry.line,
                f"{entry.mapping.name}: project_id {project_id!r} does not look like a Hex"
                " project id (a UUID such as 5a8591dd-4039-49df-9202-96385ba3eff8)",
                hint="copy it from the app's link: https://app.hex.tech/<workspace>/app/<id>/...",
            )
        )
    return findings


def _interval_findings(projects: Sequence[MappedProject]) -> list[Finding]:
    """An app started at most every ``min_interval_minutes`` cannot keep a shorter freshness
    target: it breaches it after every refresh that comes just after a run."""
    findings = []
    for entry in projects:
        interval = entry.mapping.min_interval_minutes
        target = entry.mapping.freshness_minutes
        if interval is not None and target is not None and interval > target:
            findings.append(
                Finding(
                    Severity.WARNING,
                    "interval-exceeds-freshness",
                    entry.file,
                    entry.line,
                    f"{entry.mapping.name}: min_interval_minutes {interval:g} exceeds"
                    f" freshness_minutes {target:g}: the app will be past its target after"
                    " a refresh that comes just after a run",
                    hint="lower min_interval_minutes, or raise freshness_minutes",
                )
            )
    return findings


def _duplicate_findings(projects: Sequence[MappedProject]) -> list[Finding]:
    """Two mappings of one project whose params are equal but whose run options (what RunProject
    is sent besides the inputs, and how the run is waited for) differ cannot both be honoured,
    since the project runs once per invocation."""
    from hexdbt.mapping.schema import HowToRun

    findings: list[Finding] = []
    first: dict[tuple[str, str], MappedProject] = {}
    for entry in projects:
        mapping = entry.mapping
        key = (mapping.project_id, repr(sorted(mapping.params.items())))
        earlier = first.get(key)
        if earlier is None:
            first[key] = entry
            continue
        where = earlier.location
        differences = [
            f"{option} {earlier_value!r} vs {value!r}"
            for option, earlier_value, value in (
                (option, getattr(earlier.mapping, option), getattr(mapping, option))
                for option in HowToRun.model_fields
            )
            if earlier_value != value
        ]
        if differences:
            findings.append(
                Finding(
                    Severity.ERROR,
                    "duplicate-conflict",
                    entry.file,
                    entry.line,
                    f"{mapping.name}: Hex project {mapping.project_id} is also mapped by"
                    f" {earlier.mapping.name} ({where}) with the same input params but other"
                    f" options ({'; '.join(differences)}): it runs once, with only one of them",
                    hint="merge the two entries, or give them different input_params",
                )
            )
        else:
            findings.append(
                Finding(
                    Severity.WARNING,
                    "duplicate-project",
                    entry.file,
                    entry.line,
                    f"{mapping.name}: Hex project {mapping.project_id} is also mapped by"
                    f" {earlier.mapping.name} ({where}) with the same input params: it runs once"
                    " per dbt invocation",
                    hint="merge the models of both entries into one",
                )
            )
    return findings


def _with_sample_params(
    projects: Sequence[MappedProject],
    manifest: Manifest | None,
    started_at: str,
    environ: Mapping[str, str] | None,
    findings: list[Finding],
) -> list[MappedProject]:
    """Render each project's input params as a real build would (every matched model ran
    successfully, at ``started_at``), so template mistakes show now rather than mid-build."""
    from hexdbt.mapping.selectors import SelectorIndex
    from hexdbt.mapping.templates import SecretVariableError, TemplateError
    from hexdbt.planner.rules import render_params

    invocation = {
        "id": "hexdbt-validate",
        "invocation_id": "hexdbt-validate",
        "command": "build",
        "started_at": started_at,
        "generated_at": started_at,
        "dbt_version": "",
        "vars": {},
    }
    index = SelectorIndex(manifest) if manifest is not None else None
    rendered: list[MappedProject] = []
    for entry in projects:
        models = _sample_models(entry.mapping, index, started_at)
        try:
            params = render_params(entry.mapping, invocation, models, environ)
        except TemplateError as exc:
            if _caused_by(exc, SecretVariableError):
                # A name computed in the template; a literal one the loader refuses already.
                finding = Finding(
                    Severity.ERROR,
                    "template-secret",
                    entry.file,
                    entry.line,
                    f"{entry.mapping.name}: {exc}",
                    hint="give Hex the value through a variable that holds no secret",
                )
            else:
                finding = Finding(
                    Severity.WARNING,
                    "template-render",
                    entry.file,
                    entry.line,
                    f"{entry.mapping.name}: does not render with a sample invocation: {exc}",
                    hint="templates see invocation, models, project, env_var(), today_utc()"
                    " (docs/mapping.md)",
                )
            findings.append(finding)
            rendered.append(entry)
            continue
        rendered.append(replace(entry, sample_params=params))
    return rendered


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``exc`` or an exception it was raised while handling is a ``kind``: the planner
    names the param in a new TemplateError."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, kind):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _sample_models(
    mapping: ProjectMapping, index: SelectorIndex | None, started_at: str
) -> list[dict[str, Any]]:
    if index is None:
        return []
    return [
        {
            "unique_id": unique_id,
            "name": unique_id.rsplit(".", 1)[-1],
            "status": "success",
            "started_at": started_at,
            "completed_at": started_at,
            "execution_time_s": 0.0,
            "rows_affected": 0,
            "message": "OK",
        }
        for unique_id in sorted(index.resolve_all(mapping.models))
    ]
