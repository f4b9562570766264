"""Benchmark: initial sync, two 1 % churn maintenance drops and a repeated drop, per tier.

For each tier (people in the generated district) and each run: a fresh database, then
the initial drop, a maintenance drop with 1 % churn, the next day's drop (1 % churn
from the maintenance drop) and that drop again, each through the same Dagster assets as production (in process). It prints,
per scenario, the median wall time of each stage, rows per second (CSV data rows of
the drop / end-to-end time), the database rows written, and the ratio to a floor
measured in the same run:

    floor = polars reading the drop's five CSVs
          + COPY of the same rows the sync wrote into empty tables of the same shape
            (same columns, defaults, indexes and constraints, the foreign keys
            pointing at the real parent tables; "floor w/o FK": without them)

Each sync's row also carries a machine probe: a fixed polars workload timed just
before the sync (`machine_probe`), for these machines' speed swings within the hour.

Peak RSS is per sync: the process's high-water mark (VmHWM) is reset before each sync
(`/proc/self/clear_refs`) and read after it, so the floor's own work (the CSV text it
prepares for COPY) is not counted; the table shows the highest over the runs. What
earlier syncs left in the allocator still is: `--isolate` runs each sync in a fresh
process, as each Dagster run has in production (timings then include a cold start).

    .venv/bin/python scripts/bench_sync.py                                 # 10k, 3 runs
    .venv/bin/python scripts/bench_sync.py --people 10000 100000 1000000 --repeat 3 \\
        --data /tmp/roster-bench-data --write BENCHMARKS.md

Not part of the test run. `--db sqlite` runs the embedded default (no floor).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

# Before polars: the package sets polars' allocator as a sync's process has it
# (roster_pipelines/__init__.py), for the syncs run in this process too.
import roster_pipelines  # noqa: F401

# isort: split
import polars as pl
import sqlalchemy as sa

from roster_pipelines.defs.sync.inprocess import run_drop
from roster_pipelines.lib.config import DEFAULT_FORMAT, Settings
from roster_pipelines.lib.drops import DropManifest, archive_drop
from roster_pipelines.lib.formats import REQUIRED_FILES
from roster_pipelines.lib.generator import generate_district
from roster_pipelines.lib.store.engine import ROSTER_TABLES, make_engine

# Report stages: the Dagster steps that make each one.
STAGES = {
    "parse": ("raw_roster_files", "parsed_roster"),
    "validate": ("validated_roster",),
    "identity": ("identity_resolution",),
    "plan": ("sync_plan",),
    "apply": ("applied_sync",),
    "report": ("sync_report",),
}
# The maintenance drop follows the initial one; the next day's drop follows it (a
# maintenance drop after a maintenance drop, as a district's daily drops come); the
# repeat is the next day's drop again.
SCENARIOS = ("initial", "maintenance 1%", "next day 1%", "repeat")
DROP_NAMES = {
    "initial": "initial",
    "maintenance 1%": "maint",
    "next day 1%": "next",
    "repeat": "again",
}
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def admin(sql: str) -> None:
    """Run `sql` on the server's `postgres` database, outside a transaction."""
    with sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(sql))


