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

from hexdbt.errors import ConfigError, HexApiError, HexdbtError

if TYPE_CHECKING:
    from hexdbt.hex.client import HexClient


def _connected(client: HexClient | None) -> AbstractContextManager[HexClient]:
    """The caller's client (left open), or one from the environment (closed after use)."""
    if client is not None:
        return nullcontext(client)
    from hexdbt.hex.client import connect

    return connect()


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
    client: HexClient | None = None,
) -> dict[str, Any]:
    """Run a published Hex project; optionally wait for it.

    ``update_published_results`` is true as in the seed, except with ``input_params``: Hex
    ignores inputs when it is true, so it is then sent false (an explicit True with inputs is an
    error). Returns the run as a dict; after waiting, ``status`` is Hex's final status (only
    ``COMPLETED`` is success) and ``success`` says so.
    """
    from hexdbt.hex.models import RunRequest
    from hexdbt.hex.waiter import Outcome, Waiter, WatchedRun

    try:
        params = dict(input_params or {})
        if params and update_published_results:
            raise ConfigError(
                "Hex ignores input params when update_published_results is true",
                hint="leave update_published_results unset (False is then sent) or drop the params",
            )
        publish = (not params) if update_published_results is None else update_published_results
        with _connected(client) as client:
            started = client.clock.now()
            run = client.run_project_once(
                project_id,
                RunRequest(
                    input_params=params,
                    update_published_results=publish,
                    use_cached_sql_results=use_cached_sql_results,
                ),
            )
            document: dict[str, Any] = {
                "projectId": run.project_id,
                "runId": run.run_id,
                "runUrl": run.run_url,
                "runStatusUrl": run.run_status_url,
                "traceId": run.trace_id,
                "status": "TRIGGERED",
                "success": None,
                "updatePublishedResults": publish,
            }
            if not wait_for_completion:
                return document
            waiter = Waiter(client)
            (result,) = waiter.wait(
                [
                    WatchedRun(
                        project_id=run.project_id,
                        run_id=run.run_id,
                        started_at=started,
                        run_url=run.run_url,
                        timeout_s=timeout_minutes * 60,
                    )
                ]
            )
            if result.outcome in (Outcome.TIMED_OUT, Outcome.LOST) and result.error:
                return _error(result.error, projectId=run.project_id, runId=run.run_id)
            if result.last is not None:
                document.update(result.last.to_json())
            document["success"] = result.ok
            if result.error is not None:
                document["message"] = str(result.error)
            return document
    except HexdbtError as exc:
        return _error(exc, projectId=project_id)


def get_run_status(
    project_id: str, run_id: str, *, client: HexClient | None = None
) -> dict[str, Any]:
    """A run's status as Hex reports it (camelCase keys), or an error dict."""
    try:
        with _connected(client) as client:
            return client.get_run_status(project_id, run_id).to_json()
    except HexdbtError as exc:
        return _error(exc, projectId=project_id, runId=run_id)
