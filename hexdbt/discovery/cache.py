"""The last discovery, kept in the state folder so that ``discover: auto`` plans without asking
Hex (reading what 100 apps read takes minutes of Hex's budget).

The cache is a file, ``discovery.json``, in the local state folder: the SQLite state's folder,
or, when the state is in PostgreSQL (``HEXDBT_STATE_URL``), the state folder of this machine
(``HEXDBT_STATE_DIR`` or the user's), since it is a per-machine copy of Hex's answers that any
machine can make again, not state to share.
"""

from __future__ import annotations

import json
from pathlib import Path

from hexdbt.discovery.fetch import Discovery
from hexdbt.errors import StateError
from hexdbt.files import write_whole
from hexdbt.settings import SqliteState, resolve_state_dir, resolve_state_location

CACHE_FILE = "discovery.json"


def cache_path() -> Path:
    location = resolve_state_location()
    folder = location.folder if isinstance(location, SqliteState) else resolve_state_dir()
    return folder / CACHE_FILE


def write_cache(discovery: Discovery, path: Path | None = None) -> Path:
    """Replace the cache whole (a reader never sees half a file)."""
    path = path or cache_path()
    document = json.dumps(discovery.to_json(), indent=1)
    write_whole(path, document, what="the discovery cache", error=StateError)
    return path


def read_cache(path: Path | None = None) -> Discovery | None:
    """The cached discovery; None when there is none or it cannot be read (it is a cache: a
    broken one is as good as none, and ``hexdbt discover`` writes it again)."""
    path = path or cache_path()
    try:
        return Discovery.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
