"""A per-district write lock held for the length of a transaction.

Dagster's run queue already runs one drop per district at a time; this lock makes the
database itself refuse to interleave two applies (a CLI run beside a Dagster run, two
deployments), whatever started them.
"""

from __future__ import annotations

from sqlalchemy import Connection, text, update

from roster_pipelines.lib.store.models import Organisation

_LOCK_NAMESPACE = 0x5259  # "RY": keeps our advisory locks apart from other users'


def lock_district(conn: Connection, district_id: int) -> None:
    """Block until this transaction holds the district's lock (released at commit)."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:namespace, :district)"),
            {"namespace": _LOCK_NAMESPACE, "district": district_id},
        )
    else:
        # SQLite has one writer at a time: the first write takes the database lock.
        conn.execute(
            update(Organisation)
            .where(Organisation.id == district_id)
            .values(updated_at=Organisation.updated_at)
        )
