"""``hexdbt debug``: whether a setup works, as ``dbt debug`` tells dbt users, one check a line.

Each check is OK, a warning (it works, but look), a failure with the exit code of its cause
(the README's: 2 configuration, 3 an artifact, 4 Hex, 7 the state) or not done (an earlier one
failed, or it costs what was not asked for). Each says what to do when it is not OK, and none
shows a secret: the token is described by its kind and length, a state URL without its
password, and Hex's own messages are redacted by the client.

The checks reuse what the commands do: ``hexdbt state check`` for the state (``check_state``,
which the CLI passes in, being above this layer), ``hexdbt validate`` for the mapping, the
client's own calls for Hex.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from hexdbt.errors import ConfigError, HexdbtError

if TYPE_CHECKING:
    from hexdbt.hex.budget import SharedBudget
    from hexdbt.hex.client import HexClient
    from hexdbt.settings import StateLocation

# Hex's token kinds by prefix (Settings > API keys).
TOKEN_KINDS = {"hxtp_": "a personal token", "hxtw_": "a workspace token"}
# Hosts' clocks should agree within a second or two (README, "Several machines").
CLOCK_TOLERANCE_S = 2.0


class CheckStatus(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIPPED = "--"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: CheckStatus
    detail: str
    exit_code: int = 0  # a failure's: the exit code of its cause

    def render(self) -> str:
        return f"{self.name:<12}{self.status.value:<6}{self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.name,
            "status": self.status.name.lower(),
            "detail": self.detail,
            "exitCode": self.exit_code,
        }


def ok(name: str, detail: str) -> Check:
    return Check(name, CheckStatus.OK, detail)


def warn(name: str, detail: str) -> Check:
    return Check(name, CheckStatus.WARN, detail)


def skipped(name: str, detail: str) -> Check:
    return Check(name, CheckStatus.SKIPPED, detail)


def failed(name: str, exc: HexdbtError) -> Check:
    """A failure in the error's words, its hint as what to do, and its exit code."""
    detail = f"{exc}; {exc.hint}" if exc.hint else str(exc)
    return Check(name, CheckStatus.FAIL, detail, exc.exit_code)


def exit_code_of(checks: Sequence[Check]) -> int:
    """The exit code of the first failure's cause, 0 when none failed."""
    return next((check.exit_code for check in checks if check.status is CheckStatus.FAIL), 0)


def summary_line(checks: Sequence[Check]) -> str:
    failures = [check for check in checks if check.status is CheckStatus.FAIL]
    warnings = sum(1 for check in checks if check.status is CheckStatus.WARN)
    also = f" ({warnings} warning{'s' if warnings != 1 else ''})" if warnings else ""
    if not failures:
        return f"All checks passed{also}."
    count = f"{len(failures)} check{'s' if len(failures) != 1 else ''} failed"
    return f"{count}{also}; exit {failures[0].exit_code}, for the first: {failures[0].name}."


# -- Hex ------------------------------------------------------------------------------------------


def token_check(token: str) -> Check:
    """The token's shape, never its value: its kind and length."""
    kind = next((kind for prefix, kind in TOKEN_KINDS.items() if token.startswith(prefix)), None)
    if kind is None:
        return warn(
            "token",
            f"HEX_API_TOKEN ({len(token)} characters) does not start with hxtp_ or hxtw_ as"
            " Hex's tokens do; check that it holds the token alone, as Hex showed it",
        )
    return ok("token", f"{kind} ({token[:5]}..., {len(token)} characters) from HEX_API_TOKEN")


def hex_checks(client: HexClient, dry_run_project: str | None) -> list[Check]:
    """Whether Hex accepts the token for reading (ListProjects, one call), the clock against
    Hex's, and with ``dry_run_project`` whether it may run projects (a dryRun: one RunProject
    call of the budget's 20 a minute, so only when asked)."""
    try:
        client.list_projects(limit=1)
    except HexdbtError as exc:
        return [
            failed("read access", exc),
            skipped("clock", "not checked: Hex did not answer"),
            skipped("run access", "not checked: Hex did not accept the token for reading"),
        ]
    checks = [ok("read access", f"{client.base_url} accepts the token for reading")]
    checks.append(_clock_check(client.hex_clock_offset_s))
    if dry_run_project is None:
        checks.append(
            skipped(
                "run access",
                "not checked: `hexdbt debug --dry-run PROJECT_ID` asks Hex for a dryRun of a"
                " published project (one RunProject call: Hex allows 20 a minute)",
            )
        )
        return checks
    from hexdbt.hex.models import RunRequest

    request = RunRequest(update_published_results=False, use_cached_sql_results=False, dry_run=True)
    try:
        client.run_project(dry_run_project, request)
    except HexdbtError as exc:
        checks.append(failed("run access", exc))
    else:
        checks.append(
            ok("run access", f"Hex accepted a dryRun of {dry_run_project}: the token may run it")
        )
    return checks


def _clock_check(offset_s: float | None) -> Check:
    if offset_s is None:
        return warn("clock", "Hex's answer had no Date header: the offset is unknown")
    # Hex's Date header has whole seconds: an offset under one is as close as it tells.
    side = "ahead of" if offset_s < 0 else "behind"
    detail = f"{abs(offset_s):.1f} s {side} Hex's (from its Date header)"
    if abs(offset_s) <= CLOCK_TOLERANCE_S:
        return ok("clock", detail)
    return warn(
        "clock",
        f"{detail}; sync this machine's clock (NTP): hexdbt reads Hex's run start times, and"
        " other hosts' budget and lease times, against its own",
    )


