"""Input formats: each adapter turns one drop folder into a parsed canonical `Roster`.

Nothing downstream of parsing knows which format arrived (ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from roster_pipelines.lib.canonical import Roster
from roster_pipelines.lib.formats import remind_csv

ADAPTERS: dict[str, Callable[[Path], Roster]] = {remind_csv.FORMAT: remind_csv.parse}

# The files a drop of each format must hold before it is complete (the drop-zone sensor
# waits for all of them).
REQUIRED_FILES: dict[str, tuple[str, ...]] = {remind_csv.FORMAT: remind_csv.REQUIRED_FILES}


def get_adapter(name: str) -> Callable[[Path], Roster]:
    """The parse function of format `name`; ValueError naming the known formats otherwise."""
    try:
        return ADAPTERS[name]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS))
        raise ValueError(f"Unknown roster format {name!r}; known formats: {known}") from None


__all__ = ["ADAPTERS", "REQUIRED_FILES", "get_adapter"]
