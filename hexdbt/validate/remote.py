"""The mapping checked against Hex (``hexdbt validate --remote``): each project exists, the token
sees it, it is published and not in the trash, and a dryRun accepts its inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hexdbt.errors import (
    HexApiError,
    HexAuthError,
    HexNotFoundError,
    HexPermissionError,
    HexRejectedError,
)
from hexdbt.validate.findings import Finding, MappedProject, Severity

if TYPE_CHECKING:
    from hexdbt.dbt.artifacts import Manifest
    from hexdbt.hex.client import HexClient


def check_remote(client: HexClient, projects: Sequence[MappedProject]) -> list[Finding]:
    """Ask Hex about every mapped project: it exists and the token sees it (GetProject), it is
    published and not in the trash, and (for mappings with input params or a view) a ``dryRun``
    RunProject accepts the request. Dry runs draw on RunProject's budget (20 a minute, 60 an
    hour), so mappings without inputs, which GetProject already covers, are not dry-run."""
    from hexdbt.mapping.loader import project_id_from_url

    findings: list[Finding] = []
    seen: dict[str, Any] = {}
    dry_runs_done: set[str] = set()
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


def check_drift(
    client: HexClient, projects: Sequence[MappedProject], manifest: Manifest, *, file: str
) -> list[Finding]:
    """Where the mapping and what Hex says each app reads disagree (``hexdbt discover --check``),
    as warnings: the models an app reads that its mapping lacks, mapped models Hex does not list
    among what it reads, and apps that read dbt models without a mapping. ``file`` names the mapping file for
    an app that has no entry. A workspace without GetQueriedTables (not Enterprise), or a Hex
    that fails meanwhile, is one warning; the rest of the validation stands."""
    from pathlib import Path

    from hexdbt.dbt.relations import load_relations
    from hexdbt.discovery.fetch import ENTERPRISE_ONLY, fetch_discovery
    from hexdbt.discovery.proposal import find_drift, propose
    from hexdbt.mapping.selectors import SelectorIndex

    try:
        discovery = fetch_discovery(client, log=lambda _line: None)
    except HexApiError as exc:
        message = exc.message if exc.message == ENTERPRISE_ONLY else f"drift not checked: {exc}"
        return [Finding(Severity.WARNING, "discover-unavailable", file, None, message)]
    proposal = propose(discovery, load_relations(Path(manifest.path)))
    drift = find_drift(proposal, [entry.mapping for entry in projects], SelectorIndex(manifest))
    where = {entry.mapping.project_id: entry for entry in reversed(projects)}
    findings = []
    for item in drift:
        entry = where.get(item.project_id)
        findings.append(
            Finding(
                Severity.WARNING,
                f"discover-{item.kind.value}",
                entry.file if entry else file,
                entry.line if entry else None,
                item.message,
                hint=item.hint,
            )
        )
    return findings
