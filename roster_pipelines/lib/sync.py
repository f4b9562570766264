"""The stages after validation, as the assets call them: identity, plan, apply.

Each function takes an engine and plain values and returns plain values, so the same
code runs under Dagster, in the CLI and in tests.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Connection, Engine, select, text

from roster_pipelines.lib.background import Deferred, in_background
from roster_pipelines.lib.canonical import Roster
from roster_pipelines.lib.drops import DropManifest
from roster_pipelines.lib.identity import (
    CANDIDATES_SCHEMA,
    FoundCandidates,
    KeptLinks,
    LinksFolder,
    contact_owners,
    decision_counts,
    kept_links_after_apply,
    record_candidates,
    resolve_identities,
    similar_keys_after_apply,
)
from roster_pipelines.lib.incremental import (
    PLAN_VERSION,
    ChangedPeople,
    RosterFingerprint,
    Scope,
    changed_people,
    fingerprint,
    roster_digest,
    scope_for,
)
from roster_pipelines.lib.issues import ISSUES_SCHEMA, concat_issues, issue_row, issues_frame
from roster_pipelines.lib.notify.outbox import enqueue_sync_notifications
from roster_pipelines.lib.plan import (
    CHANGE_KEYS,
    PERSON_IDS_PREFIX,
    REFUSED_CONTACT_CODES,
    SyncPlan,
    build_plan,
    changes_frame,
    plan_differences,
    removals_frame,
)
from roster_pipelines.lib.similar_people import (
    MAX_RESCAN_SHARE,
    KeysFolder,
    SimilarKeys,
    StoredKeys,
    key_differences,
)
from roster_pipelines.lib.store.engine import refresh_statistics
from roster_pipelines.lib.store.locks import lock_district
from roster_pipelines.lib.store.marks import (
    ChangesSeen,
    CleanBase,
    accounts_written,
    changes_seen,
    clean_base_run,
    consume_account_changes,
    log_shared_account_changes,
    mark_sync_transaction,
)
from roster_pipelines.lib.store.models import DistrictSettings
from roster_pipelines.lib.store.state import (
    RunRef,
    WholeReads,
    get_or_create_district,
    latest_run,
    load_current_state,
    start_whole_reads,
    utcnow,
)
from roster_pipelines.lib.store.writer import (
    apply_plan,
    record_hold,
    record_sync_run,
    supersede_pending_holds,
)

APPLIED = "applied"
HELD = "held"
REJECTED = "rejected"
DRY_RUN = "dry_run"


@dataclass
class IdentityResult:
    district_id: int
    identities: pl.DataFrame
    decisions: dict[str, int]
    # Merge candidates the drop revealed (lib.identity.CANDIDATES_SCHEMA); also stored
    # in the merge_candidates table with last_drop_id = the drop (identity.drop_candidates).
    candidates: pl.DataFrame = field(default_factory=pl.DataFrame)
    # The accounts owning the drop's contact points, and the contact points of the
    # district's linked accounts, as identity read them (the plan reuses both; None:
    # read them again).
    contact_owners: pl.DataFrame | None = None
    district_contacts: pl.DataFrame | None = None
    # The district's latest applied run when identity read the database (0: none yet;
    # None: not recorded). The plan must be made against the same run.
    base_run_id: int | None = None
    # The merge candidates, still to be worked out and recorded in a thread of their
    # own (`decisions` has no "candidates" count yet): `start_candidates()` starts them,
    # `settled()` waits for them (starting them if need be).
    pending: Deferred[FoundCandidates] | None = None
    # What the similar-people scan leaves for the next drop's (`keep_similar_keys`), and
    # how many accounts it worked out again from the last drop's (None: in full).
    similar_keys: SimilarKeys | None = None
    rescanned: int | None = None
    # When identity was given the previous drop's fingerprint (`resolve_drop`'s
    # `previous`), it worked out the incremental plan's scope (None: plan in full) and
    # read the writes outside the sync that scope accounts for (`seen`); the plan uses
    # both. Otherwise (`scope_decided` False) the plan works them out itself.
    scope: Scope | None = None
    scope_decided: bool = False
    seen: ChangesSeen | None = None
    # The district's SIS links as identity read them (`identity.KeptLinks`), for the
    # next drop (`keep_links`); whether they came from the last applied drop's.
    links: pl.DataFrame | None = None
    links_kept: bool = False

    def start_candidates(self) -> None:
        """Start working out the merge candidates, if they are still to be."""
        if self.pending is not None:
            self.pending.start()

    def candidates_started(self) -> bool:
        """Whether the merge candidates are worked out or being worked out."""
        return self.pending is None or self.pending.started()

    def settled(self) -> IdentityResult:
        """This result with its merge candidates (waiting for them if need be)."""
        if self.pending is None:
            return self
        return self.with_candidates(self.pending.result())

    def without_candidates(self) -> IdentityResult:
        """This result as if no merge candidates were looked for (their count left out
        of `decisions`): what is stored of a result whose candidates are still to be
        worked out, which the drop's run records in the merge_candidates table itself."""
        decisions = {k: v for k, v in self.decisions.items() if k != "candidates"}
        return replace(
            self,
            candidates=pl.DataFrame(schema=CANDIDATES_SCHEMA),
            decisions=decisions,
            pending=None,
        )

    def with_candidates(self, found: FoundCandidates) -> IdentityResult:
        return replace(
            self,
            candidates=found.pairs,
            # The identities' counts are already there: only the candidates' is added
            # (a group-by over every person saved each time a result is settled).
            decisions={**self.decisions, "candidates": found.pairs.height},
            pending=None,
            similar_keys=found.keys,
            rescanned=found.rescanned,
        )


