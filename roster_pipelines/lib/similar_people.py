"""The similar-people scan: merge candidates by likeness inside a district (R2).

Two entities (an app account, or an SIS person whose account this drop creates) that
share a normalised name and a phone (`same_name_phone`), or a normalised name and a
date of birth (`same_name_dob`, students), in a group of at most `MAX_GROUP` entities,
are a candidate pair. An entity's keys come from the drop's rows of its people and from
the database's row of its account (both, where they differ), so the scan covers the
drop's people and the district's accounts (`identity` reads those).

Each scan also returns every account's keys (`SimilarKeys`). After a drop's apply they
are kept with the accounts that apply could write (`StoredKeys`, `KeysFolder`), and the
next drop's scan works out again only the accounts something may have changed
(`scan_scoped`): those its incremental scope holds (their rows changed, or anything
outside the sync wrote them: migrations 0006, 0008, 0009), those the last apply wrote,
and those the last scan did not see. Every other account's rows are the ones the last
scan read, so its keys are too; the pairs are then formed over all keys, as in a full
scan. `sync._verify_incremental` checks the result against a full scan.

Pure polars: the database reads are `identity`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from roster_pipelines.lib import stage_files
from roster_pipelines.lib.canonical import CONTACT_PHONE, ROLE_STUDENT

SAME_NAME_PHONE = "same_name_phone"
SAME_NAME_DOB = "same_name_dob"

# Name groups larger than this are too common to suggest a duplicate.
MAX_GROUP = 5

# What the scan finds (identity's candidates add the pair key).
PAIRS_SCHEMA = {
    "account_id": pl.Int64,
    "person_key": pl.String,
    "other_account_id": pl.Int64,
    "other_person_key": pl.String,
    "reason": pl.String,
    "detail": pl.String,
}

# The district's accounts as the scan reads them: one row per phone (null: none).
PEOPLE_SCHEMA = {
    "id": pl.Int64,
    "first_name": pl.String,
    "last_name": pl.String,
    "dob": pl.Date,
    "phone": pl.String,
}


def normalised_name(first: pl.Expr, last: pl.Expr) -> pl.Expr:
    """Lower case, accents and punctuation removed, spaces collapsed ("José  O'Neil" →
    "jose oneil")."""
    full = pl.concat_str(first.fill_null(""), pl.lit(" "), last.fill_null(""))
    return (
        full.str.normalize("NFKD")
        .str.replace_all(r"\p{M}", "")
        .str.to_lowercase()
        .str.replace_all(r"['’`.]", "")
        .str.replace_all(r"[^\p{L}\p{N}]+", " ")
        .str.strip_chars()
    )


_PARTS = ("names", "phones", "roles", "accounts")  # SimilarKeys' frames


@dataclass
class SimilarKeys:
    """Every entity's keys as one scan worked them out. Entities are integers: an
    account's id, or for a person whose account the drop creates, minus one minus
    their row (such entities are never stored)."""

    names: pl.DataFrame  # entity, name, dob: each distinct normalised name (and date)
    phones: pl.DataFrame  # entity, phone
    roles: pl.DataFrame  # entity, roles (list): the roles of the drop's people
    accounts: pl.DataFrame  # account_id: every account scanned, with keys or without

    def without(self, entities: pl.Series | None = None) -> SimilarKeys:
        """These keys but those of `entities` and of the drop's new people."""
        gone = (pl.Series([], dtype=pl.Int64) if entities is None else entities).implode()

        def keep(frame: pl.DataFrame, column: str = "entity") -> pl.DataFrame:
            return frame.filter((pl.col(column) >= 0) & pl.col(column).is_in(gone).not_())

        return SimilarKeys(
            keep(self.names),
            keep(self.phones),
            keep(self.roles),
            keep(self.accounts, "account_id"),
        )


@dataclass
class StoredKeys:
    """What an applied drop leaves the next drop's scan: its keys, the accounts whose
    keys its apply changed (`sync._written_by`), and its run."""

    keys: SimilarKeys
    written: pl.Series
    run_id: int


class KeysFolder(stage_files.KeptFolder):
    """One district's stored keys, one folder per applied drop (`lib/stage_files.py`)."""

    kind = StoredKeys


