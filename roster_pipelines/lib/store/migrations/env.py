"""Alembic environment: the store passes its own connection (see engine.upgrade)."""

from alembic import context
from sqlalchemy import create_engine

from roster_pipelines.lib.store.engine import normalise_url
from roster_pipelines.lib.store.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:  # `alembic -x url=... revision --autogenerate` from the command line
    url = normalise_url(context.get_x_argument(as_dictionary=True)["url"])
    with create_engine(url).begin() as conn:
        run_migrations(conn)