def _fresh_database(kind: str, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"
    name = f"roster_bench_{uuid.uuid4().hex[:10]}"
    admin(f'CREATE DATABASE "{name}"')
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def settle() -> None:
    """Write back what the setup of a timed run left in memory (the archived drop, a
    database copied from a template, the floor's tables) before the run starts: the
    kernel writes dirty pages back after 30 s and Postgres checkpoints on its own,
    both in the middle of the next run, for work the pipeline did not do."""
    admin("CHECKPOINT")
    os.sync()


def machine_probe() -> float:
    """Seconds of a fixed polars workload of the sync's kind (strings made and hashed,
    a hash join and a group-by over a million rows, a sort), timed just before a
    sync. These machines' speed at such work swings by half or more within the hour,
    while a pure-Python loop's stays put (BENCHMARKS.md, session 14): a run's time is
    read against its probe."""
    n = 1_000_000
    start = time.perf_counter()
    ids = pl.int_range(n, eager=True, dtype=pl.Int64)
    people = pl.DataFrame(
        {"key": ("student:" + (ids * 7919 % n).cast(pl.String)), "school": ids % 997}
    )
    enrollments = people.select(
        "key", klass=(pl.col("key").hash(seed=1) % 65_000).cast(pl.Int64)
    ).sample(fraction=1.0, shuffle=True, seed=1)
    joined = enrollments.join(people, on="key", how="inner")
    joined.group_by("school", "klass").agg(pl.len()).sort("len", "school", "klass")
    people.sort("key")
    return time.perf_counter() - start


def _drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        name = url.rsplit("/", 1)[-1]
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _db_now(engine: sa.Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()


def _rows_written(engine: sa.Engine, since: Any) -> dict[str, int]:
    """Rows inserted or updated since `since`, per roster table, plus the run's issues
    and notification rows."""
    out: dict[str, int] = {}
    with engine.connect() as conn:
        for table in ROSTER_TABLES:
            out[table] = conn.execute(
                sa.text(f"SELECT count(*) FROM {table} WHERE updated_at >= :t"), {"t": since}
            ).scalar_one()
        out["sync_issues"] = conn.execute(
            sa.text(
                "SELECT count(*) FROM sync_issues i JOIN sync_runs r ON r.id = i.sync_run_id "
                "WHERE r.started_at >= :t"
            ),
            {"t": since},
        ).scalar_one()
        out["notification_outbox"] = conn.execute(
            sa.text("SELECT count(*) FROM notification_outbox WHERE created_at >= :t"),
            {"t": since},
        ).scalar_one()
    return out


def _copy_floor(engine: sa.Engine, since: Any) -> dict[str, float]:
    """Seconds to COPY the rows written since `since` into empty tables of the same
    shape, in one transaction, commit included (the CSV text is prepared outside the
    clock). Measured twice: with the tables' foreign keys (`fk`: each row's references
    are checked against the real parent tables, as in the sync) and without (`plain`:
    LIKE ... INCLUDING ALL copies defaults, indexes and constraints but no FKs; the
    storage parameters are copied too)."""
    from adbc_driver_postgresql import dbapi

    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    blocks: dict[str, tuple[list[str], bytes]] = {}
    fks: dict[str, list[str]] = {}
    with dbapi.connect(url) as adbc, adbc.cursor() as cursor:
        for table in ROSTER_TABLES:
            cursor.execute(
                "SELECT string_agg(column_name, ', ' ORDER BY ordinal_position) "
                "FROM information_schema.columns "
                f"WHERE table_name = '{table}' AND data_type NOT IN ('json', 'jsonb')"
            )
            columns = cursor.fetchone()[0]
            cursor.execute(
                f"SELECT {columns} FROM {table} WHERE updated_at >= '{since.isoformat()}'"
            )
            frame = pl.from_arrow(cursor.fetch_arrow_table())
            assert isinstance(frame, pl.DataFrame)
            if frame.height:
                blocks[table] = (frame.columns, frame.write_csv(include_header=False).encode())
            cursor.execute(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                f"WHERE conrelid = '{table}'::regclass AND contype = 'f'"
            )
            fks[table] = [r[0] for r in cursor.fetchall()]
    out = {}
    for kind in ("plain", "fk"):
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            for table in blocks:
                cur.execute(f"DROP TABLE IF EXISTS floor_{table}")
                cur.execute(f"CREATE TABLE floor_{table} (LIKE {table} INCLUDING ALL)")
                # Same storage parameters too (LIKE does not copy them): fillfactor.
                cur.execute(f"SELECT reloptions FROM pg_class WHERE oid = '{table}'::regclass")
                if options := cur.fetchone()[0]:
                    cur.execute(f"ALTER TABLE floor_{table} SET ({', '.join(options)})")
                for definition in fks[table] if kind == "fk" else []:
                    cur.execute(f"ALTER TABLE floor_{table} ADD {definition}")
            raw.commit()
            start = time.perf_counter()
            for table, (columns, data) in blocks.items():
                with cur.copy(  # type: ignore[attr-defined]
                    f"COPY floor_{table} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
                ) as copy:
                    step = 8 << 20
                    for offset in range(0, len(data), step):
                        copy.write(data[offset : offset + step])
            raw.commit()
            out[kind] = time.perf_counter() - start
            for table in blocks:
                cur.execute(f"DROP TABLE floor_{table}")
            raw.commit()
        finally:
            raw.close()
    return out


def _reset_peak_rss() -> None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _read_floor(folder: Path) -> float:
    start = time.perf_counter()
    for name in REQUIRED_FILES[DEFAULT_FORMAT]:
        pl.read_csv(folder / name, infer_schema=False)
    return time.perf_counter() - start


def _data_rows(folder: Path) -> int:
    rows = 0
    for name in REQUIRED_FILES[DEFAULT_FORMAT]:
        with open(folder / name, "rb") as handle:
            rows += sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b"")) - 1
    return rows


