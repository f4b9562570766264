"""Ground truth for identity resolution (issue 4), on SQLite and Postgres.

A generated district (no data problems) meets an app database seeded with accounts
whose true owner is known:

- email: teachers, parents and students whose SIS email an account already has
  (some verified) → must be linked to that account;
- phone: parents whose SIS phone an account has, next to a personal email the SIS
  does not know → must be linked by the phone;
- conflict: parents whose SIS email is on account A and SIS phone on account B (a
  personal one) → linked to A, and A–B reported as a merge candidate;
- personal-email students: an account with a personal email, the same name and date
  of birth, a member of the student's school by hand → no link (nothing matches), a
  new account, and the pair reported as a merge candidate;
- decoys: same-name accounts in the school with another dob, same name and dob but
  outside the district, and unrelated accounts → never linked, never candidates.

Asserted: zero wrong links, every matchable person linked, and every expected merge
candidate reported with no false ones; precision and recall are printed.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from roster_pipelines.lib.contracts import validate
from roster_pipelines.lib.formats.remind_csv import parse
from roster_pipelines.lib.generator import generate_district
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.models import (
    Account,
    ContactPoint,
    MergeCandidate,
    Organisation,
    OrgMembership,
)
from roster_pipelines.lib.store.state import get_or_create_district
from roster_pipelines.lib.sync import resolve_drop

DISTRICT = "ground-truth-usd"


def _account(conn, first, last, dob=None, contacts=(), member_of=None) -> int:
    account_id = conn.execute(
        sa.insert(Account).values(first_name=first, last_name=last, dob=dob).returning(Account.id)
    ).scalar_one()
    for i, (kind, value) in enumerate(contacts):
        conn.execute(
            sa.insert(ContactPoint).values(
                account_id=account_id, kind=kind, value=value, verified=i % 2 == 0, source="user"
            )
        )
    if member_of is not None:
        conn.execute(
            sa.insert(OrgMembership).values(
                org_id=member_of, account_id=account_id, role="student", source="manual"
            )
        )
    return account_id


def test_ground_truth_links_and_candidates(tmp_path: Path, db_url: str, capsys) -> None:
    folder = tmp_path / "drop"
    generate_district(folder, people=1500, seed=11, problem_rate=0)
    roster = validate(parse(folder))
    people = roster.people.unique("person_key", keep="first").sort("person_key")
    emails = roster.contacts.filter(pl.col("kind") == "email").select("person_key", email="value")
    phones = roster.contacts.filter(pl.col("kind") == "phone").select("person_key", phone="value")
    people = people.join(emails, on="person_key", how="left").join(
        phones, on="person_key", how="left"
    )
    school_of = roster.school_memberships.unique("person_key", keep="first").select(
        "person_key", "school_id"
    )
    people = people.join(school_of, on="person_key", how="left").with_row_index("i")

    engine = make_engine(db_url)
    expected_link: dict[str, int] = {}
    expected_pairs: set[frozenset] = set()
    kinds: dict[str, int] = {}

    def note(kind: str) -> None:
        kinds[kind] = kinds.get(kind, 0) + 1

    with engine.begin() as conn:
        district_id = get_or_create_district(conn, DISTRICT)
        orgs = {}
        for row in roster.schools.iter_rows(named=True):
            orgs[row["school_id"]] = conn.execute(
                sa.insert(Organisation)
                .values(
                    kind=row["org_type"],
                    district_id=district_id,
                    sis_id=row["school_id"],
                    name=row["name"],
                )
                .returning(Organisation.id)
            ).scalar_one()
        for p in people.iter_rows(named=True):
            i, key, role = p["i"], p["person_key"], p["role"]
            first, last = p["first_name"], p["last_name"]
            if role == "teacher" and i % 3 == 0:
                expected_link[key] = _account(
                    conn, first.upper(), last, contacts=[("email", p["email"])]
                )
                note("email")
            elif role == "parent" and p["email"] and p["phone"] and i % 6 in (0, 1, 2):
                personal = ("email", f"parent{i}@personal.example")
                if i % 6 == 0:  # phone match; the personal email is unknown to the SIS
                    expected_link[key] = _account(
                        conn, first, last, contacts=[personal, ("phone", p["phone"])]
                    )
                    note("phone")
                elif i % 6 == 1:
                    expected_link[key] = _account(
                        conn, first, last, contacts=[("email", p["email"])]
                    )
                    note("email")
                else:  # conflict: the SIS email on one account, the phone on a personal one
                    a = _account(conn, first, last, contacts=[("email", p["email"])])
                    b = _account(conn, first, last, contacts=[personal, ("phone", p["phone"])])
                    expected_link[key] = a
                    expected_pairs.add(frozenset({("a", a), ("a", b)}))
                    note("conflict")
            elif role == "student" and p["dob"] is not None:
                school = orgs[p["school_id"]]
                personal = [("email", f"student{i}@personal.example")]
                if p["email"] and i % 10 == 3:
                    expected_link[key] = _account(
                        conn, first, last, p["dob"], [("email", p["email"])]
                    )
                    note("email")
                elif i % 8 == 0:  # personal-email duplicate inside the school
                    dup = _account(conn, first, last, p["dob"], personal, member_of=school)
                    expected_pairs.add(frozenset({("a", dup), ("p", key)}))
                    note("personal_email_duplicate")
                elif i % 8 == 1:  # decoy: same name, another dob, in the school
                    _account(
                        conn,
                        first,
                        last,
                        p["dob"] + timedelta(days=400),
                        personal,
                        member_of=school,
                    )
                    note("decoy")
                elif i % 8 == 2:  # decoy: same name and dob, outside the district
                    _account(conn, first, last, p["dob"], personal)
                    note("decoy")
        for n in range(300):  # unrelated accounts
            _account(
                conn,
                f"Other{n}",
                "Person",
                contacts=[("email", f"other{n}@elsewhere.example"), ("phone", f"+1415555{n:04d}")],
            )

    result = resolve_drop(engine, DISTRICT, roster, drop="gt1")
    ids = result.identities

    linked = ids.filter(pl.col("account_id").is_not_null())
    wrong = [
        (r["person_key"], r["account_id"], expected_link.get(r["person_key"]))
        for r in linked.iter_rows(named=True)
        if expected_link.get(r["person_key"]) != r["account_id"]
    ]
    missed = sorted(set(expected_link) - set(linked["person_key"].to_list()))

    def side(account_id, person_key):
        return ("a", account_id) if account_id is not None else ("p", person_key)

    reported = {
        frozenset(
            {
                side(r["account_id"], r["person_key"]),
                side(r["other_account_id"], r["other_person_key"]),
            }
        )
        for r in result.candidates.iter_rows(named=True)
    }
    true_positive = len(reported & expected_pairs)
    precision = true_positive / len(reported) if reported else 1.0
    recall = true_positive / len(expected_pairs) if expected_pairs else 1.0
    with capsys.disabled():
        print(
            f"\n[identity ground truth, {engine.dialect.name}] people {ids.height}, seeded {kinds}; "
            f"links expected {len(expected_link)}, made {linked.height}, wrong {len(wrong)}, "
            f"missed {len(missed)}; merge candidates expected {len(expected_pairs)}, reported "
            f"{len(reported)}: precision {precision:.3f}, recall {recall:.3f}; decisions {result.decisions}"
        )
    assert (
        kinds["conflict"]
        and kinds["personal_email_duplicate"]
        and kinds["phone"]
        and kinds["decoy"]
    )
    assert wrong == []
    assert missed == []
    assert precision == 1.0 and recall == 1.0, (
        reported - expected_pairs,
        expected_pairs - reported,
    )
    assert result.decisions["conflicts"] == kinds["conflict"]
    assert result.decisions["linked"] == len(expected_link)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(sa.func.count())
            .select_from(MergeCandidate)
            .where(MergeCandidate.last_drop_id == "gt1")
        ).scalar_one()
    assert stored == len(expected_pairs)
