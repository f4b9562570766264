"""Shared fixtures: databases (SQLite and a real Postgres) and drop writers.

Postgres tests never skip: when the server at ROSTER_TEST_PG_URL (default: the local
one on 127.0.0.1:5432) is missing, they fail with a message saying so.
"""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from roster_pipelines.lib.formats import remind_csv

# Every incremental plan a test makes is checked against the full plan of the same
# drop (lib/sync.py; subprocesses inherit it).
os.environ.setdefault("ROSTER_VERIFY_INCREMENTAL", "1")

PG_ADMIN_URL = os.environ.get(
    "ROSTER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def pg_admin_engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
    except sa.exc.OperationalError as err:
        pytest.fail(
            f"PostgreSQL is required for this test and is not reachable at {PG_ADMIN_URL}: {err}"
        )
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin_engine: sa.Engine) -> Iterator[str]:
    """A fresh, empty Postgres database for one test."""
    name = f"roster_test_{uuid.uuid4().hex[:12]}"
    with pg_admin_engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = pg_admin_engine.url.set(database=name).render_as_string(hide_password=False)
    yield url
    from roster_pipelines.defs.sync.resources import _engine

    _engine.cache_clear()
    with pg_admin_engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'app.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs on both databases."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


# The format's own column list: tests write exactly what the adapter expects.
REMIND_HEADERS = remind_csv.COLUMNS


def write_drop(folder: Path, rows: Mapping[str, Sequence[Sequence[str]]]) -> Path:
    """Write a Remind CSV 1.0 drop: every file with its header, plus the given rows."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, header in REMIND_HEADERS.items():
        with (folder / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows.get(name, []))
    return folder


@pytest.fixture
def notify_standin() -> Iterator[object]:
    """A local HTTP server standing in for SendGrid's v3 mail API and the SMS API."""
    from roster_pipelines_tests.lib.notify_standin import StandIn

    standin = StandIn().start()
    yield standin
    standin.stop()


@pytest.fixture
def notify_env(notify_standin, monkeypatch: pytest.MonkeyPatch):
    """Provider settings pointing the real clients at the stand-in (never a real API)."""
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.test-secret-key-do-not-log")
    monkeypatch.setenv("SENDGRID_HOST", notify_standin.url)
    monkeypatch.setenv("ROSTER_EMAIL_FROM", "sync@roster.example")
    monkeypatch.setenv("ROSTER_SMS_BASE_URL", notify_standin.url)
    monkeypatch.setenv("ROSTER_SMS_ACCOUNT_SID", "AC123")
    monkeypatch.setenv("ROSTER_SMS_AUTH_TOKEN", "sms-secret-token-do-not-log")
    monkeypatch.setenv("ROSTER_SMS_FROM", "+15005550006")
    return notify_standin
