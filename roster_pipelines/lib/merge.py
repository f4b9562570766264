"""Merging two accounts of one person (SYNC_RULES R2): nothing is lost, nothing doubles.

`merge_accounts(conn, keep, other, actor=...)` moves everything OTHER has onto KEEP in
the caller's transaction (`merge_accounts_engine` opens one):

- org and class memberships: moved; where KEEP already has the same membership
  (org/class, role, source) the two become one row, active if either was;
- class ownership (``classes.owner_account_id``);
- guardianships, as parent and as student (de-duplicated per district the same way;
  a guardianship between the two accounts themselves would point at itself and goes);
- contact points (they stay unique: a value has one owner) and SIS links;
- KEEP's empty name / dob / grade fields are filled from OTHER.

OTHER becomes a tombstone (``accounts.merged_into_id = KEEP``); tombstones that
pointed at OTHER now point at KEEP, so a pointer is always one hop. Identity
resolution follows the pointer, so a later sync of OTHER's SIS identity lands on KEEP.
One ``merge_audit`` row records who merged what and what moved; open merge candidates
between the two are marked ``merged``.

Refused (MergeError, nothing changes): unknown accounts, an account merged into
itself, a tombstone as KEEP, OTHER already merged into a third account, and a merge
that would give one account two different *active* SIS identities of the same role in
the same district (two students of one district are two people by the SIS's word).
Merging OTHER into KEEP again is a no-op (``already_merged``; no second audit row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, exists, insert, or_, select, update
from sqlalchemy.orm import aliased

from roster_pipelines.lib.store.models import (
    Account,
    Class,
    ClassMembership,
    ContactPoint,
    Guardianship,
    MergeAudit,
    MergeCandidate,
    Organisation,
    OrgMembership,
    SisLink,
)
from roster_pipelines.lib.store.state import find_district, utcnow


class MergeError(ValueError):
    """A merge that must not happen; the message says why."""


@dataclass
class MergeResult:
    keep_account_id: int
    merged_account_id: int
    actor: str
    already_merged: bool = False
    moved: dict[str, int] = field(default_factory=dict)
    audit_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "keep": self.keep_account_id,
            "merged": self.merged_account_id,
            "actor": self.actor,
            "already_merged": self.already_merged,
            "moved": self.moved,
            "audit_id": self.audit_id,
        }


def merge_accounts_engine(engine: Engine, keep: int, other: int, *, actor: str) -> MergeResult:
    with engine.begin() as conn:
        return merge_accounts(conn, keep, other, actor=actor)


def _account(conn: Connection, account_id: int) -> Any:
    row = conn.execute(
        select(
            Account.id,
            Account.first_name,
            Account.last_name,
            Account.dob,
            Account.grade,
            Account.merged_into_id,
        ).where(Account.id == account_id)
    ).first()
    if row is None:
        raise MergeError(f"account {account_id} does not exist")
    return row


def _identity_clashes(conn: Connection, keep: int, other: int) -> list[str]:
    """(district, role) pairs where KEEP and OTHER hold different active SIS identities."""
    k, o = aliased(SisLink), aliased(SisLink)
    district = aliased(Organisation)
    rows = conn.execute(
        select(district.sis_id, k.role, k.person_key, o.person_key)
        .join(o, and_(o.district_id == k.district_id, o.role == k.role))
        .join(district, district.id == k.district_id)
        .where(
            k.account_id == keep,
            o.account_id == other,
            k.active,
            o.active,
            k.person_key != o.person_key,
        )
        .order_by(district.sis_id, k.role, k.person_key)
    ).all()
    return [
        f"district {d}: account {keep} is {kp} and account {other} is {op} "
        f"(two different SIS {role}s)"
        for d, role, kp, op in rows
    ]


def _move_links(conn: Connection, model: Any, key: list[str], keep: int, other: int, now) -> int:
    """Move OTHER's rows of a membership table onto KEEP, merging rows that would
    duplicate one of KEEP's (same `key` columns): KEEP's row stays, active if either
    was, and OTHER's duplicate is deleted. Returns the rows moved or merged."""
    mine = aliased(model)
    same = and_(*(getattr(mine, c) == getattr(model, c) for c in key))
    # KEEP's row becomes active when OTHER's duplicate is active.
    theirs = aliased(model)
    conn.execute(
        update(model)
        .where(
            model.account_id == keep,
            model.active.is_(False),
            exists().where(
                theirs.account_id == other,
                theirs.active,
                *(getattr(theirs, c) == getattr(model, c) for c in key),
            ),
        )
        .values(active=True, removed_at=None, updated_at=now)
    )
    n = conn.execute(select(model.id).where(model.account_id == other)).all()
    conn.execute(
        delete(model).where(
            model.account_id == other,
            exists().where(mine.account_id == keep, same),
        )
    )
    conn.execute(
        update(model).where(model.account_id == other).values(account_id=keep, updated_at=now)
    )
    return len(n)


