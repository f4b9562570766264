"""Identity resolution: which app account each SIS person of a drop is (R1).

Order of evidence, strongest first:
1. ``already_linked``: the SIS identity (district, person_key) is bound to an account
   by an earlier drop; that binding holds even if contacts changed.
2. ``linked``: a normalised contact point matches an existing account (email before
   phone, then the alphabetically first value, so the choice is deterministic).
3. ``created``: nothing matches; the apply step creates a new account.
"""

from __future__ import annotations

import polars as pl
from sqlalchemy import Connection, select

from roster_pipelines.lib.canonical import CONTACT_EMAIL, Roster
from roster_pipelines.lib.store.frames import chunks, concat, read_frame
from roster_pipelines.lib.store.models import ContactPoint, SisLink

ALREADY_LINKED = "already_linked"
LINKED = "linked"
CREATED = "created"

IDENTITY_SCHEMA = {
    "person_key": pl.String,
    "role": pl.String,
    "sis_id": pl.String,
    "account_id": pl.Int64,
    "decision": pl.String,
    "matched_kind": pl.String,
    "matched_value": pl.String,
}

_MATCH_SCHEMA = {"kind": pl.String, "value": pl.String, "account_id": pl.Int64}


def resolve_identities(conn: Connection, district_id: int, roster: Roster) -> pl.DataFrame:
    """One row per person of the drop with its account (null when one must be created)."""
    links = read_frame(
        conn,
        select(SisLink.person_key, SisLink.account_id).where(SisLink.district_id == district_id),
        {"person_key": pl.String, "account_id": pl.Int64},
    )
    people = roster.people.select("person_key", "role", "sis_id").join(
        links, on="person_key", how="left"
    )
    already = people.filter(pl.col("account_id").is_not_null()).with_columns(
        decision=pl.lit(ALREADY_LINKED),
        matched_kind=pl.lit(None, pl.String),
        matched_value=pl.lit(None, pl.String),
    )
    unlinked = people.filter(pl.col("account_id").is_null()).drop("account_id")

    contacts = roster.contacts.join(
        unlinked.select("person_key"), on="person_key", how="semi"
    ).select("person_key", "kind", "value")
    matches = contact_owners(conn, contacts.select("kind", "value").unique())
    best = (
        contacts.join(matches, on=["kind", "value"], how="inner")
        .with_columns(strength=pl.when(pl.col("kind") == CONTACT_EMAIL).then(0).otherwise(1))
        .sort(["person_key", "strength", "value"])
        .group_by("person_key", maintain_order=True)
        .first()
        .select("person_key", "account_id", matched_kind="kind", matched_value="value")
    )
    resolved = unlinked.join(best, on="person_key", how="left").with_columns(
        decision=pl.when(pl.col("account_id").is_not_null())
        .then(pl.lit(LINKED))
        .otherwise(pl.lit(CREATED))
    )
    return pl.concat(
        [already.select(list(IDENTITY_SCHEMA)), resolved.select(list(IDENTITY_SCHEMA))],
        how="vertical",
    ).cast(IDENTITY_SCHEMA)


def contact_owners(conn: Connection, wanted: pl.DataFrame) -> pl.DataFrame:
    """Existing accounts owning any of the wanted (kind, value) contact points."""
    wanted = wanted.select("kind", "value").unique()
    values = wanted["value"].to_list()
    found = concat(
        (
            read_frame(
                conn,
                select(ContactPoint.kind, ContactPoint.value, ContactPoint.account_id).where(
                    ContactPoint.value.in_(chunk)
                ),
                _MATCH_SCHEMA,
            )
            for chunk in chunks(values)
        ),
        _MATCH_SCHEMA,
    )
    return found.join(wanted, on=["kind", "value"], how="semi")


def decision_counts(identities: pl.DataFrame) -> dict[str, int]:
    counts = identities.group_by("decision").len()
    result = {ALREADY_LINKED: 0, LINKED: 0, CREATED: 0}
    result.update(dict(zip(counts["decision"].to_list(), counts["len"].to_list(), strict=True)))
    return result
