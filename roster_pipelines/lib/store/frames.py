"""Reading query results into polars frames with explicit schemas."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import polars as pl
from sqlalchemy import Connection
from sqlalchemy.sql import Executable

CHUNK = 5_000


def read_frame(conn: Connection, stmt: Executable, schema: dict[str, Any]) -> pl.DataFrame:
    """Run `stmt` and return its rows as a frame with `schema` (empty results keep it)."""
    rows = conn.execute(stmt).all()
    return pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def records(frame: pl.DataFrame, rename: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Rows as dicts for executemany; `rename` maps frame columns to bind names."""
    if rename:
        frame = frame.rename(rename)
    return frame.to_dicts()


def concat(frames: Iterable[pl.DataFrame], schema: dict[str, Any]) -> pl.DataFrame:
    parts = [f for f in frames if f.height]
    if not parts:
        return pl.DataFrame(schema=schema)
    return pl.concat(parts, how="vertical_relaxed")