@dataclass
class SyncOutcome:
    """What happened to one drop; the CLI's JSON and the report are built from it."""

    district: str
    drop: str
    status: str
    counts: dict[str, int]
    changes: dict[str, int]
    issues: pl.DataFrame
    planned: dict[str, int] | None = None
    hold_reasons: list[str] = field(default_factory=list)
    sync_run_id: int | None = None
    is_initial: bool = False
    decisions: dict[str, int] = field(default_factory=dict)
    # How many accounts the similar-people scan worked out again from the last applied
    # drop's keys (None: it scanned the district in full, or this run did not scan).
    rescanned: int | None = None

    def issue_counts(self) -> dict[str, int]:
        by = self.issues.group_by("severity").len()
        return dict(zip(by["severity"].to_list(), by["len"].to_list(), strict=True))

    def to_json(self) -> dict[str, Any]:
        return self._json(self.issues.to_dicts())

    def to_json_text(self, **extra: Any) -> str:
        """`to_json()` and `extra` as JSON text. The issues are written by polars: a
        hundred thousand of them took json.dumps half a second, polars a seventh."""
        text = json.dumps({**self._json(_ISSUES_SLOT), **extra}, default=str)
        issues = self.issues.write_json() if self.issues.height else "[]"
        return text.replace(json.dumps(_ISSUES_SLOT), issues, 1)

    def _json(self, issues: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "district": self.district,
            "drop": self.drop,
            "status": self.status,
            "counts": self.counts,
            "changes": self.changes,
            "issues": issues,
        }
        if self.planned is not None:
            data["planned"] = self.planned
        if self.hold_reasons:
            data["hold_reasons"] = self.hold_reasons
        return data


# Where `to_json_text` puts the issues (no other value of the outcome holds NULs).
_ISSUES_SLOT = "\x00issues\x00"


def zero_changes() -> dict[str, int]:
    return dict.fromkeys(CHANGE_KEYS, 0)


