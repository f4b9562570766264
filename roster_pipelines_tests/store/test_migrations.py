"""The Alembic migrations build exactly the schema of the models, on both databases."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from roster_pipelines.lib.store.engine import make_engine, upgrade
from roster_pipelines.lib.store.models import Base


def test_first_use_migrates_and_schema_matches_models(db_url: str) -> None:
    engine = make_engine(db_url)
    tables = set(sa.inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
    with engine.connect() as conn:
        head = conn.execute(sa.text("select version_num from alembic_version")).scalar_one()
    upgrade(engine)  # running again is a no-op
    with engine.connect() as conn:
        assert conn.execute(sa.text("select version_num from alembic_version")).scalar_one() == head


def test_one_contact_point_belongs_to_one_account(db_url: str) -> None:
    from roster_pipelines.lib.store.models import Account, ContactPoint

    engine = make_engine(db_url)
    with engine.begin() as conn:
        a = conn.execute(
            sa.insert(Account).values(first_name="A").returning(Account.id)
        ).scalar_one()
        b = conn.execute(
            sa.insert(Account).values(first_name="B").returning(Account.id)
        ).scalar_one()
        conn.execute(sa.insert(ContactPoint).values(account_id=a, kind="email", value="x@y.org"))
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(ContactPoint).values(account_id=b, kind="email", value="x@y.org")
            )
    except sa.exc.IntegrityError:
        pass
    else:
        raise AssertionError("a second account could take the same email")
