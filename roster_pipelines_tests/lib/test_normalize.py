"""Normalisation: scalar functions, and the vectorised helpers that must agree with them."""

from __future__ import annotations

import random

import phonenumbers
import polars as pl
import pytest

from roster_pipelines.lib import normalize
from roster_pipelines.lib.normalize import (
    canonical_grade,
    canonical_grade_series,
    clean_name,
    map_distinct,
    normalize_email,
    normalize_email_series,
    normalize_phone,
    normalize_phone_series,
)

# Inputs chosen to hit every branch of the fast paths and the library's rejections.
TRICKY_EMAILS = [
    "A.B@Example.COM",
    " x@y.org ",
    "",
    "   ",
    None,
    "x@test",
    "bad@",
    "@x.org",
    "a..b@x.com",
    ".a@x.com",
    "a.@x.com",
    "a@b..com",
    "a@-b.com",
    "a@b-.com",
    "a@ab--cd.com",
    "a@xn--bcher-kva.com",
    "José@Example.com",
    '"quoted"@example.com',
    "Name <a@b.com>",
    "a@b.com.",
    "a@[1.2.3.4]",
    "a" * 64 + "@x.com",
    "a" * 65 + "@x.com",
    "a@" + "b" * 63 + ".com",
    "a@" + "b" * 64 + ".com",
    "x" * 240 + "@example.com",
    "x" * 243 + "@example.com",
    "a@localhost",
    "a@x.local",
    "a@x.invalid",
    "a@123.456",
    "POSTMASTER@x.org",
    "a+tag@Gmail.com",
    "o'brien@x.com",
    "a/b=c?@x.com",
    "a @b.com",
    "a@b_c.com",
    "a@münchen.de",
    "a@@x.com",
    "a@x.com@y.com",
]

TRICKY_PHONES = [
    "(415) 555-2671",
    "415.555.2671",
    "+1 415 555 2671",
    "+1-415-555-2671",
    "14155552671",
    "1-415-555-2671",
    "1 (415) 555-2671",
    "4155552671",
    "(415)555-2671",
    "(415)-555-2671",
    "415 5552671",
    "(415) 555-2671 x12",
    "415-555-2671 ext. 9",
    "415-555-2671x",
    "555-1234",
    "1234567890",
    "0415555267",
    "(460) 648-7647",  # an unassigned area code
    "(416) 555-0199",  # Canada
    "+1 264 555 1234",  # Anguilla, not a valid number
    "+1 (800) 555-0100",
    "+44 20 7946 0958",
    "001-415-555-2671",
    "911",
    "abc",
    "",
    "  ",
    None,
    "415--555--2671",
    "(415 555-2671",
]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ann.Lee@Lincoln.K12.us", "ann.lee@lincoln.k12.us"),
        ("  dana@gmail.com\t", "dana@gmail.com"),
        ("José@Example.com", "josé@example.com"),
        ("dana@", None),
        ("dana at gmail.com", None),
        ("a@localhost", None),
        ("", None),
        ("   ", None),
        (None, None),
    ],
)
def test_normalize_email(raw: str | None, expected: str | None) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("(415) 555-2671", "+14155552671"),
        ("415.555.2671", "+14155552671"),
        ("+1 415 555 2671", "+14155552671"),
        ("1-415-555-2671", "+14155552671"),
        (" 4155552671 ", "+14155552671"),
        ("+44 20 7946 0958", "+442079460958"),
        ("555-1234", None),
        ("(460) 648-7647", None),
        ("not a phone", None),
        ("", None),
        (None, None),
    ],
)
def test_normalize_phone(raw: str | None, expected: str | None) -> None:
    assert normalize_phone(raw) == expected


def test_normalize_phone_uses_the_region_for_national_numbers() -> None:
    assert normalize_phone("020 7946 0958", region="GB") == "+442079460958"
    assert normalize_phone("020 7946 0958") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Mary   Ann  ", "Mary Ann"),
        ("O'Brien", "O'Brien"),
        ("Anne\t\nMarie", "Anne Marie"),
        ("\u00a0Zoë\u00a0", "Zoë"),
        ("   ", None),
        ("", None),
        (None, None),
    ],
)
def test_clean_name(raw: str | None, expected: str | None) -> None:
    assert clean_name(raw) == expected
    frame = pl.DataFrame({"n": [raw]}, schema={"n": pl.String})
    assert frame.select(normalize.clean_name_expr(pl.col("n")))["n"].to_list() == [expected]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("PK", "PK"),
        ("Pre-K", "PK"),
        ("pre k", "PK"),
        ("PreKindergarten", "PK"),
        ("PK4", "PK"),
        ("-1", "PK"),
        ("K", "K"),
        ("KG", "K"),
        ("Kindergarten", "K"),
        ("TK", "K"),
        ("0", "K"),
        ("00", "K"),
        ("01", "1"),
        ("1", "1"),
        (" 7 ", "7"),
        ("12", "12"),
        ("Grade 3", "3"),
        ("grade 03", "3"),
        ("Gr 3", "3"),
        ("3rd", "3"),
        ("3rd Grade", "3"),
        ("11th", "11"),
        ("13", "13"),
        ("Ungraded", "Ungraded"),
        (" PS ", "PS"),
        ("K-5", "K-5"),
        ("", None),
        (None, None),
    ],
)
def test_canonical_grade(raw: str | None, expected: str | None) -> None:
    assert canonical_grade(raw) == expected