def resolve_drop(
    engine: Engine,
    district: str,
    roster: Roster,
    *,
    drop: str | None = None,
    candidates_in_background: bool = False,
    previous: Callable[[str], RosterFingerprint | None] | None = None,
    similar_keys: KeysFolder | None = None,
    links: LinksFolder | None = None,
) -> IdentityResult:
    """Register the district on its first drop, then resolve every person's account and
    record the merge candidates the drop reveals (tied to the drop by `drop`).

    `candidates_in_background` (Postgres): the merge candidates are worked out and
    recorded later, in a thread of their own and their own transaction, once the
    caller calls `IdentityResult.start_candidates()` (the apply does: its transaction
    leaves a core idle) or `settled()`, which waits for them.

    `previous` gives the fingerprint of an earlier drop's validated roster (as
    `plan_drop`'s does): with it, the incremental plan's scope is worked out here, and
    a maintenance drop's identity reads and matches no more of the district than that
    scope needs (`identity.resolve_identities`' `scope_of`). With `similar_keys`, where
    that drop's apply left its similar-people keys (`keep_similar_keys`), the scan works
    out again only what may have changed since (`similar_people.scan_scoped`). With
    `links`, where it left the district's SIS links (`keep_links`), only the links of
    the accounts written outside the sync since are read from the database."""
    later = candidates_in_background and engine.dialect.name == "postgresql"
    decided: list[Scope | None] = []
    with engine.begin() as conn:
        district_id = get_or_create_district(conn, district)
        seen = None if previous is None else changes_seen(conn, district_id)
        base = (
            None
            if previous is None or seen is None
            else _incremental_base(conn, district_id, previous, seen)
        )
        scope_of = None
        similar_base = None
        kept_links = None
        if base is not None and seen is not None:
            clean, old, refused = base
            # The roster delta (polars) is worked out while identity reads the district
            # (Postgres): about a second each at a million people. The last drop's
            # similar-people keys are read from disk meanwhile too.
            delta = in_background(_changed_since, roster, old, refused)
            if similar_keys is not None and similar_keys.holds(clean.drop_id):
                similar_base = in_background(_stored_keys, similar_keys, clean).result
            if links is not None and links.holds(clean.drop_id):
                kept_links = in_background(links.load, clean.drop_id, clean.run_id).result
            base_seen = seen

            def scope_of(
                identities: pl.DataFrame,
            ) -> tuple[pl.Series, pl.Series, pl.Series] | None:
                found = delta.result()
                scope = (
                    None
                    if found is None
                    else _scope_after_identity(conn, district_id, identities, found, base_seen)
                )
                decided.append(scope)
                if scope is None:
                    return None
                rescan = scope.accounts if scope.rescan is None else scope.rescan
                # Contact points are diffed for the people with changes of their own.
                return scope.people_with_own_changes(), scope.accounts_with_own_changes(), rescan

        resolution = resolve_identities(
            conn,
            district_id,
            roster,
            candidates_later=later,
            scope_of=scope_of,
            similar_base=similar_base,
            kept_links=kept_links,
            rewritten=seen.accounts if seen is not None else None,
        )
        if resolution.candidates is not None:
            record_candidates(conn, district_id, drop, resolution.candidates.pairs)
    result = IdentityResult(
        district_id,
        resolution.identities,
        decision_counts(resolution.identities),
        contact_owners=resolution.contact_owners,
        district_contacts=resolution.district_contacts,
        base_run_id=resolution.base_run_id,
        scope=decided[0] if decided else None,
        scope_decided=previous is not None,
        seen=seen,
        links=resolution.links,
        links_kept=resolution.links_kept,
    )
    if resolution.candidates is not None:
        result = result.with_candidates(resolution.candidates)
    if resolution.later_candidates is not None:
        del result.decisions["candidates"]  # counted once they are worked out
        result.pending = Deferred(
            _record_candidates_later, engine, district_id, drop, resolution.later_candidates
        )
    return result


def _record_candidates_later(
    engine: Engine, district_id: int, drop: str | None, work: Callable[[], FoundCandidates]
) -> FoundCandidates:
    found = work()
    with engine.begin() as conn:
        record_candidates(conn, district_id, drop, found.pairs)
    return found


def _stored_keys(folder: KeysFolder, base: CleanBase) -> StoredKeys | None:
    """The similar-people keys the base run's apply left, if it left them."""
    return folder.load(base.drop_id, base.run_id)


def keep_for_next_drop(
    engine: Engine,
    keys_folder: KeysFolder,
    links_folder: LinksFolder,
    identity: IdentityResult,
    plan: SyncPlan,
    outcome: SyncOutcome,
    roster: Roster,
) -> tuple[bool, bool]:
    """`keep_similar_keys` and `keep_links` at once: each mostly waits on the database
    or the disk (0.4 and 0.65 s at a million people). Returns whether each kept."""
    keys = in_background(keep_similar_keys, engine, keys_folder, identity, plan, outcome, roster)
    try:
        links = keep_links(engine, links_folder, identity, plan, outcome)
    finally:
        kept_keys = keys.result()
    return kept_keys, links


