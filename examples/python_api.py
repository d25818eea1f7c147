"""Using hexdbt from Python: list Hex projects, run one and wait for it, read its status.

    HEX_API_TOKEN=hxtp_... python examples/python_api.py [PROJECT_ID]

Against the local emulator (no Hex account needed):

    export HEXDBT_TIME_ORIGIN=$(date +%s)
    hexdbt emulator --time-scale 60 --time-origin "$HEXDBT_TIME_ORIGIN" &   # http://127.0.0.1:8765
    HEX_API_TOKEN=anything HEX_BASE_URL=http://127.0.0.1:8765 HEXDBT_TIME_SCALE=60 \
        python examples/python_api.py

The three functions return plain dicts, as the seed's did: ``{"status": "error", "message": ...}``
instead of an exception, so a notebook or a script can branch on them. ``hexdbt.HexClient`` is
the typed client for code that prefers exceptions (``hexdbt.errors``).
"""

from __future__ import annotations

import json
import sys

import hexdbt


def main(argv: list[str]) -> int:
    projects = hexdbt.list_hex_projects(limit=5)
    if isinstance(projects, dict):  # an error: message, httpStatus, hint
        print(f"cannot list projects: {projects['message']}", file=sys.stderr)
        return 4
    for project in projects:
        published = "published" if project["published"] else "not published"
        print(f"{project['projectId']}  {published:<13}  {project['title']}")
    if not projects:
        print("the token sees no project", file=sys.stderr)
        return 4

    project_id = argv[1] if len(argv) > 1 else projects[0]["projectId"]
    run = hexdbt.trigger_hex_project(project_id, wait_for_completion=True, timeout_minutes=30)
    if run.get("status") == "error":
        print(f"cannot run {project_id}: {run['message']}", file=sys.stderr)
        return 4
    print(f"run {run['runId']} ended {run['status']} ({run['runUrl']})")

    # The same run, asked again: what a later job would do with a stored run id.
    status = hexdbt.get_run_status(project_id, run["runId"])
    print(json.dumps({key: status.get(key) for key in ("runId", "status", "elapsedTime")}))
    return 0 if run["success"] else 5


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
