"""hexdbt: keep Hex apps in step with dbt.

``import hexdbt`` stays cheap: it imports neither dbt nor requests. The public API below is
loaded on first use.
"""

from __future__ import annotations

from hexdbt._version import __version__

__all__ = ["__version__"]
