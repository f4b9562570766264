"""Synthetic school districts as Remind CSV 1.0 drops (SYNC_RULES F1).

`generate_district` writes the five files of one drop into a folder: the
initial drop of a new district, or, with ``maintenance_of``, the next drop of
the district found in an earlier drop's folder (students leave and arrive,
classes come and go, a teacher is replaced, contacts change).

How it stays fast and reproducible:
- Everything is vectorised polars; Python loops only run over small fixed
  tables (grades, subjects, name pools) or a handful of retries.
- Every random draw comes from one counter-based generator (splitmix64 applied
  to ``seed``, a stream name and a row key), so a value depends only on what it
  is for, never on call order, and the same arguments give byte-identical files.
- Names come from a pool of a few thousand Faker names built once per call.

Deliberate data problems (``problem_rate``) are recorded in the summary with the
file, row (header = row 1), ids, and the issue code of `lib.issues.CATALOGUE` a
validator is expected to raise. The list is computed by scanning the written
tables, so problems carried over from the previous drop are listed too.
"""

from __future__ import annotations

import functools
import random
import unicodedata
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import reduce
from pathlib import Path

import polars as pl
from faker import Faker

from roster_pipelines.lib.formats import remind_csv

__all__ = ["COLUMNS", "GenerationSummary", "Problem", "generate_district"]

# The five files of a drop and their columns, in export order (SYNC_RULES F1).
# The five files of a drop and their columns, in export order: the format's own list.
COLUMNS: dict[str, tuple[str, ...]] = remind_csv.COLUMNS
_STUDENT_FIELDS = (
    "student_first_name",
    "student_last_name",
    "dob",
    "grade",
    "student_email",
    "student_phone",
)
_GUARDIAN_FIELDS = ("guardian_first_name", "guardian_last_name", "guardian_email", "guardian_phone")


@dataclass(frozen=True)
class Problem:
    """One deliberate data problem in a written drop."""

    kind: str  # e.g. "guardian_email_invalid"
    issue_code: str  # the code a validator should raise (lib.issues.CATALOGUE)
    file: str
    row: int  # 1-based, header = row 1
    ids: dict[str, str]
    field: str
    value: str | None
    carried: bool = False  # already in the drop named by maintenance_of


@dataclass
class GenerationSummary:
    """What `generate_district` wrote."""

    out_dir: Path
    district: str
    schools: int  # rows of schools.csv, special programs included
    programs: int
    teachers: int  # distinct teacher ids
    teacher_rows: int
    students: int  # distinct student ids
    student_rows: int
    guardians: int  # distinct (name, email, phone) guardians
    guardian_rows: int  # students.csv rows that name a guardian
    classes: int
    enrollments: int
    problems: list[Problem] = field(default_factory=list)
    # Maintenance drops only: counts and ids of what changed since the previous drop.
    changes: dict[str, int] = field(default_factory=dict)
    change_ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def people(self) -> int:
        return self.teachers + self.students + self.guardians

    def problem_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for p in self.problems:
            counts[p.kind] = counts.get(p.kind, 0) + 1
        return counts


# --------------------------------------------------------------------------- #
# Shape of a district
# --------------------------------------------------------------------------- #

# Fall of the school year the drops describe. Fixed, so output never depends on today.
_SCHOOL_YEAR = 2025
_GRADES = ("PK", "K", *(str(g) for g in range(1, 13)))
_GRADE_WEIGHTS = (0.5, *(1.0,) * 13)  # pre-K enrolment is about half a grade
_GRADE_LONG = ("Pre-K", "Kindergarten", *(f"Grade {g}" for g in range(1, 6)))
_LAST_ELEMENTARY_GRADE = 6  # index of grade 5
_LAST_MIDDLE_GRADE = 9  # index of grade 8
_KINDS = ("elementary", "middle", "high", "program")
_STUDENTS_PER_SCHOOL = (400, 600, 900)  # elementary, middle, high: ~1 school per 500 students
_SCHOOLS_PER_PROGRAM = 15

# Families: ~28% have 2+ children at the district's schools; most have 1-2 guardians listed.
_KIDS_PER_FAMILY = (0.72, 0.20, 0.065, 0.015)
_GUARDIANS_PER_FAMILY = (0.07, 0.58, 0.35)
_GUARDIAN_CONTACT = (0.55, 0.25, 0.20)  # email and phone, email only, phone only
_GUARDIANS_PER_STUDENT = sum(i * p for i, p in enumerate(_GUARDIANS_PER_FAMILY)) / sum(
    (i + 1) * p for i, p in enumerate(_KIDS_PER_FAMILY)
)
# Teachers are derived from class sizes below; this estimate only sizes the people budget.
_TEACHERS_PER_STUDENT = 0.1
_MIN_PEOPLE = 60

_HOMEROOM_SIZE = 25
_SECTION_SIZE = 26
_SECTIONS_PER_STUDENT = 5  # middle/high students take 4-6 classes
_INTERVENTION_SHARE = 0.12  # elementary students also in a small pull-out group
_INTERVENTION_SIZE = 12
_PROGRAM_SHARE = 0.06  # families whose K-8 children attend a special program
_PROGRAM_GROUP_SIZE = 18
_SECTIONS_PER_TEACHER = (0.55, 0.35, 0.10)  # 1, 2 or 3 classes
_GROUPS_PER_SPECIALIST = (0.6, 0.4)  # 1 or 2 classes
_MULTI_SCHOOL_SHARE = 0.03
_CO_TEACH_SHARE = 0.05
_FIRST_STUDENT_ID = 200001
_FIRST_TEACHER_ID = 100001
_FIRST_CLASS_ID = 100001

# Secondary subjects: (generic name, weight, middle school courses, high school courses).
_SUBJECTS: tuple[tuple[str, float, tuple[str, ...], tuple[str, ...]], ...] = (
    ("Math", 0.20, ("Math 6", "Math 7", "Math 8", "Pre-Algebra"),
     ("Algebra I", "Geometry", "Algebra II", "Pre-Calculus", "AP Calculus AB", "Statistics")),
    ("English", 0.19, ("ELA 6", "ELA 7", "ELA 8"),
     ("English 9", "English 10", "English 11", "English 12", "AP English Literature")),
    ("Science", 0.16, ("Science 6", "Life Science", "Physical Science", "Earth Science"),
     ("Biology", "Chemistry", "Physics", "Environmental Science", "AP Biology")),
    ("Social Studies", 0.14, ("World Geography", "Ancient Civilizations", "US History 8"),
     ("World History", "US History", "Government", "Economics", "AP US History")),
    ("World Languages", 0.10, ("Spanish I", "Exploratory French"),
     ("Spanish I", "Spanish II", "French I", "Mandarin I", "AP Spanish Language")),
    ("Arts", 0.08, ("Band", "Choir", "Art 7"),
     ("Art I", "Ceramics", "Concert Band", "Choir", "Theater Arts")),
    ("Physical Education", 0.07, ("PE 6", "PE 7", "PE 8", "Health"),
     ("Physical Education", "Health", "Weight Training")),
    ("Technology", 0.06, ("Coding & Robotics", "Digital Literacy"),
     ("Intro to Computer Science", "AP Computer Science A", "Engineering Design", "Culinary Arts")),
)  # fmt: skip
_SPECIALS = (
    "Reading Intervention",
    "Math Intervention",
    "ESL Support",
    "Gifted & Talented",
    "Speech & Language",
    "Music",
    "Art",
)
_ACTIVITIES = (
    "Homework Help",
    "Youth Basketball",
    "Robotics Club",
    "Arts & Crafts",
    "Swim Lessons",
    "Reading Buddies",
    "Soccer Skills",
    "Chess Club",
    "STEM Lab",
    "Drama Club",
)
_ELECTIVES = (
    "Intro to Data Science",
    "Creative Writing",
    "Yearbook",
    "Debate",
    "Financial Literacy",
    "Forensic Science",
    "Mythology, Legends & Folklore",
)
_SPANS = ("K-2", "3-5", "K-5")
_AGES = ("6-8", "9-11", "10-13")

_TOWNS = (
    "Riverside", "Maplewood", "Fairview", "Cedar Falls", "Lakeview", "Brookfield", "Oak Park",
    "Springdale", "Greenville", "Millbrook", "Clearwater", "Ashland", "Franklin Hills",
    "Westbury", "Pine Bluff", "Harborview", "Glen Ellyn", "Stonebridge", "Bayside", "Northfield",
)  # fmt: skip
_SCHOOL_BASES = (
    "Lincoln", "Washington", "Jefferson", "Roosevelt", "Franklin", "Adams", "Madison", "Kennedy",
    "Martin Luther King Jr.", "Rosa Parks", "Cesar Chavez", "Harriet Tubman",
    "George Washington Carver", "Thurgood Marshall", "Sally Ride", "Amelia Earhart", "John Muir",
    "Walt Whitman", "Mark Twain", "Sojourner Truth", "Frederick Douglass", "Susan B. Anthony",
    "Jackie Robinson", "Booker T. Washington", "Benjamin Banneker", "Oak Grove", "Cedar Ridge",
    "Maple Hill", "Willow Creek", "Pine View", "Sunset", "Hillcrest", "Lakeside", "Meadowbrook",
    "Riverbend", "Fox Hollow", "Eagle Crest", "Stone Bridge", "Mountain View", "Valley Vista",
    "Prairie Wind", "Bay Shore", "Highland Park", "Green Meadow", "Spring Valley", "Aspen",
    "Cottonwood", "Magnolia", "Sycamore", "Redwood", "Juniper", "Brookside", "Fairmont",
    "Westwood", "Eastside", "Northgate", "Southridge", "Parkview", "Harbor",
)  # fmt: skip
# Special programs: (name template, staff email domain template).
_PROGRAMS = (
    ("{town} YMCA After-School Program", "ymca{town}.org"),
    ("Boys & Girls Club of {town}", "bgc{town}.org"),
    ("{town} Parks & Rec Youth Sports", "{town}parks.org"),
    ("{base} Community Center Homework Club", "{base}cc.org"),
    ("Big Brothers Big Sisters of {town}", "bbbs{town}.org"),
    ("{town} Public Library Teen Program", "{town}library.org"),
)
_MAX_SCHOOL_NAME = 60

_PERSONAL_DOMAINS = (
    "gmail.com",
    "yahoo.com",
    "outlook.com",
    "hotmail.com",
    "icloud.com",
    "aol.com",
    "comcast.net",
)
_PERSONAL_DOMAIN_WEIGHTS = (0.42, 0.18, 0.10, 0.10, 0.10, 0.04, 0.06)
_MIXED_CASE_SHARE = 0.1

