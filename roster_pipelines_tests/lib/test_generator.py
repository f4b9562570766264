"""The synthetic district generator: format, determinism, realism, problems, maintenance."""

from __future__ import annotations

from pathlib import Path

import phonenumbers
import polars as pl
import pytest
from email_validator import EmailNotValidError, validate_email

from roster_pipelines.lib.generator import COLUMNS, GenerationSummary, generate_district

PEOPLE = 1500


def read(folder: Path) -> dict[str, pl.DataFrame]:
    return {
        name.removesuffix(".csv"): pl.read_csv(folder / name, infer_schema=False)
        for name in COLUMNS
    }


def files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in COLUMNS}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    out = tmp_path_factory.mktemp("clean")
    return out, generate_district(out, people=PEOPLE, seed=11, problem_rate=0)


@pytest.fixture(scope="module")
def maintenance(
    tmp_path_factory: pytest.TempPathFactory, clean: tuple[Path, GenerationSummary]
) -> tuple[Path, GenerationSummary]:
    out = tmp_path_factory.mktemp("maintenance")
    summary = generate_district(
        out, people=PEOPLE, seed=12, problem_rate=0, maintenance_of=clean[0], churn=0.05
    )
    return out, summary


@pytest.fixture(scope="module")
def damaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    out = tmp_path_factory.mktemp("damaged")
    return out, generate_district(out, people=PEOPLE, seed=11, problem_rate=0.01)


def test_same_arguments_give_identical_bytes(tmp_path: Path, damaged) -> None:
    again = generate_district(tmp_path / "again", people=PEOPLE, seed=11, problem_rate=0.01)
    assert files(tmp_path / "again") == files(damaged[0])
    assert again.problems == damaged[1].problems
    other = generate_district(tmp_path / "other", people=PEOPLE, seed=99, problem_rate=0.01)
    assert other.students > 0
    for name in ("teachers.csv", "students.csv", "classes.csv", "enrollments.csv"):
        assert files(tmp_path / "other")[name] != files(damaged[0])[name]


def test_headers_encoding_and_line_ends(clean) -> None:
    for name, cols in COLUMNS.items():
        raw = (clean[0] / name).read_bytes()
        assert raw.split(b"\n", 1)[0].decode() == ",".join(cols)
        assert b"\r" not in raw
        raw.decode("utf-8")  # no BOM, valid UTF-8
        assert not raw.startswith(b"\xef\xbb\xbf")
    # Class names with commas are quoted, so the file still has four fields per row.
    classes = (clean[0] / "classes.csv").read_text()
    assert '"' in classes
    assert read(clean[0])["classes"]["class_name"].str.contains(",").any()


def test_clean_drop_is_referentially_whole(clean) -> None:
    folder, summary = clean
    d = read(folder)
    assert summary.problems == []
    schools, teachers, students = d["schools"], d["teachers"], d["students"]
    classes, enrollments = d["classes"], d["enrollments"]
    assert schools["school_id"].is_unique().all()
    assert classes["class_id"].is_unique().all()
    assert schools["school_name"].str.len_chars().max() <= 60
    assert classes["class_name"].str.len_chars().max() <= 255
    school_ids = schools["school_id"].implode()
    for df in (teachers, students, classes, enrollments):
        assert df["school_id"].is_in(school_ids).all()
    teacher_ids = set(teachers["teacher_id"])
    student_ids = set(students["student_id"])
    assert not teacher_ids & student_ids  # user_id in enrollments is never ambiguous
    assert set(classes["teacher_id"]) <= teacher_ids
    assert set(enrollments["class_id"]) <= set(classes["class_id"])
    assert set(enrollments["user_id"]) <= teacher_ids | student_ids
    # Every enrollment and class is at a school where its person is listed.
    members = pl.concat(
        [
            teachers.select("school_id", user_id="teacher_id"),
            students.select("school_id", user_id="student_id"),
        ]
    ).unique()
    enrolled = enrollments.join(classes.select("class_id", class_school="school_id"), on="class_id")
    assert (enrolled["school_id"] == enrolled["class_school"]).all()
    assert enrollments.join(members, on=["school_id", "user_id"], how="anti").is_empty()
    owners = classes.select("school_id", user_id="teacher_id")
    assert owners.join(members, on=["school_id", "user_id"], how="anti").is_empty()
    # Repeated rows agree; every teacher has an email; dob and grade are well formed.
    person = ["student_first_name", "student_last_name", "dob", "grade", "student_email"]
    agree = students.group_by("student_id").agg(pl.col(c).n_unique() for c in person)
    assert agree.select(pl.all_horizontal(pl.col(person) == 1)).to_series().all()
    assert teachers["teacher_email"].null_count() == 0
    assert students["dob"].str.to_date("%Y-%m-%d", strict=True).null_count() == 0
    assert set(students["grade"]) <= {"PK", "K", *(str(g) for g in range(1, 13))}
    # Counts in the summary match the files.
    assert summary.schools == schools.height
    assert summary.teachers == teachers["teacher_id"].n_unique()
    assert summary.students == len(student_ids)
    assert summary.student_rows == students.height
    assert summary.classes == classes.height
    assert summary.enrollments == enrollments.height