def archive(folder: Path, settings: Settings, drop: str) -> DropManifest:
    """A generated drop of the benchmark's district, archived into the landing store."""
    return archive_drop(
        folder,
        settings.landing_root,
        district="bench",
        drop=drop,
        format=DEFAULT_FORMAT,
        file_names=REQUIRED_FILES[DEFAULT_FORMAT],
    )


def ensure_drops(data: Path, people: int) -> tuple[Path, Path]:
    """The tier's initial drop and its 1 % churn maintenance drop, generated once."""
    initial, maintenance = data / "initial", data / "maintenance"
    if not (maintenance / "enrollments.csv").exists():
        generate_district(initial, people=people, seed=1)
        generate_district(maintenance, people=people, seed=2, maintenance_of=initial, churn=0.01)
    return initial, maintenance


def ensure_following_drop(data: Path, people: int) -> Path:
    """A 1 % churn drop after the tier's maintenance drop (the next day's drop)."""
    _, maintenance = ensure_drops(data, people)
    following = data / "following"
    if not (following / "enrollments.csv").exists():
        generate_district(following, people=people, seed=3, maintenance_of=maintenance, churn=0.01)
    return following


def _run_alone(manifest: DropManifest, settings: Settings) -> dict[str, Any]:
    """One sync in this (fresh) process: its status, seconds, step durations, peak RSS."""
    _reset_peak_rss()
    start = time.perf_counter()
    run = run_drop(manifest, settings)
    total = time.perf_counter() - start
    return {
        "status": run.outcome.status,
        "total": total,
        "peak_rss_mb": _peak_rss_mb(),
        "steps": {
            e.step_key: e.event_specific_data.duration_ms / 1000  # type: ignore[union-attr]
            for e in run.result.all_events
            if e.event_type_value == "STEP_SUCCESS"
        },
    }


def _sync(
    folder: Path,
    settings: Settings,
    drop: str,
    engine: sa.Engine,
    postgres: bool,
    isolate: bool = False,
) -> dict[str, Any]:
    manifest = archive(folder, settings, drop)
    settle()
    probe = machine_probe()
    since = _db_now(engine)
    if isolate:
        # A fresh process per sync, as each Dagster run has in production: its peak
        # RSS is its own, not what this process kept from earlier syncs and floors.
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as child:
            alone = child.submit(_run_alone, manifest, settings).result()
    else:
        alone = _run_alone(manifest, settings)
    total, peak_rss, steps = alone["total"], alone["peak_rss_mb"], alone["steps"]
    assert alone["status"] == "applied", alone["status"]
    result: dict[str, Any] = {
        stage: sum(steps.get(s, 0.0) for s in keys) for stage, keys in STAGES.items()
    }
    result["total"] = total
    result["probe_s"] = probe
    result["peak_rss_mb"] = peak_rss
    written = _rows_written(engine, since)
    result["rows_written"] = sum(written.values())
    result["written"] = written
    if postgres:
        read = _read_floor(folder)
        copy = _copy_floor(engine, since)
        result["floor"] = read + copy["fk"]
        result["floor_no_fk"] = read + copy["plain"]
    return result


def run_tier(args: argparse.Namespace, people: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="roster-bench-") as tmp:
        work = Path(tmp)
        data = Path(args.data) / f"p{people}" if args.data else work / "data"
        initial, maintenance = ensure_drops(data, people)
        following = ensure_following_drop(data, people)
        folders = {
            "initial": initial,
            "maintenance 1%": maintenance,
            "next day 1%": following,
            "repeat": following,
        }
        input_rows = {scenario: _data_rows(folder) for scenario, folder in folders.items()}
        results: dict[str, list[dict[str, Any]]] = {s: [] for s in SCENARIOS}
        postgres = args.db == "postgres"
        for i in range(args.repeat):
            url = _fresh_database(args.db, work)
            settings = Settings.from_env(state_dir=str(work / f"state{i}"), database_url=url)
            engine = make_engine(url)
            try:
                for scenario in SCENARIOS:
                    drop = f"{DROP_NAMES[scenario]}{i}"
                    r = _sync(folders[scenario], settings, drop, engine, postgres, args.isolate)
                    r["rows_per_s"] = input_rows[scenario] / r["total"]
                    results[scenario].append(r)
                    print(
                        f"  {people:,} run {i + 1}: {scenario} {r['total']:.1f} s"
                        f" (machine probe {r['probe_s']:.2f} s)",
                        flush=True,
                    )
            finally:
                engine.dispose()
                _drop_database(url)
    return {
        "people": people,
        "repeat": args.repeat,
        "db": args.db,
        "input_rows": input_rows,
        "runs": results,
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r[key]) for r in runs if key in r)


