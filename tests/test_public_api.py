"""``import hexdbt`` is cheap and its ``__all__`` is honest."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hexdbt


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert hexdbt.__all__ == sorted(hexdbt.__all__)
    for name in hexdbt.__all__:
        assert getattr(hexdbt, name) is not None
    assert set(hexdbt.__all__) <= set(dir(hexdbt))


def test_public_functions_are_the_seeds() -> None:
    public = {name for name in hexdbt.__all__ if not name.startswith("_")}
    assert public == {
        "HexClient",
        "RunRequest",
        "get_run_status",
        "list_hex_projects",
        "trigger_hex_project",
    }


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        hexdbt.no_such_thing  # type: ignore[attr-defined]  # noqa: B018


def test_import_hexdbt_pulls_in_no_heavy_module() -> None:
    code = (
        "import sys, hexdbt; "
        "heavy = [m for m in ('requests', 'dbt', 'click', 'hexdbt.emulator', 'urllib3') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
