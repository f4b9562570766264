"""Contracts: row and cross-file checks, cascades, contact conflicts and the invariants."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from roster_pipelines.lib import canonical, contracts
from roster_pipelines.lib.canonical import Roster
from roster_pipelines.lib.formats.remind_csv import parse
from roster_pipelines.lib.generator import generate_district
from roster_pipelines.lib.issues import CATALOGUE, format_ids
from roster_pipelines_tests.lib.test_remind_csv import base_rows, issue_tuples, rows_of, write_drop

Rows = dict[str, list[list[str]]]


def validated(folder: Path, rows: Rows | None = None) -> Roster:
    roster = contracts.validate(parse(write_drop(folder, rows)))
    assert_invariants(roster)
    return roster


def assert_invariants(r: Roster) -> None:
    """What every validated roster guarantees to the stages after it."""
    assert not r.rejected
    for name, frame in r.tables().items():
        assert frame.schema == canonical.TABLE_SCHEMAS[name], name
    people = r.people
    assert people["person_key"].null_count() == 0
    assert people["person_key"].is_unique().all()
    keys = set(people["person_key"])
    role_of = dict(zip(people["person_key"], people["role"], strict=True))
    teachers = {k for k, role in role_of.items() if role == "teacher"}
    schools = set(r.schools["school_id"])
    classes = set(r.classes["class_id"])

    assert r.schools["school_id"].is_unique().all()
    assert r.classes["class_id"].is_unique().all()
    assert set(r.school_memberships["person_key"]) <= keys
    assert set(r.school_memberships["school_id"]) <= schools
    assert set(r.contacts["person_key"]) <= keys
    assert set(r.enrollments["person_key"]) <= keys
    assert set(r.enrollments["class_id"]) <= classes
    assert set(r.classes["owner_person_key"]) <= teachers
    assert set(r.classes["school_id"]) <= schools
    assert {role_of[k] for k in r.guardianships["parent_person_key"]} <= {"parent"}
    assert {role_of[k] for k in r.guardianships["student_person_key"]} <= {"student"}
    assert not r.contacts.select("kind", "value").is_duplicated().any()
    assert not r.school_memberships.select("person_key", "school_id").is_duplicated().any()
    assert not r.enrollments.select("class_id", "person_key").is_duplicated().any()
    assert (
        not r.guardianships.select("parent_person_key", "student_person_key").is_duplicated().any()
    )
    with_email = set(r.contacts.filter(pl.col("kind") == "email")["person_key"])
    assert teachers <= with_email  # every teacher has an email
    parents = {k for k, role in role_of.items() if role == "parent"}
    assert parents <= set(r.contacts["person_key"])  # every parent has a contact point
    for table in r.tables().values():
        for column in ("person_key", "school_id", "class_id", "owner_person_key"):
            if column in table.columns:
                assert table[column].null_count() == 0
    assert set(r.issues["code"]) <= set(CATALOGUE)


def codes(roster: Roster) -> list[str]:
    return roster.issues["code"].to_list()


def message(roster: Roster, code: str, row: int | None = None, file: str | None = None) -> str:
    issues = roster.issues.filter(pl.col("code") == code)
    if row is not None:
        issues = issues.filter(pl.col("row") == row)
    if file is not None:
        issues = issues.filter(pl.col("file") == file)
    assert issues.height == 1, issues
    return issues["message"][0]


# --- the clean drop -----------------------------------------------------------------------


def test_rejected_roster_is_returned_unchanged(tmp_path: Path) -> None:
    parsed = parse(write_drop(tmp_path, omit=["students.csv"]))
    assert contracts.validate(parsed) is parsed


def test_clean_drop(tmp_path: Path) -> None:
    r = validated(tmp_path)
    assert r.issues.height == 0
    assert r.counts() == {
        "schools": 2,
        "teachers": 2,
        "students": 4,
        "parents": 3,
        "classes": 3,
        "enrollments": 6,
    }
    assert rows_of(r.people, "person_key", "first_name", "last_name", "src_row") == [
        ("teacher:T1", "Ann", "Lee", 2),
        ("teacher:T2", "Bob", "Ray", 3),
        ("student:ST1", "Cara", "Diaz", 2),
        ("student:ST2", "Eli", "Diaz", 3),
        ("student:ST3", "Finn", "Park", 4),
        ("student:ST4", "Ivy", "Chen", 6),
        ("parent:email:dana.diaz@gmail.com", "Dana", "Diaz", 2),  # shared by two siblings
        ("parent:phone:+16173332211", "Gus", "Park", 4),
        ("parent:email:hana.park@yahoo.com", "Hana", "Park", 5),
    ]
    assert rows_of(r.school_memberships, "person_key", "school_id") == [
        ("teacher:T1", "S1"),
        ("teacher:T2", "S1"),
        ("teacher:T2", "S2"),
        ("student:ST1", "S1"),
        ("student:ST2", "S1"),
        ("student:ST3", "S1"),
        ("student:ST4", "S2"),
        ("parent:email:dana.diaz@gmail.com", "S1"),
        ("parent:phone:+16173332211", "S1"),
        ("parent:email:hana.park@yahoo.com", "S1"),
    ]
    assert rows_of(r.contacts, "person_key", "kind", "value") == [
        ("teacher:T1", "email", "ann.lee@lincoln.k12.us"),
        ("teacher:T2", "email", "bob.ray@lincoln.k12.us"),
        ("teacher:T2", "phone", "+12122013344"),
        ("student:ST3", "email", "finn@students.org"),
        ("parent:email:dana.diaz@gmail.com", "email", "dana.diaz@gmail.com"),
        ("parent:email:hana.park@yahoo.com", "email", "hana.park@yahoo.com"),
        ("parent:phone:+16173332211", "phone", "+16173332211"),
    ]
    assert r.guardianships.height == 4
    assert r.classes["class_id"].to_list() == ["C1", "C2", "C3"]


# --- schools and classes ------------------------------------------------------------------


def test_duplicate_school_ids(tmp_path: Path) -> None:
    rows = base_rows()
    rows["schools.csv"] += [
        ["S1", "Lincoln Elementary"],  # 4: an identical repeat is ignored (an alert)
        ["S2", "Riverside Program"],  # 5: a different one is an error
    ]
    r = validated(tmp_path, rows)
    assert issue_tuples(r) == [
        ("ROW_REPEATED", "alert", "schools.csv", 4, "school_id=S1"),
        ("DUPLICATE_ID", "error", "schools.csv", 5, "school_id=S2"),
    ]
    assert message(r, "DUPLICATE_ID") == (
        "schools.csv row 5: school S2 is also on row 3 with a different name; row 3 was used"
    )
    assert rows_of(r.schools, "school_id", "name", "src_row") == [
        ("S1", "Lincoln Elementary", 2),
        ("S2", "Riverside YMCA After-School Program", 3),
    ]


def test_school_name_too_long_skips_the_school_and_what_needs_it(tmp_path: Path) -> None:
    rows = base_rows()
    rows["schools.csv"][0][1] = "L" * 60  # at the limit: fine
    rows["schools.csv"][1][1] = "R" * 61
    r = validated(tmp_path, rows)
    assert issue_tuples(r) == [
        ("SCHOOL_SKIPPED", "error", "classes.csv", 4, "class_id=C3; teacher_id=T2"),
        ("CLASS_SKIPPED", "error", "enrollments.csv", 6, "class_id=C3; user_id=ST4"),
        ("NAME_TOO_LONG", "error", "schools.csv", 3, "school_id=S2"),
        ("SCHOOL_SKIPPED", "error", "students.csv", 6, "student_id=ST4; school_id=S2"),
        ("SCHOOL_SKIPPED", "error", "teachers.csv", 4, "teacher_id=T2; school_id=S2"),
    ]
    assert message(r, "NAME_TOO_LONG") == (
        "schools.csv row 3: the name of school S2 is 61 characters long (at most 60)"
    )
    assert message(r, "SCHOOL_SKIPPED", 4, "classes.csv") == (
        "classes.csv row 4: school S2 was not applied (NAME_TOO_LONG on schools.csv row 3), "
        "so this class was skipped"
    )
    assert message(r, "SCHOOL_SKIPPED", 4, "teachers.csv") == (
        "teachers.csv row 4: school S2 was not applied (NAME_TOO_LONG on schools.csv row 3), "
        "so this school membership was skipped"
    )
    assert message(r, "CLASS_SKIPPED") == (
        "enrollments.csv row 6: class C3 was not applied (SCHOOL_SKIPPED on classes.csv row 4), "
        "so this enrollment was skipped"
    )
    assert r.schools["school_id"].to_list() == ["S1"]
    assert "student:ST4" not in r.people["person_key"].to_list()
    # T2 still teaches at S1.
    assert rows_of(r.school_memberships.filter(pl.col("person_key") == "teacher:T2"), "school_id") == [
        ("S1",)
    ]  # fmt: skip


def test_class_checks(tmp_path: Path) -> None:
    rows = base_rows()
    rows["classes.csv"] = [
        ["S1", "C1", "T1", "M" * 255],  # 2: at the limit
        ["S1", "C2", "T2", "A" * 256],  # 3: too long
        ["S1", "C1", "T1", "M" * 255],  # 4: identical repeat
        ["S1", "C1", "T2", "Math"],  # 5: same id, other data
        ["S9", "C4", "T1", "Gym"],  # 6: unknown school
        ["S1", "C5", "T99", "Band"],  # 7: unknown teacher
        ["S1", "C6", "T1", ""],  # 8: no name
    ]
    rows["enrollments.csv"] = [["S1", c, "ST1"] for c in ("C1", "C2", "C4", "C5", "C6")]
    r = validated(tmp_path, rows)
    assert issue_tuples(r) == [
        ("NAME_TOO_LONG", "error", "classes.csv", 3, "class_id=C2; teacher_id=T2"),
        ("ROW_REPEATED", "alert", "classes.csv", 4, "class_id=C1"),
        ("DUPLICATE_ID", "error", "classes.csv", 5, "class_id=C1; teacher_id=T2"),
        ("UNKNOWN_SCHOOL", "error", "classes.csv", 6, "class_id=C4; teacher_id=T1"),
        ("UNKNOWN_TEACHER", "error", "classes.csv", 7, "class_id=C5; teacher_id=T99"),
        ("NAME_MISSING", "error", "classes.csv", 8, "class_id=C6; teacher_id=T1"),
        ("CLASS_SKIPPED", "error", "enrollments.csv", 3, "class_id=C2; user_id=ST1"),
        ("CLASS_SKIPPED", "error", "enrollments.csv", 4, "class_id=C4; user_id=ST1"),
        ("CLASS_SKIPPED", "error", "enrollments.csv", 5, "class_id=C5; user_id=ST1"),
        ("CLASS_SKIPPED", "error", "enrollments.csv", 6, "class_id=C6; user_id=ST1"),
    ]
    assert message(r, "DUPLICATE_ID") == (
        "classes.csv row 5: class C1 is also on row 2 with a different name, owner_person_key; "
        "row 2 was used"
    )
    assert message(r, "UNKNOWN_SCHOOL") == "classes.csv row 6: school S9 is not in schools.csv"
    assert message(r, "UNKNOWN_TEACHER") == (
        "classes.csv row 7: teacher T99 of class C5 is not in teachers.csv, so the class was skipped"
    )
    assert message(r, "CLASS_SKIPPED", 5) == (
        "enrollments.csv row 5: class C5 was not applied (UNKNOWN_TEACHER on classes.csv row 7), "
        "so this enrollment was skipped"
    )
    assert rows_of(r.classes, "class_id", "src_row") == [("C1", 2)]
    assert rows_of(r.enrollments, "class_id", "person_key") == [("C1", "student:ST1")]


# --- people -------------------------------------------------------------------------------


def test_missing_ids_and_names(tmp_path: Path) -> None:
    rows = base_rows()
    rows["schools.csv"].append(["", "Nameless Id"])  # 4
    rows["teachers.csv"].append(["S1", "", "Al", "Bo", "al.bo@lincoln.k12.us", ""])  # 5
    rows["students.csv"][4][3] = ""  # ST4, row 6: no last name
    rows["students.csv"].append(["S1", "ST5", "", "", "", "", "", "", "", "", "", ""])  # 7
    rows["classes.csv"].append(["S1", "", "T1", "Chess"])  # 5
    rows["enrollments.csv"] += [["S1", "", "ST1"], ["S1", "C1", ""]]  # 8, 9
    r = validated(tmp_path, rows)
    assert issue_tuples(r) == [
        ("ID_MISSING", "error", "classes.csv", 5, "teacher_id=T1"),
        ("PERSON_SKIPPED", "error", "enrollments.csv", 6, "class_id=C3; user_id=ST4"),
        ("ID_MISSING", "error", "enrollments.csv", 8, "user_id=ST1"),
        ("ID_MISSING", "error", "enrollments.csv", 9, "class_id=C1"),
        ("ID_MISSING", "error", "schools.csv", 4, ""),
        ("NAME_MISSING", "error", "students.csv", 6, "student_id=ST4"),
        ("NAME_MISSING", "error", "students.csv", 7, "student_id=ST5"),
        ("ID_MISSING", "error", "teachers.csv", 5, "school_id=S1"),
    ]
    assert rows_of(r.issues, "file", "row", "field", "message") == [
        ("classes.csv", 5, "class_id", "classes.csv row 5: the class id is empty"),
        (
            "enrollments.csv",
            6,
            "user_id",
            "enrollments.csv row 6: student ST4 was not applied (NAME_MISSING on students.csv "
            "row 6), so this enrollment was skipped",
        ),
        ("enrollments.csv", 8, "class_id", "enrollments.csv row 8: the class id is empty"),
        ("enrollments.csv", 9, "user_id", "enrollments.csv row 9: the user id is empty"),
        ("schools.csv", 4, "school_id", "schools.csv row 4: the school id is empty"),
        ("students.csv", 6, "last_name", "students.csv row 6: student ST4 has no last_name"),
        (
            "students.csv",
            7,
            "first_name, last_name",
            "students.csv row 7: student ST5 has no first_name, last_name",
        ),
        ("teachers.csv", 5, "teacher_id", "teachers.csv row 5: the teacher id is empty"),
    ]
    assert r.counts()["students"] == 3


def test_teacher_without_valid_email_takes_classes_and_enrollments(tmp_path: Path) -> None:
    rows = base_rows()
    rows["teachers.csv"][1][4] = "bob.ray@"
    rows["teachers.csv"][2][4] = "bob.ray@"
    r = validated(tmp_path, rows)
    assert issue_tuples(r) == [
        ("PERSON_SKIPPED", "error", "classes.csv", 3, "class_id=C2; teacher_id=T2"),
        ("PERSON_SKIPPED", "error", "classes.csv", 4, "class_id=C3; teacher_id=T2"),
        ("CLASS_SKIPPED", "error", "enrollments.csv", 5, "class_id=C2; user_id=ST1"),
        ("CLASS_SKIPPED", "error", "enrollments.csv", 6, "class_id=C3; user_id=ST4"),
        ("CLASS_SKIPPED", "error", "enrollments.csv", 7, "class_id=C2; user_id=T1"),
        ("TEACHER_EMAIL_INVALID", "error", "teachers.csv", 3, "teacher_id=T2"),
        ("TEACHER_EMAIL_INVALID", "error", "teachers.csv", 4, "teacher_id=T2"),
    ]
    assert message(r, "PERSON_SKIPPED", 3) == (
        "classes.csv row 3: teacher T2 was not applied (TEACHER_EMAIL_INVALID on teachers.csv "
        "row 3), so this class was skipped"
    )
    assert message(r, "CLASS_SKIPPED", 5) == (
        "enrollments.csv row 5: class C2 was not applied (PERSON_SKIPPED on classes.csv row 3), "
        "so this enrollment was skipped"
    )
    assert r.counts() == {
        "schools": 2,
        "teachers": 1,
        "students": 4,
        "parents": 3,
        "classes": 1,
        "enrollments": 3,
    }


def test_an_errored_row_of_a_teacher_at_two_schools_only_skips_that_school(tmp_path: Path) -> None:
    rows = base_rows()
    rows["teachers.csv"][1][4] = ""  # T2 at S1, row 3: no email
    r = validated(tmp_path, rows)
    assert codes(r) == ["TEACHER_EMAIL_INVALID"]
    assert rows_of(r.people.filter(pl.col("person_key") == "teacher:T2"), "src_row") == [(4,)]
    assert rows_of(r.school_memberships.filter(pl.col("person_key") == "teacher:T2"), "school_id") == [
        ("S2",)
    ]  # fmt: skip
    assert r.classes.height == 3  # T2 still owns C2 (at S1) and C3


def test_unknown_school_class_and_user(tmp_path: Path) -> None:
    rows = base_rows()
    rows["teachers.csv"].append(["S9", "T3", "Cy", "Ho", "cy.ho@lincoln.k12.us", ""])  # 5
    rows["enrollments.csv"] += [
        ["S1", "C9", "ST1"],  # 8
        ["S1", "C1", "NOPE"],  # 9
        ["S1", "C1", "T3"],  # 10
        ["S1", "C1", "ST1"],  # 11: a repeated enrollment is ignored (an alert)
    ]
    r = validated(tmp_path, rows)
    assert issue_tuples(r) == [
        ("UNKNOWN_CLASS", "error", "enrollments.csv", 8, "class_id=C9; user_id=ST1"),
        ("UNKNOWN_USER", "error", "enrollments.csv", 9, "class_id=C1; user_id=NOPE"),
        ("PERSON_SKIPPED", "error", "enrollments.csv", 10, "class_id=C1; user_id=T3"),
        ("ROW_REPEATED", "alert", "enrollments.csv", 11, "class_id=C1; user_id=ST1"),
        ("UNKNOWN_SCHOOL", "error", "teachers.csv", 5, "teacher_id=T3; school_id=S9"),
    ]
    assert rows_of(r.issues, "field", "value", "message") == [
        ("class_id", "C9", "enrollments.csv row 8: C9 is not in classes.csv"),
        ("user_id", "NOPE", "enrollments.csv row 9: NOPE is not in teachers.csv or students.csv"),
        (
            "user_id",
            "T3",
            "enrollments.csv row 10: teacher T3 was not applied (UNKNOWN_SCHOOL on teachers.csv "
            "row 5), so this enrollment was skipped",
        ),
        (
            None,
            None,
            "enrollments.csv row 11: enrollment of ST1 in class C1 repeats row 2; "
            "the repeat was ignored",
        ),
        ("school_id", "S9", "teachers.csv row 5: school S9 is not in schools.csv"),
    ]
    assert r.enrollments.height == 6


def test_enrollment_at_a_school_the_person_is_not_listed_at(tmp_path: Path) -> None:
    rows = base_rows()
    rows["enrollments.csv"].append(["S1", "C1", "ST4"])  # 8: ST4 is at S2, C1 at S1
    r = validated(tmp_path, rows)
    assert issue_tuples(r) == [
        ("ENROLLMENT_SCHOOL_MISMATCH", "alert", "enrollments.csv", 8, "class_id=C1; user_id=ST4")
    ]
    assert message(r, "ENROLLMENT_SCHOOL_MISMATCH") == (
        "enrollments.csv row 8: student ST4 is enrolled in class C1 of school S1 "
        "but is not listed at that school"
    )
    assert ("C1", "student:ST4") in rows_of(r.enrollments, "class_id", "person_key")


def test_repeated_rows_that_disagree_use_the_first(tmp_path: Path) -> None:
    rows = base_rows()
    rows["students.csv"][3][2] = "Finnegan"  # ST3's second row (5)
    rows["teachers.csv"][2][4] = "bob@lincoln.k12.us"  # T2's second row (4)
    rows["students.csv"][1][8] = "Danna"  # Dana on ST2's row (3)
    rows["students.csv"][1][11] = "(650) 293-2864"  # ... with a phone: a parent's phones add up
    r = validated(tmp_path, rows)
    assert issue_tuples(r) == [
        ("REPEATED_ROW_DISAGREES", "alert", "students.csv", 3, "guardian=dana.diaz@gmail.com"),
        ("REPEATED_ROW_DISAGREES", "alert", "students.csv", 5, "student_id=ST3"),
        ("REPEATED_ROW_DISAGREES", "alert", "teachers.csv", 4, "teacher_id=T2"),
    ]
    assert rows_of(r.issues, "field", "message") == [
        (
            "first_name",
            "students.csv row 3: guardian dana.diaz@gmail.com differs from row 2 in first_name; "
            "row 2 was used",
        ),
        (
            "first_name",
            "students.csv row 5: student ST3 differs from row 4 in first_name; row 4 was used",
        ),
        ("email", "teachers.csv row 4: teacher T2 differs from row 3 in email; row 3 was used"),
    ]
    people = dict(zip(r.people["person_key"], r.people["first_name"], strict=True))
    assert people["student:ST3"] == "Finn"
    assert people["parent:email:dana.diaz@gmail.com"] == "Dana"
    contacts = set(rows_of(r.contacts, "person_key", "value"))
    assert ("teacher:T2", "bob.ray@lincoln.k12.us") in contacts
    assert ("teacher:T2", "bob@lincoln.k12.us") not in contacts
    assert ("parent:email:dana.diaz@gmail.com", "+16502932864") in contacts
    # The disagreeing rows still apply otherwise: Hana's link, T2 at S2.
    assert ("parent:email:hana.park@yahoo.com", "student:ST3") in rows_of(
        r.guardianships, "parent_person_key", "student_person_key"
    )
    assert ("teacher:T2", "S2") in rows_of(r.school_memberships, "person_key", "school_id")


# --- contact points -----------------------------------------------------------------------


def test_contact_conflicts_go_to_the_highest_role_then_the_first_id(tmp_path: Path) -> None:
    rows = base_rows()
    rows["students.csv"][0][6] = "ann.lee@lincoln.k12.us"  # ST1 (row 2) has T1's email
    rows["students.csv"][1][7] = "617-333-2211"  # ST2 (row 3) has Gus's phone
    rows["students.csv"][4][6] = "FINN@students.org"  # ST4 (row 6) has ST3's email
    r = validated(tmp_path, rows)
    assert issue_tuples(r) == [
        (
            "CONTACT_CONFLICT",
            "alert",
            "students.csv",
            2,
            format_ids({"student_id": "ST1", "kept_by": "teacher:T1"}),
        ),
        (
            "CONTACT_CONFLICT",
            "alert",
            "students.csv",
            3,
            "student_id=ST2; kept_by=parent:phone:+16173332211",
        ),
        ("CONTACT_CONFLICT", "alert", "students.csv", 6, "student_id=ST4; kept_by=student:ST3"),
    ]
    assert rows_of(r.issues, "field", "value") == [
        ("email", "ann.lee@lincoln.k12.us"),
        ("phone", "+16173332211"),
        ("email", "finn@students.org"),
    ]
    assert message(r, "CONTACT_CONFLICT", 2) == (
        "students.csv row 2: email ann.lee@lincoln.k12.us of student ST1 also belongs to "
        "teacher T1 (teachers.csv row 2), who keeps it; student ST1 was applied without it"
    )
    owners = dict(zip(r.contacts["value"], r.contacts["person_key"], strict=True))
    assert owners["ann.lee@lincoln.k12.us"] == "teacher:T1"
    assert owners["+16173332211"] == "parent:phone:+16173332211"
    assert owners["finn@students.org"] == "student:ST3"
    assert r.counts()["students"] == 4  # losers stay, without the contact


def test_a_parent_left_without_contact_points_gets_no_account(tmp_path: Path) -> None:
    rows = base_rows()
    # Hana (row 5) lists Gus's phone too; "parent:email:..." sorts before "parent:phone:...".
    rows["students.csv"][3][11] = "617 333 2211"
    r = validated(tmp_path, rows)
    assert issue_tuples(r) == [
        (
            "CONTACT_CONFLICT",
            "alert",
            "students.csv",
            4,
            "guardian=+16173332211; kept_by=parent:email:hana.park@yahoo.com",
        ),
        ("GUARDIAN_NO_CONTACT", "alert", "students.csv", 4, "guardian=+16173332211"),
    ]
    assert message(r, "GUARDIAN_NO_CONTACT") == (
        "students.csv row 4: guardian +16173332211 has no email or phone left (they belong to "
        "people ranked higher), so no parent account was made"
    )
    assert "parent:phone:+16173332211" not in r.people["person_key"].to_list()
    assert rows_of(r.guardianships.filter(pl.col("student_person_key") == "student:ST3"), "parent_person_key") == [
        ("parent:email:hana.park@yahoo.com",)
    ]  # fmt: skip


def test_a_teacher_whose_only_email_another_teacher_keeps_is_skipped(tmp_path: Path) -> None:
    rows = base_rows()
    # A0 (rows 5 and 6) shares T1's email; "A0" sorts before "T1", so A0 keeps it.
    rows["teachers.csv"] += [
        ["S1", "A0", "Abe", "Oz", "ann.lee@lincoln.k12.us", ""],
        ["S2", "A0", "Abe", "Oz", "ann.lee@lincoln.k12.us", ""],
    ]
    r = validated(tmp_path, rows)
    assert issue_tuples(r) == [
        ("PERSON_SKIPPED", "error", "classes.csv", 2, "class_id=C1; teacher_id=T1"),
        ("CLASS_SKIPPED", "error", "enrollments.csv", 2, "class_id=C1; user_id=ST1"),
        ("CLASS_SKIPPED", "error", "enrollments.csv", 3, "class_id=C1; user_id=ST2"),
        ("CLASS_SKIPPED", "error", "enrollments.csv", 4, "class_id=C1; user_id=ST3"),
        ("PERSON_SKIPPED", "error", "enrollments.csv", 7, "class_id=C2; user_id=T1"),
        ("TEACHER_EMAIL_TAKEN", "error", "teachers.csv", 2, "teacher_id=T1; kept_by=teacher:A0"),
    ]
    assert message(r, "TEACHER_EMAIL_TAKEN") == (
        "teachers.csv row 2: teacher T1's email ann.lee@lincoln.k12.us also belongs to teacher A0 "
        "(teachers.csv row 5), who keeps it; a teacher needs an email of their own, "
        "so teacher T1 was skipped"
    )
    assert message(r, "PERSON_SKIPPED", 7) == (
        "enrollments.csv row 7: teacher T1 was not applied (TEACHER_EMAIL_TAKEN on teachers.csv "
        "row 2), so this enrollment was skipped"
    )
    teachers = r.people.filter(pl.col("role") == "teacher")["person_key"].to_list()
    assert teachers == ["teacher:T2", "teacher:A0"]


def test_a_teacher_at_two_schools_losing_the_email_is_skipped_on_both_rows(tmp_path: Path) -> None:
    rows = base_rows()
    rows["teachers.csv"].append(["S1", "A0", "Abe", "Oz", "bob.ray@lincoln.k12.us", ""])  # 5
    r = validated(tmp_path, rows)
    assert issue_tuples(r, "TEACHER_EMAIL_TAKEN") == [
        ("TEACHER_EMAIL_TAKEN", "error", "teachers.csv", 3, "teacher_id=T2; kept_by=teacher:A0")
    ]
    # The other row of T2 (S2) is skipped because T2 is.
    assert issue_tuples(r, "PERSON_SKIPPED")[-1] == (
        "PERSON_SKIPPED",
        "error",
        "teachers.csv",
        4,
        "teacher_id=T2; school_id=S2",
    )
    assert message(r, "PERSON_SKIPPED", 4, "teachers.csv") == (
        "teachers.csv row 4: teacher T2 was not applied (TEACHER_EMAIL_TAKEN on teachers.csv "
        "row 3), so this school membership was skipped"
    )
    # T2's phone went with T2.
    assert r.contacts.filter(pl.col("kind") == "phone")["person_key"].to_list() == [
        "parent:phone:+16173332211"
    ]


# --- rules that do not depend on the format (hand-made rosters) ------------------------------


@pytest.fixture
def parsed(tmp_path: Path) -> Roster:
    return parse(write_drop(tmp_path))


def test_values_outside_the_allowed_sets(parsed: Roster) -> None:
    parsed.schools = parsed.schools.with_columns(
        org_type=pl.when(pl.col("school_id") == "S2").then(pl.lit("district")).otherwise("org_type")
    )
    parsed.contacts = parsed.contacts.with_columns(
        kind=pl.when(pl.col("source_column") == "student_email")
        .then(pl.lit("fax"))
        .otherwise("kind")
    )
    r = contracts.validate(parsed)
    assert_invariants(r)
    assert issue_tuples(r, "VALUE_INVALID") == [
        ("VALUE_INVALID", "error", "schools.csv", 3, "school_id=S2"),
        ("VALUE_INVALID", "error", "students.csv", 4, "student_id=ST3"),
        ("VALUE_INVALID", "error", "students.csv", 5, "student_id=ST3"),
    ]
    assert message(r, "VALUE_INVALID", 3) == (
        "schools.csv row 3: org_type 'district' is not an allowed value"
    )
    assert "student:ST3" not in r.people["person_key"].to_list()


def test_a_teacher_without_an_email_contact_is_skipped(parsed: Roster) -> None:
    parsed.contacts = parsed.contacts.filter(
        ~((pl.col("person_key") == "teacher:T1") & (pl.col("kind") == "email"))
    )
    r = contracts.validate(parsed)
    assert_invariants(r)
    assert issue_tuples(r, "TEACHER_EMAIL_INVALID") == [
        ("TEACHER_EMAIL_INVALID", "error", "teachers.csv", 2, "teacher_id=T1")
    ]
    assert message(r, "TEACHER_EMAIL_INVALID") == (
        "teachers.csv row 2: teacher T1 has no valid email; every teacher needs one, "
        "so the teacher was skipped"
    )
    assert "teacher:T1" not in r.people["person_key"].to_list()


def test_canonical_columns_are_required(parsed: Roster) -> None:
    parsed.people = parsed.people.drop("grade")
    with pytest.raises(ValueError, match=r"people lacks canonical columns \['grade'\]"):
        contracts.validate(parsed)


# --- everything at once -----------------------------------------------------------------------


def test_a_messy_drop_keeps_the_invariants(tmp_path: Path) -> None:
    rows = base_rows()
    rows["schools.csv"] += [["S2", "Other"], ["S3", "X" * 61], ["", "No id"]]
    rows["teachers.csv"] += [
        ["S1", "T3", "Cy", "Ho", "ann.lee@lincoln.k12.us", "555-1"],
        ["S3", "T4", "Di", "Wu", "di@x.org", ""],
        ["S1", "T5", "", "Po", "t5@x.org", ""],
        ["S9", "T6", "Ed", "Oh", "ed@x.org", "(415) 555-2671"],
        ["S1", "", "No", "Id", "noid@x.org", ""],
    ]
    rows["students.csv"] += [
        ["S1", "ST5", "Al", "Bo", "2015-13-01", "PK", "al@x.org", "(415) 555-2671", "Ma", "Bo", "ann.lee@lincoln.k12.us", ""],
        ["S1", "ST6", "Zed", "Zz", "", "", "", "", "Pa", "", "", "nope"],
        ["S7", "ST7", "Yo", "Yo", "", "", "", "", "", "", "", ""],
    ]  # fmt: skip
    rows["classes.csv"] += [
        ["S1", "C4", "T3", "Gym"],
        ["S3", "C5", "T4", "Art"],
        ["S1", "C6", "T99", "Band"],
        ["S1", "C1", "T2", "Other"],
    ]
    rows["enrollments.csv"] += [
        ["S1", "C4", "ST5"],
        ["S1", "C5", "ST5"],
        ["S1", "C6", "ST5"],
        ["S1", "C9", "ST5"],
        ["S1", "C1", "ZZ"],
        ["S1", "C1", "ST7"],
        ["S1", "C1", "T5"],
        ["S1", "C1", "ST5"],
    ]
    r = validated(tmp_path, rows)
    assert set(codes(r)) == {
        "DUPLICATE_ID",
        "NAME_TOO_LONG",
        "ID_MISSING",
        "NAME_MISSING",
        "TEACHER_EMAIL_TAKEN",
        "PHONE_INVALID",
        "SCHOOL_SKIPPED",
        "UNKNOWN_SCHOOL",
        "DOB_INVALID",
        "CONTACT_CONFLICT",
        "GUARDIAN_NO_CONTACT",
        "UNKNOWN_TEACHER",
        "PERSON_SKIPPED",
        "CLASS_SKIPPED",
        "UNKNOWN_CLASS",
        "UNKNOWN_USER",
    }
    # One issue per code and row for errors; every message names its file and row.
    errors = r.issues.filter(pl.col("severity") == "error")
    assert not errors.select("code", "file", "row").is_duplicated().any()
    for row in r.issues.iter_rows(named=True):
        assert row["message"].startswith(f"{row['file']} row {row['row']}: ")
        assert "\n" not in row["message"]
        assert row["remediation"] == CATALOGUE[row["code"]].remediation
    assert r.counts() == {
        "schools": 2,
        "teachers": 2,
        "students": 6,
        "parents": 3,  # Ma lost her only email to T1; Pa had no valid contact
        "classes": 3,
        "enrollments": 7,
    }


def test_a_generated_district_keeps_the_invariants_and_reports_every_planted_problem(
    tmp_path: Path,
) -> None:
    summary = generate_district(tmp_path, people=3000, seed=11, problem_rate=0.03)
    r = contracts.validate(parse(tmp_path))
    assert_invariants(r)
    found = set(rows_of(r.issues, "code", "file", "row"))
    planted = {(p.issue_code, p.file, p.row) for p in summary.problems}
    assert planted
    assert planted <= found


# --- person keys and the guardian limit -----------------------------------------------------


@pytest.mark.parametrize(
    ("key", "role", "sis_id"),
    [
        ("teacher:T1", "teacher", "T1"),
        ("student:ST:9", "student", "ST:9"),  # ids may hold colons
        ("parent:email:a@b.org", "parent", "a@b.org"),
        ("parent:phone:+14155552671", "parent", "+14155552671"),
        ("unknown:X1", "unknown", "X1"),
    ],
)
def test_person_keys_split_into_role_and_id(key: str, role: str, sis_id: str) -> None:
    from roster_pipelines.lib import canonical

    assert canonical.split_person_key(key) == (role, sis_id)
    frame = pl.DataFrame({"k": [key]}).select(
        r=canonical.key_role_expr(pl.col("k")), i=canonical.key_id_expr(pl.col("k"))
    )
    assert frame.row(0) == (role, sis_id)


def test_the_guardian_limit_is_the_plans() -> None:
    from roster_pipelines.lib import contracts, plan

    assert contracts.MAX_GUARDIANS == plan.MAX_GUARDIANS
