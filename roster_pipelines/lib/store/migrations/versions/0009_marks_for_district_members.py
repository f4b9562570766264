"""change marks for every member of a district, not only its SIS-linked accounts

Migrations 0006 and 0008 record a write to an account or its contact points for each
district that SIS-links the account: what an incremental plan needs. The similar-people
scan (`lib/similar_people.py`) also looks at the district's other members (people an
administrator or a teacher added by hand), and works out only the accounts something
wrote since the last drop: so a write to such a member's name, date of birth or phones
is recorded for the districts whose schools list them too.

Postgres only (SQLite keeps no marks). The function is 0008's with two wider branches.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29

"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The (district, account) pairs of an account's memberships of schools and districts.
_MEMBER_OF = (
    "SELECT coalesce(o.district_id, o.id), om.account_id FROM org_memberships om "
    "JOIN organisations o ON o.id = om.org_id WHERE om.account_id = ({r}->>'{column}')::int"
)


def _migration(name: str) -> ModuleType:
    """An earlier migration of this folder, for its rules (one definition of them)."""
    path = Path(__file__).with_name(name)
    spec = importlib.util.spec_from_file_location(f"roster_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    """Upgrade schema."""
    if op.get_bind().dialect.name != "postgresql":
        return
    m6 = _migration("0006_roster_change_marks.py")
    m8 = _migration("0008_contact_point_change_marks.py")
    keyed = {
        **m6.ACCOUNT_KEYED,
        "accounts": f"{m6.ACCOUNT_KEYED['accounts']} UNION {_MEMBER_OF.replace('{column}', 'id')}",
        "contact_points": (
            f"{m8.CONTACT_POINTS} UNION {_MEMBER_OF.replace('{column}', 'account_id')}"
        ),
    }
    op.execute(m8._function(m6, keyed))


def downgrade() -> None:
    """Downgrade schema."""
    if op.get_bind().dialect.name != "postgresql":
        return
    m6 = _migration("0006_roster_change_marks.py")
    m8 = _migration("0008_contact_point_change_marks.py")
    op.execute(m8._function(m6, {**m6.ACCOUNT_KEYED, "contact_points": m8.CONTACT_POINTS}))
