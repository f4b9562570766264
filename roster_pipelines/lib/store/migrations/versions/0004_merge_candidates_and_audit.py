"""merge candidates and merge audit (identity resolution and account merges)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "merge_candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("district_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("person_key", sa.String(length=400), nullable=True),
        sa.Column("other_account_id", sa.Integer(), nullable=True),
        sa.Column("other_person_key", sa.String(length=400), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("pair_key", sa.String(length=820), nullable=False),
        sa.Column("first_drop_id", sa.String(length=255), nullable=True),
        sa.Column("last_drop_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=16), server_default="open", nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["district_id"], ["organisations.id"]),
        sa.ForeignKeyConstraint(["other_account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("district_id", "pair_key", name="uq_merge_candidate_pair"),
    )
    with op.batch_alter_table("merge_candidates", schema=None) as batch_op:
        batch_op.create_index(
            "ix_merge_candidates_drop", ["district_id", "last_drop_id"], unique=False
        )

    op.create_table(
        "merge_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("keep_account_id", sa.Integer(), nullable=False),
        sa.Column("merged_account_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.Column(
            "merged_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(["keep_account_id"], ["accounts.id"]),
        sa.ForeignKeyConstraint(["merged_account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("merge_audit", schema=None) as batch_op:
        batch_op.create_index("ix_merge_audit_keep", ["keep_account_id"], unique=False)
        batch_op.create_index("ix_merge_audit_merged", ["merged_account_id"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("merge_audit", schema=None) as batch_op:
        batch_op.drop_index("ix_merge_audit_merged")
        batch_op.drop_index("ix_merge_audit_keep")
    op.drop_table("merge_audit")
    with op.batch_alter_table("merge_candidates", schema=None) as batch_op:
        batch_op.drop_index("ix_merge_candidates_drop")
    op.drop_table("merge_candidates")
