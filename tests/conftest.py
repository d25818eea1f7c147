"""Every test starts from a clean environment: no HEX_*, HEXDBT_* or DBT_* from the machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("HEX_", "HEXDBT_", "DBT_")):
            monkeypatch.delenv(name)
    state_dir = tmp_path / "hexdbt-state"
    monkeypatch.setenv("HEXDBT_STATE_DIR", str(state_dir))
    monkeypatch.setenv("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