def drop_entities(first_rows: pl.DataFrame, identities: pl.DataFrame) -> pl.DataFrame:
    """The drop's people (one row each) with their entity."""
    return (
        first_rows.select("person_key", "role", "first_name", "last_name", "dob")
        .join(identities.select("person_key", "account_id"), on="person_key")
        .with_row_index("n")
        .with_columns(entity=pl.coalesce("account_id", -1 - pl.col("n").cast(pl.Int64)))
    )


def scan(
    people: pl.DataFrame, contacts: pl.DataFrame, district_people: pl.DataFrame
) -> tuple[pl.DataFrame, SimilarKeys]:
    """The pairs (`PAIRS_SCHEMA`) among the drop's people (`drop_entities`; their
    contact points: `contacts`) and the district's accounts (`district_people`,
    `PEOPLE_SCHEMA`), and every entity's keys."""
    keys = keys_of(people, contacts, district_people)
    return _pairs(keys, people), keys


# Past this share of the accounts the last scan saw, working them out again from their
# rows read by id costs more than scanning the district (after a first drop, say).
MAX_RESCAN_SHARE = 0.25


def scan_scoped(
    people: pl.DataFrame,
    contacts: pl.DataFrame,
    base: StoredKeys,
    changed: pl.Series,
    read_people: Callable[[pl.Series], pl.DataFrame],
    read_district: Callable[[], pl.DataFrame],
) -> tuple[pl.DataFrame, SimilarKeys, int | None]:
    """`scan`'s result, with the keys of the last applied drop's scan (`base`) taken for
    every account but `changed` ones (those whose drop rows or database rows may have
    changed since: `incremental.Scope.rescan`), those the last apply wrote and those
    that scan did not see; `read_people` reads those accounts' rows (`PEOPLE_SCHEMA`)
    where they are still the district's. Also returns how many accounts were worked out
    again (None: too many, the district was scanned in full, from `read_district`)."""
    known = base.keys.accounts
    unseen = people.filter(pl.col("entity") >= 0).join(
        known, left_on="entity", right_on="account_id", how="anti"
    )["entity"]
    again = pl.concat([changed.cast(pl.Int64), base.written.cast(pl.Int64), unseen]).unique()
    if again.len() > MAX_RESCAN_SHARE * max(known.height, 1):
        return (*scan(people, contacts, read_district()), None)
    fresh = keys_of(
        people.filter((pl.col("entity") < 0) | pl.col("entity").is_in(again.implode())),
        contacts,
        read_people(again),
    )
    kept = base.keys.without(again)
    keys = SimilarKeys(
        *(
            pl.concat([getattr(kept, part), getattr(fresh, part)], how="vertical_relaxed")
            for part in _PARTS
        )
    )
    return _pairs(keys, people), keys, again.len()


def keys_of(
    people: pl.DataFrame, contacts: pl.DataFrame, district_people: pl.DataFrame
) -> SimilarKeys:
    """The keys of the drop's `people` and of the accounts of `district_people` (`scan`
    without forming the pairs)."""
    spellings = pl.concat(
        [
            people.select(
                "entity",
                "first_name",
                "last_name",
                dob=pl.when(pl.col("role") == ROLE_STUDENT).then(pl.col("dob")),
            ),
            district_people.select("first_name", "last_name", "dob", entity="id"),
        ],
        how="diagonal",
    ).unique()
    # Most of the drop's people are the district's accounts under the same names, and
    # names repeat: normalised once per distinct name (the costly part).
    normalised = (
        spellings.select("first_name", "last_name")
        .unique()
        .with_columns(name=normalised_name(pl.col("first_name"), pl.col("last_name")))
    )
    names = (
        spellings.join(normalised, on=["first_name", "last_name"], nulls_equal=True)
        .select("entity", "name", "dob")
        .filter(pl.col("name") != "")
        .unique()
    )
    phones = pl.concat(
        [
            contacts.filter(pl.col("kind") == CONTACT_PHONE)
            .join(people.select("person_key", "entity"), on="person_key")
            .select("entity", phone="value"),
            district_people.filter(pl.col("phone").is_not_null()).select("phone", entity="id"),
        ],
        how="diagonal",
    ).unique()
    roles = people.group_by("entity").agg(roles=pl.col("role").unique())
    accounts = (
        pl.concat([people["entity"].filter(people["entity"] >= 0), district_people["id"]])
        .unique()
        .to_frame("account_id")
    )
    return SimilarKeys(names, phones, roles, accounts)


