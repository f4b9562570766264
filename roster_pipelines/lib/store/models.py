"""The messaging app's side of the database (SQLAlchemy 2.0 models).

The store owns this schema; Alembic migrations in `migrations/` create it. Rows that a
sync removes are soft-removed (`active = false`, `removed_at` set) so a returning id
reactivates the same record with its history (R8).
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    text,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class _Timestamps:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class _SoftRemoval:
    active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    removed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Organisation(_Timestamps, _SoftRemoval, Base):
    """A district, or a school/program inside a district."""

    __tablename__ = "organisations"
    __table_args__ = (UniqueConstraint("district_id", "sis_id", name="uq_org_district_sis"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # district | school | program
    # Null for districts; the district's id for its schools and programs.
    district_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id"))
    # The district's own id (its drop-zone folder) or the school's SIS school_id.
    sis_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))


class Account(_Timestamps, Base):
    """A person's app account. Accounts are never deleted by a sync."""

    __tablename__ = "accounts"
    # Every identity step reads the merged accounts (few) of the whole app: without
    # this partial index it scanned every account (0.1 s at a million).
    __table_args__ = (
        Index(
            "ix_accounts_merged",
            "merged_into_id",
            postgresql_where=text("merged_into_id IS NOT NULL"),
            sqlite_where=text("merged_into_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    dob: Mapped[date | None] = mapped_column(Date)
    grade: Mapped[str | None] = mapped_column(String(16))
    # Set when the account was merged into another one (tombstone; issue of merges).
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))


class ContactPoint(_Timestamps, Base):
    """An email or phone; one contact point belongs to one account across the app."""

    __tablename__ = "contact_points"
    __table_args__ = (UniqueConstraint("kind", "value", name="uq_contact_kind_value"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # email | phone
    value: Mapped[str] = mapped_column(String(320))  # lower-cased email or E.164
    verified: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    source: Mapped[str] = mapped_column(String(8), default="sis")  # sis | user


class SisLink(_Timestamps, _SoftRemoval, Base):
    """Binds an SIS identity (district, person_key) to an account."""

    __tablename__ = "sis_links"
    __table_args__ = (
        UniqueConstraint("district_id", "person_key", name="uq_sis_link_person"),
        Index("ix_sis_links_account", "account_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    district_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    person_key: Mapped[str] = mapped_column(String(400))
    role: Mapped[str] = mapped_column(String(16))
    sis_id: Mapped[str | None] = mapped_column(String(255))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))


class Class(_Timestamps, _SoftRemoval, Base):
    """A rostered (or hand-made) class. Owner edits win over the SIS (R6)."""

    __tablename__ = "classes"
    __table_args__ = (UniqueConstraint("district_id", "sis_class_id", name="uq_class_sis"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    district_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    school_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), index=True)
    sis_class_id: Mapped[str | None] = mapped_column(String(255))
    sis_name: Mapped[str] = mapped_column(String(255))
    # What members see: the SIS name until the owner edits it (then name_edited).
    name: Mapped[str] = mapped_column(String(255))
    name_edited: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    owner_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    claimed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    join_code: Mapped[str | None] = mapped_column(String(32), unique=True)
    settings: Mapped[dict | None] = mapped_column(JSON)


class OrgMembership(_Timestamps, _SoftRemoval, Base):
    __tablename__ = "org_memberships"
    __table_args__ = (
        UniqueConstraint("org_id", "account_id", "role", "source", name="uq_org_membership"),
        Index("ix_org_memberships_account", "account_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    role: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(8))  # sis | manual


class ClassMembership(_Timestamps, _SoftRemoval, Base):
    __tablename__ = "class_memberships"
    __table_args__ = (
        UniqueConstraint("class_id", "account_id", "role", "source", name="uq_class_membership"),
        Index("ix_class_memberships_account", "account_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    class_id: Mapped[int] = mapped_column(ForeignKey("classes.id"))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    role: Mapped[str] = mapped_column(String(16))  # teacher | student | parent
    source: Mapped[str] = mapped_column(String(8))  # sis | manual


class Guardianship(_Timestamps, _SoftRemoval, Base):
    __tablename__ = "guardianships"
    __table_args__ = (
        UniqueConstraint(
            "district_id", "parent_account_id", "student_account_id", name="uq_guardianship"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    district_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    parent_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    student_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)


class SyncRun(Base):
    """One drop's passage through the pipeline: status, counts, changes."""

    __tablename__ = "sync_runs"
    __table_args__ = (Index("ix_sync_runs_district_drop", "district_id", "drop_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    district_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    drop_id: Mapped[str] = mapped_column(String(255))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    # applied | held | rejected | dry_run
    status: Mapped[str] = mapped_column(String(16))
    # When the drop's files were received (archived); orders drops of a district.
    received_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    is_initial: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    counts: Mapped[dict | None] = mapped_column(JSON)
    changes: Mapped[dict | None] = mapped_column(JSON)
    planned: Mapped[dict | None] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The district's change mark its plan saw (RosterChangeMark.seq; Postgres only).
    change_mark: Mapped[int | None] = mapped_column(BigInteger)
    # The version of the plan's rules it was planned by (lib/incremental.PLAN_VERSION).
    plan_version: Mapped[str | None] = mapped_column(String(32))
    # A fingerprint of the validated roster it applied (lib/incremental.roster_digest).
    roster_digest: Mapped[str | None] = mapped_column(String(32))


class RosterChangeMark(Base):
    """Moves when a district's schools or settings are written by anything but its own
    sync (migration 0006 triggers): its next plan is then a full one. No foreign key,
    so a mark never stands in the way of deleting an organisation."""

    __tablename__ = "roster_change_marks"

    district_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, server_default="0")
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RosterAccountChange(Base):
    """An account whose rows in a district were written outside the district's sync
    (migration 0006 triggers; the next plan of the district reads it, its apply
    deletes it)."""

    __tablename__ = "roster_account_changes"
    __table_args__ = (Index("ix_roster_account_changes_district", "district_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    district_id: Mapped[int] = mapped_column(Integer)
    account_id: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SyncIssue(Base):
    __tablename__ = "sync_issues"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sync_run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id"), index=True)
    code: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    file: Mapped[str | None] = mapped_column(String(255))
    row: Mapped[int | None] = mapped_column(Integer)
    ids: Mapped[str | None] = mapped_column(Text)
    field: Mapped[str | None] = mapped_column(String(255))
    value: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    remediation: Mapped[str | None] = mapped_column(Text)


class Hold(_Timestamps, Base):
    """A drop whose destructive changes wait for an administrator (R9, R10)."""

    __tablename__ = "holds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sync_run_id: Mapped[int] = mapped_column(ForeignKey("sync_runs.id"), index=True)
    district_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    reasons: Mapped[list | None] = mapped_column(JSON)
    held_changes: Mapped[dict | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(
        String(16), default="pending"
    )  # pending|confirmed|discarded
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(String(255))


class HeldChange(Base):
    """One destructive change a hold keeps back (the downloadable list of a hold)."""

    __tablename__ = "held_changes"
    __table_args__ = (Index("ix_held_changes_hold", "hold_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hold_id: Mapped[int] = mapped_column(ForeignKey("holds.id"))
    # Which table the removal is in: sis_links, classes, organisations,
    # org_memberships, class_memberships or guardianships.
    table_name: Mapped[str] = mapped_column(String(32))
    row_id: Mapped[int] = mapped_column(Integer)
    label: Mapped[str | None] = mapped_column(String(400))


class DistrictSettings(_Timestamps, Base):
    __tablename__ = "district_settings"

    district_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    admin_name: Mapped[str | None] = mapped_column(String(255))
    admin_email: Mapped[str | None] = mapped_column(String(320))
    # Per-type removal thresholds, e.g. {"people": {"percent": 10, "count": 500}}.
    removal_thresholds: Mapped[dict | None] = mapped_column(JSON)
    rostering_enforced: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class NotificationOutbox(Base):
    """Notifications written in the same transaction as the change that causes them."""

    __tablename__ = "notification_outbox"
    __table_args__ = (Index("ix_notification_outbox_status", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    district_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    sync_run_id: Mapped[int | None] = mapped_column(ForeignKey("sync_runs.id"))
    # Null for a district admin's report email when the admin has no app account.
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    channel: Mapped[str] = mapped_column(String(8))  # email | sms
    destination: Mapped[str] = mapped_column(String(320))
    template: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict | None] = mapped_column(JSON)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    # pending | sending (claimed by a dispatcher, lease from claimed_at) | sent | failed
    # | unknown (the dispatcher stopped between the provider call and the record: it
    # may have gone out, so it is never retried automatically; see lib/notify/dispatch.py)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MergeCandidate(_Timestamps, Base):
    """Two accounts (or an account and an SIS person whose account a drop creates) that
    are probably one person (R2): recorded for review, never merged automatically.

    Written by identity resolution (`lib.identity`); one row per pair and district
    (``pair_key``); ``last_drop_id`` is the latest drop that reported the pair, so a
    drop's report lists ``WHERE district_id = ? AND last_drop_id = ?``. A side given by
    ``person_key`` is resolved to its account through ``sis_links`` once applied.
    """

    __tablename__ = "merge_candidates"
    __table_args__ = (
        UniqueConstraint("district_id", "pair_key", name="uq_merge_candidate_pair"),
        Index("ix_merge_candidates_drop", "district_id", "last_drop_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    district_id: Mapped[int] = mapped_column(ForeignKey("organisations.id"))
    account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    person_key: Mapped[str | None] = mapped_column(String(400))
    other_account_id: Mapped[int | None] = mapped_column(ForeignKey("accounts.id"))
    other_person_key: Mapped[str | None] = mapped_column(String(400))
    # contact_conflict | same_name_phone | same_name_dob
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text)
    pair_key: Mapped[str] = mapped_column(String(820))
    first_drop_id: Mapped[str | None] = mapped_column(String(255))
    last_drop_id: Mapped[str | None] = mapped_column(String(255))
    # open | merged | dismissed
    status: Mapped[str] = mapped_column(String(16), default="open", server_default="open")


class MergeAudit(Base):
    """Who merged which account into which, when, and what moved (`lib.merge`)."""

    __tablename__ = "merge_audit"
    __table_args__ = (
        Index("ix_merge_audit_keep", "keep_account_id"),
        Index("ix_merge_audit_merged", "merged_account_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    keep_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    merged_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    actor: Mapped[str] = mapped_column(String(255))
    # Rows moved per table and the ids involved, so a merge can be traced or undone.
    details: Mapped[dict | None] = mapped_column(JSON)
    merged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
