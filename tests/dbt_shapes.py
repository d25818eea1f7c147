"""Small dbt artifacts in dbt's own shape, for tests that need precise control over the nodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PACKAGE = "shop"


def model(
    name: str,
    folder: str = "",
    *,
    tags: tuple[str, ...] = (),
    package: str = PACKAGE,
    config: dict[str, Any] | None = None,
    resource_type: str = "model",
) -> dict[str, Any]:
    sub = [part for part in folder.split("/") if part]
    root = {"model": "models", "seed": "seeds", "snapshot": "snapshots"}[resource_type]
    extension = "csv" if resource_type == "seed" else "sql"
    file_path = "/".join([*sub, f"{name}.{extension}"])
    return {
        "unique_id": f"{resource_type}.{package}.{name}",
        "name": name,
        "resource_type": resource_type,
        "package_name": package,
        "path": file_path,
        "original_file_path": f"{root}/{file_path}",
        "fqn": [package, *sub, name],
        "tags": list(tags),
        "meta": (config or {}).get("meta", {}),
        "config": {"enabled": True, "materialized": "table", "tags": list(tags), **(config or {})},
        "depends_on": {"macros": [], "nodes": []},
    }


def data_test(name: str, on: str) -> dict[str, Any]:
    return {
        "unique_id": f"test.{PACKAGE}.{name}.abc123",
        "name": name,
        "resource_type": "test",
        "package_name": PACKAGE,
        "attached_node": on,
        "depends_on": {"macros": [], "nodes": [on]},
    }


def manifest_document(
    nodes: list[dict[str, Any]],
    exposures: list[dict[str, Any]] | None = None,
    version: int = 12,
) -> dict[str, Any]:
    return {
        "metadata": {
            "dbt_schema_version": f"https://schemas.getdbt.com/dbt/manifest/v{version}.json",
            "dbt_version": "1.11.0",
            "invocation_id": "manifest-invocation",
            "project_name": PACKAGE,
        },
        "nodes": {node["unique_id"]: node for node in nodes},
        "exposures": {exposure["unique_id"]: exposure for exposure in exposures or []},
        "sources": {},
    }


def exposure(
    name: str, depends_on: list[str], *, url: str | None = None, hex_meta: Any = None
) -> dict[str, Any]:
    return {
        "unique_id": f"exposure.{PACKAGE}.{name}",
        "name": name,
        "resource_type": "exposure",
        "package_name": PACKAGE,
        "original_file_path": "models/exposures.yml",
        "type": "application",
        "url": url,
        "meta": {} if hex_meta is None else {"hex": hex_meta},
        "depends_on": {"macros": [], "nodes": depends_on},
    }


def run_results_document(
    statuses: dict[str, str],
    *,
    command: str = "build",
    invocation_id: str = "inv-1",
    version: int = 6,
    started_at: str | None = "2026-01-31T08:00:00Z",
    variables: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "dbt_schema_version": f"https://schemas.getdbt.com/dbt/run-results/v{version}.json",
        "dbt_version": "1.11.0",
        "generated_at": "2026-01-31T08:05:00Z",
        "invocation_id": invocation_id,
        "env": {},
    }
    if started_at:
        metadata["invocation_started_at"] = started_at
    return {
        "metadata": metadata,
        "results": [
            {
                "unique_id": unique_id,
                "status": status,
                "timing": [
                    {
                        "name": "execute",
                        "started_at": "2026-01-31T08:01:00Z",
                        "completed_at": "2026-01-31T08:02:00Z",
                    }
                ],
                "thread_id": "Thread-1",
                "execution_time": 60.0,
                "adapter_response": {"rows_affected": 10},
                "message": "OK",
                "failures": None,
            }
            for unique_id, status in statuses.items()
        ],
        "elapsed_time": 300.0,
        "args": {"which": command, "vars": variables or {}},
    }


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path
