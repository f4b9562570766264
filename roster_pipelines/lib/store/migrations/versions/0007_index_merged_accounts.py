"""a partial index on the merged accounts

Every identity step reads the app's merged accounts (tombstones, few) to follow them
to the account they were merged into. Without an index that read scanned every
account of the app: 0.1 s at a million accounts, per drop of every district.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MERGED = sa.text("merged_into_id IS NOT NULL")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index(
        "ix_accounts_merged",
        "accounts",
        ["merged_into_id"],
        postgresql_where=MERGED,
        sqlite_where=MERGED,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_accounts_merged", table_name="accounts")