# -- the state ------------------------------------------------------------------------------------


class StatePart(Protocol):
    """A part of the state as ``hexdbt.factory.check_state`` tells it (the factory is above)."""

    @property
    def name(self) -> str: ...
    @property
    def schema_version(self) -> int: ...
    @property
    def cannot_write(self) -> str | None: ...


def state_line(location: StateLocation, parts: Sequence[StatePart]) -> Check:
    """What ``hexdbt state check`` found, on one line."""
    from hexdbt.errors import StateError
    from hexdbt.settings import PostgresState

    backend = "postgresql" if isinstance(location, PostgresState) else "sqlite"
    versions = ", ".join(f"{part.name} schema {part.schema_version}" for part in parts)
    detail = f"{backend} {location.describe()}: {versions}"
    problems = [part.cannot_write for part in parts if part.cannot_write]
    if problems:
        return Check("state", CheckStatus.FAIL, f"{detail}; {problems[0]}", StateError.exit_code)
    return ok("state", f"{detail}, writable")


def budget_check(budget: SharedBudget) -> Check:
    """How many calls the shared budget allows now, and when the next one fits if none does."""
    from hexdbt.hex.budget import CallKind

    names = {CallKind.RUN_PROJECT: "RunProject", CallKind.OTHER: "other calls"}
    parts = []
    exhausted = []
    now = budget.clock.now()
    for kind, name in names.items():
        left = budget.calls_left(kind)
        parts.append(
            f"{name} "
            + ", ".join(f"{calls}/{limit.calls} {_per(limit.window_s)}" for limit, calls in left)
        )
        if any(calls == 0 for _, calls in left):
            exhausted.append(f"{name} in {budget.next_slot_at(kind) - now:.0f} s")
    detail = "left now: " + "; ".join(parts)
    if exhausted:
        return warn(
            "budget",
            f"{detail}; the next slot: {', '.join(exhausted)} (other processes using this token"
            " draw on it, or a clock ahead of this one recorded calls; `hexdbt status` shows"
            " what waits)",
        )
    return ok("budget", detail)


def _per(window_s: float) -> str:
    return {60.0: "a minute", 3600.0: "an hour"}.get(window_s, f"per {window_s:g} s")


# -- dbt and the mapping --------------------------------------------------------------------------


def dbt_checks(
    project_dir: Path | None,
    target_path: Path | None,
    mappings_file: Path | None,
    *,
    started_at: str,
) -> list[Check]:
    """The dbt project, its artifacts, and the mapping as ``hexdbt validate`` checks it against
    the manifest (or on its own, without one). ``started_at``: the sample invocation's start,
    with which input param templates are rendered."""
    from hexdbt.dbt.artifacts import load_manifest, load_run_results
    from hexdbt.dbt.locate import locate_artifacts
    from hexdbt.validate.findings import Severity
    from hexdbt.validate.findings import summary_line as validation_summary
    from hexdbt.validate.local import validate_mapping

    checks = []
    manifest = None
    found_project_dir = None
    manifest_problem = "no dbt project"
    try:
        paths = locate_artifacts(project_dir, target_path)
    except ConfigError as exc:
        checks.append(failed("dbt project", exc))
        checks.append(skipped("artifacts", "not checked: no dbt project"))
    else:
        found_project_dir = paths.project_dir
        checks.append(ok("dbt project", f"{paths.project_dir} (target folder {paths.target_dir})"))
        found = []
        try:
            if paths.manifest.is_file():
                manifest = load_manifest(paths.manifest)
                found.append(f"manifest.json (dbt {manifest.dbt_version})")
            else:
                manifest_problem = f"no manifest.json in {paths.target_dir}"
            if paths.run_results.is_file():
                invocation = load_run_results(paths.run_results)
                found.append(
                    f"run_results.json (dbt {invocation.command} of {invocation.generated_at})"
                )
        except HexdbtError as exc:
            manifest = None
            manifest_problem = "manifest.json cannot be read"
            checks.append(failed("artifacts", exc))
        else:
            missing = [
                name
                for name, path in (
                    ("manifest.json", paths.manifest),
                    ("run_results.json", paths.run_results),
                )
                if not path.is_file()
            ]
            if missing:
                checks.append(
                    warn(
                        "artifacts",
                        f"no {' or '.join(missing)} in {paths.target_dir} yet"
                        + (f" ({', '.join(found)} found)" if found else "")
                        + "; run a dbt build (or `dbt parse` for manifest.json) first",
                    )
                )
            else:
                checks.append(ok("artifacts", f"{', '.join(found)} in {paths.target_dir}"))
    from hexdbt.mapping import resolve_mappings_path

    mappings_path, explicit = resolve_mappings_path(mappings_file)
    use_file = explicit or mappings_path.exists()
    validation = validate_mapping(
        mappings_path if use_file else None,
        manifest,
        project_dir=found_project_dir,
        sample_started_at=started_at,
        manifest_problem=manifest_problem,
    )
    summary = validation_summary(
        validation.findings,
        validation.projects,
        mappings_file=str(mappings_path) if use_file else None,
        manifest_checked=validation.manifest_checked,
    )
    errors = [finding for finding in validation.findings if finding.severity is Severity.ERROR]
    if errors:
        checks.append(
            Check(
                "mapping",
                CheckStatus.FAIL,
                f"{summary}, the first: {errors[0].render()}; `hexdbt validate` lists them",
                validation.exit_code,
            )
        )
    elif validation.findings:
        checks.append(warn("mapping", f"{summary}; `hexdbt validate` lists them"))
    else:
        checks.append(ok("mapping", summary))
    return checks
