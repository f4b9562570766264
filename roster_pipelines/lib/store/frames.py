"""Moving rows between the database and polars frames in bulk.

Reads: `read_frame` returns a query's rows as a frame with an explicit schema (on
Postgres through `COPY ... TO STDOUT`). The district-wide reads of identity and the
plan go through `read_many`: several queries at once, each on its own ADBC connection
(Arrow columns, no Python object per row).

Writes (Postgres): `copy_in` streams a frame as CSV blocks through `COPY ... FROM
STDIN` on the caller's connection, inside its transaction; `stage` does the same into
a temporary table for `UPDATE ... FROM`; `new_ids` allocates serial ids up front so
inserted rows need no RETURNING. SQLite keeps `executemany` (see `store.writer`).
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import polars as pl
from sqlalchemy import Connection
from sqlalchemy.sql import Executable

from roster_pipelines.lib.store.engine import PG_SESSION_SETTINGS

CHUNK = 5_000
COPY_ROWS = 250_000  # rows per CSV block written to COPY (bounds the CSV text in memory)


def is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _driver(conn: Connection) -> Any:
    return conn.connection.driver_connection  # type: ignore[union-attr]


def _sql(conn: Connection, stmt: Executable) -> str:
    return str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))  # type: ignore[attr-defined]


def read_frame(conn: Connection, stmt: Executable, schema: dict[str, Any]) -> pl.DataFrame:
    """Run `stmt` on `conn` and return its rows as a frame with `schema` (empty results
    keep it). Postgres rows stream out with `COPY ... TO STDOUT`; `read_many` reads
    big tables faster, outside the caller's transaction."""
    if is_postgres(conn):
        return copy_out(conn, stmt, schema)
    rows = conn.execute(stmt).all()
    return pl.DataFrame([tuple(r) for r in rows], schema=schema, orient="row")


def _adbc_connect(conn: Connection) -> Any:
    from adbc_driver_postgresql import dbapi

    url = conn.engine.url.set(drivername="postgresql")
    adbc = dbapi.connect(url.render_as_string(hide_password=False))
    with adbc.cursor() as cursor:
        for setting, value in PG_SESSION_SETTINGS.items():
            cursor.execute(f"SET {setting} = {value}")
    return adbc


def read_many(
    conn: Connection,
    queries: dict[str, tuple[Executable, dict[str, Any]]],
    *,
    workers: int = 2,
) -> dict[str, pl.DataFrame]:
    """Several independent reads (name -> statement, schema) at once.

    On Postgres each worker thread has its own ADBC connection, so the server runs one
    query while this process decodes another's rows (ADBC and polars release the GIL);
    it sees committed data only. SQLite reads one after the other
    on `conn`.
    """
    if not is_postgres(conn):
        return {name: read_frame(conn, stmt, schema) for name, (stmt, schema) in queries.items()}
    sql = {name: _sql(conn, stmt) for name, (stmt, _) in queries.items()}
    local = threading.local()
    opened: list[Any] = []
    lock = threading.Lock()

    def read(name: str) -> pl.DataFrame:
        if not hasattr(local, "adbc"):
            local.adbc = _adbc_connect(conn)
            with lock:
                opened.append(local.adbc)
        return read_arrow(local.adbc, sql[name], queries[name][1])

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            # Submitted biggest-first would be better; callers list them in that order.
            futures = {name: pool.submit(read, name) for name in queries}
            return {name: future.result() for name, future in futures.items()}
    finally:
        for adbc in opened:
            adbc.close()


def read_arrow(adbc: Any, sql: str, schema: dict[str, Any]) -> pl.DataFrame:
    """`sql`'s rows through an ADBC connection, as a frame with `schema`."""
    with adbc.cursor() as cursor:
        cursor.execute(sql)
        table = cursor.fetch_arrow_table()
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if not frame.height:
        return pl.DataFrame(schema=schema)
    # ADBC names columns after the SELECT list and returns int4 as Int32: rename, cast.
    frame.columns = list(schema)
    # One chunk per column (ADBC returns record batches): later joins are faster.
    return frame.cast(schema).rechunk()  # type: ignore[arg-type]


def copy_out(conn: Connection, stmt: Executable, schema: dict[str, Any]) -> pl.DataFrame:
    """`stmt`'s rows through `COPY ... TO STDOUT` on `conn` (Postgres), typed as `schema`."""
    buffer = io.BytesIO()
    cursor = _driver(conn).cursor()
    try:
        with cursor.copy(f"COPY ({_sql(conn, stmt)}) TO STDOUT WITH (FORMAT csv)") as copy:
            for block in copy:
                buffer.write(block)
    finally:
        cursor.close()
    if not buffer.tell():
        return pl.DataFrame(schema=schema)
    raw = pl.read_csv(
        buffer.getvalue(),
        has_header=False,
        new_columns=list(schema),
        schema_overrides=dict.fromkeys(schema, pl.String),
        infer_schema=False,
    )
    casts = []
    for name, dtype in schema.items():
        column = pl.col(name)
        if dtype == pl.Boolean:
            casts.append((column == "t").alias(name))
        elif dtype == pl.Date:
            casts.append(column.str.to_date("%Y-%m-%d").alias(name))
        else:
            casts.append(column.cast(dtype).alias(name))
    return raw.select(casts)


def copy_in(conn: Connection, table: str, frame: pl.DataFrame) -> None:
    """Append `frame`'s rows to `table` (its columns by name) with `COPY ... FROM STDIN`,
    in `conn`'s transaction (Postgres). Nulls travel as unquoted empty fields, empty
    strings as `""`: the CSV format of COPY reads them back the same way."""
    if not frame.height:
        return
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    cursor = _driver(conn).cursor()
    try:
        with cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT csv)") as copy:
            for start in range(0, frame.height, COPY_ROWS):
                block = frame.slice(start, COPY_ROWS).write_csv(include_header=False)
                copy.write(block.encode())
    finally:
        cursor.close()


def stage(conn: Connection, table: str, frame: pl.DataFrame) -> str:
    """A temporary table (dropped at commit) with `frame`'s columns typed as in `table`,
    holding `frame`'s rows (Postgres). Returns its name."""
    name = f"tmp_stage_{uuid.uuid4().hex[:10]}"
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE {name} ON COMMIT DROP AS SELECT {columns} FROM {table} WITH NO DATA"
    )
    copy_in(conn, name, frame)
    conn.exec_driver_sql(f"ANALYZE {name}")
    return name


def new_ids(conn: Connection, table: str, n: int) -> pl.Series:
    """`n` fresh ids from `table`'s serial sequence (Postgres), in one round trip.

    Sequences are not transactional: ids taken by a transaction that rolls back are
    simply never used, as with any serial insert."""
    if not n:
        return pl.Series("id", [], pl.Int64)
    sequence = conn.exec_driver_sql(f"SELECT pg_get_serial_sequence('{table}', 'id')").scalar_one()
    text = conn.exec_driver_sql(
        f"SELECT string_agg(nextval('{sequence}')::text, ',') FROM generate_series(1, {int(n)})"
    ).scalar_one()
    return pl.Series("id", [text]).str.split(",").explode().cast(pl.Int64)


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
