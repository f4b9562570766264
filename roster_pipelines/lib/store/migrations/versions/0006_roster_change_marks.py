"""change marks: which districts' roster was written outside their own sync

A per-district counter (`roster_change_marks.seq`) that moves whenever a district's
roster rows are written by anything but that district's sync: the app's operations
(claims, owner edits, manual members, removals, merges, contact edits), an
administrator confirming a hold, or another district's sync changing an account the
two share. Each applied run records the counter it left (`sync_runs.change_mark`), so
"nothing touched this district since its last apply" is one comparison: the condition
an incremental maintenance plan needs (lib/incremental.py), with the version of the
plan's rules the run was planned by (`sync_runs.plan_version`) and a fingerprint of the
validated roster it applied (`sync_runs.roster_digest`).

Postgres only: row triggers on the roster tables. A sync marks its transaction with
`SET LOCAL roster.sync_district`, and the triggers' `WHEN` skips its rows, so a bulk
`COPY` pays one cheap test per row and no function call; the sync marks the other
districts of the shared accounts it changed itself (`lib/store/marks.py`). SQLite (the
embedded default) gets the table and column but no triggers: there every sync plans
in full.

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

# Each roster table and how a row of it names its districts (`{r}`: the row as jsonb).
DISTRICTS_OF = {
    "organisations": "SELECT coalesce(({r}->>'district_id')::int, ({r}->>'id')::int)",
    "district_settings": "SELECT ({r}->>'district_id')::int",
    "classes": "SELECT ({r}->>'district_id')::int",
    "guardianships": "SELECT ({r}->>'district_id')::int",
    "sis_links": (
        # its district, and every district the account is linked in (whether an
        # account is linked elsewhere changes how its contacts are synced)
        "SELECT ({r}->>'district_id')::int UNION "
        "SELECT l.district_id FROM sis_links l WHERE l.account_id = ({r}->>'account_id')::int"
    ),
    "org_memberships": (
        "SELECT coalesce(o.district_id, o.id) FROM organisations o WHERE o.id = ({r}->>'org_id')::int"
    ),
    "class_memberships": "SELECT c.district_id FROM classes c WHERE c.id = ({r}->>'class_id')::int",
    "accounts": "SELECT l.district_id FROM sis_links l WHERE l.account_id = ({r}->>'id')::int",
    "contact_points": (
        "SELECT l.district_id FROM sis_links l WHERE l.account_id = ({r}->>'account_id')::int"
    ),
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

# One mark per written row, for the districts of the row before and after (an update
# may move a row between districts).
_BRANCH = """        WHEN '{table}' THEN
            INSERT INTO roster_change_marks AS m (district_id, seq, changed_at)
            SELECT DISTINCT d, 1, now() FROM (({before}) UNION ({after})) AS x(d)
            WHERE d IS NOT NULL
            ON CONFLICT (district_id) DO UPDATE SET seq = m.seq + 1, changed_at = now();"""

# A sync's own writes carry the setting; `current_setting(..., true)` is NULL or ''
# when it was never set or has been reset.
_WHEN = "coalesce(current_setting('roster.sync_district', true), '') = ''"


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
    with op.batch_alter_table("sync_runs") as batch:
        batch.add_column(sa.Column("change_mark", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("plan_version", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("roster_digest", sa.String(length=32), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return
    branches = "\n".join(
        _BRANCH.format(
            table=table,
            before=districts.format(r="row_before"),
            after=districts.format(r="row_after"),
        )
        for table, districts in DISTRICTS_OF.items()
    )
    op.execute(_FUNCTION.format(branches=branches))
    for table in DISTRICTS_OF:
        op.execute(
            f"CREATE TRIGGER {table}_change_mark AFTER INSERT OR UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW WHEN ({_WHEN}) EXECUTE FUNCTION roster_mark_change()"
        )


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name == "postgresql":
        for table in DISTRICTS_OF:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_change_mark ON {table}")
        op.execute("DROP FUNCTION IF EXISTS roster_mark_change()")
    with op.batch_alter_table("sync_runs") as batch:
        batch.drop_column("roster_digest")
        batch.drop_column("plan_version")
        batch.drop_column("change_mark")
    op.drop_table("roster_change_marks")