def _move_guardianships(conn: Connection, keep: int, other: int, now) -> int:
    moved = conn.execute(
        select(Guardianship.id).where(
            or_(Guardianship.parent_account_id == other, Guardianship.student_account_id == other)
        )
    ).all()
    # A guardianship between the two accounts would point at itself.
    conn.execute(
        delete(Guardianship).where(
            or_(
                and_(
                    Guardianship.parent_account_id == keep, Guardianship.student_account_id == other
                ),
                and_(
                    Guardianship.parent_account_id == other, Guardianship.student_account_id == keep
                ),
            )
        )
    )
    for mine_col, other_col in (
        ("parent_account_id", "student_account_id"),
        ("student_account_id", "parent_account_id"),
    ):
        g = aliased(Guardianship)
        col = getattr(Guardianship, mine_col)
        same = and_(
            g.district_id == Guardianship.district_id,
            getattr(g, mine_col) == keep,
            getattr(g, other_col) == getattr(Guardianship, other_col),
        )
        conn.execute(
            update(Guardianship)
            .where(
                getattr(Guardianship, mine_col) == keep,
                Guardianship.active.is_(False),
                exists().where(
                    g.district_id == Guardianship.district_id,
                    getattr(g, mine_col) == other,
                    getattr(g, other_col) == getattr(Guardianship, other_col),
                    g.active,
                ),
            )
            .values(active=True, removed_at=None, updated_at=now)
        )
        conn.execute(delete(Guardianship).where(col == other, exists().where(same)))
        conn.execute(
            update(Guardianship).where(col == other).values({mine_col: keep, "updated_at": now})
        )
    return len(moved)


def merge_accounts(conn: Connection, keep: int, other: int, *, actor: str) -> MergeResult:
    """Merge account `other` into `keep` (see the module doc). Raises MergeError."""
    if not actor or not actor.strip():
        raise MergeError("say who merges (--by): the audit records it")
    if keep == other:
        raise MergeError(f"cannot merge account {keep} into itself")
    keep_row, other_row = _account(conn, keep), _account(conn, other)
    if other_row.merged_into_id is not None:
        if other_row.merged_into_id == keep:
            return MergeResult(keep, other, actor, already_merged=True)
        raise MergeError(
            f"account {other} was already merged into account {other_row.merged_into_id}"
        )
    if keep_row.merged_into_id is not None:
        raise MergeError(
            f"account {keep} was merged into account {keep_row.merged_into_id}; "
            f"merge into {keep_row.merged_into_id} instead"
        )
    clashes = _identity_clashes(conn, keep, other)
    if clashes:
        raise MergeError(
            "refused: the merged account would hold two different SIS identities of the same "
            "role in the same district: " + "; ".join(clashes)
        )

    now = utcnow()
    moved: dict[str, int] = {}
    ids: dict[str, list[int]] = {}
    for name, model, column in (
        ("contact_points", ContactPoint, ContactPoint.account_id),
        ("sis_links", SisLink, SisLink.account_id),
        ("classes_owned", Class, Class.owner_account_id),
    ):
        ids[name] = [r[0] for r in conn.execute(select(model.id).where(column == other)).all()]
        conn.execute(
            update(model).where(column == other).values({column.key: keep, "updated_at": now})
        )
        moved[name] = len(ids[name])
    moved["org_memberships"] = _move_links(
        conn, OrgMembership, ["org_id", "role", "source"], keep, other, now
    )
    moved["class_memberships"] = _move_links(
        conn, ClassMembership, ["class_id", "role", "source"], keep, other, now
    )
    moved["guardianships"] = _move_guardianships(conn, keep, other, now)

    fill = {
        c: getattr(other_row, c)
        for c in ("first_name", "last_name", "dob", "grade")
        if getattr(keep_row, c) is None and getattr(other_row, c) is not None
    }
    if fill:
        conn.execute(update(Account).where(Account.id == keep).values(fill))
    conn.execute(update(Account).where(Account.merged_into_id == other).values(merged_into_id=keep))
    conn.execute(
        update(Account).where(Account.id == other).values(merged_into_id=keep, updated_at=now)
    )
    conn.execute(
        update(MergeCandidate)
        .where(
            MergeCandidate.status == "open",
            or_(
                and_(MergeCandidate.account_id == keep, MergeCandidate.other_account_id == other),
                and_(MergeCandidate.account_id == other, MergeCandidate.other_account_id == keep),
            ),
        )
        .values(status="merged", updated_at=now)
    )
    audit_id = conn.execute(
        insert(MergeAudit)
        .values(
            keep_account_id=keep,
            merged_account_id=other,
            actor=actor.strip(),
            details={
                "moved": moved,
                "ids": ids,
                "filled": sorted(fill),
                "other_name": [other_row.first_name, other_row.last_name],
            },
            merged_at=now,
        )
        .returning(MergeAudit.id)
    ).scalar_one()
    return MergeResult(keep, other, actor.strip(), moved=moved, audit_id=int(audit_id))


