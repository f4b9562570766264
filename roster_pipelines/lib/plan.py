"""The sync plan: desired state (the validated drop) minus current state (the database).

Everything is diffed in database-id space. Rows the drop creates do not have ids yet,
so the plan gives them temporary negative ids (-1, -2, ... per table); the apply step
inserts them, learns their real ids and rewrites the references.

Guards (R9, R10) decide whether the drop's destructive changes apply now or are held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import polars as pl

from roster_pipelines.lib.canonical import (
    ROLE_PARENT,
    ROLE_RANK,
    ROLE_STUDENT,
    ROLE_TEACHER,
    Roster,
)
from roster_pipelines.lib.identity import LINKED
from roster_pipelines.lib.incremental import Scope
from roster_pipelines.lib.issues import concat_issues, with_catalogue
from roster_pipelines.lib.store.state import CurrentState

ID = pl.Int64

# Default removal thresholds per type: hold when a drop removes more than `percent`
# of the current active rows AND at least `count` rows (so a small district is not
# held for a handful of leavers). Configurable per district (DistrictSettings).
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "people": {"percent": 10.0, "count": 25},
    "classes": {"percent": 20.0, "count": 10},
    "enrollments": {"percent": 20.0, "count": 100},
}
BEFORE = "_before"  # suffix of the old values in an update frame
MAX_GUARDIANS = 5  # six or more guardians on one student holds the drop (R10)
FRESHNESS_DAYS = 90  # R9

CHANGE_KEYS = (
    "accounts_created",
    "accounts_linked",
    "accounts_updated",
    "accounts_removed",
    "classes_created",
    "classes_updated",
    "classes_removed",
    "memberships_added",
    "memberships_removed",
    "schools_created",
    "schools_updated",
    "schools_removed",
    "guardianships_added",
    "guardianships_removed",
    "contacts_added",
    "contacts_updated",
)


@dataclass
class TableChanges:
    """Adds (new rows), updates (id + new values), reactivations and removals (ids)."""

    adds: pl.DataFrame
    updates: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema={"id": ID}))
    reactivations: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema={"id": ID}))
    removals: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema={"id": ID}))


@dataclass
class SyncPlan:
    district_id: int
    is_initial: bool
    schools: TableChanges
    accounts: TableChanges
    links: TableChanges
    contacts: TableChanges
    classes: TableChanges
    org_memberships: TableChanges
    class_memberships: TableChanges
    guardianships: TableChanges
    accounts_linked: int
    hold_reasons: list[str]
    issues: pl.DataFrame
    # The latest applied/held run the plan was made against (None: first drop).
    base_run_id: int | None = None
    # An incremental plan's scope in numbers (lib/incremental.py); None: planned in full.
    scope: dict[str, int] | None = None
    # What the plan saw of writes made outside the sync (lib/store/marks.py): the
    # district-wide mark, and the ids of the recorded account writes its apply clears.
    change_mark: int | None = None
    account_changes_seen: pl.Series = field(default_factory=lambda: pl.Series([], dtype=pl.Int64))

    @property
    def held(self) -> bool:
        return bool(self.hold_reasons)

    def counts(self, *, include_removals: bool = True) -> dict[str, int]:
        """The change counts (the CLI's `changes`/`planned`)."""
        r = include_removals

        def n(frame: pl.DataFrame) -> int:
            return frame.height

        classes_updated = pl.concat(
            [self.classes.updates.select("id"), self.classes.reactivations]
        ).unique()
        schools_updated = pl.concat(
            [self.schools.updates.select("id"), self.schools.reactivations]
        ).unique()
        memberships_added = sum(
            n(t.adds) + n(t.reactivations) for t in (self.class_memberships, self.org_memberships)
        )
        memberships_removed = sum(
            n(t.removals) for t in (self.class_memberships, self.org_memberships)
        )
        return {
            "accounts_created": n(self.accounts.adds),
            "accounts_linked": self.accounts_linked,
            "accounts_updated": n(self.accounts.updates),
            "accounts_removed": n(self.links.removals) if r else 0,
            "classes_created": n(self.classes.adds),
            "classes_updated": n(classes_updated),
            "classes_removed": n(self.classes.removals) if r else 0,
            "memberships_added": memberships_added,
            "memberships_removed": memberships_removed if r else 0,
            "schools_created": n(self.schools.adds),
            "schools_updated": n(schools_updated),
            "schools_removed": n(self.schools.removals) if r else 0,
            "guardianships_added": n(self.guardianships.adds) + n(self.guardianships.reactivations),
            "guardianships_removed": n(self.guardianships.removals) if r else 0,
            "contacts_added": n(self.contacts.adds),
            "contacts_updated": n(self.contacts.updates),
        }


# The alerts of contact points a plan could not apply (another account owns the value,
# or the account's verified one is kept); the next incremental plan re-checks their people.
CONTACT_IN_USE = "CONTACT_IN_USE"
CONTACT_VERIFIED_KEPT = "CONTACT_VERIFIED_KEPT"
REFUSED_CONTACT_CODES = (CONTACT_IN_USE, CONTACT_VERIFIED_KEPT)
# How a person-level issue names its person in `ids` (`person=<person_key>`).
PERSON_IDS_PREFIX = "person="


def _person_issues(
    rows: pl.DataFrame, code: str, message: pl.Expr, *, with_value: bool = True
) -> pl.DataFrame:
    """One issue per row of `rows` (src_file, src_row, person_key and, with a value,
    source_column and raw_value), built column-wise."""
    none = pl.lit(None, pl.String)
    return with_catalogue(
        rows.select(
            file="src_file",
            row="src_row",
            ids=pl.concat_str(pl.lit(PERSON_IDS_PREFIX), "person_key"),
            field=pl.col("source_column") if with_value else none,
            value=pl.col("raw_value") if with_value else none,
            message=message,
        ),
        code,
    )


def _in_scope(frame: pl.DataFrame, people: pl.Series | None, *columns: str) -> pl.DataFrame:
    """The rows of `frame` naming a person in scope in any of `columns` (all rows when
    the plan is not scoped)."""
    if people is None:
        return frame
    wanted = people.implode()
    return frame.filter(pl.any_horizontal(pl.col(c).is_in(wanted) for c in columns))


def _with_temp_ids(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(temp_id=-(pl.int_range(1, frame.height + 1, dtype=ID)))


def _field_updates(joined: pl.DataFrame, id_column: str, fields: tuple[str, ...]) -> pl.DataFrame:
    """Rows whose desired `fields` differ from the current `<field>_cur` values: the id,
    the new values, and each old value as `<field>_before` (field-level before/after)."""
    return joined.filter(
        pl.any_horizontal(pl.col(f).ne_missing(pl.col(f"{f}_cur")) for f in fields)
    ).select(
        pl.col(id_column).alias("id"),
        *fields,
        *(pl.col(f"{f}_cur").alias(f"{f}{BEFORE}") for f in fields),
    )


def _diff_links(desired: pl.DataFrame, current: pl.DataFrame, keys: list[str]) -> TableChanges:
    """Diff for plain link tables (memberships, guardianships): adds, reactivations, removals.

    One full join of the desired rows with the current ones, evaluated lazily for the
    three results at once (half the time of a left join plus an anti join at a million
    people). Adds come out sorted by key, so a plan is the same from run to run."""
    joined = (
        desired.lazy()
        .unique(subset=keys)
        .with_columns(_wanted=pl.lit(True))
        .join(current.lazy(), on=keys, how="full", coalesce=True)
    )
    adds, reactivations, removals = pl.collect_all(
        [
            joined.filter(pl.col("id").is_null()).select(keys).sort(keys),
            joined.filter(pl.col("_wanted") & pl.col("active").not_()).select("id").sort("id"),
            joined.filter(pl.col("_wanted").is_null() & pl.col("active")).select("id").sort("id"),
        ]
    )
    return TableChanges(adds=adds, reactivations=reactivations, removals=removals)


def _plan_schools(roster: Roster, current: CurrentState) -> tuple[TableChanges, pl.DataFrame]:
    """Schools and programs; plus (school_id, org_id) of every school of the drop."""
    schools = roster.schools.select("school_id", "name", kind="org_type")
    s_joined = schools.join(
        current.orgs, left_on="school_id", right_on="sis_id", how="left", suffix="_cur"
    )
    school_adds = _with_temp_ids(
        s_joined.filter(pl.col("id").is_null()).select("school_id", "name", "kind")
    )
    existing_schools = s_joined.filter(pl.col("id").is_not_null())
    schools_changes = TableChanges(
        adds=school_adds,
        updates=_field_updates(existing_schools, "id", ("name", "kind")),
        reactivations=existing_schools.filter(pl.col("active").not_()).select("id"),
        removals=current.orgs.filter(pl.col("active"))
        .join(schools, left_on="sis_id", right_on="school_id", how="anti")
        .select("id"),
    )
    org_ids = pl.concat(
        [
            existing_schools.select("school_id", org_id="id"),
            school_adds.select("school_id", org_id="temp_id"),
        ]
    )
    return schools_changes, org_ids


def _plan_accounts(
    roster: Roster,
    identities: pl.DataFrame,
    current: CurrentState,
    scope: pl.Series | None,
    own: pl.Series | None,
) -> tuple[TableChanges, TableChanges, pl.DataFrame]:
    """Accounts and SIS links; plus (person_key, account_id) of every person of the drop
    (a temporary negative id for an account the drop creates), scoped or not. Links
    are diffed for the `scope`'s people (the hold thresholds count its active ones),
    accounts for those of `own` (`Scope.own_people`; None with no scope)."""
    # Accounts: created ones get temp ids; everyone's account id is then known.
    people = roster.people.join(
        identities.select("person_key", "account_id", "decision"), on="person_key"
    )
    creates = _with_temp_ids(people.filter(pl.col("account_id").is_null()))
    account_of = pl.concat(
        [
            people.filter(pl.col("account_id").is_not_null()).select("person_key", "account_id"),
            creates.select("person_key", account_id="temp_id"),
        ]
    )
    # One account may be several SIS people (a teacher who is also a parent): the
    # highest role speaks for the account's name; dob and grade come from students.
    desired_accounts = (
        _in_scope(people, own, "person_key")
        .filter(pl.col("account_id").is_not_null())
        .with_columns(rank=pl.col("role").replace_strict(ROLE_RANK, return_dtype=pl.Int8))
        .sort(["account_id", "rank", "person_key"])
        .unique(subset="account_id", keep="first", maintain_order=True)
        .join(current.accounts, left_on="account_id", right_on="id", how="left", suffix="_cur")
        .with_columns(
            dob=pl.when(pl.col("role") == ROLE_STUDENT)
            .then(pl.col("dob"))
            .otherwise(pl.col("dob_cur")),
            grade=pl.when(pl.col("role") == ROLE_STUDENT)
            .then(pl.col("grade"))
            .otherwise(pl.col("grade_cur")),
        )
    )
    account_updates = _field_updates(
        desired_accounts, "account_id", ("first_name", "last_name", "dob", "grade")
    )
    accounts_changes = TableChanges(
        adds=creates.select("temp_id", "person_key", "first_name", "last_name", "dob", "grade"),
        updates=account_updates,
    )

    # SIS links bind (district, person_key) to an account.
    desired_links = (
        _in_scope(roster.people, scope, "person_key")
        .select("person_key", "role", "sis_id")
        .join(account_of, on="person_key")
    )
    l_joined = desired_links.join(
        current.links.select("id", "person_key", "active"), on="person_key", how="left"
    )
    links_changes = TableChanges(
        adds=l_joined.filter(pl.col("id").is_null()).select(
            "person_key", "role", "sis_id", "account_id"
        ),
        reactivations=l_joined.filter(pl.col("active").not_()).select("id"),
        removals=current.links.filter(pl.col("active"))
        .join(desired_links, on="person_key", how="anti")
        .select("id"),
    )
    return accounts_changes, links_changes, account_of


def _identity_alerts(identities: pl.DataFrame) -> list[pl.DataFrame]:
    """The alerts identity resolution raised (IDENTITY_CONFLICT, ACCOUNT_TAKEN): they
    travel on `identities`, one per person, and are reported with the plan's."""
    if "alert_code" not in identities.columns:
        return []
    alerts = identities.filter(pl.col("alert_code").is_not_null())
    return [
        _person_issues(
            alerts.filter(pl.col("alert_code") == code),
            code,
            pl.col("alert_message"),
            with_value=False,
        )
        for code in sorted(alerts["alert_code"].unique().to_list())
    ]


def _plan_contacts(
    roster: Roster,
    identities: pl.DataFrame,
    current: CurrentState,
    contact_owners: pl.DataFrame,
    account_of: pl.DataFrame,
    people: pl.Series | None = None,
) -> tuple[TableChanges, list[pl.DataFrame]]:
    """Contact points, and the alerts about them; for the people in scope only when
    `people` is given (every person of their accounts is in scope too, so each
    account's contact points are diffed whole)."""
    plan_issues: list[pl.DataFrame] = []
    account_of = _in_scope(account_of, people, "person_key")
    # Contact points (R4 and the contact-point conflicts; issue 4). One email or phone
    # belongs to one account:
    # - a value nobody owns goes to the person's account: it *replaces* a stale
    #   unverified SIS contact point of the same kind on that account (one the SIS no
    #   longer sends: a changed email), else it is added;
    # - a verified contact point is never overwritten: when the account's stale
    #   contact of that kind is verified, the new value is not applied
    #   (CONTACT_VERIFIED_KEPT alert). Unverified contacts the user added
    #   (source "user") are not replaced either; the SIS value is added beside them;
    # - an account SIS-linked in another district too keeps its contacts (the other
    #   district's values are not stale): new values are added, none replaced;
    # - a value another account owns stays where it is (CONTACT_IN_USE alert; identity
    #   resolution records the two accounts as merge candidates).
    with_accounts = roster.contacts.join(account_of, on="person_key")
    desired_contacts = with_accounts.unique(
        subset=["kind", "value"], keep="first", maintain_order=True
    ).join(contact_owners.rename({"account_id": "owner_id"}), on=["kind", "value"], how="left")
    taken = desired_contacts.filter(
        pl.col("owner_id").is_not_null() & (pl.col("owner_id") != pl.col("account_id"))
    )
    plan_issues.append(
        _person_issues(
            taken,
            CONTACT_IN_USE,
            pl.format(
                "{} row {}: {} already belongs to another account in the app, so it was not "
                "added to this person",
                "src_file",
                "src_row",
                "value",
            ),
        )
    )
    slot = ["account_id", "kind", "n"]
    free = (
        desired_contacts.filter(pl.col("owner_id").is_null())
        .sort(["account_id", "kind", "value"])
        .with_columns(n=pl.int_range(pl.len()).over(["account_id", "kind"]))
    )
    drop_values = with_accounts.select("account_id", "kind", "value")
    shared = (
        identities.filter(pl.col("other_districts")).select("account_id")
        if "other_districts" in identities.columns
        else pl.DataFrame(schema={"account_id": pl.Int64})
    )
    stale = (
        current.contacts.join(account_of.select("account_id"), on="account_id", how="semi")
        .join(drop_values, on=["account_id", "kind", "value"], how="anti")
        .join(shared, on="account_id", how="anti")
    )
    replaceable = (
        stale.filter(pl.col("verified").not_() & (pl.col("source") == "sis"))
        .sort("id")
        .with_columns(n=pl.int_range(pl.len()).over(["account_id", "kind"]))
    )
    replaced = free.join(replaceable.select(*slot, "id", old_value="value"), on=slot, how="inner")
    remaining = free.join(replaced.select(slot), on=slot, how="anti")
    verified_kinds = (
        stale.filter(pl.col("verified"))
        .sort("id")
        .unique(["account_id", "kind"], keep="first", maintain_order=True)
        .select("account_id", "kind", kept_value="value")
    )
    kept = remaining.join(verified_kinds, on=["account_id", "kind"], how="inner")
    plan_issues.append(
        _person_issues(
            kept,
            CONTACT_VERIFIED_KEPT,
            pl.format(
                "{} row {}: the SIS {} {} was not applied: the account's verified {} {} is never "
                "overwritten by a sync",
                "src_file",
                "src_row",
                "kind",
                "value",
                "kind",
                "kept_value",
            ),
        )
    )
    contacts_changes = TableChanges(
        adds=remaining.join(verified_kinds, on=["account_id", "kind"], how="anti").select(
            "account_id", "kind", "value"
        ),
        updates=replaced.select("id", "value"),
    )
    return contacts_changes, plan_issues


def _plan_classes(
    roster: Roster, current: CurrentState, org_ids: pl.DataFrame, account_of: pl.DataFrame
) -> tuple[TableChanges, pl.DataFrame]:
    """Classes; plus (sis_class_id, class_id) of every class of the drop."""
    desired_classes = (
        roster.classes.join(org_ids, on="school_id")
        .join(
            account_of.rename({"person_key": "owner_person_key", "account_id": "owner_account_id"}),
            on="owner_person_key",
            how="left",
        )
        .select(
            sis_class_id="class_id",
            school_org_id="org_id",
            sis_name="name",
            owner_account_id="owner_account_id",
        )
    )
    c_joined = desired_classes.join(current.classes, on="sis_class_id", how="left", suffix="_cur")
    class_adds = _with_temp_ids(
        c_joined.filter(pl.col("id").is_null()).select(desired_classes.columns)
    )
    existing_classes = c_joined.filter(pl.col("id").is_not_null())
    class_updates = _field_updates(
        existing_classes.with_columns(
            # R6: an owner-edited name is never overwritten by the SIS.
            name_cur=pl.col("name"),
            name=pl.when(pl.col("name_edited")).then(pl.col("name")).otherwise(pl.col("sis_name")),
        ),
        "id",
        ("school_org_id", "sis_name", "owner_account_id", "name"),
    )
    classes_changes = TableChanges(
        adds=class_adds,
        updates=class_updates,
        reactivations=existing_classes.filter(pl.col("active").not_()).select("id"),
        removals=current.classes.filter(pl.col("active"))
        .join(desired_classes, on="sis_class_id", how="anti")
        .select("id"),
    )
    class_ids = pl.concat(
        [
            existing_classes.select("sis_class_id", class_id="id"),
            class_adds.select("sis_class_id", class_id="temp_id"),
        ]
    )
    return classes_changes, class_ids


def _plan_org_memberships(
    roster: Roster,
    current: CurrentState,
    org_ids: pl.DataFrame,
    account_of: pl.DataFrame,
    scope: pl.Series | None,
) -> TableChanges:
    """School memberships."""
    desired_org_memberships = (
        _in_scope(roster.school_memberships, scope, "person_key")
        .join(org_ids, on="school_id")
        .join(account_of, on="person_key")
        .select("org_id", "account_id", "role")
    )
    org_membership_changes = _diff_links(
        desired_org_memberships, current.org_memberships, ["org_id", "account_id", "role"]
    )
    return org_membership_changes


def _plan_class_memberships(
    roster: Roster,
    current: CurrentState,
    class_ids: pl.DataFrame,
    account_of: pl.DataFrame,
    scope: pl.Series | None,
) -> TableChanges:
    """Class memberships: enrollments, the owner teacher, and parents through their
    students' enrollments (R7)."""
    student_enrollments = roster.enrollments.filter(pl.col("role") == ROLE_STUDENT)
    parent_enrollments = (
        _in_scope(roster.guardianships, scope, "parent_person_key")
        .join(
            student_enrollments.select("class_id", student_person_key="person_key"),
            on="student_person_key",
        )
        .select("class_id", person_key="parent_person_key", role=pl.lit(ROLE_PARENT))
    )
    owners = _in_scope(
        roster.classes.select("class_id", person_key="owner_person_key", role=pl.lit(ROLE_TEACHER)),
        scope,
        "person_key",
    )
    desired_class_memberships = (
        pl.concat(
            [
                _in_scope(roster.enrollments, scope, "person_key").select(
                    "class_id", "person_key", "role"
                ),
                owners,
                parent_enrollments,
            ]
        )
        .join(
            class_ids.rename({"sis_class_id": "class_id", "class_id": "db_class_id"}), on="class_id"
        )
        .join(account_of, on="person_key")
        .select(class_id="db_class_id", account_id="account_id", role="role")
    )
    class_membership_changes = _diff_links(
        desired_class_memberships, current.class_memberships, ["class_id", "account_id", "role"]
    )
    return class_membership_changes


def _plan_guardianships(
    roster: Roster, current: CurrentState, account_of: pl.DataFrame, scope: pl.Series | None
) -> TableChanges:
    """Guardianships."""
    desired_guardianships = (
        _in_scope(roster.guardianships, scope, "parent_person_key", "student_person_key")
        .join(
            account_of.rename(
                {"person_key": "parent_person_key", "account_id": "parent_account_id"}
            ),
            on="parent_person_key",
        )
        .join(
            account_of.rename(
                {"person_key": "student_person_key", "account_id": "student_account_id"}
            ),
            on="student_person_key",
        )
        .select("parent_account_id", "student_account_id")
    )
    guardianship_changes = _diff_links(
        desired_guardianships, current.guardianships, ["parent_account_id", "student_account_id"]
    )
    return guardianship_changes


def build_plan(
    roster: Roster,
    identities: pl.DataFrame,
    current: CurrentState,
    contact_owners: pl.DataFrame,
    *,
    thresholds: dict[str, dict[str, float]] | None = None,
    now: datetime,
    scope: Scope | None = None,
) -> SyncPlan:
    """Work out every change the drop makes. `contact_owners` (kind, value, account_id)
    lists existing accounts owning any contact value of the drop.

    With a `scope` (an incremental plan, lib/incremental.py) `current` holds only the
    scope's accounts, and people, contact points, memberships and guardianships are
    diffed for the scope's people only (accounts, contact points, school memberships
    and guardianships for those with changes of their own, `Scope.own_people`); schools
    and classes are planned whole."""
    people = scope.people if scope is not None else None
    own = scope.people_with_own_changes() if scope is not None else None
    # Each part is its own function so its intermediate frames are freed when it
    # returns: at a million people they held about 1.8 GB at once.
    schools_changes, org_ids = _plan_schools(roster, current)
    accounts_changes, links_changes, account_of = _plan_accounts(
        roster, identities, current, people, own
    )
    contacts_changes, contact_issues = _plan_contacts(
        roster, identities, current, contact_owners, account_of, own
    )
    classes_changes, class_ids = _plan_classes(roster, current, org_ids, account_of)
    org_membership_changes = _plan_org_memberships(roster, current, org_ids, account_of, own)
    class_membership_changes = _plan_class_memberships(
        roster, current, class_ids, account_of, people
    )
    guardianship_changes = _plan_guardianships(roster, current, account_of, own)

    plan = SyncPlan(
        district_id=current.district_id,
        is_initial=current.last_applied_at is None,
        schools=schools_changes,
        accounts=accounts_changes,
        links=links_changes,
        contacts=contacts_changes,
        classes=classes_changes,
        org_memberships=org_membership_changes,
        class_memberships=class_membership_changes,
        guardianships=guardianship_changes,
        accounts_linked=int(identities.filter(pl.col("decision") == LINKED).height),
        hold_reasons=[],
        issues=concat_issues(*_identity_alerts(identities), *contact_issues),
        base_run_id=current.last_run_id,
        scope=scope.stats() if scope is not None else None,
    )
    _label_removals(plan, current)
    plan.hold_reasons = guard_reasons(
        plan, roster, current, thresholds or DEFAULT_THRESHOLDS, now=now, scope=people
    )
    return plan


def _label_removals(plan: SyncPlan, current: CurrentState) -> None:
    """Give every removal a label a person can read in the held-changes list."""

    # Only the accounts the removals name (the links of a whole district need not be
    # ranked when a drop removes a few hundred memberships).
    def removed(rows: pl.DataFrame, changes: TableChanges) -> pl.DataFrame:
        return rows.join(changes.removals, on="id", how="semi")

    guardianships = removed(current.guardianships, plan.guardianships)
    named = pl.concat(
        [
            removed(current.org_memberships, plan.org_memberships).select("account_id"),
            removed(current.class_memberships, plan.class_memberships).select("account_id"),
            guardianships.select(account_id="parent_account_id"),
            guardianships.select(account_id="student_account_id"),
        ]
    )
    person = (
        current.links.join(named, on="account_id", how="semi")
        .with_columns(rank=pl.col("role").replace_strict(ROLE_RANK, return_dtype=pl.Int8))
        .sort(["account_id", "rank", "person_key"])
        .unique(subset="account_id", keep="first")
        .select("account_id", "person_key")
    )
    org = current.orgs.select(org_id="id", school=pl.col("sis_id"))
    klass = current.classes.select(class_id="id", sis_class_id="sis_class_id")

    def label(changes: TableChanges, current_rows: pl.DataFrame, expr: pl.Expr, *joins) -> None:
        frame = changes.removals.select("id").join(current_rows, on="id", how="left")
        for other, on in joins:
            frame = frame.join(other, on=on, how="left")
        changes.removals = frame.select("id", label=expr)

    label(plan.schools, current.orgs, pl.format("school {}", pl.col("sis_id")))
    label(plan.links, current.links, pl.col("person_key"))
    label(plan.classes, current.classes, pl.format("class {}", pl.col("sis_class_id")))
    label(
        plan.org_memberships,
        current.org_memberships,
        pl.format("{} at school {} as {}", pl.col("person_key"), pl.col("school"), pl.col("role")),
        (person, "account_id"),
        (org, "org_id"),
    )
    label(
        plan.class_memberships,
        current.class_memberships,
        pl.format(
            "{} in class {} as {}", pl.col("person_key"), pl.col("sis_class_id"), pl.col("role")
        ),
        (person, "account_id"),
        (klass, "class_id"),
    )
    parents = person.rename({"account_id": "parent_account_id", "person_key": "parent"})
    students = person.rename({"account_id": "student_account_id", "person_key": "student"})
    label(
        plan.guardianships,
        current.guardianships,
        pl.format("{} guardian of {}", pl.col("parent"), pl.col("student")),
        (parents, "parent_account_id"),
        (students, "student_account_id"),
    )


# The tables whose rows a plan's removals deactivate, by TableChanges attribute.
REMOVAL_TABLES = {
    "schools": "organisations",
    "links": "sis_links",
    "classes": "classes",
    "org_memberships": "org_memberships",
    "class_memberships": "class_memberships",
    "guardianships": "guardianships",
}


def removals_frame(plan: SyncPlan) -> pl.DataFrame:
    """Every removal of the plan: table_name, row_id, label (a hold's exact list)."""
    parts = [
        getattr(plan, attr).removals.select(table_name=pl.lit(table), row_id="id", label="label")
        for attr, table in REMOVAL_TABLES.items()
    ]
    return pl.concat(parts, how="vertical_relaxed")


def changes_frame(plan: SyncPlan) -> pl.DataFrame:
    """The plan as one table a person can read: type, action, id, field, before, after."""
    schema = {
        "type": pl.String,
        "action": pl.String,
        "id": pl.Int64,
        "key": pl.String,
        "field": pl.String,
        "before": pl.String,
        "after": pl.String,
    }
    parts: list[pl.DataFrame] = []
    for attr in ("schools", "accounts", "classes"):
        updates = getattr(plan, attr).updates
        fields = [c for c in updates.columns if c != "id" and not c.endswith(BEFORE)]
        for f in fields:
            changed = updates.filter(pl.col(f).ne_missing(pl.col(f"{f}{BEFORE}")))
            parts.append(
                changed.select(
                    type=pl.lit(attr),
                    action=pl.lit("update"),
                    id="id",
                    key=pl.lit(None, pl.String),
                    field=pl.lit(f),
                    before=pl.col(f"{f}{BEFORE}").cast(pl.String),
                    after=pl.col(f).cast(pl.String),
                )
            )
    adds = {
        "schools": pl.col("school_id"),
        "accounts": pl.col("person_key"),
        "links": pl.col("person_key"),
        "classes": pl.col("sis_class_id"),
    }
    for attr, key in adds.items():
        frame = getattr(plan, attr).adds
        parts.append(
            frame.select(
                type=pl.lit(attr),
                action=pl.lit("add"),
                id=pl.lit(None, pl.Int64),
                key=key.cast(pl.String),
                field=pl.lit(None, pl.String),
                before=pl.lit(None, pl.String),
                after=pl.lit(None, pl.String),
            )
        )
    for attr in ("org_memberships", "class_memberships", "guardianships", "contacts"):
        n = getattr(plan, attr).adds.height
        if n:
            parts.append(
                pl.DataFrame(
                    {
                        "type": [attr],
                        "action": ["add"],
                        "id": [None],
                        "key": [f"{n} rows"],
                        "field": [None],
                        "before": [None],
                        "after": [None],
                    },
                    schema=schema,
                )
            )
    for attr in REMOVAL_TABLES:
        changes = getattr(plan, attr)
        parts.append(
            changes.reactivations.select(
                type=pl.lit(attr),
                action=pl.lit("reactivate"),
                id="id",
                key=pl.lit(None, pl.String),
                field=pl.lit(None, pl.String),
                before=pl.lit(None, pl.String),
                after=pl.lit(None, pl.String),
            )
        )
    removals = removals_frame(plan)
    attr_of = {table: attr for attr, table in REMOVAL_TABLES.items()}
    parts.append(
        removals.select(
            type=pl.col("table_name").replace_strict(attr_of),
            action=pl.lit("remove"),
            id="row_id",
            key="label",
            field=pl.lit(None, pl.String),
            before=pl.lit(None, pl.String),
            after=pl.lit(None, pl.String),
        )
    )
    return pl.concat([p.cast(schema) for p in parts if p.height] or [pl.DataFrame(schema=schema)])


def _below_threshold(removed: int, at_least: int, limit: dict[str, float]) -> bool:
    """Whether `removed` rows stay under a removal threshold whatever the total, given
    that the total is at least `at_least`."""
    return removed < limit["count"] or (
        at_least > 0 and 100.0 * removed / at_least <= limit["percent"]
    )


def _active_outside_scope(roster: Roster, scope: pl.Series, kind: str) -> int:
    """How many of the district's active people or enrollments (`kind`) belong to the
    drop's people outside an incremental plan's scope, at least.

    Those people are unchanged since the last applied drop and nothing else wrote their
    accounts (a write would have put them in the scope), so that drop left each of
    their rows active: additions and reactivations are never held. Their accounts are
    outside the scope, so the scope's rows hold none of theirs. A validated drop has
    one enrollment per class and person, and one account per person and role."""
    wanted = scope.implode()
    if kind == "people":
        return roster.people.filter(~pl.col("person_key").is_in(wanted))["person_key"].n_unique()
    return roster.enrollments.filter(~pl.col("person_key").is_in(wanted)).height


def guard_reasons(
    plan: SyncPlan,
    roster: Roster,
    current: CurrentState,
    thresholds: dict[str, dict[str, float]],
    *,
    now: datetime,
    scope: pl.Series | None = None,
) -> list[str]:
    """Why the drop's destructive changes must wait for an administrator (empty: apply).
    `scope`: the people of an incremental plan (`current` holds their accounts' rows)."""
    reasons: list[str] = []
    # A scoped read's people and enrollments are the scope's: a lower bound of the
    # district's. When it cannot tell (`_below_threshold`), the drop's rows outside
    # the scope are added to it (0.1 s at a million people), and the district's rows
    # are counted only when that bound cannot tell either (0.4 s).
    active = {
        "people": current.links.filter(pl.col("active")).height,
        "classes": current.classes.filter(pl.col("active")).height,
        "enrollments": current.class_memberships.filter(pl.col("active")).height,
    }
    removed_of = {
        "people": plan.links.removals.height,
        "classes": plan.classes.removals.height,
        "enrollments": plan.class_memberships.removals.height,
    }
    for kind, removed in removed_of.items():
        total = active[kind]
        limit = {**DEFAULT_THRESHOLDS[kind], **thresholds.get(kind, {})}
        count = current.count_total if kind != "classes" else None
        if count is not None and not _below_threshold(removed, total, limit):
            if scope is not None:
                total += _active_outside_scope(roster, scope, kind)
            if not _below_threshold(removed, total, limit):
                total = count(kind)
        if total and removed >= limit["count"] and 100.0 * removed / total > limit["percent"]:
            reasons.append(
                f"would remove {removed} of {total} {kind} ({100.0 * removed / total:.1f}%), "
                f"above the {limit['percent']:g}% threshold"
            )
    guardians = (
        roster.guardianships.group_by("student_person_key")
        .len()
        .filter(pl.col("len") > MAX_GUARDIANS)
    )
    for row in guardians.sort("student_person_key").iter_rows(named=True):
        reasons.append(
            f"{row['student_person_key']} would have {row['len']} guardians (six or more)"
        )
    # R9: the same date and rule as the daily freshness check (lib/freshness.py).
    from roster_pipelines.lib import freshness

    if freshness.removals_held(current.last_applied_at, now):
        days = freshness.days_since(current.last_applied_at, now)
        reasons.append(
            f"the previous applied drop is {days} days old (more than {FRESHNESS_DAYS}); "
            "removals wait for an administrator"
        )
    return reasons


def plan_differences(plan: SyncPlan, other: SyncPlan) -> list[str]:
    """How two plans of one drop differ (empty: they are the same plan): each table's
    adds, updates, reactivations and removals as sets of rows, the issues, the hold
    reasons and the counts."""
    found: list[str] = []

    def rows(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.sort(frame.columns, nulls_last=True) if frame.width else frame

    for attr in (
        "schools",
        "accounts",
        "links",
        "contacts",
        "classes",
        "org_memberships",
        "class_memberships",
        "guardianships",
    ):
        for part in ("adds", "updates", "reactivations", "removals"):
            a, b = getattr(getattr(plan, attr), part), getattr(getattr(other, attr), part)
            if a.columns != b.columns or not rows(a).equals(rows(b)):
                found.append(f"{attr}.{part}: {a.height} rows against {b.height}")
    if not rows(plan.issues).equals(rows(other.issues)):
        found.append(f"issues: {plan.issues.height} against {other.issues.height}")
    if plan.hold_reasons != other.hold_reasons:
        found.append(f"hold reasons: {plan.hold_reasons} against {other.hold_reasons}")
    if plan.counts() != other.counts() or plan.is_initial != other.is_initial:
        found.append(f"counts: {plan.counts()} against {other.counts()}")
    return found


def held_changes(plan: SyncPlan) -> dict[str, int]:
    """What a hold keeps back: every removal count."""
    full = plan.counts(include_removals=True)
    return {k: v for k, v in full.items() if k.endswith("_removed") and v}
