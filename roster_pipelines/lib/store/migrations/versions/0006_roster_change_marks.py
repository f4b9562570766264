"""change marks: what was written in a district's roster outside its own sync

An incremental maintenance plan (lib/incremental.py) reads and diffs only the accounts
a drop changes, so it must also know which accounts anything *else* changed since the
district's last applied drop: the app's operations (manual members, removals, leaving,
merges, name edits), an administrator confirming a hold, or another district's sync
renaming an account the two share. Row triggers record them:

- `roster_account_changes`: one (district, account) row per write to accounts, SIS
  links, school and class memberships and guardianships. A plan adds the accounts it
  finds there to its scope and its apply deletes the rows it saw (rows committed
  after the plan's read stay for the next drop).
- `roster_change_marks.seq`: a per-district counter moved by writes to organisations
  and district settings; the next plan of the district is then a full one. Each run
  records the counter its plan saw (`sync_runs.change_mark`).

Classes and contact points are always planned whole, so their writes need no record.
Runs also record the version of the plan's rules (`sync_runs.plan_version`) and a
fingerprint of the validated roster they applied (`sync_runs.roster_digest`).

Postgres only. A sync marks its transaction with `SET LOCAL roster.sync_district`, and
the triggers' `WHEN` skips its rows, so a bulk `COPY` pays one cheap test per row and
no function call; the sync records the other districts' accounts it renamed itself
(`lib/store/marks.py`). SQLite (the embedded default) gets the tables and columns but
no triggers: there every sync plans in full.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Tables whose rows the plan reads for a scope of accounts: how a row (`{r}`, as jsonb)
# names its (district, account) pairs.
ACCOUNT_KEYED = {
    "accounts": (
        "SELECT l.district_id, ({r}->>'id')::int FROM sis_links l "
        "WHERE l.account_id = ({r}->>'id')::int"
    ),
    "sis_links": "SELECT ({r}->>'district_id')::int, ({r}->>'account_id')::int",
    "org_memberships": (
        "SELECT coalesce(o.district_id, o.id), ({r}->>'account_id')::int "
        "FROM organisations o WHERE o.id = ({r}->>'org_id')::int"
    ),
    "class_memberships": (
        "SELECT c.district_id, ({r}->>'account_id')::int "
        "FROM classes c WHERE c.id = ({r}->>'class_id')::int"
    ),
    "guardianships": (
        "SELECT ({r}->>'district_id')::int, ({r}->>'parent_account_id')::int UNION "
        "SELECT ({r}->>'district_id')::int, ({r}->>'student_account_id')::int"
    ),
}
# Tables a change of which makes the district's next plan a full one: how a row names
# its district. (Classes and contact points are always planned whole: no trigger.)
DISTRICT_WIDE = {
    "organisations": "SELECT coalesce(({r}->>'district_id')::int, ({r}->>'id')::int)",
    "district_settings": "SELECT ({r}->>'district_id')::int",
}

_FUNCTION = """
CREATE FUNCTION roster_mark_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    row_before jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    row_after jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
BEGIN
    CASE TG_TABLE_NAME
{branches}
    END CASE;
    RETURN NULL;
END
$$
"""

# The row before and after a write (an update may move a row between keys).
_LOG_BRANCH = """        WHEN '{table}' THEN
            INSERT INTO roster_account_changes (district_id, account_id)
            SELECT DISTINCT d, a FROM (({before}) UNION ({after})) AS x(d, a)
            WHERE d IS NOT NULL AND a IS NOT NULL;"""
_MARK_BRANCH = """        WHEN '{table}' THEN
            INSERT INTO roster_change_marks AS m (district_id, seq, changed_at)
            SELECT DISTINCT d, 1, now() FROM (({before}) UNION ({after})) AS x(d)
            WHERE d IS NOT NULL
            ON CONFLICT (district_id) DO UPDATE SET seq = m.seq + 1, changed_at = now();"""

# A sync's own writes carry the setting; `current_setting(..., true)` is NULL or ''
# when it was never set or has been reset.
_WHEN = "coalesce(current_setting('roster.sync_district', true), '') = ''"
TABLES = (*ACCOUNT_KEYED, *DISTRICT_WIDE)


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "roster_change_marks",
        sa.Column("district_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("district_id"),
    )
    op.create_table(
        "roster_account_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("district_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_roster_account_changes_district", "roster_account_changes", ["district_id"])
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("change_mark", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("plan_version", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("roster_digest", sa.String(length=32), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return
    branches = "\n".join(
        branch.format(
            table=table, before=rows.format(r="row_before"), after=rows.format(r="row_after")
        )
        for tables, branch in ((ACCOUNT_KEYED, _LOG_BRANCH), (DISTRICT_WIDE, _MARK_BRANCH))
        for table, rows in tables.items()
    )
    op.execute(_FUNCTION.format(branches=branches))
    for table in TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_change_mark AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW WHEN ({_WHEN}) EXECUTE FUNCTION roster_mark_change()"
        )


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_change_mark ON {table}")
        op.execute("DROP FUNCTION IF EXISTS roster_mark_change()")
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("roster_digest")
        batch.drop_column("plan_version")
        batch.drop_column("change_mark")
    op.drop_index("ix_roster_account_changes_district", "roster_account_changes")
    op.drop_table("roster_account_changes")
    op.drop_table("roster_change_marks")