def test_contacts_are_valid_and_belong_to_one_person(clean) -> None:
    d = read(clean[0])
    t, s = d["teachers"], d["students"]
    people = pl.concat(
        [
            t.select(email="teacher_email", phone="teacher_mobile_phone", who="teacher_id"),
            s.select(email="student_email", phone="student_phone", who="student_id"),
            s.select(
                email="guardian_email",
                phone="guardian_phone",
                who=pl.concat_str(["guardian_first_name", "guardian_last_name"], separator=" "),
            ),
        ]
    ).unique()
    emails = people.filter(pl.col("email").is_not_null()).with_columns(
        pl.col("email").str.to_lowercase()
    )
    assert emails.group_by("email").agg(pl.col("who").n_unique())["who"].max() == 1
    phones = people.filter(pl.col("phone").is_not_null())
    digits = phones.with_columns(pl.col("phone").str.replace_all(r"\D", "").str.slice(-10))
    assert digits.group_by("phone").agg(pl.col("who").n_unique())["who"].max() == 1

    sample = phones["phone"].unique().sort().head(400).to_list()
    assert len({p[:1] for p in sample} | {len(p) for p in sample}) > 3  # mixed formats
    for phone in sample:
        assert phonenumbers.is_valid_number(phonenumbers.parse(phone, "US")), phone
    for email in emails["email"].unique().sort().head(300).to_list():
        try:
            validate_email(email, check_deliverability=False)
        except EmailNotValidError as exc:  # pragma: no cover - message for the failure
            pytest.fail(f"{email}: {exc}")


def test_district_looks_real(clean) -> None:
    d = read(clean[0])
    schools, teachers, students = d["schools"], d["teachers"], d["students"]
    classes, enrollments = d["classes"], d["enrollments"]
    names = schools["school_name"]
    for kind in ("Elementary School", "Middle School", "High School"):
        assert names.str.ends_with(kind).any()
    programs = schools.filter(~pl.col("school_name").str.ends_with(" School"))
    assert programs.height >= 1
    assert students["school_id"].is_in(programs["school_id"].implode()).any()
    assert classes["school_id"].is_in(programs["school_id"].implode()).any()

    # Siblings share a guardian (same name and contact on several students).
    guardians = students.filter(pl.col("guardian_first_name").is_not_null())
    shared = guardians.group_by(
        "guardian_first_name", "guardian_last_name", "guardian_email", "guardian_phone"
    ).agg(pl.col("student_id").n_unique())
    assert shared.filter(pl.col("student_id") >= 2).height >= 0.1 * shared.height
    # 0, 1 and 2 guardians; guardians with only an email and with only a phone.
    per_student = students.group_by("student_id").agg(
        pl.col("guardian_first_name").drop_nulls().n_unique().alias("n")
    )
    assert set(per_student["n"]) == {0, 1, 2}
    assert guardians.filter(pl.col("guardian_phone").is_null()).height > 0
    assert guardians.filter(pl.col("guardian_email").is_null()).height > 0
    # Teachers: about one per 8-14 students, a few at two schools, some co-teaching.
    ratio = students["student_id"].n_unique() / teachers["teacher_id"].n_unique()
    assert 8 <= ratio <= 14
    assert teachers.group_by("teacher_id").len()["len"].max() == 2
    assert enrollments["user_id"].is_in(teachers["teacher_id"].implode()).any()
    owned = classes.group_by("teacher_id").len()["len"]
    assert owned.min() >= 1 and owned.max() <= 3
    assert classes["class_name"].str.contains("Homeroom").any()
    # Elementary students have one homeroom; middle and high students four to six classes.
    kinds = schools.select(
        "school_id", kind=pl.col("school_name").str.extract(r"(Elementary|Middle|High) School$")
    )
    student_enr = enrollments.join(
        students.select(user_id="student_id").unique(), on="user_id", how="semi"
    ).join(kinds, on="school_id")
    counts = student_enr.group_by("kind", "user_id").len()
    homerooms = student_enr.join(
        classes.filter(pl.col("class_name").str.contains("Homeroom")), on="class_id", how="semi"
    )
    assert homerooms.group_by("user_id").len()["len"].max() == 1
    secondary = counts.filter(pl.col("kind").is_in(["Middle", "High"]))["len"]
    assert 4 <= secondary.mean() <= 6


def test_people_budget_is_about_right(clean) -> None:
    summary = clean[1]
    assert 0.9 * PEOPLE <= summary.people <= 1.1 * PEOPLE
    assert summary.guardians > 0 and summary.guardian_rows >= summary.guardians


