"""Benchmark: identity resolution of a large drop against a large app database (issue 4).

Generates a district drop with the generator (`--people`, default 1,000,000), parses and
validates it, seeds a fresh Postgres database with `--accounts` accounts (default
2,000,000) and their contact points through COPY — a share of them (`--match-share`)
holding a contact point of a person of the drop (email for some, phone for others, both
on two different accounts for a few: conflicts), the rest unrelated — and times
`resolve_drop` (district lookup, set-based matching through a COPY-filled staging table,
decisions, merge-candidate scan and recording) `--repeat` times. Medians are quoted.

    .venv/bin/python scripts/bench_identity.py                       # 1M people, 2M accounts
    .venv/bin/python scripts/bench_identity.py --people 100000 --accounts 200000 --repeat 3
    .venv/bin/python scripts/bench_identity.py --write BENCHMARKS.md

The generated drop is cached under --cache-dir (default: the system temp folder) so
repeated invocations skip generation.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from roster_pipelines.lib.contracts import validate
from roster_pipelines.lib.formats.remind_csv import parse
from roster_pipelines.lib.generator import generate_district
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.sync import resolve_drop

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _fresh_database() -> str:
    name = f"roster_bench_identity_{uuid.uuid4().hex[:8]}"
    with sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def _drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[-1]
    with sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _copy(engine: sa.Engine, table: str, frame: pl.DataFrame) -> None:
    data = frame.write_csv(include_header=False).encode()
    with engine.begin() as conn:
        cursor = conn.connection.driver_connection.cursor()
        with cursor.copy(
            f"COPY {table} ({', '.join(frame.columns)}) FROM STDIN (FORMAT csv)"
        ) as copy:
            for start in range(0, len(data), 16 << 20):
                copy.write(data[start : start + (16 << 20)])


def seed(engine: sa.Engine, roster, accounts: int, match_share: float) -> dict[str, int]:
    """`accounts` accounts; a `match_share` of the drop's people own one of their
    contacts (every 10th of them email on one account and phone on another)."""
    people = roster.people.unique("person_key", keep="first", maintain_order=True).select(
        "person_key", "first_name", "last_name", "dob"
    )
    n_match = min(int(people.height * match_share), accounts // 2)
    matched = people.sample(n=n_match, seed=7, shuffle=True).with_row_index("i")
    email = roster.contacts.filter(pl.col("kind") == "email").select("person_key", email="value")
    phone = roster.contacts.filter(pl.col("kind") == "phone").select("person_key", phone="value")
    matched = matched.join(email, on="person_key", how="left").join(
        phone, on="person_key", how="left"
    )
    matched = matched.unique("person_key", keep="first", maintain_order=True)
    # Account ids: 1..n_match for the matched people, conflicts get a second account
    # n_match+1..; the rest are unrelated.
    conflict = matched.filter(
        (pl.col("i") % 10 == 0) & pl.col("email").is_not_null() & pl.col("phone").is_not_null()
    )
    conflict = conflict.with_row_index("j").with_columns(second=pl.col("j") + matched.height + 1)
    base = matched.with_columns(id=pl.col("i") + 1)
    n_rel = base.height + conflict.height
    accounts_frame = pl.concat(
        how="vertical_relaxed",
        items=[
            base.select(pl.col("id").cast(pl.Int64), "first_name", "last_name"),
            conflict.select(
                id=pl.col("second").cast(pl.Int64), first_name="first_name", last_name="last_name"
            ),
            pl.DataFrame({"id": pl.int_range(n_rel + 1, accounts + 1, eager=True)}).select(
                pl.col("id").cast(pl.Int64),
                first_name=pl.lit("Bench"),
                last_name=pl.concat_str(pl.lit("Person"), pl.col("id").cast(pl.String)),
            ),
        ],
    )
    is_conflict = pl.col("person_key").is_in(conflict["person_key"].implode())
    contacts = (
        pl.concat(
            [
                # Matched by email (even rows) or phone (odd rows), whichever they have.
                base.filter(~is_conflict).select(
                    account_id="id",
                    kind=pl.when(
                        (pl.col("i") % 2 == 0) & pl.col("email").is_not_null()
                        | pl.col("phone").is_null()
                    )
                    .then(pl.lit("email"))
                    .otherwise(pl.lit("phone")),
                    value=pl.when(
                        (pl.col("i") % 2 == 0) & pl.col("email").is_not_null()
                        | pl.col("phone").is_null()
                    )
                    .then(pl.col("email"))
                    .otherwise(pl.col("phone")),
                ),
                conflict.select(account_id=pl.col("i") + 1, kind=pl.lit("email"), value="email"),
                conflict.select(account_id="second", kind=pl.lit("phone"), value="phone"),
                pl.DataFrame(
                    {"account_id": pl.int_range(n_rel + 1, accounts + 1, eager=True)}
                ).select(
                    "account_id",
                    kind=pl.lit("email"),
                    value=pl.concat_str(
                        pl.lit("acct"),
                        pl.col("account_id").cast(pl.String),
                        pl.lit("@bench.example"),
                    ),
                ),
                pl.DataFrame(
                    {"account_id": pl.int_range(n_rel + 1, accounts + 1, 2, eager=True)}
                ).select(
                    "account_id",
                    kind=pl.lit("phone"),
                    value=pl.concat_str(
                        pl.lit("+4477"), (pl.col("account_id") + 10_000_000).cast(pl.String)
                    ),
                ),
            ],
            how="vertical_relaxed",
        )
        .filter(pl.col("value").is_not_null())
        .unique(["kind", "value"], keep="first")
    )
    contacts = contacts.with_columns(
        account_id=pl.col("account_id").cast(pl.Int64),
        verified=(pl.col("account_id") % 3 == 0),
        source=pl.lit("user"),
    )
    _copy(engine, "accounts", accounts_frame)
    _copy(engine, "contact_points", contacts)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "SELECT setval(pg_get_serial_sequence('accounts', 'id'), (SELECT max(id) FROM accounts))"
        )
        conn.exec_driver_sql(
            "SELECT setval(pg_get_serial_sequence('contact_points', 'id'), (SELECT max(id) FROM contact_points))"
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE accounts")
        conn.exec_driver_sql("VACUUM ANALYZE contact_points")
    return {
        "accounts": accounts_frame.height,
        "contact_points": contacts.height,
        "matched_people": base.height,
        "conflict_pairs": conflict.height,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=2_000_000)
    parser.add_argument("--match-share", type=float, default=0.3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache-dir", default=tempfile.gettempdir())
    parser.add_argument("--write", help="append the results to this Markdown file")
    args = parser.parse_args()

    folder = Path(args.cache_dir) / f"roster-bench-identity-{args.people}-s{args.seed}"
    t = time.perf_counter()
    if not (folder / "students.csv").is_file():
        generate_district(folder, people=args.people, seed=args.seed, problem_rate=0.0)
    gen_s = time.perf_counter() - t
    t = time.perf_counter()
    roster = validate(parse(folder))
    parse_s = time.perf_counter() - t
    n_people = roster.people["person_key"].n_unique()
    print(
        f"drop: {n_people:,} people ({folder}); generate {gen_s:.1f} s, parse+validate {parse_s:.1f} s",
        flush=True,
    )

    url = _fresh_database()
    try:
        engine = make_engine(url)
        t = time.perf_counter()
        seeded = seed(engine, roster, args.accounts, args.match_share)
        print(f"seeded {seeded} in {time.perf_counter() - t:.1f} s", flush=True)
        times, decisions = [], {}
        for i in range(args.repeat):
            t = time.perf_counter()
            result = resolve_drop(engine, "bench", roster, drop=f"bench{i}")
            times.append(time.perf_counter() - t)
            decisions = result.decisions
            print(f"run {i + 1}: resolve_drop {times[-1]:.2f} s  {decisions}", flush=True)
    finally:
        _drop_database(url)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or "?"
    command = (
        "`.venv/bin/python scripts/bench_identity.py"
        + (
            ""
            if (args.people, args.accounts, args.repeat) == (1_000_000, 2_000_000, 3)
            else f" --people {args.people} --accounts {args.accounts} --repeat {args.repeat}"
        )
        + "`"
    )
    lines = [
        f"### {n_people:,} people against {seeded['accounts']:,} accounts, postgres, median of {args.repeat}",
        "",
        f"{command} — {time.strftime('%Y-%m-%d')}, {platform.machine()}, {cores} cores, "
        f"Python {platform.python_version()}, peak RSS {peak:,.0f} MB (generation and seeding included)",
        "",
        "| identity resolution (s) | min | max | contact points in the database | linked | conflicts | created | candidates |",
        "|---|---|---|---|---|---|---|---|",
        f"| **{statistics.median(times):.2f}** | {min(times):.2f} | {max(times):.2f} | {seeded['contact_points']:,} | "
        f"{decisions.get('linked', 0):,} | {decisions.get('conflicts', 0):,} | {decisions.get('created', 0):,} | "
        f"{decisions.get('candidates', 0):,} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        with open(args.write, "a") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    sys.exit(main())
