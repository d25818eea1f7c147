"""Scenarios, mappings and artifacts for engine tests: N mapped Hex projects over N models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from dbt_shapes import manifest_document, model, run_results_document


def project_id(index: int) -> str:
    return f"00000000-0000-4000-8000-{index:012d}"


def scenario(
    count: int, *, running_s: float = 30, outcome: str = "COMPLETED", **settings: Any
) -> dict[str, Any]:
    return {
        "settings": settings,
        "projects": [
            {
                "id": project_id(index),
                "title": f"App {index}",
                "inputs": ["as_of"],
                "runs": {"pending_s": 2, "running_s": running_s, "outcome": outcome},
            }
            for index in range(count)
        ],
    }


def write_project(
    folder: Path,
    count: int,
    *,
    invocation_id: str = "inv-1",
    statuses: dict[str, str] | None = None,
    mapping_options: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """A dbt target folder with ``count`` models and a mapping file with one Hex project each.

    Returns (target folder, mapping file).
    """
    target = folder / "target"
    target.mkdir(parents=True, exist_ok=True)
    (folder / "dbt_project.yml").write_text("name: shop\nversion: '1.0'\nprofile: shop\n")
    models = [model(f"m{index}", "marts") for index in range(count)]
    (target / "manifest.json").write_text(json.dumps(manifest_document(models)))
    results = {node["unique_id"]: "success" for node in models}
    results.update(statuses or {})
    (target / "run_results.json").write_text(
        json.dumps(run_results_document(results, invocation_id=invocation_id))
    )
    mapping = {
        "version": 1,
        "defaults": {"input_params": {"as_of": "{{ invocation.started_at[:10] }}"}},
        "projects": [
            {
                "name": f"app_{index}",
                "project_id": project_id(index),
                "models": [f"m{index}"],
                **(mapping_options or {}),
            }
            for index in range(count)
        ],
    }
    mappings = folder / "hex_mappings.yml"
    mappings.write_text(yaml.safe_dump(mapping, sort_keys=False))
    return target, mappings


def started_runs(journal: list[dict[str, Any]]) -> dict[str, int]:
    """Project id -> how many runs RunProject created, from the emulator's journal."""
    counts: dict[str, int] = {}
    for entry in journal:
        if entry.get("operation") == "RunProject" and entry.get("runId"):
            body = entry.get("body") or {}
            if body.get("dryRun"):
                continue
            project = entry["path"].split("/")[4]
            counts[project] = counts.get(project, 0) + 1
    return counts