# Phones: real area codes and exchanges 200-999 (no N11, no 555), all valid for
# `phonenumbers`. Index i maps to phone (i * stride + offset) mod space: with a
# prime stride above the space size that is a bijection, so distinct indexes
# give distinct numbers.
_AREA_CODES = (
    201, 202, 203, 206, 212, 213, 214, 215, 216, 217, 224, 248, 267, 281, 301, 303, 305, 310,
    312, 313, 314, 317, 319, 330, 404, 408, 410, 412, 414, 415, 425, 469, 480, 503, 504, 510,
    512, 513, 515, 602, 608, 612, 614, 615, 617, 619, 626, 646, 650, 678, 702, 703, 704, 713,
    718, 720, 727, 732, 757, 763, 773, 781, 801, 804, 808, 816, 832, 847, 858, 860, 901, 904,
    916, 919, 925, 949, 952, 954, 971, 972, 978,
)  # fmt: skip
_EXCHANGES = tuple(e for e in range(200, 1000) if e % 100 != 11 and e != 555)
_PHONE_LINES = 10_000
_PHONE_SPACE = len(_AREA_CODES) * len(_EXCHANGES) * _PHONE_LINES
_PHONE_STRIDE = 2_654_435_761  # prime > _PHONE_SPACE
_PHONE_FORMATS = (0.3, 0.25, 0.1, 0.15, 0.1, 0.1)  # see _format_phone

_EMAIL_RE = r"^[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}$"
_NAME_POOL_SIZE = 3000
_ACCENTS_FROM = list("áàâäãåéèêëíìîïóòôöõúùûüñçýÿ")
_ACCENTS_TO = list("aaaaaaeeeeiiiiooooouuuuncyy")


# --------------------------------------------------------------------------- #
# Randomness: splitmix64 over (seed, stream, key), as polars expressions
# --------------------------------------------------------------------------- #

_U64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB


def _u64(value: int) -> pl.Expr:
    return pl.lit(value, dtype=pl.UInt64)


def _mix_int(z: int) -> int:
    z = ((z ^ (z >> 30)) * _MIX1) & _U64
    z = ((z ^ (z >> 27)) * _MIX2) & _U64
    return z ^ (z >> 31)