def list_candidates(engine: Engine, district: str, *, status: str = "open") -> list[dict[str, Any]]:
    """A district's merge candidates with each side resolved to its current account
    (a person side through its SIS link, tombstones followed) and the account names."""
    with engine.connect() as conn:
        district_id = find_district(conn, district)
        if district_id is None:
            raise MergeError(f"district {district!r} is not known")
        rows = conn.execute(
            select(
                MergeCandidate.id,
                MergeCandidate.account_id,
                MergeCandidate.person_key,
                MergeCandidate.other_account_id,
                MergeCandidate.other_person_key,
                MergeCandidate.reason,
                MergeCandidate.detail,
                MergeCandidate.first_drop_id,
                MergeCandidate.last_drop_id,
                MergeCandidate.status,
            )
            .where(MergeCandidate.district_id == district_id, MergeCandidate.status == status)
            .order_by(MergeCandidate.id)
        ).all()
        keys = {k for r in rows for k in (r.person_key, r.other_person_key) if k}
        linked = (
            dict(
                conn.execute(
                    select(SisLink.person_key, SisLink.account_id).where(
                        SisLink.district_id == district_id, SisLink.person_key.in_(keys)
                    )
                ).all()
            )
            if keys
            else {}
        )

        def resolve(account_id: int | None, person_key: str | None) -> int | None:
            return account_id if account_id is not None else linked.get(person_key)

        sides = {resolve(r.account_id, r.person_key) for r in rows} | {
            resolve(r.other_account_id, r.other_person_key) for r in rows
        }
        sides.discard(None)
        accounts = (
            {
                a.id: a
                for a in conn.execute(
                    select(
                        Account.id, Account.first_name, Account.last_name, Account.merged_into_id
                    ).where(Account.id.in_(sides))
                ).all()
            }
            if sides
            else {}
        )
    out, seen = [], set()
    for r in rows:
        a = resolve(r.account_id, r.person_key)
        b = resolve(r.other_account_id, r.other_person_key)
        a = (accounts[a].merged_into_id or a) if a in accounts else a
        b = (accounts[b].merged_into_id or b) if b in accounts else b
        if a is not None and a == b:
            continue  # merged meanwhile
        pair = (r.id,) if a is None or b is None else tuple(sorted((a, b)))
        if pair in seen:
            continue
        seen.add(pair)

        def name(i: int | None) -> str | None:
            acc = accounts.get(i) if i is not None else None
            return " ".join(x for x in (acc.first_name, acc.last_name) if x) if acc else None

        out.append(
            {
                "id": r.id,
                "account_id": a,
                "account_name": name(a),
                "person_key": r.person_key,
                "other_account_id": b,
                "other_account_name": name(b),
                "other_person_key": r.other_person_key,
                "reason": r.reason,
                "detail": r.detail,
                "first_drop": r.first_drop_id,
                "last_drop": r.last_drop_id,
                "status": r.status,
            }
        )
    return out
