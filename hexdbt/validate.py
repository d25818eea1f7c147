"""``hexdbt validate``: what is wrong with a mapping, found before a dbt build depends on it.

Pure checks over the mapping file, dbt's manifest.json and (optionally) Hex's answers, each
problem returned as a ``Finding`` with a file and line, so that an editor or a CI log points at it:

    hex_mappings.yml:17: error: selector 'custmers' matches no model (did you mean 'customers'?)

Codes (``Finding.code``), each with its severity:

    mapping-invalid        error    the file does not load (YAML, keys, values, a template that
                                    reads a secret such as HEX_API_TOKEN): the loader's error
    mapping-unreadable     error    the mapping file is missing or cannot be read
    no-mappings            error    no mapping file and no exposure declares a Hex project
    manifest-missing       warning  no manifest.json: selectors were not checked
    exposure-invalid       error    an exposure's meta.hex (or its Hex link) is malformed
    selector-typo          error    a selector matches nothing and looks like a typo of a name
    selector-no-match      warning  a selector matches nothing (the project's others do)
    project-no-match       error    none of a project's selectors matches a model: it never runs
    project-id-format      warning  the project id is not shaped like a Hex id (a UUID)
    project-id-is-link     error    the project id is a Hex link: the id inside it is meant
    duplicate-project      warning  a project mapped twice with the same params: it runs once
    duplicate-conflict     error    a project mapped twice with the same params, other options
    template-render        warning  an input param does not render with a sample invocation
    template-secret        error    a template reads a secret (a variable name it computes)
    hex-not-found          error    Hex answers 404: no such project, or the token cannot see it
    hex-unpublished        error    the project was never published: Hex refuses to run it
    hex-trashed            error    the project is in the trash: Hex refuses to run it
    hex-archived           warning  the project is archived (it still runs)
    hex-rejected           error    a dryRun RunProject was refused (422/400: inputs, view id)
    hex-refused            error    Hex refused the token or could not be reached; checks stopped

Exit code: 0 when there are no errors (warnings allowed), 2 when the mapping has errors, 4 when
Hex refused something (the highest wins).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hexdbt.errors import (
    ConfigError,
    HexApiError,
    HexAuthError,
    HexNotFoundError,
    HexPermissionError,
    HexRejectedError,
)

if TYPE_CHECKING:
    from hexdbt.dbt.artifacts import Manifest
    from hexdbt.hex.client import HexClient
    from hexdbt.mapping.model import ProjectMapping
    from hexdbt.mapping.selectors import Selector, SelectorIndex

EXIT_MAPPING_ERRORS = 2
EXIT_HEX_REFUSED = 4

# Hex project ids are UUIDs (the path segment after /app/ or /hex/ in a link).
_HEX_ID = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_LOCATED = re.compile(r"^(?P<line>\d+): (?P<message>.*)$", re.DOTALL)


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: str
    file: str
    line: int | None
    message: str
    hint: str | None = None

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    @property
    def exit_code(self) -> int:
        if self.severity is not Severity.ERROR:
            return 0
        return EXIT_HEX_REFUSED if self.code.startswith("hex-") else EXIT_MAPPING_ERRORS

    def render(self) -> str:
        """One line, like a compiler's: ``file:line: severity: message; hint: ... [code]``."""
        hint = f"; hint: {self.hint}" if self.hint else ""
        return f"{self.location}: {self.severity.value}: {self.message}{hint} [{self.code}]"

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "code": self.code,
            "file": self.file,
            "line": self.line,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True, slots=True)
class MappedProject:
    """One mapping with the place it was declared, as validate reports it."""

    mapping: ProjectMapping
    file: str
    line: int | None
    # Position in the mapping file's ``projects`` list; None for an exposure.
    file_index: int | None = None
    # Input params rendered with a sample invocation; None when a template does not render.
    sample_params: Mapping[str, Any] | None = None

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


@dataclass(frozen=True, slots=True)
class Validation:
    findings: tuple[Finding, ...]
    projects: tuple[MappedProject, ...] = ()
    manifest_checked: bool = False

    @property
    def exit_code(self) -> int:
        return exit_code_of(self.findings)

    def with_findings(self, more: Iterable[Finding]) -> Validation:
        return replace(self, findings=(*self.findings, *more))


def in_file_order(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda finding: (finding.file, finding.line or 0))


def exit_code_of(findings: Iterable[Finding]) -> int:
    return max((finding.exit_code for finding in findings), default=0)