def keep_links(
    engine: Engine,
    folder: LinksFolder,
    identity: IdentityResult,
    plan: SyncPlan,
    outcome: SyncOutcome,
) -> bool:
    """After a drop applied: keep the district's SIS links as its apply left them, for
    the next drop's identity (`identity.KeptLinks`). They are the links identity read,
    with the links of the people the plan linked, unlinked or linked again read again
    after the commit (all of them when those are more than `MAX_RESCAN_SHARE`: a
    district's first drop). Returns whether they were kept.

    A link written outside the sync after identity's reads is in the change marks its
    plan did not see (`ChangesSeen`, read before identity's reads; the apply clears only
    those), so the next drop reads its accounts' links again."""
    links = identity.links
    if (
        outcome.status != APPLIED
        or outcome.sync_run_id is None
        or links is None
        or identity.seen is None
        or engine.dialect.name != "postgresql"
    ):
        return False
    added = plan.links.adds["person_key"]
    relinked = pl.concat([plan.links.removals["id"], plan.links.reactivations["id"]])
    with engine.connect() as conn:
        if added.len() + relinked.len() > MAX_RESCAN_SHARE * max(links.height, 1):
            kept = kept_links_after_apply(conn, identity.district_id)
        else:
            kept = kept_links_after_apply(conn, identity.district_id, links, added, relinked)
    folder.save(outcome.drop, KeptLinks(kept, outcome.sync_run_id))
    return True


def keep_similar_keys(
    engine: Engine,
    folder: KeysFolder,
    identity: IdentityResult,
    plan: SyncPlan,
    outcome: SyncOutcome,
    roster: Roster,
) -> bool:
    """After a drop applied: keep its similar-people keys for the next drop's scan, with
    the accounts whose names, dates of birth or phones its apply wrote or which it
    linked (`_written_by`; the accounts it made are new to the next scan anyway), and
    let the older drops' go. Returns whether the keys were kept.

    When those accounts and the ones it made are too many for the next scan to start
    from these keys (`MAX_RESCAN_SHARE`: a district's first drop made them all), the
    district is scanned again as the apply left it and those keys are kept instead
    (`similar_keys_after_apply`; 3.9 s at a million people, where the next drop's
    full scan would cost it more)."""
    identity = identity.settled()
    keys = identity.similar_keys
    if outcome.status != APPLIED or outcome.sync_run_id is None or keys is None:
        return False
    if engine.dialect.name != "postgresql":  # no change marks: every scan is a full one
        return False
    kept, written = keys.without(), _written_by(engine, plan)
    if written.len() + plan.accounts.adds.height > MAX_RESCAN_SHARE * max(kept.accounts.height, 1):
        kept = similar_keys_after_apply(engine, identity.district_id, roster).without()
        written = written.clear()
    folder.save(outcome.drop, StoredKeys(kept, written, outcome.sync_run_id))
    return True


def _written_by(engine: Engine, plan: SyncPlan) -> pl.Series:
    """The existing accounts whose similar-people keys the plan's apply changed: their
    names, dates of birth or phones (`marks.accounts_written`), or their district (a
    new SIS link, or a school membership removed). An SIS person stays in the district
    through their link, active or not; but an account whose link was moved to another
    outside the sync is in it only through its memberships, and leaves it when the
    apply removes the last."""
    removed = plan.org_memberships.removals["id"].cast(pl.Int64).unique().sort().to_list()
    left: list[int] = []
    with engine.connect() as conn:
        written = accounts_written(conn, plan)
        if removed:
            left = list(
                conn.execute(
                    text(
                        "SELECT DISTINCT account_id FROM org_memberships "
                        "WHERE id = ANY(CAST(:ids AS integer[]))"
                    ),
                    {"ids": removed},
                ).scalars()
            )
    unlisted = pl.Series(left, dtype=pl.Int64)
    linked = plan.links.adds["account_id"].cast(pl.Int64)
    return (
        pl.concat([written, linked.filter(linked > 0), unlisted])
        .unique()
        .sort()
        .rename("account_id")
    )


# "off" plans every drop in full (the incremental plan's switch for operators).
INCREMENTAL_ENV = "ROSTER_INCREMENTAL_PLAN"
# Set (the test suite does) to plan every incremental drop in full as well and fail
# on any difference between the two plans.
VERIFY_INCREMENTAL_ENV = "ROSTER_VERIFY_INCREMENTAL"
# Past this share of the drop's people an incremental plan saves little: plan in full.
MAX_SCOPE_SHARE = 0.25


class IncrementalMismatch(AssertionError):
    """An incremental plan differed from the full plan (verification mode only)."""