def test_canonical_grade_series() -> None:
    got = canonical_grade_series(pl.Series(["KG", None, "02", "Grade 2", "Other"]))
    assert got.to_list() == ["K", None, "2", "2", "Other"]


def test_email_series_matches_the_scalar_function_exactly() -> None:
    values = pl.Series("email", TRICKY_EMAILS, dtype=pl.String)
    got = normalize_email_series(values)
    assert got.name == "email"
    assert got.to_list() == [normalize_email(v) for v in TRICKY_EMAILS]


def test_phone_series_matches_the_scalar_function_exactly() -> None:
    values = pl.Series("phone", TRICKY_PHONES, dtype=pl.String)
    got = normalize_phone_series(values)
    assert got.name == "phone"
    assert got.to_list() == [normalize_phone(v) for v in TRICKY_PHONES]


def test_phone_series_outside_north_america_uses_the_full_parser() -> None:
    values = ["020 7946 0958", "(415) 555-2671", "+1 415 555 2671", None]
    got = normalize_phone_series(pl.Series(values), region="GB").to_list()
    assert got == [normalize_phone(v, region="GB") for v in values]
    assert got == ["+442079460958", None, "+14155552671", None]


def test_series_helpers_keep_length_and_nulls_on_empty_input() -> None:
    empty = pl.Series("e", [], dtype=pl.String)
    assert normalize_email_series(empty).to_list() == []
    assert normalize_phone_series(empty).to_list() == []
    nulls = pl.Series("e", [None, None], dtype=pl.String)
    assert normalize_email_series(nulls).to_list() == [None, None]
    assert normalize_phone_series(nulls).to_list() == [None, None]


def test_map_distinct_calls_once_per_distinct_value() -> None:
    calls: list[str] = []

    def shout(value: str) -> str | None:
        calls.append(value)
        return None if value == "skip" else value.upper()

    values = pl.Series("v", ["a", "b", None, "a", "skip", "b", "a"])
    assert map_distinct(values, shout).to_list() == ["A", "B", None, "A", None, "B", "A"]
    assert sorted(calls) == ["a", "b", "skip"]


def test_email_series_calls_the_library_once_per_distinct_domain_or_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[str] = []
    real = normalize.validate_email

    def counting(value: str, **kwargs: object):
        seen.append(value)
        return real(value, **kwargs)

    monkeypatch.setattr(normalize, "validate_email", counting)
    # 3000 rows, 1000 distinct simple addresses on 2 domains, 1 unusual address 3 times.
    rows = [f"user{i % 1000}@school{i % 2}.org" for i in range(3000)] + ['"q"@x.org'] * 3
    got = normalize_email_series(pl.Series(rows))
    assert got[0] == "user0@school0.org"
    assert got[-1] is None
    assert sorted(seen) == ['"q"@x.org', "a@school0.org", "a@school1.org"]


def test_phone_series_calls_the_library_once_per_distinct_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nanp: list[str] = []
    parsed: list[str] = []
    real_nanp, real_parse = normalize._nanp_e164, normalize.normalize_phone

    def count_nanp(national: str, region: str) -> str | None:
        nanp.append(national)
        return real_nanp(national, region)

    def count_parse(value: str | None, region: str = "US") -> str | None:
        parsed.append(value or "")
        return real_parse(value, region)

    monkeypatch.setattr(normalize, "_nanp_e164", count_nanp)
    monkeypatch.setattr(normalize, "normalize_phone", count_parse)
    rows = ["(415) 555-2671", "415.555.2671", "+1 415 555 2671", "(212) 201-3344"] * 50
    rows += ["(416) 555-0199", "416.555.0199"] * 5  # Canada: not valid in the US region
    rows += ["(460) 648-7647"] * 5  # no such area code
    rows += ["+44 20 7946 0958"] * 7
    got = normalize_phone_series(pl.Series(rows)).to_list()
    assert got[:4] == ["+14155552671", "+14155552671", "+14155552671", "+12122013344"]
    assert got[200:202] == ["+14165550199", "+14165550199"]
    assert got[210] is None
    assert got[-1] == "+442079460958"
    # US numbers are settled by the vectorised metadata check; the rest once per number.
    assert sorted(nanp) == ["4165550199", "4606487647"]
    assert parsed == ["+44 20 7946 0958"]


@pytest.mark.parametrize("region", ["US", "CA", "PR"])
def test_vectorised_region_validity_matches_the_library(region: str) -> None:
    rng = random.Random(20261128)
    numbers = [f"{rng.randint(2, 9)}{rng.randint(0, 999_999_999):09d}" for _ in range(20_000)]
    got = pl.DataFrame({"n": numbers}).select(normalize._valid_for_region(pl.col("n"), region))
    expected = [
        phonenumbers.is_valid_number_for_region(
            phonenumbers.PhoneNumber(country_code=1, national_number=int(n)), region
        )
        for n in numbers
    ]
    assert got["n"].to_list() == expected
    assert 0 < sum(expected) < len(numbers)
