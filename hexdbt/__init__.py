"""hexdbt: keep Hex apps in step with dbt.

``import hexdbt`` stays cheap: it imports neither dbt nor requests. The public API below is
loaded on first use (module ``__getattr__``).

    hexdbt.list_hex_projects(), hexdbt.trigger_hex_project(...), hexdbt.get_run_status(...)
        the seed's functions: plain dicts, ``{"status": "error", ...}`` instead of exceptions
    hexdbt.HexClient, hexdbt.RunRequest
        the typed client, raising ``hexdbt.errors`` classes
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from hexdbt._version import __version__

if TYPE_CHECKING:
    from hexdbt.api import get_run_status, list_hex_projects, trigger_hex_project
    from hexdbt.hex.client import HexClient
    from hexdbt.hex.models import RunRequest

_LAZY = {
    "HexClient": "hexdbt.hex.client",
    "RunRequest": "hexdbt.hex.models",
    "get_run_status": "hexdbt.api",
    "list_hex_projects": "hexdbt.api",
    "trigger_hex_project": "hexdbt.api",
}

__all__ = [
    "HexClient",
    "RunRequest",
    "__version__",
    "get_run_status",
    "list_hex_projects",
    "trigger_hex_project",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hexdbt' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