def plan_drop(
    engine: Engine,
    identity: IdentityResult,
    roster: Roster,
    *,
    now: datetime | None = None,
    previous: Callable[[str], RosterFingerprint | None] | None = None,
) -> SyncPlan:
    """The drop's plan. `previous` gives the fingerprint of an earlier drop's validated
    roster (by drop id) when it is still stored: with it, a maintenance drop on
    Postgres is planned incrementally when that is exact (lib/incremental.py)."""
    now = now or utcnow()
    with engine.connect() as conn:
        # Read before the state: writes committed later are for the next drop. (With
        # the scope worked out by identity, the ones identity read, before it.)
        seen = identity.seen if identity.scope_decided else None
        if seen is None:
            seen = changes_seen(conn, identity.district_id)
        # The tables read whole either way are read while the scope is worked out; a
        # scope known already has its contact points read with its other rows.
        whole = start_whole_reads(
            conn,
            identity.district_id,
            known=_read_by_identity(identity),
            scoped=identity.scope is not None,
        )
        _check_identity_is_current(conn, identity, whole)
        if identity.scope_decided:
            scope = identity.scope
        else:
            scope = _incremental_scope(conn, identity, roster, previous, seen)
        plan = _plan(conn, identity, roster, now, scope, whole)
        if scope is not None and os.environ.get(VERIFY_INCREMENTAL_ENV):
            _verify_incremental(conn, identity, roster, now, plan, scope)
    plan.change_mark = seen.mark
    plan.account_changes_seen = seen.account_changes["id"]
    return plan


def _plan(
    conn: Connection,
    identity: IdentityResult,
    roster: Roster,
    now: datetime,
    scope: Scope | None,
    whole: WholeReads | None = None,
) -> SyncPlan:
    current = load_current_state(
        conn,
        identity.district_id,
        extra_account_ids=identity.identities["account_id"].drop_nulls(),
        bulk=True,
        accounts_in_scope=scope.accounts if scope is not None else None,
        own_accounts_in_scope=scope.accounts_with_own_changes() if scope is not None else None,
        whole=whole,
        known=_read_by_identity(identity),
    )
    owners = identity.contact_owners
    if owners is None:
        owners = contact_owners(conn, roster.contacts.select("kind", "value"))
    thresholds = conn.execute(
        select(DistrictSettings.removal_thresholds).where(
            DistrictSettings.district_id == identity.district_id
        )
    ).scalar()
    return build_plan(
        roster, identity.identities, current, owners, thresholds=thresholds, now=now, scope=scope
    )


def _check_identity_is_current(
    conn: Connection, identity: IdentityResult, whole: WholeReads | None
) -> None:
    """The plan reads the database after identity did: a drop of the district applied in
    between (it may have linked or made the accounts identity matched) makes identity's
    result stale, and a plan made from it could create an account twice."""
    matched = identity.base_run_id
    if matched is None:  # a result stored before identity recorded it
        return
    latest = whole.last if whole is not None else latest_run(conn, identity.district_id)
    if (latest.id if latest else 0) != matched:
        raise StalePlan(
            f"drop {latest.drop_id if latest else '?'} of the district was applied after this "
            "drop's people were matched to accounts; run this drop again"
        )


def _read_by_identity(identity: IdentityResult) -> dict[str, pl.DataFrame | None]:
    return {"contacts": identity.district_contacts}


def _verify_incremental(
    conn: Connection,
    identity: IdentityResult,
    roster: Roster,
    now: datetime,
    plan: SyncPlan,
    scope: Scope,
) -> None:
    """Verification mode: the incremental plan must equal the full plan, and a scope
    identity worked out must be the one every person's full identity gives, with the
    same identities."""
    full = identity
    differences: list[str] = []
    if identity.scope_decided:
        resolution = resolve_identities(conn, identity.district_id, roster, candidates_later=True)
        full = replace(
            identity,
            identities=resolution.identities,
            contact_owners=resolution.contact_owners,
            district_contacts=resolution.district_contacts,
            scope=None,
            scope_decided=False,
        )
        differences += identity_differences(identity.identities, full.identities, scope)
        if resolution.later_candidates is not None:
            settled, found = identity.settled(), resolution.later_candidates()
            differences += candidate_differences(settled.candidates, found.pairs)
            if settled.similar_keys is not None:
                differences += key_differences(settled.similar_keys, found.keys)
    differences += plan_differences(plan, _plan(conn, full, roster, now, None))
    if differences:
        raise IncrementalMismatch(
            "the incremental plan differs from the full plan: " + "; ".join(differences)
        )