def summary_line(
    findings: Sequence[Finding],
    projects: Sequence[MappedProject],
    *,
    mappings_file: str | None,
    manifest_checked: bool,
) -> str:
    """``4 mapped Hex projects (3 in hex_mappings.yml, 1 from dbt exposures): no problems found``;
    it names the mapping file read (or its absence), since a file in another folder than the one
    hexdbt looked in is an easy first mistake."""
    from_file = sum(1 for entry in projects if entry.file_index is not None)
    sources = [f"{from_file} in {mappings_file}" if mappings_file else "no mapping file"]
    if manifest_checked:
        sources.append(f"{len(projects) - from_file} from dbt exposures")
    count = len(projects)
    checked = f"{count} mapped Hex project{'s' if count != 1 else ''} ({', '.join(sources)})"
    errors = sum(1 for finding in findings if finding.severity is Severity.ERROR)
    warnings = len(findings) - errors
    if not findings:
        return f"{checked}: no problems found"
    return f"{checked}: {errors} error{'s' if errors != 1 else ''}, {warnings} warning" + (
        "s" if warnings != 1 else ""
    )


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
    else:
        findings.extend(_selector_findings(projects, manifest, lines))
    findings.extend(_project_id_findings(projects))
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


# ----------------------------------------------------------------------------------------------
# The mapping against Hex


def check_remote(client: HexClient, projects: Sequence[MappedProject]) -> list[Finding]:
    """Ask Hex about every mapped project: it exists and the token sees it (GetProject), it is
    published and not in the trash, and (for mappings with input params or a view) a ``dryRun``
    RunProject accepts the request. Dry runs draw on RunProject's budget (20 a minute, 60 an
    hour), so mappings without inputs, which GetProject already covers, are not dry-run."""
    findings: list[Finding] = []
    seen: dict[str, Any] = {}
    dry_runs_done: set[str] = set()
    from hexdbt.mapping.loader import project_id_from_url

    for entry in projects:
        mapping = entry.mapping
        if project_id_from_url(mapping.project_id):
            continue  # a link, not an id: project-id-is-link already says which id is meant
        try:
            project = seen.get(mapping.project_id)
            if project is None:
                project = seen[mapping.project_id] = client.get_project(mapping.project_id)
                findings.extend(_state_findings(entry, project))
            elif project is False:
                continue
            if not project.published or project.trashed:
                continue
            request = _dry_run_request(entry)
            if request is None:
                continue
            request_key = f"{mapping.project_id} {request.to_api()}"
            if request_key in dry_runs_done:
                continue
            dry_runs_done.add(request_key)
            client.run_project(mapping.project_id, request)
        except HexNotFoundError as exc:
            seen[mapping.project_id] = False
            findings.append(
                _hex_finding(
                    entry,
                    "hex-not-found",
                    f"Hex project {mapping.project_id} not found, or not visible to the token",
                    exc,
                    hint="check the id, and that the token's user can open the project in Hex",
                )
            )
        except HexRejectedError as exc:
            findings.append(
                _hex_finding(
                    entry, "hex-rejected", f"a dryRun was refused: {_hex_message(exc)}", exc
                )
            )
        except (HexAuthError, HexPermissionError) as exc:
            findings.append(
                _hex_finding(entry, "hex-refused", f"Hex refused the token: {exc}", exc)
            )
            break  # every other call would be refused the same way
        except HexApiError as exc:
            findings.append(
                _hex_finding(entry, "hex-refused", f"Hex could not be asked: {exc}", exc)
            )
            break
    return findings


def _state_findings(entry: MappedProject, project: Any) -> list[Finding]:
    name, project_id = entry.mapping.name, entry.mapping.project_id
    title = f"{project.title!r} ({project_id})" if project.title else project_id
    findings = []
    if project.trashed:
        findings.append(
            Finding(
                Severity.ERROR,
                "hex-trashed",
                entry.file,
                entry.line,
                f"{name}: Hex project {title} is in the trash: Hex refuses to run it",
                hint="restore it in Hex, or remove this mapping",
            )
        )
    elif not project.published:
        findings.append(
            Finding(
                Severity.ERROR,
                "hex-unpublished",
                entry.file,
                entry.line,
                f"{name}: Hex project {title} has never been published: only published apps run",
                hint="publish the app in Hex (Publish button, top right)",
            )
        )
    if project.archived:
        findings.append(
            Finding(
                Severity.WARNING,
                "hex-archived",
                entry.file,
                entry.line,
                f"{name}: Hex project {title} is archived (it still runs)",
            )
        )
    return findings


def _dry_run_request(entry: MappedProject) -> Any:
    from hexdbt.hex.models import Notification, RunRequest

    mapping = entry.mapping
    if not mapping.params and not mapping.view_id:
        return None
    if entry.sample_params is None and mapping.params:
        return None  # the template finding already says why; nothing sensible to send
    return RunRequest(
        input_params=dict(entry.sample_params or {}),
        update_published_results=mapping.update_published_results,
        use_cached_sql_results=mapping.use_cached_sql_results,
        dry_run=True,
        view_id=mapping.view_id,
        notifications=tuple(Notification.from_api(item) for item in mapping.notifications),
    )


def _hex_message(exc: HexApiError) -> str:
    return str(exc)


def _hex_finding(
    entry: MappedProject, code: str, message: str, exc: HexApiError, *, hint: str | None = None
) -> Finding:
    return Finding(
        Severity.ERROR,
        code,
        entry.file,
        entry.line,
        f"{entry.mapping.name}: {message}",
        hint=hint or exc.hint,
    )
