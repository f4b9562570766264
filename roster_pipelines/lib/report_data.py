"""What the sync report shows, read from the store: per-school counts and status, issues
attributed to schools, the district's recent drops (for the trend chart) and merge
candidates. Plain dataclasses; `report.py` renders them and `notify` mails them.

Decisions where the rules are silent (R16):
- School status: *Not connected* when the school is not (or no longer) in the SIS data;
  otherwise the drop's status decides for every school: *On hold* (held drop),
  *Paused* (the drop was rejected, or the last applied drop is older than the 90-day
  rule, so the sync is not keeping the school current), *Connected* (applied).
- An issue belongs to the school named on its source row (the `school_id` column of
  that row in the archived file); without the file, to the school or class its ids
  name; otherwise it is counted as district-wide.
- Merge candidates (R2) are the people whose email or phone already belongs to another
  account (CONTACT_IN_USE): the administrator can merge the two.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import Connection, Engine, exists, func, or_, select
from sqlalchemy.orm import aliased

from roster_pipelines.lib.background import in_background
from roster_pipelines.lib.canonical import CONTACT_EMAIL, CONTACT_PHONE
from roster_pipelines.lib.issues import CATALOGUE
from roster_pipelines.lib.plan import FRESHNESS_DAYS
from roster_pipelines.lib.store.models import (
    Class,
    MergeCandidate,
    Organisation,
    OrgMembership,
    SyncIssue,
    SyncRun,
)
from roster_pipelines.lib.store.state import find_district, utcnow

CONNECTED, ON_HOLD, PAUSED, NOT_CONNECTED = "Connected", "On hold", "Paused", "Not connected"
STATUS_LABELS = {
    "applied": "applied",
    "held": "on hold",
    "rejected": "rejected",
    "dry_run": "dry run (nothing applied)",
}
HISTORY_RUNS = 12
_SEVERITY_RANK = {"file_error": 0, "error": 1, "alert": 2}
SOURCE_FILES = ("schools.csv", "teachers.csv", "students.csv", "classes.csv", "enrollments.csv")


@dataclass
class SchoolRow:
    school_id: str
    name: str
    kind: str
    teachers: int = 0
    students: int = 0
    parents: int = 0
    classes_claimed: int = 0
    classes_unclaimed: int = 0
    errors: int = 0
    alerts: int = 0
    status: str = CONNECTED


@dataclass
class ReportData:
    district: str
    district_name: str
    drop: str
    status: str
    status_label: str
    is_initial: bool
    sync_run_id: int | None
    counts: dict[str, int]
    changes: dict[str, int]
    planned: dict[str, int] | None
    hold_reasons: list[str]
    schools: list[SchoolRow] = field(default_factory=list)
    district_wide: dict[str, int] = field(default_factory=lambda: {"errors": 0, "alerts": 0})
    issue_totals: dict[str, int] = field(default_factory=dict)
    issue_codes: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    merge_candidates: list[dict[str, Any]] = field(default_factory=list)
    # The district's pairs still open for review (this drop's and earlier drops').
    open_merge_candidates: int = 0
    generated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def issue_csv_name(code: str) -> str:
    return f"issues_{re.sub(r'[^A-Za-z0-9_-]', '_', code)}.csv"


def row_schools(drop_folder: Path | None, issues: pl.DataFrame | None = None) -> pl.DataFrame:
    """(file, row, school_id) of the data rows of the drop's files (row 2 = first data
    row); with `issues`, of the rows they name only (a hundred thousand issues at a
    million people: the join with every row took 0.2-0.35 s, with theirs 0.01 s)."""
    schema = {"file": pl.String, "row": pl.Int64, "school_id": pl.String}
    frames = []
    if drop_folder is not None:
        for name in SOURCE_FILES:
            path = Path(drop_folder) / name
            if not path.is_file():
                continue
            try:
                header = pl.read_csv(path, n_rows=0, infer_schema=False, encoding="utf8-lossy")
                column = next(
                    (c for c in header.columns if c.strip("\ufeff ") == "school_id"), None
                )
                if column is None:
                    continue
                # The one column only: the file is still read whole, but not kept.
                frame = pl.read_csv(
                    path, columns=[column], infer_schema=False, encoding="utf8-lossy"
                )
            except (pl.exceptions.PolarsError, OSError):
                continue
            frame = frame.select(
                row=pl.int_range(2, frame.height + 2, dtype=pl.Int64),
                school_id=pl.col(column).str.strip_chars(),
            )
            if issues is not None:
                named = issues.filter(pl.col("file") == name)["row"].drop_nulls()
                frame = frame.filter(pl.col("row").is_in(named.cast(pl.Int64).implode()))
            frames.append(frame.select(pl.lit(name).alias("file"), "row", "school_id"))
    return pl.concat(frames) if frames else pl.DataFrame(schema=schema)


def attribute_issues(
    issues: pl.DataFrame, rows: pl.DataFrame, class_schools: dict[str, str]
) -> pl.DataFrame:
    """`issues` with a `school_id` column (null: district-wide)."""
    if not issues.height:
        return issues.with_columns(school_id=pl.lit(None, dtype=pl.String))
    by_row = issues.with_columns(pl.col("row").cast(pl.Int64)).join(
        rows, on=["file", "row"], how="left"
    )

    # Else the issue's own ids: its school_id, or the school of its class_id.
    school = _id_value("school_id")
    class_school = (
        _id_value("class_id")
        .fill_null("")
        .replace_strict(class_schools, default=None, return_dtype=pl.String)
    )
    fallback = pl.when(school.is_not_null() & (school != "")).then(school).otherwise(class_school)
    return by_row.with_columns(school_id=pl.coalesce(pl.col("school_id"), fallback))


def _id_value(key: str) -> pl.Expr:
    """The value of the first `key=...` part of an issue's `ids` ("a=1; b=2"), column-wise
    (a report can list a hundred thousand issues)."""
    prefix = f"{key}="
    return (
        pl.col("ids")
        .fill_null("")
        .str.split("; ")
        .list.eval(pl.element().filter(pl.element().str.starts_with(prefix)).str.slice(len(prefix)))
        .list.first()
    )


def _district_last_applied(conn: Connection, district_id: int) -> datetime | None:
    return conn.execute(
        select(func.max(SyncRun.finished_at)).where(
            SyncRun.district_id == district_id, SyncRun.status.in_(("applied", "held"))
        )
    ).scalar()


def school_rows(
    conn: Connection, district_id: int, *, status: str, now: datetime | None = None
) -> list[SchoolRow]:
    """Every school/program of the district with its people, classes and status."""
    orgs = conn.execute(
        select(Organisation.id, Organisation.sis_id, Organisation.name, Organisation.kind)
        .where(Organisation.district_id == district_id)
        .order_by(Organisation.name, Organisation.sis_id)
    ).all()
    active = dict(
        conn.execute(
            select(Organisation.id, Organisation.active).where(
                Organisation.district_id == district_id
            )
        ).all()
    )
    # A person is counted once per school and role: their SIS membership, or a manual
    # one where no active SIS one is beside it (one of each at most). Rows counted this
    # way, not `count(DISTINCT account_id)`, whose sort took 0.6 s at a million people.
    sis_twin = aliased(OrgMembership)
    people = conn.execute(
        select(OrgMembership.org_id, OrgMembership.role, func.count())
        .join(Organisation, Organisation.id == OrgMembership.org_id)
        .where(
            Organisation.district_id == district_id,
            OrgMembership.active,
            or_(
                OrgMembership.source == "sis",
                ~exists().where(
                    sis_twin.org_id == OrgMembership.org_id,
                    sis_twin.account_id == OrgMembership.account_id,
                    sis_twin.role == OrgMembership.role,
                    sis_twin.source == "sis",
                    sis_twin.active,
                ),
            ),
        )
        .group_by(OrgMembership.org_id, OrgMembership.role)
    ).all()
    classes = conn.execute(
        select(Class.school_id, Class.claimed, func.count())
        .where(Class.district_id == district_id, Class.active)
        .group_by(Class.school_id, Class.claimed)
    ).all()
    stale = False
    last = _district_last_applied(conn, district_id)
    if last is not None:
        now = now or utcnow()
        if last.tzinfo is None:
            last = last.replace(tzinfo=now.tzinfo)
        stale = now - last > timedelta(days=FRESHNESS_DAYS)
    drop_status = {"held": ON_HOLD, "rejected": PAUSED}.get(status, PAUSED if stale else CONNECTED)
    rows: dict[int, SchoolRow] = {
        o.id: SchoolRow(
            school_id=o.sis_id,
            name=o.name,
            kind=o.kind,
            status=drop_status if active.get(o.id) else NOT_CONNECTED,
        )
        for o in orgs
    }
    for org_id, role, n in people:
        if org_id in rows and role in ("teacher", "student", "parent"):
            setattr(rows[org_id], f"{role}s", int(n))
    for org_id, claimed, n in classes:
        if org_id in rows:
            if claimed:
                rows[org_id].classes_claimed += int(n)
            else:
                rows[org_id].classes_unclaimed += int(n)
    return list(rows.values())


def _history(conn: Connection, district_id: int) -> list[dict[str, Any]]:
    runs = conn.execute(
        select(SyncRun.id, SyncRun.drop_id, SyncRun.status, SyncRun.finished_at, SyncRun.counts)
        .where(SyncRun.district_id == district_id, SyncRun.status.in_(("applied", "held")))
        .order_by(SyncRun.id.desc())
        .limit(HISTORY_RUNS)
    ).all()
    if not runs:
        return []
    issue_counts = conn.execute(
        select(SyncIssue.sync_run_id, SyncIssue.severity, func.count())
        .where(SyncIssue.sync_run_id.in_([r.id for r in runs]))
        .group_by(SyncIssue.sync_run_id, SyncIssue.severity)
    ).all()
    by_run: dict[int, dict[str, int]] = {}
    for run_id, severity, n in issue_counts:
        by_run.setdefault(run_id, {})[severity] = int(n)
    out = []
    for r in reversed(runs):
        counts = r.counts or {}
        out.append(
            {
                "drop": r.drop_id,
                "status": r.status,
                "finished_at": str(r.finished_at)[:16] if r.finished_at else "",
                **{
                    k: int(counts.get(k, 0)) for k in ("teachers", "students", "parents", "classes")
                },
                "errors": by_run.get(r.id, {}).get("error", 0),
                "alerts": by_run.get(r.id, {}).get("alert", 0),
            }
        )
    return out


def _merge_candidates(
    conn: Connection, district_id: int, drop: str, issues: pl.DataFrame
) -> list[dict[str, Any]]:
    """Identity resolution's candidates for this drop (contact conflicts and likely
    duplicates, R2), then contacts the drop could not add because another account
    already owns them (CONTACT_IN_USE)."""
    from roster_pipelines.lib.identity import drop_candidates

    out = [
        {
            "person": r["person_key"] or f"account {r['account_id']}",
            "contact": r["detail"] or "",
            "existing_account_id": r["other_account_id"],
            "where": (r["reason"] or "").replace("_", " "),
        }
        for r in drop_candidates(conn, district_id, drop).head(200).iter_rows(named=True)
    ]
    rows = issues.filter(pl.col("code") == "CONTACT_IN_USE").head(200)
    owners = _contact_owners(conn, rows["value"])
    for r in rows.iter_rows(named=True):
        value = (r["value"] or "").strip()
        owner = owners.get(value, owners.get(value.lower())) if value else None
        out.append(
            {
                "person": r["ids"] or "",
                "contact": value,
                "existing_account_id": owner,
                "where": f"{r['file']} row {r['row']}" if r["file"] else "",
            }
        )
    return out


def _contact_owners(conn: Connection, values: pl.Series) -> dict[str, int]:
    """The accounts owning these values (as written, or lower-cased) as an email or a
    phone: `identity.contact_owners`, one lookup on the (kind, value) index for all of
    them (one query per value by value alone scanned every contact point, 0.1 s each
    at a million people)."""
    from roster_pipelines.lib.identity import contact_owners

    written = values.drop_nulls().str.strip_chars()
    spellings = pl.concat([written, written.str.to_lowercase()]).unique()
    wanted = pl.DataFrame({"kind": [CONTACT_EMAIL, CONTACT_PHONE]}).join(
        spellings.filter(spellings != "").to_frame("value"), how="cross"
    )
    found = contact_owners(conn, wanted)
    return dict(zip(found["value"].to_list(), found["account_id"].to_list(), strict=True))


def build_issue_summary(data: ReportData, issues: pl.DataFrame) -> None:
    """Issue totals per severity and one entry per code (with its CSV's name)."""
    by_sev = issues.group_by("severity").len() if issues.height else None
    data.issue_totals = (
        dict(zip(by_sev["severity"].to_list(), by_sev["len"].to_list(), strict=True))
        if by_sev is not None
        else {}
    )
    if issues.height:
        by_code = (
            issues.group_by("code", "severity")
            .len()
            .with_columns(rank=pl.col("severity").replace_strict(_SEVERITY_RANK, default=9))
            .sort(["rank", "len", "code"], descending=[False, True, False])
        )
        for r in by_code.iter_rows(named=True):
            catalogued = CATALOGUE.get(r["code"])
            data.issue_codes.append(
                {
                    "code": r["code"],
                    "severity": r["severity"],
                    "count": int(r["len"]),
                    "description": catalogued.meaning if catalogued else "",
                    "remediation": catalogued.remediation if catalogued else "",
                    "csv": issue_csv_name(r["code"]),
                }
            )


def build_report_data(
    engine: Engine,
    *,
    district: str,
    drop: str,
    status: str,
    is_initial: bool,
    sync_run_id: int | None,
    counts: dict[str, int],
    changes: dict[str, int],
    planned: dict[str, int] | None,
    hold_reasons: list[str],
    issues: pl.DataFrame,
    drop_folder: Path | None = None,
    now: datetime | None = None,
) -> ReportData:
    data = ReportData(
        district=district,
        district_name=district,
        drop=drop,
        status=status,
        status_label=STATUS_LABELS.get(status, status),
        is_initial=is_initial,
        sync_run_id=sync_run_id,
        counts=dict(counts),
        changes=dict(changes),
        planned=dict(planned) if planned is not None else None,
        hold_reasons=list(hold_reasons),
        generated_at=(now or utcnow()).strftime("%Y-%m-%d %H:%M UTC"),
    )
    build_issue_summary(data, issues)
    # The drop's files are read again (to place row issues by school) while the
    # database counts the schools' people: about half a second at a million people.
    rows = in_background(row_schools, drop_folder if issues.height else None, issues)
    with engine.connect() as conn:
        district_id = find_district(conn, district)
        if district_id is None:
            return data
        data.district_name = (
            conn.execute(select(Organisation.name).where(Organisation.id == district_id)).scalar()
            or district
        )
        # The schools' people are counted on a connection of their own (Postgres) while
        # this one reads the rest: each keeps one of the server's cores busy.
        schools = (
            in_background(_school_rows_apart, engine, district_id, status=status, now=now)
            if engine.dialect.name == "postgresql"
            else None
        )
        class_schools = dict(
            conn.execute(
                select(Class.sis_class_id, Organisation.sis_id)
                .join(Organisation, Organisation.id == Class.school_id)
                .where(Class.district_id == district_id, Class.sis_class_id.is_not(None))
            ).all()
        )
        data.history = _history(conn, district_id)
        data.merge_candidates = _merge_candidates(conn, district_id, drop, issues)
        data.open_merge_candidates = int(
            conn.execute(
                select(func.count()).where(
                    MergeCandidate.district_id == district_id, MergeCandidate.status == "open"
                )
            ).scalar_one()
        )
        data.schools = (
            schools.result()
            if schools is not None
            else school_rows(conn, district_id, status=status, now=now)
        )
        attributed = attribute_issues(issues, rows.result(), class_schools)
        index = {s.school_id: s for s in data.schools}
        for r in attributed.group_by("school_id", "severity").len().iter_rows(named=True):
            target = index.get(r["school_id"]) if r["school_id"] is not None else None
            key = {"error": "errors", "file_error": "errors", "alert": "alerts"}.get(r["severity"])
            if key is None:
                continue
            if target is None:
                data.district_wide[key] += int(r["len"])
            else:
                setattr(target, key, getattr(target, key) + int(r["len"]))
    return data


def _school_rows_apart(engine: Engine, district_id: int, **kwargs: Any) -> list[SchoolRow]:
    with engine.connect() as conn:
        return school_rows(conn, district_id, **kwargs)