def identity_differences(scoped: pl.DataFrame, full: pl.DataFrame, scope: Scope) -> list[str]:
    """How identities worked out for an incremental drop differ from every person's
    full identity (`other_districts` is flagged only for the accounts of the scope's
    people with changes of their own, whose contact points the plan diffs)."""
    flagged = pl.col("person_key").is_in(scope.people_with_own_changes().implode())
    keep = [c for c in full.columns if c != "other_districts"]
    problems = []
    for name, frame in (("scoped", scoped), ("full", full)):
        if frame["person_key"].is_duplicated().any():
            problems.append(f"{name} identities repeat a person")
    for name, a, b in (
        ("identities", scoped.select(keep), full.select(keep)),
        ("other_districts", scoped.filter(flagged), full.filter(flagged)),
    ):
        extra = a.join(b, on=a.columns, how="anti", nulls_equal=True).height
        missing = b.join(a, on=b.columns, how="anti", nulls_equal=True).height
        if extra or missing:
            problems.append(f"{name}: {extra} rows only in the scoped, {missing} only in the full")
    return problems


def candidate_differences(scoped: pl.DataFrame, full: pl.DataFrame) -> list[str]:
    """Merge candidates found with a scoped identity against a full one's. They are the
    same: a linked person's contact point owned by another account was refused by the
    last plan (CONTACT_IN_USE), so that person is in the scope, and the similar-people
    scan runs on the whole district either way."""
    if scoped.height == full.height and scoped.sort("pair_key").equals(full.sort("pair_key")):
        return []
    extra = scoped.join(full, on="pair_key", how="anti")["pair_key"].to_list()
    missing = full.join(scoped, on="pair_key", how="anti")["pair_key"].to_list()
    return [
        f"merge candidates: only scoped {extra[:5]}, only full {missing[:5]}, or details differ"
    ]


def _incremental_scope(
    conn: Connection,
    identity: IdentityResult,
    roster: Roster,
    previous: Callable[[str], RosterFingerprint | None] | None,
    seen: ChangesSeen,
) -> Scope | None:
    """The part of the district this drop can change (`_incremental_base`,
    `_changed_since`, `_scope_after_identity`), worked out from every person's
    identity; None: plan in full."""
    if previous is None:
        return None
    base = _incremental_base(conn, identity.district_id, previous, seen)
    found = None if base is None else _changed_since(roster, *base[1:])
    if found is None:
        return None
    return _scope_after_identity(conn, identity.district_id, identity.identities, found, seen)


def _incremental_base(
    conn: Connection,
    district_id: int,
    previous: Callable[[str], RosterFingerprint | None],
    seen: ChangesSeen,
) -> tuple[CleanBase, Callable[[], RosterFingerprint | None], pl.Series] | None:
    """The last applied drop's run, a function giving the fingerprint of its roster
    (None: not stored, or not that run's roster: plan in full) and the people whose
    contact points its plan refused, when that drop applied in full and nothing but
    the sync wrote the district's schools and settings since (`seen`); None: plan in
    full."""
    if os.environ.get(INCREMENTAL_ENV, "on").lower() == "off":
        return None
    base = clean_base_run(conn, district_id, seen)
    if base is None or base.plan_version != PLAN_VERSION or base.roster_digest is None:
        return None
    # Read from disk while the caller goes on (0.4 s at a million people).
    old = in_background(_base_roster, previous, base)
    # Whether their contact points can be applied now depends on accounts outside the
    # district (an owner may have let a value go): planned again on every drop.
    return base, old.result, _people_with_refused_contacts(conn, base.run_id)


def _base_roster(
    previous: Callable[[str], RosterFingerprint | None], base: CleanBase
) -> RosterFingerprint | None:
    """The stored fingerprint of the base run's roster, if it is that roster's."""
    old = previous(base.drop_id)
    return old if old is not None and old.digest() == base.roster_digest else None


def _changed_since(
    roster: Roster, old: Callable[[], RosterFingerprint | None], refused: pl.Series
) -> ChangedPeople | None:
    """Who changed since the base drop (`_incremental_base`), the people whose contact
    points it refused among them (as changed in their own rows); None when the base
    drop's roster is not stored or the schools changed. (`_scope_after_identity`
    decides whether the change is too big.)"""
    base_roster = old()
    if base_roster is None:
        return None
    found = changed_people(fingerprint(roster), base_roster)
    if found is None:
        return None
    return dataclasses.replace(
        found,
        keys=pl.concat([found.keys, refused]).unique().sort(),
        own=pl.concat([found.own, refused]).unique().sort(),
    )


