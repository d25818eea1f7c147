"""Text for people: a count with its noun, and columns padded to what a terminal shows.

A terminal gives a wide character (CJK, most emoji) two columns and a combining mark none, so
``str.ljust`` misaligns every row after a name in Japanese; ``display_width`` counts as the
terminal does (as rich does for the live tables).
"""

from __future__ import annotations

import unicodedata

_ZERO_WIDTH_CATEGORIES = {"Mn", "Me", "Cf"}


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 run``, ``2 runs``, ``1 entry``, ``3 entries`` (with ``plural="entries"``)."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def display_width(text: str) -> int:
    """The columns ``text`` takes on a terminal."""
    width = 0
    for character in text:
        if unicodedata.category(character) in _ZERO_WIDTH_CATEGORIES:
            continue
        width += 2 if unicodedata.east_asian_width(character) in ("W", "F") else 1
    return width


def pad(text: str, width: int) -> str:
    """``text`` followed by spaces up to ``width`` terminal columns (never cut)."""
    return text + " " * max(0, width - display_width(text))
