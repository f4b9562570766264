"""change marks for contact points: an app-side write to a contact point is recorded

Migration 0006 records the accounts whose roster rows were written outside a district's
sync, so an incremental plan can add them to its scope; contact points had no record
because the plan diffs them whole. Planning them (and identity's owners) per scope
needs one: a phone or email the app adds, edits, verifies, moves in a merge or deletes
changes what the next plan must do for that account. The `contact_points` trigger
records the account, before and after the write, for every district that links it
(as an account's own write is recorded). The sync's own writes are skipped as before;
it records the accounts of other districts whose contact points it wrote itself
(`lib/store/marks.py`).

Postgres only (SQLite keeps no marks). The function is 0006's with one more branch.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29

"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONTACT_POINTS = (
    "SELECT l.district_id, ({r}->>'account_id')::int FROM sis_links l "
    "WHERE l.account_id = ({r}->>'account_id')::int"
)


def _marks_0006() -> ModuleType:
    """Migration 0006, for its function's text (one definition of the triggers' rules)."""
    path = Path(__file__).with_name("0006_roster_change_marks.py")
    spec = importlib.util.spec_from_file_location("roster_migration_0006", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _function(m: ModuleType, account_keyed: dict[str, str]) -> str:
    branches = "\n".join(
        branch.format(
            table=table, before=rows.format(r="row_before"), after=rows.format(r="row_after")
        )
        for tables, branch in ((account_keyed, m._LOG_BRANCH), (m.DISTRICT_WIDE, m._MARK_BRANCH))
        for table, rows in tables.items()
    )
    return m._FUNCTION.format(branches=branches).replace(
        "CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1
    )


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_bind().dialect.name != "postgresql":
        return
    m = _marks_0006()
    op.execute(_function(m, {**m.ACCOUNT_KEYED, "contact_points": CONTACT_POINTS}))
    op.execute(
        "CREATE TRIGGER contact_points_change_mark AFTER INSERT OR UPDATE OR DELETE "
        f"ON contact_points FOR EACH ROW WHEN ({m._WHEN}) EXECUTE FUNCTION roster_mark_change()"
    )


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name != "postgresql":
        return
    m = _marks_0006()
    op.execute("DROP TRIGGER IF EXISTS contact_points_change_mark ON contact_points")
    op.execute(_function(m, m.ACCOUNT_KEYED))