def render(tiers: list[dict[str, Any]], command: str) -> str:
    tier0 = tiers[0]
    lines = [
        f"`{command}` — {time.strftime('%Y-%m-%d')}, {platform.machine()}, {_cores()} cores, "
        f"Python {platform.python_version()}, polars {pl.__version__} (its speed at some "
        f"operations changes between versions), {tier0['db']}, each run on a fresh database",
        "",
    ]
    for tier in tiers:
        postgres = tier["db"] == "postgres"
        lines += [
            f"#### {tier['people']:,} people — median of {tier['repeat']} run(s)",
            "",
            "| scenario | input rows | "
            + " | ".join(STAGES)
            + " | total s | rows/s | rows written | peak RSS MB"
            + (" | floor s | × floor | floor w/o FK s" if postgres else "")
            + " | machine probe s |",
            "|---" * (len(STAGES) + 7 + (3 if postgres else 0)) + "|",
        ]
        for scenario, runs in tier["runs"].items():
            cells = [f"{_median(runs, s):.2f}" for s in STAGES]
            total = _median(runs, "total")
            row = (
                f"| {scenario} | {tier['input_rows'][scenario]:,} | "
                + " | ".join(cells)
                + f" | **{total:.2f}** | {_median(runs, 'rows_per_s'):,.0f}"
                f" | {int(_median(runs, 'rows_written')):,}"
                f" | {max(r['peak_rss_mb'] for r in runs):,.0f}"
            )
            if postgres:
                floor = _median(runs, "floor")
                ratio = statistics.median(r["total"] / r["floor"] for r in runs)
                row += f" | {floor:.2f} | {ratio:.1f} | {_median(runs, 'floor_no_fk'):.2f}"
            row += f" | {_median(runs, 'probe_s'):.2f}"
            lines.append(row + " |")
        lines.append("")
    if len(tiers) > 1:
        lines += [
            "Growth (median end-to-end seconds; × = ratio to the previous tier):",
            "",
            "| scenario | " + " | ".join(f"{t['people']:,}" for t in tiers) + " |",
            "|---" * (len(tiers) + 1) + "|",
        ]
        for scenario in SCENARIOS:
            cells, previous = [], None
            for tier in tiers:
                total = _median(tier["runs"][scenario], "total")
                cells.append(f"{total:.2f}" + (f" (×{total / previous:.1f})" if previous else ""))
                previous = total
            lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, nargs="+", default=[10_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--data", help="keep generated drops here and reuse them")
    parser.add_argument("--json", help="write the raw results (all runs) to this file")
    parser.add_argument("--write", help="append the Markdown results to this file")
    parser.add_argument(
        "--isolate", action="store_true", help="run each sync in a fresh process (its own RSS)"
    )
    parser.add_argument("--tier-json", help=argparse.SUPPRESS)  # one tier, in a child
    args = parser.parse_args()

    if args.tier_json:
        Path(args.tier_json).write_text(json.dumps(run_tier(args, args.people[0]), default=str))
        return
    tiers = []
    with tempfile.TemporaryDirectory(prefix="roster-bench-json-") as tmp:
        for people in args.people:
            out = Path(tmp) / f"{people}.json"
            child = [sys.executable, __file__, "--people", str(people), "--repeat"]
            child += [str(args.repeat), "--db", args.db, "--tier-json", str(out)]
            if args.data:
                child += ["--data", args.data]
            if args.isolate:
                child += ["--isolate"]
            subprocess.run(child, check=True)
            tiers.append(json.loads(out.read_text()))
    command = "python scripts/bench_sync.py " + " ".join(sys.argv[1:])
    text = render(tiers, command)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(tiers, indent=1, default=str))
    if args.write:
        with open(args.write, "a") as handle:
            handle.write("\n" + text)


def _cores() -> str:
    return subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