def test_problems_are_injected_and_located(damaged) -> None:
    folder, summary = damaged
    kinds = summary.problem_counts()
    for kind in (
        "guardian_email_invalid",
        "guardian_phone_invalid",
        "dob_invalid",
        "student_row_disagrees",
        "teacher_email_invalid",
        "class_unknown_teacher",
        "enrollment_unknown_class",
    ):
        assert kinds.get(kind, 0) >= 1, kind
    d = read(folder)
    for p in summary.problems:
        row = d[p.file.removesuffix(".csv")].row(p.row - 2, named=True)  # header = row 1
        assert row[p.field] == p.value
        assert all(row[k] == v for k, v in p.ids.items())
        assert not p.carried
    assert {p.issue_code for p in summary.problems} >= {
        "EMAIL_INVALID",
        "PHONE_INVALID",
        "DOB_INVALID",
        "REPEATED_ROW_DISAGREES",
        "TEACHER_EMAIL_INVALID",
        "UNKNOWN_TEACHER",
        "UNKNOWN_CLASS",
    }


def test_maintenance_drop_churns_and_keeps_ids(clean, maintenance) -> None:
    before, after = read(clean[0]), read(maintenance[0])
    changes, ids = maintenance[1].changes, maintenance[1].change_ids
    assert maintenance[1].problems == []
    for key in (
        "students_left",
        "students_joined",
        "sibling_joins",
        "enrollments_moved",
        "classes_added",
        "classes_removed",
        "teachers_left",
        "teachers_joined",
        "guardian_email_changes",
        "student_phone_changes",
    ):
        assert changes[key] >= 1, key
    assert before["schools"].equals(after["schools"])

    old_students, new_students = (
        set(before["students"]["student_id"]),
        set(after["students"]["student_id"]),
    )
    assert set(ids["students_left"]) == old_students - new_students
    assert set(ids["students_joined"]) == new_students - old_students
    assert not set(after["enrollments"]["user_id"]) & set(ids["students_left"])
    # Continuing students keep their ids and names.
    cols = ["student_id", "student_first_name", "student_last_name", "dob", "grade"]
    kept = (
        before["students"]
        .select(cols)
        .unique()
        .join(after["students"].select(cols).unique(), on="student_id", suffix="_after")
    )
    assert kept.height == len(old_students & new_students)
    assert (kept["dob"] == kept["dob_after"]).all()
    # A sibling join shares an existing guardian.
    g = ["guardian_first_name", "guardian_last_name", "guardian_email", "guardian_phone"]
    old_guardians = before["students"].filter(pl.col("guardian_first_name").is_not_null())
    sibling = ids["sibling_joins"][0].split(" ")[0]
    joined = after["students"].filter(pl.col("student_id") == sibling).select(g)
    assert joined.join(old_guardians.select(g), on=g, how="semi").height >= 1
    # Classes: removed ones are gone with their enrollments, new ones have students.
    removed, added = set(ids["classes_removed"]), set(ids["classes_added"])
    assert not removed & set(after["classes"]["class_id"])
    assert not removed & set(after["enrollments"]["class_id"])
    assert added <= set(after["classes"]["class_id"])
    assert added & set(after["enrollments"]["class_id"])
    assert set(after["classes"]["class_id"]) - set(before["classes"]["class_id"]) == added
    # One teacher replaced: the joiner owns the leaver's classes.
    left, joined_t = ids["teachers_left"][0], ids["teachers_joined"][0]
    assert left not in set(after["teachers"]["teacher_id"])
    assert set(before["classes"].filter(pl.col("teacher_id") == left)["class_id"]) == set(
        after["classes"].filter(pl.col("teacher_id") == joined_t)["class_id"]
    )
    # A guardian's email changed on every row.
    old_email, new_email = ids["guardian_email_changes"][0].split(" -> ")
    assert old_email not in set(after["students"]["guardian_email"].drop_nulls())
    assert new_email in set(after["students"]["guardian_email"].drop_nulls())


def test_maintenance_is_deterministic_and_zero_churn_is_identity(
    tmp_path: Path, clean, maintenance
) -> None:
    generate_district(
        tmp_path / "again", people=PEOPLE, seed=12, problem_rate=0, maintenance_of=clean[0]
    )
    assert files(tmp_path / "again") == files(maintenance[0])
    same = generate_district(
        tmp_path / "same", people=PEOPLE, seed=12, problem_rate=0, maintenance_of=clean[0], churn=0
    )
    assert files(tmp_path / "same") == files(clean[0])
    assert all(v == 0 for v in same.changes.values())


def test_maintenance_carries_previous_problems(tmp_path: Path, damaged) -> None:
    summary = generate_district(
        tmp_path, people=PEOPLE, seed=13, problem_rate=0, maintenance_of=damaged[0]
    )
    assert summary.problems
    assert all(p.carried for p in summary.problems)
    assert len(summary.problems) <= len(damaged[1].problems)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        generate_district(tmp_path, people=10, seed=1)
    with pytest.raises(ValueError):
        generate_district(tmp_path, people=PEOPLE, seed=1, problem_rate=1.5)