def _pairs(keys: SimilarKeys, people: pl.DataFrame) -> pl.DataFrame:
    """The candidate pairs the keys give (`PAIRS_SCHEMA`); `people` names the drop's new
    people (negative entities)."""
    names = keys.names
    # Grouped by the key's columns, not by a key written as text: the text of a key
    # and of a candidate's detail is written for the few pairs found, not for millions.
    pairs = pl.concat(
        [
            _same_key_pairs(
                names.select("entity", "name").unique().join(keys.phones, on="entity"),
                "phone",
            ).select(
                "entity",
                "other",
                reason=pl.lit(SAME_NAME_PHONE),
                detail=pl.concat_str(
                    pl.lit("same name '"), pl.col("name"), pl.lit("' and phone "), pl.col("phone")
                ),
            ),
            _same_key_pairs(names.filter(pl.col("dob").is_not_null()), "dob").select(
                "entity",
                "other",
                reason=pl.lit(SAME_NAME_DOB),
                detail=pl.concat_str(
                    pl.lit("same name '"),
                    pl.col("name"),
                    pl.lit("' and date of birth "),
                    pl.col("dob").cast(pl.String),
                ),
            ),
        ]
    )
    if not pairs.height:
        return pl.DataFrame(schema=PAIRS_SCHEMA)
    roles = keys.roles
    new_people = people.filter(pl.col("entity") < 0).select("entity", "person_key")
    pairs = (
        pairs.join(roles, on="entity", how="left")
        .join(roles.rename({"entity": "other", "roles": "other_roles"}), on="other", how="left")
        # Two SIS people of one role in this drop are different people by the SIS's word.
        .filter(
            pl.col("roles").is_null()
            | pl.col("other_roles").is_null()
            | (pl.col("roles").list.set_intersection("other_roles").list.len() == 0)
        )
        .join(new_people, on="entity", how="left")
        .join(
            new_people.select(other="entity", other_person_key="person_key"),
            on="other",
            how="left",
        )
    )
    return pairs.select(
        account_id=pl.when(pl.col("entity") >= 0).then(pl.col("entity")),
        person_key="person_key",
        other_account_id=pl.when(pl.col("other") >= 0).then(pl.col("other")),
        other_person_key="other_person_key",
        reason="reason",
        detail="detail",
    )


def key_differences(scoped: SimilarKeys, full: SimilarKeys) -> list[str]:
    """How the accounts' keys of a scan from the last drop's keys differ from a full
    scan's (verification mode: stale keys show here even where they make no pair)."""
    problems = []
    for part in _PARTS:
        a, b = (_comparable(getattr(keys, part)) for keys in (scoped, full))
        extra = a.join(b, on=a.columns, how="anti", nulls_equal=True)
        missing = b.join(a, on=b.columns, how="anti", nulls_equal=True)
        if extra.height or missing.height:
            problems.append(
                f"similar-people {part}: {extra.height} rows only in the scoped scan "
                f"{extra.head(3).rows()}, {missing.height} only in the full {missing.head(3).rows()}"
            )
    return problems


def _comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """An accounts-only, order-free form of a keys frame."""
    column = "entity" if "entity" in frame.columns else "account_id"
    frame = frame.filter(pl.col(column) >= 0)
    if "roles" in frame.columns:
        frame = frame.with_columns(pl.col("roles").list.sort().list.join(","))
    return frame.unique()


def _same_key_pairs(keyed: pl.DataFrame, value: str) -> pl.DataFrame:
    """Pairs of entities (`entity` < `other`) sharing a name and `value`, in groups small
    enough to suggest a duplicate; with the name and `value`."""
    key = ["name", value]
    groups = keyed.filter(pl.len().over(key).is_between(2, MAX_GROUP))
    return groups.join(groups.select(*key, other="entity"), on=key).filter(
        pl.col("entity") < pl.col("other")
    )