def _mix(z: pl.Expr) -> pl.Expr:
    # UInt64 arithmetic wraps in polars; `// 2**k` is a logical right shift.
    z = (z ^ (z // _u64(1 << 30))) * _u64(_MIX1)
    z = (z ^ (z // _u64(1 << 27))) * _u64(_MIX2)
    return z ^ (z // _u64(1 << 31))


class _Rng:
    """Counter-based random numbers: each draw is a pure function of (seed, stream, key)."""

    def __init__(self, seed: int) -> None:
        self._seed = _mix_int((seed * _GOLDEN) & _U64)

    def stream(self, name: str) -> int:
        return _mix_int(self._seed ^ _mix_int((zlib.crc32(name.encode()) + _GOLDEN) & _U64))

    def bits(self, name: str, key: pl.Expr) -> pl.Expr:
        return _mix(key.cast(pl.UInt64) * _u64(_GOLDEN) + _u64(self.stream(name)))

    def unif(self, name: str, key: pl.Expr) -> pl.Expr:
        """Uniform in [0, 1)."""
        return (self.bits(name, key) // _u64(1 << 11)).cast(pl.Float64) * (1.0 / (1 << 53))

    def below(self, name: str, n: int | pl.Expr, key: pl.Expr) -> pl.Expr:
        """Uniform integer in [0, n); n must be >= 1."""
        bound = _u64(n) if isinstance(n, int) else n.cast(pl.UInt64)
        return (self.bits(name, key) % bound).cast(pl.Int64)

    def pick(self, name: str, weights: Sequence[float], key: pl.Expr) -> pl.Expr:
        """Index drawn with the given (unnormalised) weights."""
        u = self.unif(name, key) * sum(weights)
        expr: pl.Expr = pl.lit(len(weights) - 1, dtype=pl.Int64)
        edge = sum(weights[:-1])
        for i in range(len(weights) - 2, -1, -1):  # build the when-chain from the top
            expr = pl.when(u >= edge).then(expr).otherwise(pl.lit(i, dtype=pl.Int64))
            edge -= weights[i]
        return expr

    def choose(self, df: pl.DataFrame, name: str, n: int) -> pl.DataFrame:
        """n distinct rows of df (fewer if df is shorter), in random order."""
        return (
            df.with_row_index("_choose")
            .sort(self.bits(name, pl.col("_choose")), maintain_order=True)
            .head(max(n, 0))
            .drop("_choose")
        )


def _gather(values: Sequence[object], index: pl.Expr) -> pl.Expr:
    return pl.lit(pl.Series(values)).gather(index)


def _slug(expr: pl.Expr) -> pl.Expr:
    """Lower-case ASCII letters of a name, for email local parts."""
    return (
        expr.str.to_lowercase()
        .str.replace_many(_ACCENTS_FROM, _ACCENTS_TO)
        .str.replace_all(r"[^a-z]", "")
    )


# --------------------------------------------------------------------------- #
# Contact points
# --------------------------------------------------------------------------- #


def _phone_index(i: pl.Expr, offset: int) -> pl.Expr:
    return (i.cast(pl.Int64) * _PHONE_STRIDE + offset) % _PHONE_SPACE


def _phone_digits(p: pl.Expr) -> pl.Expr:
    """10-digit national number of phone-space index p."""
    per_area = len(_EXCHANGES) * _PHONE_LINES
    area = _gather([str(a) for a in _AREA_CODES], p // per_area)
    exchange = _gather([str(e) for e in _EXCHANGES], (p // _PHONE_LINES) % len(_EXCHANGES))
    line = (p % _PHONE_LINES).cast(pl.String).str.zfill(4)
    return pl.concat_str([area, exchange, line])


def _format_phone(digits: pl.Expr, fmt: pl.Expr) -> pl.Expr:
    """Write 10 digits in one of the common US styles picked by fmt (0-5)."""
    a, e, n = digits.str.slice(0, 3), digits.str.slice(3, 3), digits.str.slice(6, 4)
    styles = [
        pl.concat_str([pl.lit("("), a, pl.lit(") "), e, pl.lit("-"), n]),
        pl.concat_str([a, e, n], separator="-"),
        pl.concat_str([a, e, n], separator="."),
        pl.concat_str([a, e, n]),
        pl.concat_str([pl.lit("+1"), a, e, n], separator=" "),
        pl.concat_str([pl.lit("1"), a, e, n], separator="-"),
    ]
    return reduce(
        lambda acc, i: pl.when(fmt == i).then(styles[i]).otherwise(acc),
        range(len(styles) - 1),
        styles[-1],
    )


def _digits10(expr: pl.Expr) -> pl.Expr:
    """The national number of a phone as written (last 10 digits), for matching."""
    return expr.str.replace_all(r"\D", "").str.slice(-10)


def _unique_phones(
    rng: _Rng, name: str, keys: pl.DataFrame, taken: pl.Series, tries: int = 8
) -> pl.DataFrame:
    """Random phone digits for each row of keys (column "key"), none in `taken` nor repeated.

    Used for maintenance drops, where the numbers already in use are only known
    as text. A collision is rare (the space has 600M+ numbers); each retry is
    one vectorised pass.
    """
    used = pl.DataFrame({"digits": taken}).unique()
    todo = keys.select("key")
    found: list[pl.DataFrame] = []
    for attempt in range(tries):
        if todo.height == 0:
            break
        cand = todo.with_columns(
            digits=_phone_digits(rng.below(f"{name}#{attempt}", _PHONE_SPACE, pl.col("key")))
        )
        cand = cand.join(used, on="digits", how="anti", maintain_order="left")
        cand = cand.unique(subset="digits", keep="first", maintain_order=True)
        found.append(cand)
        used = pl.concat([used, cand.select("digits")])
        todo = todo.join(cand, on="key", how="anti", maintain_order="left")
    out = pl.concat(found) if found else pl.DataFrame(schema={"key": pl.Int64, "digits": pl.String})
    return keys.select("key").join(out, on="key", how="left", maintain_order="left")


def _taken_suffixes(emails: pl.Series) -> pl.DataFrame:
    """For every email local part in use: its letters part and the next free numeric suffix."""
    local = emails.drop_nulls().str.to_lowercase().str.split("@").list.first()
    return (
        pl.DataFrame({"local": local})
        .select(
            base=pl.col("local").str.replace(r"\d+$", ""),
            suffix=pl.col("local").str.extract(r"(\d+)$").cast(pl.Int64).fill_null(0),
        )
        .group_by("base")
        .agg(next_suffix=pl.col("suffix").max() + 1)
        .sort("base")
    )


def _with_emails(
    df: pl.DataFrame,
    rng: _Rng,
    name: str,
    *,
    base: str,
    domain: str,
    out: str,
    taken: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Add `out` = base[n]@domain, unique: rows sharing a base get increasing numeric
    suffixes after any in `taken` (bases are letters only, so base+number never
    collides with another base). A few are written with capitals, as people type them.
    """
    rank = pl.int_range(pl.len()).over(base)
    df = df.with_columns(_n=rank, _row=pl.int_range(pl.len()))
    if taken is not None and taken.height:
        df = df.join(taken, left_on=base, right_on="base", how="left", maintain_order="left")
        df = df.with_columns(_n=pl.col("_n") + pl.col("next_suffix").fill_null(0)).drop(
            "next_suffix"
        )
    local = (
        pl.when(pl.col("_n") > 0)
        .then(pl.concat_str([pl.col(base), pl.col("_n").cast(pl.String)]))
        .otherwise(pl.col(base))
    )
    local = (
        pl.when(rng.unif(name + ":case", pl.col("_row")) < _MIXED_CASE_SHARE)
        .then(local.str.to_titlecase())
        .otherwise(local)
    )
    email = pl.when(pl.col(base).is_not_null() & pl.col(domain).is_not_null()).then(
        pl.concat_str([local, pl.lit("@"), pl.col(domain)])
    )
    return df.with_columns(email.alias(out)).drop("_n", "_row")


# --------------------------------------------------------------------------- #
# Names
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Names:
    first: pl.Series
    last: pl.Series

    @classmethod
    @functools.lru_cache(maxsize=8)  # Faker start-up dominates small drops; pools are read-only
    def build(cls, seed: int) -> _Names:
        """A few thousand Faker names (common ones repeat, so sampling keeps their frequency)."""
        firsts: list[str] = []
        lasts: list[str] = []
        for locale, share in (("en_US", 0.8), ("es_MX", 0.2)):
            fake = Faker(locale)
            fake.seed_instance(seed)
            n = int(_NAME_POOL_SIZE * share)
            firsts += [fake.first_name() for _ in range(n)]
            lasts += [fake.last_name() for _ in range(n)]
        pool = pl.DataFrame({"first": firsts, "last": lasts})
        first = pool["first"].filter(
            pool.select(_slug(pl.col("first")).str.len_chars() >= 2).to_series()
        )
        last = pool["last"].filter(
            pool.select(_slug(pl.col("last")).str.len_chars() >= 2).to_series()
        )
        return cls(first, last)

    def first_name(self, rng: _Rng, name: str, key: pl.Expr) -> pl.Expr:
        return _gather(self.first, rng.below(name, len(self.first), key))

    def last_name(self, rng: _Rng, name: str, key: pl.Expr) -> pl.Expr:
        return _gather(self.last, rng.below(name, len(self.last), key))


def _guardian_email_base(first: pl.Expr, last: pl.Expr, style: pl.Expr) -> pl.Expr:
    f, la = _slug(first), _slug(last)
    styles = [
        pl.concat_str([f, pl.lit("."), la]),
        pl.concat_str([f, la]),
        pl.concat_str([f, pl.lit("_"), la]),
        pl.concat_str([f.str.slice(0, 1), la]),
        pl.concat_str([la, f.str.slice(0, 1)]),
    ]
    return reduce(
        lambda acc, i: pl.when(style == i).then(styles[i]).otherwise(acc),
        range(len(styles) - 1),
        styles[-1],
    )


def _make_guardians(
    rng: _Rng, names: _Names, fam: pl.DataFrame, *, prefix: str, taken: pl.DataFrame | None
) -> pl.DataFrame:
    """Guardians of families: fam has fam, n_guardians, fam_last (a last name).

    Returns fam, gi (0 or 1), gidx (running index), guardian name, guardian_email
    (or null), contact (0 both, 1 email only, 2 phone only), phone_fmt.
    """
    g = (
        fam.filter(pl.col("n_guardians") > 0)
        .with_columns(gi=pl.int_ranges(0, pl.col("n_guardians")))
        .explode("gi")
        .with_row_index("gidx")
        .with_columns(pl.col("gidx").cast(pl.Int64))
    )
    key = pl.col("gidx")
    keeps_family_name = rng.unif(prefix + "g_keeps_last", key) < pl.when(pl.col("gi") == 0).then(
        0.9
    ).otherwise(0.65)
    g = g.with_columns(
        guardian_first_name=names.first_name(rng, prefix + "g_first", key),
        guardian_last_name=pl.when(keeps_family_name)
        .then(pl.col("fam_last"))
        .otherwise(names.last_name(rng, prefix + "g_last", key)),
        contact=rng.pick(prefix + "g_contact", _GUARDIAN_CONTACT, key),
        _style=rng.pick(prefix + "g_style", (0.35, 0.2, 0.1, 0.2, 0.15), key),
        _domain=_gather(
            _PERSONAL_DOMAINS, rng.pick(prefix + "g_domain", _PERSONAL_DOMAIN_WEIGHTS, key)
        ),
        phone_fmt=rng.pick(prefix + "g_phone_fmt", _PHONE_FORMATS, key),
    )
    g = g.with_columns(
        _base=pl.when(pl.col("contact") != 2).then(
            _guardian_email_base(
                pl.col("guardian_first_name"), pl.col("guardian_last_name"), pl.col("_style")
            )
        )
    )
    g = _with_emails(
        g,
        rng,
        prefix + "g_email",
        base="_base",
        domain="_domain",
        out="guardian_email",
        taken=taken,
    )
    return g.drop("_style", "_domain", "_base")


def _grade_dob(rng: _Rng, name: str, grade_idx: pl.Expr, key: pl.Expr) -> pl.Expr:
    """A birth date fitting the grade in fall _SCHOOL_YEAR (a few are a year older)."""
    kindergarten_year = _SCHOOL_YEAR - 6  # 5 years old on Sept 1 of the school year
    older = pl.when(rng.unif(name + ":older", key) < 0.03).then(1).otherwise(0)
    year = kindergarten_year - (grade_idx - 1) - older
    return (pl.date(year, 9, 2) + pl.duration(days=rng.below(name + ":day", 365, key))).dt.strftime(
        "%Y-%m-%d"
    )


# --------------------------------------------------------------------------- #
# The initial drop
# --------------------------------------------------------------------------- #


@dataclass
class _Drop:
    """The five files as all-string frames; students also carry `_ord`, the row's order
    among the rows of the same student (so a repeated row stays after the first)."""

    schools: pl.DataFrame
    teachers: pl.DataFrame
    students: pl.DataFrame
    classes: pl.DataFrame
    enrollments: pl.DataFrame

    def frames(self) -> dict[str, pl.DataFrame]:
        return dict(
            zip(
                COLUMNS,
                (self.schools, self.teachers, self.students, self.classes, self.enrollments),
                strict=True,
            )
        )


def _school_names(seed: int, names: _Names, n: int) -> list[str]:
    """n distinct name bases: well-known school names first, then surnames, then numbers."""
    bases = list(_SCHOOL_BASES)
    random.Random(seed).shuffle(bases)
    seen = set(bases)
    for last in names.last.to_list():
        if last not in seen and len(bases) < n:
            seen.add(last)
            bases.append(last)
    bases += [f"Public School {i}" for i in range(len(bases) + 1, n + 1)]
    return bases[:n]


def _ascii_slug(text: str) -> str:
    """Lower-case ASCII letters of a name, for domain names."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in plain.lower() if c.isalpha())


def _orgs(rng: _Rng, seed: int, names: _Names, n_students: int, town: str) -> pl.DataFrame:
    total = sum(_GRADE_WEIGHTS)
    share = (
        sum(_GRADE_WEIGHTS[: _LAST_ELEMENTARY_GRADE + 1]) / total,
        sum(_GRADE_WEIGHTS[_LAST_ELEMENTARY_GRADE + 1 : _LAST_MIDDLE_GRADE + 1]) / total,
        sum(_GRADE_WEIGHTS[_LAST_MIDDLE_GRADE + 1 :]) / total,
    )
    per_band = [
        max(1, round(n_students * s / size))
        for s, size in zip(share, _STUDENTS_PER_SCHOOL, strict=True)
    ]
    n_schools = sum(per_band)
    n_programs = max(1, round(n_schools / _SCHOOLS_PER_PROGRAM))
    bases = _school_names(seed, names, n_schools + n_programs)
    town_slug = _ascii_slug(town)
    district_domain = f"{town_slug}usd.k12.us"

    rows: list[tuple[str, str, int, str]] = []  # school_id, name, band, staff domain
    suffix = (" Elementary School", " Middle School", " High School")
    for band, count in enumerate(per_band):
        for _ in range(count):
            rows.append(
                (str(101 + len(rows)), bases[len(rows)] + suffix[band], band, district_domain)
            )
    for i in range(n_programs):
        template, domain = _PROGRAMS[i % len(_PROGRAMS)]
        base = bases[n_schools + i]
        base_slug = _ascii_slug(base)
        name = template.format(town=town, base=base)
        if i >= len(_PROGRAMS) and "{base}" not in template:  # more branches of the same program
            name = f"{name}, {base} Branch"
        if len(name) > _MAX_SCHOOL_NAME:
            name = f"{base} Youth Program"[:_MAX_SCHOOL_NAME]
        rows.append((f"PRG-{i + 1:02d}", name, 3, domain.format(town=town_slug, base=base_slug)))
    return pl.DataFrame(
        rows, schema=["school_id", "school_name", "band", "domain"], orient="row"
    ).with_columns(
        org=pl.int_range(pl.len(), dtype=pl.Int64),
        band=pl.col("band").cast(pl.Int64),
        weight=0.5 + rng.unif("school_size", pl.int_range(pl.len())),
    )


def _families_and_students(
    rng: _Rng, names: _Names, orgs: pl.DataFrame, n: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    schools = orgs.filter(pl.col("band") < 3)
    n_programs = orgs.height - schools.height
    fam = pl.DataFrame({"fam": pl.int_range(0, n, eager=True, dtype=pl.Int64)})
    key = pl.col("fam")
    fam = fam.with_columns(kids=rng.pick("kids", _KIDS_PER_FAMILY, key) + 1)
    fam = (
        fam.with_columns(start=pl.col("kids").cum_sum() - pl.col("kids"))
        .filter(pl.col("start") < n)
        .with_columns(kids=pl.min_horizontal("kids", n - pl.col("start")))
        .with_columns(
            n_guardians=rng.pick("guardians", _GUARDIANS_PER_FAMILY, key),
            fam_last=names.last_name(rng, "fam_last", key),
            hood=rng.unif("hood", key),  # siblings mostly go to the same neighbourhood schools
            in_program=rng.unif("program", key) < _PROGRAM_SHARE,
            program=rng.below("program_pick", n_programs, key) + schools.height,
        )
    )
    st = (
        fam.with_columns(k=pl.int_ranges(0, pl.col("kids")))
        .explode("k")
        .with_columns(sidx=pl.col("start") + pl.col("k"))
    )
    key = pl.col("sidx")
    st = st.with_columns(grade_idx=rng.pick("grade", _GRADE_WEIGHTS, key)).with_columns(
        band=pl.when(pl.col("grade_idx") <= _LAST_ELEMENTARY_GRADE)
        .then(0)
        .when(pl.col("grade_idx") <= _LAST_MIDDLE_GRADE)
        .then(1)
        .otherwise(2)
    )
    # School: walk the band's cumulative size weights; upper bounds are band + fraction.
    bounds: list[float] = []
    for band in range(3):
        w = schools.filter(pl.col("band") == band)["weight"].to_list()
        acc = 0.0
        for x in w:
            acc += x
            bounds.append(band + acc / sum(w))
        bounds[-1] = band + 1.0
    u = (
        pl.when(rng.unif("school_own", key) < 0.1)
        .then(rng.unif("school_u", key))
        .otherwise(pl.col("hood"))
    )
    st = st.with_columns(
        org=pl.lit(pl.Series(bounds))
        .search_sorted(pl.col("band") + u * 0.999_999, side="right")
        .cast(pl.Int64)
    )
    st = st.with_columns(
        student_first_name=names.first_name(rng, "s_first", key),
        student_last_name=pl.when(rng.unif("s_other_last", key) < 0.12)
        .then(names.last_name(rng, "s_last", key))
        .otherwise(pl.col("fam_last")),
        dob=_grade_dob(rng, "dob", pl.col("grade_idx"), key),
        grade=_gather(_GRADES, pl.col("grade_idx")),
        student_id=(
            rng.bits("student_id", key).rank("ordinal").cast(pl.Int64) + _FIRST_STUDENT_ID - 1
        ).cast(pl.String),
        program_org=pl.when(
            pl.col("in_program") & pl.col("grade_idx").is_between(1, _LAST_MIDDLE_GRADE)
        ).then(pl.col("program")),
    )
    return fam, st


def _student_contacts(
    rng: _Rng, st: pl.DataFrame, domain: str, phone_offset: int, phone_base: int
) -> pl.DataFrame:
    key = pl.col("sidx")
    email_share = (
        pl.when(pl.col("band") == 2)
        .then(0.75)
        .when(pl.col("band") == 1)
        .then(0.5)
        .when(pl.col("grade_idx") >= 4)
        .then(0.1)
        .otherwise(0.0)
    )
    phone_share = (
        pl.when(pl.col("band") == 2).then(0.45).when(pl.col("band") == 1).then(0.15).otherwise(0.0)
    )
    has_email = rng.unif("s_has_email", key) < email_share
    by_name = rng.unif("s_email_style", key) < 0.6  # else the district's s<id> addresses
    st = st.with_columns(
        _base=pl.when(has_email & by_name).then(
            pl.concat_str(
                [_slug(pl.col("student_first_name")), _slug(pl.col("student_last_name"))],
                separator=".",
            )
        ),
        _domain=pl.lit(domain),
    )
    st = _with_emails(st, rng, "s_email", base="_base", domain="_domain", out="student_email")
    return st.with_columns(
        student_email=pl.when(has_email & ~by_name)
        .then(pl.concat_str([pl.lit("s"), pl.col("student_id"), pl.lit("@" + domain)]))
        .otherwise(pl.col("student_email")),
        student_phone=pl.when(rng.unif("s_has_phone", key) < phone_share).then(
            _format_phone(
                _phone_digits(_phone_index(key + phone_base, phone_offset)),
                rng.pick("s_phone_fmt", _PHONE_FORMATS, key),
            )
        ),
    ).drop("_base", "_domain")


def _pools(orgs: pl.DataFrame, st: pl.DataFrame) -> pl.DataFrame:
    """Class pools: the classes a student picks from. pkind 0 = homeroom of one grade
    (elementary), 1 = pull-out groups (elementary), 2 = sections (middle/high),
    3 = activities (programs). n_classes is how many classes each pool needs."""
    per_school = st.group_by("org").len().rename({"len": "n"})
    per_grade = st.filter(pl.col("band") == 0).group_by("org", "grade_idx").len()
    per_program = (
        st.filter(pl.col("program_org").is_not_null())
        .group_by("program_org")
        .len()
        .rename({"program_org": "org", "len": "n"})
    )
    base = orgs.select("org", "band")
    homeroom = per_grade.select(
        "org", "grade_idx", pkind=pl.lit(0), n_classes=(pl.col("len") / _HOMEROOM_SIZE).ceil()
    )
    elementary = base.filter(pl.col("band") == 0).join(per_school, on="org", how="left")
    groups = elementary.select(
        "org",
        grade_idx=pl.lit(None, dtype=pl.Int64),
        pkind=pl.lit(1),
        n_classes=(pl.col("n").fill_null(0) * _INTERVENTION_SHARE / _INTERVENTION_SIZE).round(),
    )
    secondary = base.filter(pl.col("band").is_in([1, 2])).join(per_school, on="org", how="left")
    sections = secondary.select(
        "org",
        grade_idx=pl.lit(None, dtype=pl.Int64),
        pkind=pl.lit(2),
        n_classes=(pl.col("n").fill_null(0) * _SECTIONS_PER_STUDENT / _SECTION_SIZE).ceil(),
    )
    programs = base.filter(pl.col("band") == 3).join(per_program, on="org", how="left")
    activities = programs.select(
        "org",
        grade_idx=pl.lit(None, dtype=pl.Int64),
        pkind=pl.lit(3),
        n_classes=(pl.col("n").fill_null(0) / _PROGRAM_GROUP_SIZE).ceil(),
    )
    pools = pl.concat(
        [
            p.with_columns(
                pl.col("grade_idx").cast(pl.Int64),
                pl.col("pkind").cast(pl.Int64),
                n_classes=pl.max_horizontal(pl.col("n_classes").cast(pl.Int64), pl.lit(1)),
            )
            for p in (homeroom, groups, sections, activities)
        ]
    )
    pools = pools.join(orgs.select("org", "band"), on="org").sort("org", "pkind", "grade_idx")
    return pools.with_columns(pool=pl.int_range(pl.len(), dtype=pl.Int64))


def _staff_and_classes(
    rng: _Rng, names: _Names, orgs: pl.DataFrame, pools: pl.DataFrame, phone_offset: int
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Teachers, their (teacher, org) memberships, classes and co-teacher enrollments."""
    n_schools = orgs.filter(pl.col("band") < 3).height
    # Candidate teachers: one per class needed; each takes 1-3 classes until the pool is covered.
    slots = (
        pools.with_columns(c=pl.int_ranges(0, pl.col("n_classes")))
        .explode("c")
        .with_columns(slot=pl.int_range(pl.len()))
    )
    key = pl.col("slot")
    slots = slots.with_columns(
        k=pl.when(pl.col("pkind") == 0)
        .then(1)
        .when(pl.col("pkind") == 2)
        .then(rng.pick("sections_per_teacher", _SECTIONS_PER_TEACHER, key) + 1)
        .otherwise(rng.pick("groups_per_teacher", _GROUPS_PER_SPECIALIST, key) + 1)
    )
    slots = slots.with_columns(before=pl.col("k").cum_sum().over("pool") - pl.col("k")).filter(
        pl.col("before") < pl.col("n_classes")
    )
    teachers = slots.select(
        "org",
        "pool",
        "pkind",
        "band",
        "grade_idx",
        k=pl.min_horizontal("k", pl.col("n_classes") - pl.col("before")),
        tidx=pl.int_range(pl.len(), dtype=pl.Int64),
    )
    key = pl.col("tidx")
    teachers = teachers.with_columns(
        subject=pl.when(pl.col("pkind") == 2)
        .then(rng.pick("subject", [s[1] for s in _SUBJECTS], key))
        .when(pl.col("pkind") == 1)
        .then(rng.below("special", len(_SPECIALS), key)),
        period0=rng.below("period", 7, key),
        teacher_first_name=names.first_name(rng, "t_first", key),
        teacher_last_name=names.last_name(rng, "t_last", key),
        teacher_id=pl.concat_str(
            [
                pl.lit("T"),
                (
                    rng.bits("teacher_id", key).rank("ordinal").cast(pl.Int64)
                    + _FIRST_TEACHER_ID
                    - 1
                ).cast(pl.String),
            ]
        ),
    )
    # Itinerant teachers (music, languages, interventions...) also teach at a second school.
    eligible = (pl.col("pkind").is_in([1, 2])) & (pl.col("k") <= 2)
    multi = teachers.filter(eligible & (rng.unif("multi_school", key) < _MULTI_SCHOOL_SHARE))
    if multi.height == 0 and n_schools > 1:
        multi = rng.choose(teachers.filter(eligible), "multi_school_fallback", 1)
    if n_schools < 2:
        multi = multi.clear()
    targets = pools.filter(pl.col("pkind").is_in([1, 2])).select(
        second_org="org", second_pool="pool", second_pkind="pkind", second_band="band"
    )
    multi = multi.with_columns(
        second_org=(
            pl.col("org")
            + 1
            + rng.below("second_school", n_schools - 1 if n_schools > 1 else 1, key)
        )
        % n_schools
    ).join(targets, on="second_org", maintain_order="left")

    # Classes: j-th class of each teacher, plus one at the second school.
    own = teachers.with_columns(j=pl.int_ranges(0, pl.col("k"))).explode("j")
    extra = multi.select(
        "tidx",
        org="second_org",
        pool="second_pool",
        pkind="second_pkind",
        band="second_band",
        grade_idx=pl.lit(None, dtype=pl.Int64),
        j=pl.col("k"),
    )
    cols = ["tidx", "org", "pool", "pkind", "band", "grade_idx", "j"]
    classes = (
        pl.concat([own.select(cols), extra.select(cols)])
        .join(
            teachers.select(
                "tidx",
                "subject",
                "period0",
                "teacher_last_name",
                "teacher_id",
                tkind="pkind",
            ),
            on="tidx",
            maintain_order="left",
        )
        .sort("org", "pool", "tidx", "j")
        .with_columns(cidx=pl.int_range(pl.len(), dtype=pl.Int64))
    )
    classes = classes.with_columns(
        class_id=pl.concat_str([pl.lit("CL"), (pl.col("cidx") + _FIRST_CLASS_ID).cast(pl.String)]),
        pos=pl.int_range(pl.len()).over("pool"),
        m=pl.len().over("pool"),
        class_name=_class_name(rng),
    )

    # (teacher, org) memberships; co-teachers are other teachers of the class's org.
    members = (
        pl.concat([teachers.select("tidx", "org"), multi.select("tidx", org="second_org")])
        .sort("org", "tidx")
        .with_columns(opos=pl.int_range(pl.len()).over("org"), om=pl.len().over("org"))
    )
    cands = (
        classes.select("cidx", "org", "class_id", "tidx")
        .join(members, on=["tidx", "org"], maintain_order="left")
        .filter(pl.col("om") >= 2)
    )
    co = cands.filter(rng.unif("co_teach", pl.col("cidx")) < _CO_TEACH_SHARE)
    if co.height == 0:
        co = rng.choose(cands, "co_teach_fallback", 1)
    co = co.with_columns(
        opos=(pl.col("opos") + 1 + rng.below("co_teacher", pl.col("om") - 1, pl.col("cidx")))
        % pl.col("om")
    ).join(members.select("org", "opos", co_tidx="tidx"), on=["org", "opos"], maintain_order="left")
    co_enrollments = co.join(
        teachers.select(co_tidx="tidx", user_id="teacher_id"), on="co_tidx", maintain_order="left"
    ).select("org", "class_id", "user_id")

    # Contacts: programs' staff use the program's domain, everyone else the district's.
    teachers = teachers.join(orgs.select("org", "domain"), on="org", maintain_order="left")
    teachers = teachers.with_columns(
        _base=pl.concat_str(
            [_slug(pl.col("teacher_first_name")), _slug(pl.col("teacher_last_name"))],
            separator=".",
        )
    )
    teachers = _with_emails(
        teachers, rng, "t_email", base="_base", domain="domain", out="teacher_email"
    ).with_columns(
        teacher_mobile_phone=pl.when(rng.unif("t_has_phone", key) < 0.4).then(
            _format_phone(
                _phone_digits(_phone_index(key, phone_offset)),
                rng.pick("t_phone_fmt", _PHONE_FORMATS, key),
            )
        )
    )
    return teachers, members, classes, co_enrollments


def _class_name(rng: _Rng) -> pl.Expr:
    key = pl.col("cidx")
    period = (pl.col("period0") + pl.col("j")) % 7 + 1
    section = _gather(list("ABCDEF"), (pl.col("period0") + pl.col("j")) % 6)
    # Courses depend on subject and on the class's school (middle or high).
    middle = [c for s in _SUBJECTS for c in s[2]]
    high = [c for s in _SUBJECTS for c in s[3]]
    offsets_m = [sum(len(s[2]) for s in _SUBJECTS[:i]) for i in range(len(_SUBJECTS))]
    offsets_h = [sum(len(s[3]) for s in _SUBJECTS[:i]) for i in range(len(_SUBJECTS))]
    subject = pl.col("subject").fill_null(0)
    pick = rng.below("course", 1 << 20, key)
    course = (
        pl.when(pl.col("band") == 1)
        .then(
            _gather(
                middle,
                _gather(offsets_m, subject)
                + pick % _gather([len(s[2]) for s in _SUBJECTS], subject),
            )
        )
        .otherwise(
            _gather(
                high,
                _gather(offsets_h, subject)
                + pick % _gather([len(s[3]) for s in _SUBJECTS], subject),
            )
        )
    )
    special = _gather(_SPECIALS, pl.col("subject").fill_null(0) % len(_SPECIALS))
    generic = _gather([s[0] for s in _SUBJECTS], subject % len(_SUBJECTS))
    style = rng.unif("class_style", pl.col("tidx"))  # one naming habit per teacher
    span = _gather(_SPANS, rng.below("class_span", len(_SPANS), key))
    homeroom = pl.concat_str(
        [
            _gather(_GRADE_LONG, pl.col("grade_idx").fill_null(0)),
            pl.lit(" - Homeroom ("),
            pl.col("teacher_last_name"),
            pl.lit(")"),
        ]
    )
    group_label = (
        pl.when(pl.col("tkind") == 1)
        .then(special)
        .otherwise(pl.concat_str([generic, pl.lit(" Enrichment")]))
    )
    group = (
        pl.when(style < 0.5)
        .then(pl.concat_str([group_label, pl.lit(" - Grades "), span]))
        .otherwise(pl.concat_str([group_label, pl.lit(", Grades "), span]))
    )
    sec_label = pl.when(pl.col("tkind") == 2).then(course).otherwise(special)
    sec = (
        pl.when(style < 0.55)
        .then(pl.concat_str([sec_label, pl.lit(" - Period "), period.cast(pl.String)]))
        .when(style < 0.85)
        .then(pl.concat_str([sec_label, pl.lit(", Section "), section]))
        .otherwise(
            pl.concat_str([sec_label, pl.lit(" ("), pl.col("teacher_last_name"), pl.lit(")")])
        )
    )
    activity = _gather(_ACTIVITIES, rng.below("activity", len(_ACTIVITIES), key))
    ages = _gather(_AGES, rng.below("ages", len(_AGES), key))
    prog = (
        pl.when(style < 0.5)
        .then(pl.concat_str([activity, pl.lit(" - Grades "), span]))
        .otherwise(pl.concat_str([activity, pl.lit(", Ages "), ages]))
    )
    return (
        pl.when(pl.col("pkind") == 0)
        .then(homeroom)
        .when(pl.col("pkind") == 1)
        .then(group)
        .when(pl.col("pkind") == 2)
        .then(sec)
        .otherwise(prog)
    )


def _student_enrollments(
    rng: _Rng, st: pl.DataFrame, pools: pl.DataFrame, classes: pl.DataFrame
) -> pl.DataFrame:
    """(org, class_id, sidx): one homeroom (elementary), 4-6 sections (middle/high),
    sometimes a pull-out group, and one activity for program participants."""
    sizes = classes.group_by("pool").agg(m=pl.len()).sort("pool")
    p = pools.select("pool", "org", "pkind", "grade_idx").join(sizes, on="pool")
    key = pl.col("sidx")
    picks: list[pl.DataFrame] = []
    elem = st.filter(pl.col("band") == 0)
    hr = elem.join(p.filter(pl.col("pkind") == 0), on=["org", "grade_idx"], maintain_order="left")
    picks.append(hr.select("org", "pool", "sidx", pos=rng.below("homeroom", pl.col("m"), key)))
    grp = elem.filter(rng.unif("in_group", key) < _INTERVENTION_SHARE).join(
        p.filter(pl.col("pkind") == 1).drop("grade_idx"), on="org", maintain_order="left"
    )
    picks.append(grp.select("org", "pool", "sidx", pos=rng.below("group", pl.col("m"), key)))
    sec = (
        st.filter(pl.col("band") > 0)
        .join(p.filter(pl.col("pkind") == 2).drop("grade_idx"), on="org", maintain_order="left")
        .with_columns(
            k=pl.min_horizontal(rng.below("n_sections", 3, key) + 4, pl.col("m")),
            r=rng.below("section0", pl.col("m"), key),
        )
        # Spread the picks over the pool (classes are ordered by teacher, so by subject).
        .with_columns(step=pl.col("m") // pl.col("k"), j=pl.int_ranges(0, pl.col("k")))
        .explode("j")
    )
    picks.append(
        sec.select(
            "org", "pool", "sidx", pos=(pl.col("r") + pl.col("j") * pl.col("step")) % pl.col("m")
        )
    )
    prog = (
        st.filter(pl.col("program_org").is_not_null())
        .drop("org")
        .join(
            p.filter(pl.col("pkind") == 3).drop("grade_idx"),
            left_on="program_org",
            right_on="org",
            maintain_order="left",
        )
        .rename({"program_org": "org"})
    )
    picks.append(
        prog.select("org", "pool", "sidx", pos=rng.below("activity_pick", pl.col("m"), key))
    )
    return pl.concat(picks).join(
        classes.select("pool", "pos", "class_id"), on=["pool", "pos"], maintain_order="left"
    )


def _initial_drop(people: int, seed: int) -> tuple[_Drop, str]:
    rng = _Rng(seed)
    names = _Names.build(seed)
    town = _TOWNS[seed % len(_TOWNS)]
    n_students = round(people / (1 + _GUARDIANS_PER_STUDENT + _TEACHERS_PER_STUDENT))
    orgs = _orgs(rng, seed, names, n_students, town)
    district_domain = orgs["domain"][0]
    fam, st = _families_and_students(rng, names, orgs, n_students)
    # One phone-space index range per role, so no two people share a number.
    phone_offset = rng.stream("phone_offset") % _PHONE_SPACE
    st = _student_contacts(rng, st, "students." + district_domain, phone_offset, people)
    guardians = _make_guardians(rng, names, fam, prefix="", taken=None)
    guardians = guardians.with_columns(
        guardian_phone=pl.when(pl.col("contact") != 1).then(
            _format_phone(
                _phone_digits(_phone_index(pl.col("gidx") + 2 * people, phone_offset)),
                pl.col("phone_fmt"),
            )
        )
    )
    pools = _pools(orgs, st)
    teachers, members, classes, co = _staff_and_classes(rng, names, orgs, pools, phone_offset)
    enr = _student_enrollments(rng, st, pools, classes)

    ids = orgs.select("org", "school_id")
    student_rows = (
        pl.concat(
            [
                st.select("sidx", "org"),
                st.filter(pl.col("program_org").is_not_null()).select("sidx", org="program_org"),
            ]
        )
        .join(st.drop("org"), on="sidx", maintain_order="left")
        .join(
            guardians.select("fam", "gi", *_GUARDIAN_FIELDS),
            on="fam",
            how="left",
            maintain_order="left",
        )
        .join(ids, on="org", maintain_order="left")
        .with_columns(_ord=pl.col("gi").fill_null(0).cast(pl.Float64))
    )
    enrollments = pl.concat(
        [
            enr.join(
                st.select("sidx", user_id="student_id"), on="sidx", maintain_order="left"
            ).select("org", "class_id", "user_id"),
            co,
        ]
    ).join(ids, on="org", maintain_order="left")
    drop = _Drop(
        schools=orgs.select(COLUMNS["schools.csv"]),
        teachers=members.join(teachers.drop("org"), on="tidx", maintain_order="left")
        .join(ids, on="org", maintain_order="left")
        .select(COLUMNS["teachers.csv"]),
        students=student_rows.select(*COLUMNS["students.csv"], "_ord"),
        classes=classes.join(ids, on="org", maintain_order="left").select(COLUMNS["classes.csv"]),
        enrollments=enrollments.select(COLUMNS["enrollments.csv"]),
    )
    return drop, f"{town} Unified School District"


# --------------------------------------------------------------------------- #
# Order, problems, reading and writing
# --------------------------------------------------------------------------- #


def _ordered(drop: _Drop) -> _Drop:
    """Sort rows the way an SIS export lists them: by school, then id."""
    order = drop.schools.select("school_id", _school=pl.int_range(pl.len()))

    def by(df: pl.DataFrame, *cols: str) -> pl.DataFrame:
        return (
            df.join(order, on="school_id", how="left", maintain_order="left")
            .sort("_school", *cols, nulls_last=True, maintain_order=True)
            .drop("_school")
        )

    return _Drop(
        schools=drop.schools,
        teachers=by(drop.teachers, "teacher_id"),
        students=by(drop.students, "student_id", "_ord"),
        classes=by(drop.classes, "class_id"),
        enrollments=by(drop.enrollments, "class_id", "user_id"),
    )


def _number(ids: pl.Expr) -> pl.Expr:
    return ids.str.extract(r"(\d+)$").cast(pl.Int64)


def _next_ids(ids: pl.Series, n: int, *, prefix: str, skip: int = 1) -> pl.Series:
    """n new ids after the largest numbered id (prefix + number), like an SIS hands out."""
    top = pl.DataFrame({"id": ids}).select(_number(pl.col("id")).max()).item() or 0
    return pl.Series([f"{prefix}{top + skip + i}" for i in range(n)], dtype=pl.String)


def _is_valid_email(c: pl.Expr) -> pl.Expr:
    return c.str.contains(_EMAIL_RE)


def _is_valid_phone(c: pl.Expr) -> pl.Expr:
    d = c.str.replace_all(r"\D", "")
    ten = (d.str.len_chars() == 10) & d.str.contains(r"^[2-9]")
    eleven = (d.str.len_chars() == 11) & d.str.contains(r"^1[2-9]")
    return ten | eleven


def _inject_problems(rng: _Rng, drop: _Drop, rate: float) -> _Drop:
    """Damage about `rate` of each file's rows, one kind of problem per row, on rows
    chosen so that each problem stands alone (a guardian or student with a single row)."""
    if rate <= 0:
        return drop

    def count(rows: int, kinds: int) -> int:
        return max(1, round(rate * rows / kinds))

    st = drop.students.with_columns(_row=pl.int_range(pl.len()))
    n_st = count(st.height, 4)
    single_row = pl.len().over("student_id") == 1
    once = st.filter(single_row).with_columns(
        _email_once=pl.len().over("guardian_email") == 1,
        _phone_once=pl.len().over("guardian_phone") == 1,
    )
    has_both = pl.col("guardian_email").is_not_null() & pl.col("guardian_phone").is_not_null()
    bad_email = rng.choose(
        once.filter(has_both & pl.col("_email_once") & _is_valid_email(pl.col("guardian_email"))),
        "p_email",
        n_st,
    )
    used = bad_email.select("student_id")
    bad_phone = rng.choose(
        once.filter(has_both & pl.col("_phone_once")).join(used, on="student_id", how="anti"),
        "p_phone",
        n_st,
    )
    used = pl.concat([used, bad_phone.select("student_id")])
    bad_dob = rng.choose(once.join(used, on="student_id", how="anti"), "p_dob", n_st)
    used = pl.concat([used, bad_dob.select("student_id")])
    dup = rng.choose(once.join(used, on="student_id", how="anti"), "p_dup", n_st)

    key = pl.col("_row")
    local = pl.col("guardian_email").str.split("@").list.first()
    domain = pl.col("guardian_email").str.split("@").list.last()
    variant = rng.below("p_email_variant", 3, key)
    bad_email = bad_email.select(
        "_row",
        _email=pl.when(variant == 0)
        .then(pl.concat_str([local, pl.lit("@@"), domain]))
        .when(variant == 1)
        .then(pl.concat_str([local, pl.lit("@"), domain.str.split(".").list.first()]))
        .otherwise(pl.concat_str([local, pl.lit("."), domain])),
    )
    bad_phone = bad_phone.select(
        "_row", _phone=_gather(["123", "555-12", "12345", "201-55"], rng.below("p_ph", 4, key))
    )
    year = pl.col("dob").str.slice(0, 4)
    bad_dob = bad_dob.select(
        "_row",
        _dob=pl.concat_str(
            [year, _gather(["-13-45", "-02-30", "-00-12"], rng.below("p_dob_variant", 3, key))]
        ),
    )
    dup = dup.with_columns(
        dob=(
            pl.col("dob").str.to_date("%Y-%m-%d", strict=False)
            + pl.duration(days=rng.below("p_dup_days", 400, key) + 1)
        ).dt.strftime("%Y-%m-%d"),
        _ord=pl.col("_ord") + 0.5,
    )
    students = (
        st.join(bad_email, on="_row", how="left", maintain_order="left")
        .join(bad_phone, on="_row", how="left", maintain_order="left")
        .join(bad_dob, on="_row", how="left", maintain_order="left")
        .with_columns(
            guardian_email=pl.coalesce("_email", "guardian_email"),
            guardian_phone=pl.coalesce("_phone", "guardian_phone"),
            dob=pl.coalesce("_dob", "dob"),
        )
        .select(drop.students.columns)
    )
    students = pl.concat([students, dup.select(drop.students.columns)])

    # Teachers: an empty email on a single-row teacher.
    single = drop.teachers.filter(pl.len().over("teacher_id") == 1)
    no_email = rng.choose(
        single.filter(pl.col("teacher_email").is_not_null()),
        "p_teacher",
        count(drop.teachers.height, 1),
    ).select("teacher_id", _blank=pl.lit(True))
    teachers = (
        drop.teachers.join(no_email, on="teacher_id", how="left", maintain_order="left")
        .with_columns(teacher_email=pl.when(pl.col("_blank")).then(None).otherwise("teacher_email"))
        .drop("_blank")
    )

    # Classes: an owner that is not in teachers.csv.
    cl = drop.classes.with_columns(_row=pl.int_range(pl.len()))
    orphan = rng.choose(
        cl.join(no_email, on="teacher_id", how="anti"), "p_class", count(cl.height, 1)
    ).with_columns(_i=pl.int_range(pl.len()))
    unknown_teachers = _next_ids(
        drop.teachers["teacher_id"], orphan.height, prefix="T", skip=900_000
    )
    orphan = orphan.select("_row", _teacher=pl.lit(unknown_teachers).gather(pl.col("_i")))
    classes = (
        cl.join(orphan, on="_row", how="left", maintain_order="left")
        .with_columns(teacher_id=pl.coalesce("_teacher", "teacher_id"))
        .select(drop.classes.columns)
    )

    # Enrollments: a student enrolled in a class_id that is not in classes.csv.
    en = drop.enrollments.with_columns(_row=pl.int_range(pl.len()))
    skip_classes = pl.concat(
        [
            cl.join(orphan, on="_row", how="semi").select("class_id"),
            cl.join(no_email, on="teacher_id", how="semi").select("class_id"),
        ]
    )
    lost = rng.choose(
        en.join(drop.students.select(user_id="student_id").unique(), on="user_id", how="semi").join(
            skip_classes, on="class_id", how="anti"
        ),
        "p_enrollment",
        count(en.height, 1),
    ).with_columns(_i=pl.int_range(pl.len()))
    unknown_classes = _next_ids(drop.classes["class_id"], lost.height, prefix="CL", skip=900_000)
    lost = lost.select("_row", _class=pl.lit(unknown_classes).gather(pl.col("_i")))
    enrollments = (
        en.join(lost, on="_row", how="left", maintain_order="left")
        .with_columns(class_id=pl.coalesce("_class", "class_id"))
        .select(drop.enrollments.columns)
    )
    return _Drop(drop.schools, teachers, students, classes, enrollments)


def _scan_problems(drop: _Drop) -> list[Problem]:
    """Every problem of the kinds this generator injects, found in the (ordered) drop."""
    found: list[Problem] = []

    def add(
        df: pl.DataFrame,
        bad: pl.Expr,
        *,
        kind: str,
        code: str,
        file: str,
        fld: str,
        ids: Sequence[str],
    ) -> None:
        rows = df.with_columns(_line=pl.int_range(2, pl.len() + 2)).filter(bad.fill_null(False))
        for r in rows.select(list(dict.fromkeys(["_line", fld, *ids]))).iter_rows(named=True):
            found.append(
                Problem(
                    kind=kind,
                    issue_code=code,
                    file=file,
                    row=r["_line"],
                    ids={i: r[i] for i in ids},
                    field=fld,
                    value=r[fld],
                )
            )

    st, ids_st = drop.students, ("school_id", "student_id")
    for fld in ("guardian_email", "student_email"):
        bad = pl.col(fld).is_not_null() & ~_is_valid_email(pl.col(fld))
        add(
            st,
            bad,
            kind=f"{fld}_invalid",
            code="EMAIL_INVALID",
            file="students.csv",
            fld=fld,
            ids=ids_st,
        )
    for fld in ("guardian_phone", "student_phone"):
        bad = pl.col(fld).is_not_null() & ~_is_valid_phone(pl.col(fld))
        add(
            st,
            bad,
            kind=f"{fld}_invalid",
            code="PHONE_INVALID",
            file="students.csv",
            fld=fld,
            ids=ids_st,
        )
    dob_ok = (
        pl.col("dob").str.contains(r"^\d{4}-\d{2}-\d{2}$")
        & pl.col("dob").str.to_date("%Y-%m-%d", strict=False).is_not_null()
    )
    add(
        st,
        pl.col("dob").is_not_null() & ~dob_ok,
        kind="dob_invalid",
        code="DOB_INVALID",
        file="students.csv",
        fld="dob",
        ids=ids_st,
    )
    # A repeated row that disagrees with the student's first row (SYNC_RULES F1: first wins).
    differs = [pl.col(c).ne_missing(pl.col(c).first().over("student_id")) for c in _STUDENT_FIELDS]
    diff_st = st.with_columns(
        _field=reduce(
            lambda acc, i: pl.when(differs[i]).then(pl.lit(_STUDENT_FIELDS[i])).otherwise(acc),
            range(len(_STUDENT_FIELDS) - 1, -1, -1),
            pl.lit(None, dtype=pl.String),
        )
    )
    for fld in _STUDENT_FIELDS:
        add(
            diff_st,
            pl.col("_field") == fld,
            kind="student_row_disagrees",
            code="REPEATED_ROW_DISAGREES",
            file="students.csv",
            fld=fld,
            ids=ids_st,
        )
    found.sort(key=lambda p: p.row)

    te, ids_te = drop.teachers, ("school_id", "teacher_id")
    bad = pl.col("teacher_email").is_null() | ~_is_valid_email(pl.col("teacher_email"))
    add(
        te,
        bad,
        kind="teacher_email_invalid",
        code="TEACHER_EMAIL_INVALID",
        file="teachers.csv",
        fld="teacher_email",
        ids=ids_te,
    )
    bad = pl.col("teacher_mobile_phone").is_not_null() & ~_is_valid_phone(
        pl.col("teacher_mobile_phone")
    )
    add(
        te,
        bad,
        kind="teacher_phone_invalid",
        code="PHONE_INVALID",
        file="teachers.csv",
        fld="teacher_mobile_phone",
        ids=ids_te,
    )

    teacher_ids = te["teacher_id"].unique()
    add(
        drop.classes,
        ~pl.col("teacher_id").is_in(teacher_ids.implode()),
        kind="class_unknown_teacher",
        code="UNKNOWN_TEACHER",
        file="classes.csv",
        fld="teacher_id",
        ids=("school_id", "class_id", "teacher_id"),
    )
    en_ids = ("school_id", "class_id", "user_id")
    add(
        drop.enrollments,
        ~pl.col("class_id").is_in(drop.classes["class_id"].implode()),
        kind="enrollment_unknown_class",
        code="UNKNOWN_CLASS",
        file="enrollments.csv",
        fld="class_id",
        ids=en_ids,
    )
    people = pl.concat([teacher_ids, st["student_id"].unique()])
    add(
        drop.enrollments,
        ~pl.col("user_id").is_in(people.implode()),
        kind="enrollment_unknown_user",
        code="UNKNOWN_USER",
        file="enrollments.csv",
        fld="user_id",
        ids=en_ids,
    )
    return found


def _read_drop(folder: Path) -> _Drop:
    frames: list[pl.DataFrame] = []
    for name, cols in COLUMNS.items():
        df = pl.read_csv(folder / name, infer_schema=False, encoding="utf8-lossy")
        df = df.rename(lambda c: c.strip().lstrip("\ufeff"))
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{folder / name}: missing columns {missing}")
        frames.append(df.select(_blank_to_null(c) for c in cols))
    drop = _Drop(*frames)
    drop.students = drop.students.with_columns(_ord=pl.int_range(pl.len()).cast(pl.Float64))
    return drop


def _write_drop(drop: _Drop, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in drop.frames().items():
        # Empty values are nulls, written as nothing (an empty string would be written "").
        df.select(_blank_to_null(c) for c in COLUMNS[name]).write_csv(
            out_dir / name, line_terminator="\n"
        )


def _blank_to_null(column: str) -> pl.Expr:
    c = pl.col(column).cast(pl.String)
    return pl.when(c != "").then(c).alias(column)


def _org_kinds(schools: pl.DataFrame) -> pl.DataFrame:
    """school_id, kind (elementary | middle | high | program), from the school name."""
    name = pl.col("school_name")
    return schools.select(
        "school_id",
        kind=pl.when(name.str.ends_with("Elementary School"))
        .then(pl.lit("elementary"))
        .when(name.str.ends_with("Middle School"))
        .then(pl.lit("middle"))
        .when(name.str.ends_with("High School"))
        .then(pl.lit("high"))
        .otherwise(pl.lit("program")),
    )


# --------------------------------------------------------------------------- #
# Maintenance drops
# --------------------------------------------------------------------------- #


def _mode(values: pl.Series, default: str) -> str:
    values = values.drop_nulls()
    if values.is_empty():
        return default
    counts = (
        pl.DataFrame({"v": values}).group_by("v").len().sort(["len", "v"], descending=[True, False])
    )
    return str(counts["v"][0])


def _all_emails(drop: _Drop) -> pl.Series:
    return pl.concat(
        [
            drop.teachers["teacher_email"],
            drop.students["student_email"],
            drop.students["guardian_email"],
        ]
    )


def _all_phone_digits(drop: _Drop) -> pl.Series:
    phones = pl.concat(
        [
            drop.teachers["teacher_mobile_phone"],
            drop.students["student_phone"],
            drop.students["guardian_phone"],
        ]
    ).drop_nulls()
    return pl.DataFrame({"p": phones}).select(_digits10(pl.col("p"))).to_series()


def _maintenance_drop(
    rng: _Rng, names: _Names, prev: _Drop, churn: float
) -> tuple[_Drop, dict[str, int], dict[str, list[str]]]:
    d = _Drop(prev.schools, prev.teachers, prev.students, prev.classes, prev.enrollments)
    kinds = _org_kinds(d.schools)
    secondary = kinds.filter(pl.col("kind").is_in(["middle", "high"])).select("school_id")
    schools_only = kinds.filter(pl.col("kind") != "program").select("school_id")
    district_domain = _mode(
        d.teachers.join(schools_only, on="school_id", how="semi")["teacher_email"]
        .str.to_lowercase()
        .str.split("@")
        .list.last(),
        "district.k12.us",
    )
    student_domain = _mode(
        d.students["student_email"].str.to_lowercase().str.split("@").list.last(),
        "students." + district_domain,
    )
    n_students = d.students["student_id"].n_unique()
    n_teachers = d.teachers["teacher_id"].n_unique()

    def scaled(base: float, share: float, minimum: int) -> int:
        return max(minimum, round(base * churn * share)) if churn > 0 else 0

    n_leave = scaled(n_students, 0.4, 1)
    n_join = scaled(n_students, 0.4, 1)
    n_move = scaled(n_students, 0.2, 1)
    n_contact = scaled(n_students, 0.02, 1)
    n_class = scaled(d.classes.height, 0.05, 2)
    n_turnover = scaled(n_teachers, 0.1, 1)
    changes: dict[str, int] = {}
    change_ids: dict[str, list[str]] = {}

    # 1. A teacher leaves; a new teacher joins the same school and takes over the classes.
    valid_teachers = d.teachers.filter(pl.col("teacher_email").is_not_null()).select("teacher_id")
    leaving = rng.choose(
        d.teachers.filter(pl.len().over("teacher_id") == 1)
        .join(schools_only, on="school_id", how="semi")
        .join(valid_teachers, on="teacher_id", how="semi")
        .join(d.classes.select("teacher_id").unique(), on="teacher_id", how="semi"),
        "m_teacher_leave",
        n_turnover,
    ).with_columns(i=pl.int_range(pl.len(), dtype=pl.Int64))
    new_ids = _next_ids(d.teachers["teacher_id"], leaving.height, prefix="T")
    joining = leaving.select(
        "i",
        "school_id",
        old_id="teacher_id",
        old_last="teacher_last_name",
        teacher_id=pl.lit(new_ids).gather(pl.col("i")),
        teacher_first_name=names.first_name(rng, "m_t_first", pl.col("i")),
        teacher_last_name=names.last_name(rng, "m_t_last", pl.col("i")),
        _domain=pl.lit(district_domain),
    ).with_columns(
        _base=pl.concat_str(
            [_slug(pl.col("teacher_first_name")), _slug(pl.col("teacher_last_name"))],
            separator=".",
        )
    )
    joining = _with_emails(
        joining,
        rng,
        "m_t_email",
        base="_base",
        domain="_domain",
        out="teacher_email",
        taken=_taken_suffixes(_all_emails(d)),
    )
    phones = _unique_phones(rng, "m_t_phone", joining.select(key="i"), _all_phone_digits(d))
    joining = joining.with_columns(_digits=phones["digits"]).with_columns(
        teacher_mobile_phone=pl.when(rng.unif("m_t_has_phone", pl.col("i")) < 0.4).then(
            _format_phone(pl.col("_digits"), rng.pick("m_t_fmt", _PHONE_FORMATS, pl.col("i")))
        )
    )
    leaver_ids = leaving.select("teacher_id")
    swap = joining.select("old_id", "old_last", new_id="teacher_id", new_last="teacher_last_name")
    old_tag = pl.concat_str([pl.lit("("), pl.col("old_last"), pl.lit(")")])
    new_tag = pl.concat_str([pl.lit("("), pl.col("new_last"), pl.lit(")")])
    classes = d.classes.join(
        swap, left_on="teacher_id", right_on="old_id", how="left", maintain_order="left"
    )
    reassigned = classes.filter(pl.col("new_id").is_not_null())["class_id"]
    d.classes = classes.with_columns(
        teacher_id=pl.coalesce("new_id", "teacher_id"),
        # Homerooms are named after their teacher; the SIS renames them.
        class_name=pl.when(
            pl.col("new_id").is_not_null() & pl.col("class_name").str.ends_with(old_tag)
        )
        .then(
            pl.concat_str(
                [
                    pl.col("class_name").str.head(
                        pl.col("class_name").str.len_chars() - old_tag.str.len_chars()
                    ),
                    new_tag,
                ]
            )
        )
        .otherwise("class_name"),
    ).select(COLUMNS["classes.csv"])
    d.teachers = pl.concat(
        [
            d.teachers.join(leaver_ids, on="teacher_id", how="anti", maintain_order="left"),
            joining.select(COLUMNS["teachers.csv"]),
        ]
    )
    d.enrollments = d.enrollments.join(
        leaver_ids.rename({"teacher_id": "user_id"}),
        on="user_id",
        how="anti",
        maintain_order="left",
    )
    changes["teachers_left"] = leaving.height
    changes["teachers_joined"] = joining.height
    changes["classes_reassigned"] = reassigned.len()
    change_ids["teachers_left"] = leaving["teacher_id"].to_list()
    change_ids["teachers_joined"] = joining["teacher_id"].to_list()
    change_ids["classes_reassigned"] = reassigned.to_list()

    # Classes taught in sections (middle/high, not homerooms) by a listed teacher.
    def sections(classes: pl.DataFrame) -> pl.DataFrame:
        return (
            classes.join(secondary, on="school_id", how="semi", maintain_order="left")
            .join(
                d.teachers.select("teacher_id").unique(),
                on="teacher_id",
                how="semi",
                maintain_order="left",
            )
            .filter(~pl.col("class_name").str.contains("Homeroom"))
        )

    # 2. Classes removed, with their enrollments.
    removed = rng.choose(
        sections(d.classes).filter(~pl.col("class_id").is_in(reassigned.implode())),
        "m_class_remove",
        n_class,
    ).select("class_id")
    before = d.enrollments.height
    d.classes = d.classes.join(removed, on="class_id", how="anti", maintain_order="left")
    d.enrollments = d.enrollments.join(removed, on="class_id", how="anti", maintain_order="left")
    changes["classes_removed"] = removed.height
    changes["enrollments_removed_with_classes"] = before - d.enrollments.height
    change_ids["classes_removed"] = removed["class_id"].to_list()

    # 3. Students leave: their rows and enrollments go.
    leavers = rng.choose(
        d.students.select("student_id").unique(maintain_order=True), "m_leave", n_leave
    )
    d.students = d.students.join(leavers, on="student_id", how="anti", maintain_order="left")
    d.enrollments = d.enrollments.join(
        leavers.rename({"student_id": "user_id"}), on="user_id", how="anti", maintain_order="left"
    )
    changes["students_left"] = leavers.height
    change_ids["students_left"] = leavers["student_id"].to_list()
    student_ids = d.students.select(user_id="student_id").unique(maintain_order=True)

    # 4. New classes (electives) with a teacher who already teaches at that school.
    new_classes = (
        rng.choose(sections(d.classes), "m_class_new", n_class)
        .select("school_id", "teacher_id")
        .with_columns(i=pl.int_range(pl.len(), dtype=pl.Int64))
    )
    new_class_ids = _next_ids(d.classes["class_id"], new_classes.height, prefix="CL")
    new_classes = new_classes.with_columns(
        class_id=pl.lit(new_class_ids).gather(pl.col("i")),
        class_name=pl.concat_str(
            [
                _gather(_ELECTIVES, rng.below("m_elective", len(_ELECTIVES), pl.col("i"))),
                pl.lit(" - Period "),
                (rng.below("m_elective_period", 7, pl.col("i")) + 1).cast(pl.String),
            ]
        ),
        size=rng.below("m_elective_size", 12, pl.col("i")) + 12,
    )
    roster = d.students.select("school_id", user_id="student_id").unique(maintain_order=True)
    joined_new = (
        new_classes.join(roster, on="school_id", maintain_order="left")
        .with_columns(_k=rng.bits("m_elective_roster", pl.int_range(pl.len())))
        .filter(pl.col("_k").rank("ordinal").over("class_id") <= pl.col("size"))
        .select(COLUMNS["enrollments.csv"])
    )
    d.classes = pl.concat([d.classes, new_classes.select(COLUMNS["classes.csv"])])
    d.enrollments = pl.concat([d.enrollments, joined_new])
    changes["classes_added"] = new_classes.height
    changes["enrollments_in_new_classes"] = joined_new.height
    change_ids["classes_added"] = new_classes["class_id"].to_list()

    # 5. Students move from one section to another at the same school.
    targets = (
        sections(d.classes)
        .join(new_classes.select("class_id"), on="class_id", how="anti", maintain_order="left")
        .sort("school_id", "class_id")
        .with_columns(pos=pl.int_range(pl.len()).over("school_id"), m=pl.len().over("school_id"))
        .select("school_id", "class_id", "pos", "m")
    )
    en = d.enrollments.with_columns(_row=pl.int_range(pl.len()))
    moves = (
        en.join(student_ids, on="user_id", how="semi", maintain_order="left")
        .join(targets, on=["school_id", "class_id"], maintain_order="left")
        .filter(pl.col("m") >= 2)
        .sort(rng.bits("m_move", pl.col("_row")), maintain_order=True)
        .unique(subset="user_id", keep="first", maintain_order=True)
        .head(3 * n_move)
        .with_columns(
            pos=(pl.col("pos") + 1 + rng.below("m_move_to", pl.col("m") - 1, pl.col("_row")))
            % pl.col("m")
        )
        .join(
            targets.select("school_id", "pos", to="class_id"),
            on=["school_id", "pos"],
            maintain_order="left",
        )
        .join(
            en.select("user_id", to="class_id"),
            on=["user_id", "to"],
            how="anti",
            maintain_order="left",
        )
        .head(n_move)
    )
    d.enrollments = (
        en.join(moves.select("_row", "to"), on="_row", how="left", maintain_order="left")
        .with_columns(class_id=pl.coalesce("to", "class_id"))
        .select(COLUMNS["enrollments.csv"])
    )
    changes["enrollments_moved"] = moves.height
    change_ids["enrollments_moved"] = [
        f"{u}: {a} -> {b}" for u, a, b in moves.select("user_id", "class_id", "to").iter_rows()
    ]

    # 6. New students: each takes the schools, grade and classes of a random current
    # student ("template"); a quarter are siblings of a current student and share
    # that student's guardians.
    firsts = d.students.unique(subset="student_id", keep="first", maintain_order=True)
    n_join = n_join if firsts.height else 0
    new = pl.DataFrame({"i": pl.int_range(0, n_join, eager=True, dtype=pl.Int64)})
    key = pl.col("i")
    new_ids = _next_ids(d.students["student_id"], n_join, prefix="")
    with_guardians = firsts.filter(pl.col("guardian_first_name").is_not_null())
    new = new.with_columns(
        student_id=pl.lit(new_ids).gather(key),
        _t=rng.below("m_template", max(firsts.height, 1), key),
        _sib=pl.when(
            rng.bits("m_sibling", key).rank("ordinal") <= max(1, round(0.25 * n_join))
        ).then(rng.below("m_sibling_pick", max(with_guardians.height, 1), key))
        if with_guardians.height
        else pl.lit(None, dtype=pl.Int64),
    )
    templates = firsts.with_row_index("_t").with_columns(pl.col("_t").cast(pl.Int64))
    new = new.join(
        templates.select("_t", t_id="student_id", grade="grade"), on="_t", maintain_order="left"
    ).join(
        with_guardians.with_row_index("_sib")
        .with_columns(pl.col("_sib").cast(pl.Int64))
        .select("_sib", sib_id="student_id", sib_last="student_last_name"),
        on="_sib",
        how="left",
        maintain_order="left",
    )
    new = new.with_columns(
        grade_idx=pl.col("grade").replace_strict(
            list(_GRADES), list(range(len(_GRADES))), default=3, return_dtype=pl.Int64
        ),
        fam_last=pl.coalesce("sib_last", names.last_name(rng, "m_fam_last", key)),
        n_guardians=pl.when(pl.col("sib_id").is_null())
        .then(rng.pick("m_guardians", _GUARDIANS_PER_FAMILY, key))
        .otherwise(0),
    ).with_columns(
        student_first_name=names.first_name(rng, "m_s_first", key),
        student_last_name=pl.col("fam_last"),
        dob=_grade_dob(rng, "m_dob", pl.col("grade_idx"), key),
    )
    # Contacts of the new students (emails and phones not in use anywhere in the drop).
    taken = _taken_suffixes(_all_emails(d))
    band = (
        pl.when(pl.col("grade_idx") > _LAST_MIDDLE_GRADE)
        .then(2)
        .when(pl.col("grade_idx") > _LAST_ELEMENTARY_GRADE)
        .then(1)
        .otherwise(0)
    )
    new = new.with_columns(
        _email=rng.unif("m_s_email", key)
        < pl.when(band == 2).then(0.75).when(band == 1).then(0.5).otherwise(0.0),
        _phone=rng.unif("m_s_phone", key)
        < pl.when(band == 2).then(0.45).when(band == 1).then(0.15).otherwise(0.0),
        _domain=pl.lit(student_domain),
    ).with_columns(
        _base=pl.when(pl.col("_email")).then(
            pl.concat_str(
                [_slug(pl.col("student_first_name")), _slug(pl.col("student_last_name"))],
                separator=".",
            )
        ),
    )
    new = _with_emails(
        new, rng, "m_s_email", base="_base", domain="_domain", out="student_email", taken=taken
    )
    used_digits = _all_phone_digits(d)
    s_phones = _unique_phones(rng, "m_s_phone", new.select(key="i"), used_digits)
    new = new.with_columns(_digits=s_phones["digits"]).with_columns(
        student_phone=pl.when(pl.col("_phone")).then(
            _format_phone(pl.col("_digits"), rng.pick("m_s_fmt", _PHONE_FORMATS, key))
        )
    )
    # Guardians: a new family's, or copies of the sibling's guardian columns.
    fresh = _make_guardians(
        rng,
        names,
        new.select(fam="i", n_guardians="n_guardians", fam_last="fam_last"),
        prefix="m_",
        taken=taken,
    )
    g_phones = _unique_phones(
        rng,
        "m_g_phone",
        fresh.select(key="gidx"),
        pl.concat([used_digits, s_phones["digits"].drop_nulls()]),
    )
    fresh = (
        fresh.with_columns(_digits=g_phones["digits"])
        .with_columns(
            guardian_phone=pl.when(pl.col("contact") != 1).then(
                _format_phone(pl.col("_digits"), pl.col("phone_fmt"))
            )
        )
        .select(
            pl.col("fam").alias("i"), pl.col("gi").cast(pl.Float64).alias("_ord"), *_GUARDIAN_FIELDS
        )
    )
    sib_guardians = (
        new.filter(pl.col("sib_id").is_not_null())
        .select("i", "sib_id")
        .join(
            d.students.filter(pl.col("guardian_first_name").is_not_null())
            .select("student_id", *_GUARDIAN_FIELDS)
            .unique(maintain_order=True),
            left_on="sib_id",
            right_on="student_id",
            maintain_order="left",
        )
        .with_columns(_ord=pl.int_range(pl.len()).over("i").cast(pl.Float64))
        .select("i", "_ord", *_GUARDIAN_FIELDS)
    )
    guardians = pl.concat([fresh, sib_guardians]).sort("i", "_ord")
    orgs = d.students.select("student_id", "school_id").unique(maintain_order=True)
    new_rows = (
        new.join(orgs, left_on="t_id", right_on="student_id", maintain_order="left")
        .join(guardians, on="i", how="left", maintain_order="left")
        .with_columns(_ord=pl.col("_ord").fill_null(0.0))
        .select(*COLUMNS["students.csv"], "_ord")
    )
    live_classes = d.classes.select("class_id")
    new_enrollments = (
        new.select("t_id", new_id="student_id")
        .join(d.enrollments, left_on="t_id", right_on="user_id", maintain_order="left")
        .join(live_classes, on="class_id", how="semi", maintain_order="left")
        .select("school_id", "class_id", user_id="new_id")
    )
    d.students = pl.concat([d.students, new_rows])
    d.enrollments = pl.concat([d.enrollments, new_enrollments])
    changes["students_joined"] = new.height
    changes["sibling_joins"] = new.filter(pl.col("sib_id").is_not_null()).height
    changes["enrollments_of_new_students"] = new_enrollments.height
    change_ids["students_joined"] = new["student_id"].to_list()
    change_ids["sibling_joins"] = [
        f"{a} (sibling of {b})"
        for a, b in new.filter(pl.col("sib_id").is_not_null())
        .select("student_id", "sib_id")
        .iter_rows()
    ]

    # 7. Contact changes of continuing people: a guardian's new email, a student's new phone.
    current = d.students.join(
        new.select("student_id"), on="student_id", how="anti", maintain_order="left"
    )
    emails = rng.choose(
        current.filter(_is_valid_email(pl.col("guardian_email")))
        .select("guardian_email", "guardian_first_name", "guardian_last_name")
        .unique(subset="guardian_email", maintain_order=True),
        "m_g_email_change",
        n_contact,
    ).with_columns(i=pl.int_range(pl.len(), dtype=pl.Int64))
    emails = emails.with_columns(
        _base=_guardian_email_base(
            pl.col("guardian_first_name"),
            pl.col("guardian_last_name"),
            rng.pick("m_ge_style", (0.5, 0.5), pl.col("i")),
        ),
        _domain=_gather(
            _PERSONAL_DOMAINS,
            (pl.col("i") + rng.below("m_ge_domain", 6, pl.col("i"))) % len(_PERSONAL_DOMAINS),
        ),
    )
    emails = _with_emails(
        emails,
        rng,
        "m_ge",
        base="_base",
        domain="_domain",
        out="new_email",
        taken=_taken_suffixes(_all_emails(d)),
    )
    d.students = (
        d.students.join(
            emails.select("guardian_email", "new_email"),
            on="guardian_email",
            how="left",
            maintain_order="left",
        )
        .with_columns(guardian_email=pl.coalesce("new_email", "guardian_email"))
        .drop("new_email")
    )
    changes["guardian_email_changes"] = emails.height
    change_ids["guardian_email_changes"] = [
        f"{a} -> {b}" for a, b in emails.select("guardian_email", "new_email").iter_rows()
    ]
    phones = rng.choose(
        current.filter(pl.col("student_phone").is_not_null())
        .select("student_id")
        .unique(maintain_order=True),
        "m_s_phone_change",
        n_contact,
    ).with_columns(i=pl.int_range(pl.len(), dtype=pl.Int64))
    digits = _unique_phones(rng, "m_s_phone_change", phones.select(key="i"), _all_phone_digits(d))
    phones = phones.with_columns(_digits=digits["digits"]).with_columns(
        new_phone=_format_phone(
            pl.col("_digits"), rng.pick("m_sp_fmt", _PHONE_FORMATS, pl.col("i"))
        )
    )
    d.students = (
        d.students.join(
            phones.select("student_id", "new_phone"),
            on="student_id",
            how="left",
            maintain_order="left",
        )
        .with_columns(student_phone=pl.coalesce("new_phone", "student_phone"))
        .select(*COLUMNS["students.csv"], "_ord")
    )
    changes["student_phone_changes"] = phones.height
    change_ids["student_phone_changes"] = phones["student_id"].to_list()
    return d, changes, change_ids


# --------------------------------------------------------------------------- #
# Public entry point
# --------------------------------------------------------------------------- #


def generate_district(
    out_dir: Path,
    *,
    people: int,
    seed: int,
    problem_rate: float = 0.01,
    maintenance_of: Path | None = None,
    churn: float = 0.05,
) -> GenerationSummary:
    """Write one Remind CSV 1.0 drop of a synthetic district into `out_dir`.

    Initial drop (``maintenance_of`` is None): about `people` teachers + students +
    distinct guardians, in elementary, middle and high schools (about one per 500
    students) plus special programs. Guardians are shared by siblings, and the
    teacher/class/enrollment structure follows class sizes (so students are ~50%
    of people, guardians ~45%, teachers ~4-5%).

    Maintenance drop: reads the five files in `maintenance_of` and writes the
    district's next drop with `churn` (a fraction of students) applied; `people`
    is then ignored. Problems of the previous drop stay unless their rows go.

    `problem_rate` is the share of each file's rows given a deliberate problem
    (at least one of each kind when > 0); with 0 the new drop adds none.
    The same arguments give byte-identical files.
    """
    if not 0 <= problem_rate < 1:
        raise ValueError("problem_rate must be in [0, 1)")
    if not 0 <= churn < 1:
        raise ValueError("churn must be in [0, 1)")
    out_dir = Path(out_dir)
    rng = _Rng(seed)
    carried: set[tuple[str, str, str, str | None, tuple[tuple[str, str], ...]]] = set()
    changes: dict[str, int] = {}
    change_ids: dict[str, list[str]] = {}
    if maintenance_of is None:
        if people < _MIN_PEOPLE:
            raise ValueError(f"people must be at least {_MIN_PEOPLE}")
        drop, district = _initial_drop(people, seed)
    else:
        prev = _read_drop(Path(maintenance_of))
        carried = {_problem_key(p) for p in _scan_problems(prev)}
        drop, changes, change_ids = _maintenance_drop(rng, _Names.build(seed), prev, churn)
        district = _district_of(drop)
    drop = _ordered(drop)
    drop = _ordered(_inject_problems(_Rng(seed ^ 0x5EED), drop, problem_rate))
    problems = [replace(p, carried=_problem_key(p) in carried) for p in _scan_problems(drop)]
    _write_drop(drop, out_dir)
    return _summary(out_dir, district, drop, problems, changes, change_ids)


def _problem_key(p: Problem) -> tuple[str, str, str, str | None, tuple[tuple[str, str], ...]]:
    return (p.kind, p.file, p.field, p.value, tuple(sorted(p.ids.items())))


def _district_of(drop: _Drop) -> str:
    domain = _mode(drop.teachers["teacher_email"].str.to_lowercase().str.split("@").list.last(), "")
    town = domain.removesuffix("usd.k12.us")
    for name in _TOWNS:
        if _ascii_slug(name) == town:
            return f"{name} Unified School District"
    return domain


def _summary(
    out_dir: Path,
    district: str,
    drop: _Drop,
    problems: list[Problem],
    changes: dict[str, int],
    change_ids: dict[str, list[str]],
) -> GenerationSummary:
    st = drop.students
    guardian_rows = st.filter(pl.col("guardian_first_name").is_not_null())
    return GenerationSummary(
        out_dir=out_dir,
        district=district,
        schools=drop.schools.height,
        programs=_org_kinds(drop.schools).filter(pl.col("kind") == "program").height,
        teachers=drop.teachers["teacher_id"].n_unique(),
        teacher_rows=drop.teachers.height,
        students=st["student_id"].n_unique(),
        student_rows=st.height,
        guardians=guardian_rows.select(_GUARDIAN_FIELDS).unique().height,
        guardian_rows=guardian_rows.height,
        classes=drop.classes.height,
        enrollments=drop.enrollments.height,
        problems=problems,
        changes=changes,
        change_ids=change_ids,
    )
