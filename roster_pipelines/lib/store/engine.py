"""Database engines for the store, and migrations run automatically on first use.

Embedded default: a SQLite file in the state folder. Production: Postgres from
`ROSTER_DATABASE_URL`. Both go through the same Alembic migrations.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger(__name__)
_MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_migrated: set[str] = set()
_lock = threading.Lock()


# The sync's reads are big scans and joins that JIT compilation does not pay back: it
# cost 0.15-0.2 s per million-row read. (read_many's own connections set it too.)
PG_SESSION_SETTINGS = {"jit": "off"}
PG_SESSION_ARGS = {"options": " ".join(f"-c {k}={v}" for k, v in PG_SESSION_SETTINGS.items())}


def sqlite_url(state_dir: Path) -> str:
    return f"sqlite:///{(Path(state_dir) / 'roster.db').resolve()}"


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain postgres URLs (the driver this project installs)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine for `url`; runs pending migrations the first time a URL is seen."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        db_path = url.split("///", 1)[-1]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, connect_args=PG_SESSION_ARGS)
    if migrate:
        upgrade(engine)
    return engine


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent, once per process per URL)."""
    key = engine.url.render_as_string(hide_password=False)
    with _lock:
        if key in _migrated and revision == "head":
            return
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
        _migrated.add(key)


def forget_migrated(engine: Engine) -> None:
    """Tests that drop a schema call this so the next engine migrates again."""
    _migrated.discard(engine.url.render_as_string(hide_password=False))


# The tables a sync writes in bulk; their statistics steer the plan's reads.
ROSTER_TABLES = (
    "accounts",
    "sis_links",
    "contact_points",
    "organisations",
    "classes",
    "org_memberships",
    "class_memberships",
    "guardianships",
)
ANALYZE_MIN_ROWS = 10_000  # below this a drop cannot move the statistics much
ANALYZE_FRACTION = 0.1  # the share autovacuum waits for (autovacuum_analyze_scale_factor)


def refresh_statistics(engine: Engine, rows_written: int) -> bool:
    """ANALYZE the roster tables after an apply that changed a large share of them.

    Autovacuum would do it too, but minutes later: a drop planned right after a large
    initial sync otherwise reads a million rows through plans made for empty tables
    (nested loops where a hash join belongs: 2.7 s instead of 0.7 s for one read at
    a million people). Postgres only; returns whether it ran.
    """
    if engine.dialect.name != "postgresql" or rows_written < ANALYZE_MIN_ROWS:
        return False
    try:
        with engine.connect() as conn:
            tuples = conn.exec_driver_sql(
                "SELECT relname, reltuples FROM pg_class "
                "WHERE relkind = 'r' AND relname = ANY(%(t)s)",
                {"t": list(ROSTER_TABLES)},
            ).all()
        never_analyzed = any(reltuples < 0 for _, reltuples in tuples)
        known = sum(max(reltuples, 0) for _, reltuples in tuples)
        if not never_analyzed and rows_written <= ANALYZE_FRACTION * known:
            return False
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"ANALYZE {', '.join(ROSTER_TABLES)}")
    except SQLAlchemyError as error:
        # The drop is applied and committed: stale statistics only slow the next read.
        log.warning("ANALYZE after the apply failed (autovacuum will catch up): %s", error)
        return False
    return True
