"""What ``hexdbt validate`` reports: findings with a file and line, and the mapped projects they
are about. The codes and their severities are listed in ``hexdbt.validate``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from hexdbt.wording import counted

if TYPE_CHECKING:
    from hexdbt.mapping.model import ProjectMapping

EXIT_MAPPING_ERRORS = 2
EXIT_HEX_REFUSED = 4


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
    checked = f"{counted(count, 'mapped Hex project')} ({', '.join(sources)})"
    errors = sum(1 for finding in findings if finding.severity is Severity.ERROR)
    warnings = len(findings) - errors
    if not findings:
        return f"{checked}: no problems found"
    return f"{checked}: {counted(errors, 'error')}, {counted(warnings, 'warning')}"