def _scope_after_identity(
    conn: Connection,
    district_id: int,
    identities: pl.DataFrame,
    found: ChangedPeople,
    seen: ChangesSeen,
) -> Scope | None:
    """The changed people closed over their accounts (`scope_for`), with the accounts of
    the people who left and those written outside the sync since the last apply
    (`seen`); None when that is too much of the district to save anything."""
    changed = found.keys
    limit = MAX_SCOPE_SHARE * max(identities.height, 1)
    if changed.len() > limit:  # before reading anything more
        return None
    # An anti-join, not `is_in` over the million people: 0.06 s against 0.27 s.
    gone = changed.to_frame("person_key").join(
        identities.select("person_key"), on="person_key", how="anti", maintain_order="left"
    )["person_key"]
    accounts_of_gone = _accounts_linked_to(conn, district_id, gone)
    scope = scope_for(
        changed,
        found.counts,
        identities,
        pl.concat([pl.Series(accounts_of_gone, dtype=pl.Int64), seen.accounts]),
        described=found.described,
        own=found.own,
    )
    if scope.people.len() > limit:
        return None
    return scope


def _people_with_refused_contacts(conn: Connection, run_id: int) -> pl.Series:
    """The people whose contact points the run's plan refused (`REFUSED_CONTACT_CODES`
    alerts, which name their person as `PERSON_IDS_PREFIX<key>`)."""
    keys = conn.execute(
        text(
            "SELECT DISTINCT substr(ids, :start) FROM sync_issues WHERE sync_run_id = :r "
            "AND code = ANY(CAST(:codes AS text[])) AND starts_with(ids, :prefix)"
        ),
        {
            "r": run_id,
            "codes": list(REFUSED_CONTACT_CODES),
            "prefix": PERSON_IDS_PREFIX,
            "start": len(PERSON_IDS_PREFIX) + 1,
        },
    ).scalars()
    return pl.Series("person_key", list(keys), pl.String)


def _accounts_linked_to(conn: Connection, district_id: int, person_keys: pl.Series) -> list[int]:
    """The accounts of these SIS people of the district (their links, active or not), in
    one statement with the keys as an array (Postgres: only there is a plan scoped);
    in chunks of a thousand, the ten thousand people a 1 % drop at a million loses
    took 0.4 s."""
    if not person_keys.len():
        return []
    return list(
        conn.execute(
            text(
                "SELECT account_id FROM sis_links "
                "WHERE district_id = :d AND person_key = ANY(CAST(:keys AS text[]))"
            ),
            {"d": district_id, "keys": person_keys.to_list()},
        ).scalars()
    )


def write_plan_files(plan: SyncPlan, folder: Path) -> list[Path]:
    """`plan.csv` (every change, field-level) and, for a hold, `held_changes.csv`."""
    from roster_pipelines.lib.report import neutralise_formulas

    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "plan.csv"]
    neutralise_formulas(changes_frame(plan)).write_csv(written[0])
    if plan.held:
        written.append(folder / "held_changes.csv")
        neutralise_formulas(removals_frame(plan)).write_csv(written[1])
    return written


class StalePlan(RuntimeError):
    """Another drop of the district was applied after this plan was made."""


def received_at(manifest: DropManifest) -> datetime:
    return datetime.fromisoformat(manifest.archived_at)


