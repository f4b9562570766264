"""The similar-people scan (lib/similar_people.py): from kept keys, the same as in full."""

from __future__ import annotations

import datetime as dt

import polars as pl

from roster_pipelines.lib import similar_people as sp

DOB = dt.date(2015, 3, 4)


def _identities(rows: list[tuple[str, int | None]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"person_key": pl.String, "account_id": pl.Int64}, orient="row"
    )


# The drop's people: two students linked to accounts 1 and 2, a new student (no account).
FIRST_ROWS = pl.DataFrame(
    {
        "person_key": ["student:S1", "student:S2", "student:S3"],
        "role": ["student", "student", "student"],
        "first_name": ["Ana", "Ben", "Cara"],
        "last_name": ["Diaz", "Ortiz", "Lee"],
        "dob": [DOB, dt.date(2014, 1, 1), DOB],
    }
)
IDENTITIES = _identities([("student:S1", 1), ("student:S2", 2), ("student:S3", None)])
CONTACTS = pl.DataFrame(
    {"person_key": ["student:S2"], "kind": ["phone"], "value": ["+12125550100"]}
)


# Accounts nobody changes (so that a few changed ones are a small share of them).
OTHERS = [(100 + i, f"Other{i}", "Person", None, None) for i in range(20)]


def _district(rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows + OTHERS, schema=sp.PEOPLE_SCHEMA, orient="row")


# The district's accounts: the two students', and account 7, a member added by hand.
BEFORE = _district(
    [
        (1, "Ana", "Diaz", DOB, None),
        (2, "Ben", "Ortiz", dt.date(2014, 1, 1), "+12125550100"),
        (7, "Cara", "Lee", None, None),
    ]
)
# In the app, account 7 gets Cara's date of birth and account 2's phone moves to it.
AFTER = _district(
    [
        (1, "Ana", "Diaz", DOB, None),
        (2, "Ben", "Ortiz", dt.date(2014, 1, 1), None),
        (7, "Cara", "Lee", DOB, "+12125550100"),
    ]
)


def _pairs(frame: pl.DataFrame) -> set[tuple]:
    return set(frame.select(sorted(frame.columns)).rows())


def _from_kept(changed: list[int], written: list[int] = ()) -> tuple:
    people = sp.drop_entities(FIRST_ROWS, IDENTITIES)
    _, kept = sp.scan(people, CONTACTS, BEFORE)
    base = sp.StoredKeys(kept.without(), pl.Series(list(written), dtype=pl.Int64), 1)

    def read_people(ids: pl.Series) -> pl.DataFrame:
        return AFTER.filter(pl.col("id").is_in(ids.implode()))

    return sp.scan_scoped(
        people,
        CONTACTS,
        base,
        pl.Series(changed, dtype=pl.Int64),
        read_people,
        lambda: AFTER,
    )


def test_a_scan_from_kept_keys_equals_a_full_scan_when_the_changed_accounts_are_named() -> None:
    people = sp.drop_entities(FIRST_ROWS, IDENTITIES)
    full_pairs, full_keys = sp.scan(people, CONTACTS, AFTER)
    # The new person S3 and account 7 share a name and a date of birth.
    assert {
        (r["person_key"], r["other_account_id"], r["reason"]) for r in full_pairs.to_dicts()
    } | {(r["other_person_key"], r["account_id"], r["reason"]) for r in full_pairs.to_dicts()} >= {
        ("student:S3", 7, sp.SAME_NAME_DOB)
    }

    pairs, keys, rescanned = _from_kept(changed=[7, 2])
    assert rescanned == 2
    assert _pairs(pairs) == _pairs(full_pairs)
    assert sp.key_differences(keys, full_keys) == []


def test_an_account_left_out_of_the_changed_ones_shows_as_a_key_difference() -> None:
    people = sp.drop_entities(FIRST_ROWS, IDENTITIES)
    _, full_keys = sp.scan(people, CONTACTS, AFTER)
    _, keys, _ = _from_kept(changed=[2])  # account 7's date of birth is missed
    differences = sp.key_differences(keys, full_keys)
    assert differences and "names" in differences[0]


def test_the_accounts_the_last_apply_wrote_are_worked_out_again() -> None:
    people = sp.drop_entities(FIRST_ROWS, IDENTITIES)
    _, full_keys = sp.scan(people, CONTACTS, AFTER)
    _, keys, rescanned = _from_kept(changed=[], written=[2, 7])
    assert rescanned == 2
    assert sp.key_differences(keys, full_keys) == []


def test_too_many_accounts_to_work_out_again_means_a_full_scan() -> None:
    people = sp.drop_entities(FIRST_ROWS, IDENTITIES)
    full_pairs, full_keys = sp.scan(people, CONTACTS, AFTER)
    pairs, keys, rescanned = _from_kept(changed=[1, 2, 7, 100, 101, 102])
    assert rescanned is None
    assert _pairs(pairs) == _pairs(full_pairs)
    assert sp.key_differences(keys, full_keys) == []
