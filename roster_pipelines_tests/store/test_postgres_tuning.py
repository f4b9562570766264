"""Postgres tuning: statistics refreshed after a large apply, room for in-place removals."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from roster_pipelines.lib.store.engine import make_engine, refresh_statistics


def _reltuples(engine: sa.Engine, table: str) -> float:
    with engine.connect() as conn:
        return conn.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE relname = %(t)s", {"t": table}
        ).scalar_one()


def _add_accounts(engine: sa.Engine, n: int) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO accounts (first_name, last_name) "
            f"SELECT 'a' || g, 'b' || g FROM generate_series(1, {n}) g"
        )


@pytest.mark.postgres
def test_a_large_apply_analyzes_and_a_small_one_does_not(pg_url: str) -> None:
    engine = make_engine(pg_url)
    assert _reltuples(engine, "accounts") < 0  # never analyzed: an empty table's estimate

    _add_accounts(engine, 120_000)
    assert refresh_statistics(engine, 120_000) is True
    assert _reltuples(engine, "accounts") == pytest.approx(120_000, rel=0.05)

    # Below the minimum, or a small share of what the tables hold: left to autovacuum,
    # the statistics stay as they were.
    _add_accounts(engine, 11_000)
    assert refresh_statistics(engine, 5_000) is False
    assert refresh_statistics(engine, 11_000) is False  # under 10 % of 120k rows
    assert _reltuples(engine, "accounts") == pytest.approx(120_000, rel=0.05)
    # A drop that rewrites a large share of the district analyzes again.
    assert refresh_statistics(engine, 60_000) is True
    assert _reltuples(engine, "accounts") == pytest.approx(131_000, rel=0.05)


def test_sqlite_is_left_alone(sqlite_url: str) -> None:
    assert refresh_statistics(make_engine(sqlite_url), 1_000_000) is False


@pytest.mark.postgres
def test_a_failed_analyze_never_fails_the_applied_drop(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The drop is committed by then: a database that cannot be reached only logs.
    gone = sa.create_engine(
        sa.make_url(pg_url).set(drivername="postgresql+psycopg", database="roster_no_such_db")
    )
    assert refresh_statistics(gone, 1_000_000) is False
    assert "ANALYZE after the apply failed" in caplog.text


@pytest.mark.postgres
def test_link_tables_leave_room_for_in_place_removals(pg_url: str) -> None:
    engine = make_engine(pg_url)
    with engine.connect() as conn:
        options = dict(
            conn.exec_driver_sql(
                "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%(t)s)",
                {"t": ["sis_links", "org_memberships", "class_memberships", "guardianships"]},
            ).all()
        )
    assert sorted(options) == ["class_memberships", "guardianships", "org_memberships", "sis_links"]
    assert all(value == ["fillfactor=90"] for value in options.values())
