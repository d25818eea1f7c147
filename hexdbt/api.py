"""The seed's Python functions: plain dicts in and out, ``{"status": "error", ...}`` on failure.

    import hexdbt
    hexdbt.list_hex_projects(limit=10)
    hexdbt.trigger_hex_project("5a8591dd-...", input_params={"region": "EU"},
                               wait_for_completion=True)
    hexdbt.get_run_status("5a8591dd-...", "run-id")

Credentials come from ``HEX_API_TOKEN`` and ``HEX_BASE_URL``, unless a configured ``HexClient`` is
passed as ``client=`` (keyword only; it is left open). These functions never raise for an
expected failure; ``hexdbt.HexClient`` is there for callers who want exceptions.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from hexdbt.errors import HexApiError, HexdbtError

if TYPE_CHECKING:
    from hexdbt.hex.client import HexClient


def _connected(client: HexClient | None) -> AbstractContextManager[HexClient]:
    """The caller's client (left open), or one from the environment (closed after use)."""
    if client is not None:
        return nullcontext(client)
    from hexdbt.factory import open_client

    return open_client()


def _error(exc: HexdbtError, **context: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"status": "error", "message": str(exc), **context}
    document["errorType"] = type(exc).__name__
    if isinstance(exc, HexApiError):
        document["httpStatus"] = exc.status
        document["traceId"] = exc.trace_id
    if exc.hint:
        document["hint"] = exc.hint
    return document


def list_hex_projects(
    limit: int = 100,
    include_archived: bool = False,
    include_trashed: bool = False,
    *,
    client: HexClient | None = None,
) -> list[dict[str, Any]] | dict[str, Any]:
    """Up to ``limit`` projects (following Hex's pages), each a dict with ``projectId`` first."""
    try:
        with _connected(client) as client:
            return [
                project.to_json()
                for project in client.iter_projects(
                    limit=limit, include_archived=include_archived, include_trashed=include_trashed
                )
            ]
    except HexdbtError as exc:
        return _error(exc)


def trigger_hex_project(
    project_id: str,
    input_params: Mapping[str, Any] | None = None,
    update_published_results: bool | None = None,
    use_cached_sql_results: bool = True,
    wait_for_completion: bool = False,
    timeout_minutes: float = 60,
    *,
    idempotency_key: str | None = None,
    client: HexClient | None = None,
) -> dict[str, Any]:
    """Run a published Hex project; optionally wait for it.

    ``update_published_results`` is true as in the seed, except with ``input_params``: Hex
    ignores inputs when it is true, so it is then sent false (an explicit True with inputs is an
    error). Like every trigger it goes through hexdbt's ledger: with the same
    ``idempotency_key``, a second call follows the run the first one started instead of starting
    another. Returns the run as a dict; ``outcome`` is hexdbt's word for what became of it (see
    ``hexdbt.outcomes``), ``status`` Hex's last status, and after waiting ``success`` says whether
    it ended COMPLETED.
    """
    from hexdbt.engine import EngineSettings
    from hexdbt.factory import open_engine
    from hexdbt.feeders.direct import direct_plan, run_direct
    from hexdbt.hex.models import RunRequest, update_published_results_for
    from hexdbt.outcomes import OutcomeKind

    try:
        params = dict(input_params or {})
        publish = update_published_results_for(
            update_published_results, params, where="update_published_results"
        )
        plan = direct_plan(
            [project_id],
            RunRequest(
                input_params=params,
                update_published_results=publish,
                use_cached_sql_results=use_cached_sql_results,
            ),
            idempotency_key=idempotency_key,
            timeout_minutes=timeout_minutes,
            cancel_on_timeout=True,
        )
        with (
            _connected(client) as connected,
            open_engine(connected, settings=EngineSettings(wait=wait_for_completion)) as engine,
        ):
            (outcome,) = run_direct(engine, plan)
    except HexdbtError as exc:
        return _error(exc, projectId=project_id)
    document: dict[str, Any] = {
        "projectId": outcome.project_id,
        "runId": outcome.run_id,
        "runUrl": outcome.run_url,
        "traceId": outcome.trace_id,
        "status": outcome.hex_status or ("TRIGGERED" if outcome.run_id else None),
        "outcome": outcome.kind.value,
        "success": outcome.kind is OutcomeKind.COMPLETED if wait_for_completion else None,
        "updatePublishedResults": publish,
        "idempotencyKey": plan.invocation_id.partition(":")[2],
    }
    if outcome.exit_code:
        document["message"] = outcome.reason or (
            f"run {outcome.run_id} of project {project_id} ended {outcome.hex_status}"
        )
        if outcome.run_id is None:  # nothing ran: an error, as the other functions report one
            document["status"] = "error"
    return document


def get_run_status(
    project_id: str, run_id: str, *, client: HexClient | None = None
) -> dict[str, Any]:
    """A run's status as Hex reports it (camelCase keys), or an error dict."""
    try:
        with _connected(client) as client:
            return client.get_run_status(project_id, run_id).to_json()
    except HexdbtError as exc:
        return _error(exc, projectId=project_id, runId=run_id)