def apply_drop(
    engine: Engine,
    manifest: DropManifest,
    roster: Roster,
    plan: SyncPlan,
    *,
    dry_run: bool = False,
    force: bool = False,
    started_at: datetime,
    before_commit: Callable[[], object] | None = None,
) -> SyncOutcome:
    """Apply the plan and record the run, all in one transaction.

    Under the district's lock the plan must still describe the database (no other
    drop applied since it was made), and the drop must be newer than the last applied
    one unless `force`: an older drop is rejected with DROP_OUT_OF_ORDER.

    `before_commit` is called last in the transaction: work done beside the apply that
    the drop must not be recorded without (the merge candidates). What it raises rolls
    the apply back.
    """
    issues = concat_issues(roster.issues, plan.issues)
    planned = plan.counts(include_removals=True)
    with engine.begin() as conn:
        lock_district(conn, plan.district_id)
        latest = latest_run(conn, plan.district_id)
        if (latest.id if latest else None) != plan.base_run_id:
            raise StalePlan(
                f"drop {latest.drop_id if latest else '?'} of district {manifest.district} was applied "
                "after this plan was made; run this drop again to plan it against the current data"
            )
        newer = latest and latest.received_at and _aware(latest.received_at) > received_at(manifest)
        if newer and not force and not dry_run:
            return _record_out_of_order(conn, manifest, roster, plan, latest, started_at)
        if dry_run:
            status, changes = DRY_RUN, zero_changes()
        else:
            # The district's own writes are not recorded as outside changes; the
            # accounts of other districts it renames are, and those its plan saw are
            # cleared (lib/store/marks.py).
            mark_sync_transaction(conn, plan.district_id)
            applied = apply_plan(conn, plan, now=utcnow())
            log_shared_account_changes(conn, plan)
            consume_account_changes(conn, plan.account_changes_seen)
            changes = applied.counts
            status = HELD if plan.held else APPLIED
            supersede_pending_holds(conn, plan.district_id)
        run_id = record_sync_run(
            conn,
            district_id=plan.district_id,
            drop_id=manifest.drop,
            content_hash=manifest.content_hash,
            status=status,
            is_initial=plan.is_initial,
            counts=roster.counts(),
            changes=changes,
            planned=planned if status in (DRY_RUN, HELD) else None,
            issues=issues,
            started_at=started_at,
            finished_at=utcnow(),
            received_at=received_at(manifest),
            change_mark=plan.change_mark,
            plan_version=PLAN_VERSION,
            roster_digest=roster_digest(roster) if status == APPLIED else None,
        )
        if status == HELD:
            record_hold(conn, sync_run_id=run_id, plan=plan)
        if status != DRY_RUN:
            # The people this drop notifies, in its transaction (outbox; R12-R14).
            enqueue_sync_notifications(conn, plan, applied, run_id)
        if before_commit is not None:
            before_commit()
    if status in (APPLIED, HELD):
        refresh_statistics(engine, sum(changes.values()))
    return SyncOutcome(
        district=manifest.district,
        drop=manifest.drop,
        status=status,
        counts=roster.counts(),
        changes=changes,
        issues=issues,
        planned=planned if status in (DRY_RUN, HELD) else None,
        hold_reasons=plan.hold_reasons,
        sync_run_id=run_id,
        is_initial=plan.is_initial,
    )


def _aware(value: datetime) -> datetime:
    """SQLite returns naive datetimes; the store writes UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _record_out_of_order(
    conn: Connection,
    manifest: DropManifest,
    roster: Roster,
    plan: SyncPlan,
    latest: RunRef,
    started_at: datetime,
) -> SyncOutcome:
    issue = issues_frame(
        [
            issue_row(
                "DROP_OUT_OF_ORDER",
                ids={"drop": manifest.drop, "newer_drop": latest.drop_id},
                message=(
                    f"drop {manifest.drop} was received at {manifest.archived_at}, before drop "
                    f"{latest.drop_id}, which is already applied; it was not applied"
                ),
            )
        ]
    )
    issues = concat_issues(roster.issues, plan.issues, issue)
    run_id = record_sync_run(
        conn,
        district_id=plan.district_id,
        drop_id=manifest.drop,
        content_hash=manifest.content_hash,
        status=REJECTED,
        is_initial=False,
        counts=roster.counts(),
        changes=zero_changes(),
        planned=None,
        issues=issues,
        started_at=started_at,
        finished_at=utcnow(),
        received_at=received_at(manifest),
    )
    outcome = rejected_outcome(manifest, roster, sync_run_id=run_id)
    outcome.issues = issues
    return outcome


def record_rejection(
    engine: Engine, manifest: DropManifest, roster: Roster, *, started_at: datetime
) -> SyncOutcome:
    """A rejected drop changes no roster data; only the run and its issues are recorded."""
    with engine.begin() as conn:
        district_id = get_or_create_district(conn, manifest.district)
        run_id = record_sync_run(
            conn,
            district_id=district_id,
            drop_id=manifest.drop,
            content_hash=manifest.content_hash,
            status=REJECTED,
            is_initial=False,
            counts=roster.counts(),
            changes=zero_changes(),
            planned=None,
            issues=roster.issues,
            started_at=started_at,
            finished_at=utcnow(),
            received_at=received_at(manifest),
        )
    return rejected_outcome(manifest, roster, sync_run_id=run_id)


def rejected_outcome(
    manifest: DropManifest, roster: Roster, *, sync_run_id: int | None = None
) -> SyncOutcome:
    return SyncOutcome(
        district=manifest.district,
        drop=manifest.drop,
        status=REJECTED,
        counts=roster.counts(),
        changes=zero_changes(),
        issues=roster.issues if roster.issues.height else pl.DataFrame(schema=ISSUES_SCHEMA),
        sync_run_id=sync_run_id,
    )
