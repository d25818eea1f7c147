"""The mapping's model (pydantic) is imported when a mapping is read, not by `hexdbt --help`."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = r"""
import json, sys
import hexdbt
from hexdbt.cli import main

seen = {"import hexdbt": "pydantic" in sys.modules}
for args in [["--help"], *([name, "--help"] for name in sorted(main.commands))]:
    try:
        main(args, standalone_mode=False)
    except SystemExit:
        pass
    seen[" ".join(args)] = "pydantic" in sys.modules
from hexdbt.mapping import parse_mappings

parse_mappings("version: 1\n", "hex_mappings.yml")
seen["parse_mappings"] = "pydantic" in sys.modules
print(json.dumps(seen))
"""


def test_pydantic_is_imported_only_once_a_mapping_is_read() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen.pop("parse_mappings") is True  # the probe notices the import
    assert seen.pop("import hexdbt") is False
    assert {args: imported for args, imported in seen.items() if imported} == {}
    assert len(seen) >= 9  # --help and each command's
