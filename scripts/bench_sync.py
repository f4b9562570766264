"""Benchmark: initial sync, a 1 % churn maintenance drop and a repeated drop.

Runs through the same Dagster assets as production (in process), on a fresh Postgres
database (or SQLite with --db sqlite), and prints wall time per stage, total time and
peak RSS. Each scenario runs --repeat times on a fresh database; medians are quoted.

    .venv/bin/python scripts/bench_sync.py --people 10000 --repeat 3
    .venv/bin/python scripts/bench_sync.py --people 100000 --repeat 3 --write BENCHMARKS.md
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

import sqlalchemy as sa

from roster_pipelines.defs.sync.inprocess import run_drop
from roster_pipelines.lib.config import DEFAULT_FORMAT, Settings
from roster_pipelines.lib.drops import archive_drop
from roster_pipelines.lib.formats import REQUIRED_FILES
from roster_pipelines.lib.generator import generate_district

STAGES = [
    "raw_roster_files",
    "parsed_roster",
    "validated_roster",
    "identity_resolution",
    "sync_plan",
    "applied_sync",
    "sync_report",
]
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _fresh_database(kind: str, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / f'bench-{uuid.uuid4().hex[:8]}.db'}"
    name = f"roster_bench_{uuid.uuid4().hex[:10]}"
    with sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def _drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        name = url.rsplit("/", 1)[-1]
        with sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _sync(folder: Path, settings: Settings, drop: str) -> dict[str, float]:
    manifest = archive_drop(
        folder,
        settings.landing_root,
        district="bench",
        drop=drop,
        format=DEFAULT_FORMAT,
        file_names=REQUIRED_FILES[DEFAULT_FORMAT],
    )
    start = time.perf_counter()
    run = run_drop(manifest, settings)
    total = time.perf_counter() - start
    timings = {
        e.step_key: e.event_specific_data.duration_ms / 1000  # type: ignore[union-attr]
        for e in run.result.all_events
        if e.event_type_value == "STEP_SUCCESS"
    }
    assert run.outcome.status == "applied", run.outcome.status
    return {**timings, "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--write", help="append the results to this Markdown file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="roster-bench-") as tmp:
        work = Path(tmp)
        initial, maintenance = work / "initial", work / "maintenance"
        generate_district(initial, people=args.people, seed=1)
        generate_district(
            maintenance, people=args.people, seed=2, maintenance_of=initial, churn=0.01
        )
        results: dict[str, list[dict[str, float]]] = {
            "initial": [],
            "maintenance 1%": [],
            "repeat": [],
        }
        for i in range(args.repeat):
            url = _fresh_database(args.db, work)
            settings = Settings.from_env(state_dir=str(work / f"state{i}"), database_url=url)
            try:
                results["initial"].append(_sync(initial, settings, f"initial{i}"))
                results["maintenance 1%"].append(_sync(maintenance, settings, f"maint{i}"))
                results["repeat"].append(_sync(maintenance, settings, f"repeat{i}"))
            finally:
                _drop_database(url)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    header = "| scenario | " + " | ".join(s.replace("_", " ") for s in STAGES) + " | total |"
    lines = [
        f"### {args.people:,} people, {args.db}, median of {args.repeat}",
        "",
        f"`.venv/bin/python scripts/bench_sync.py --people {args.people} --repeat {args.repeat} --db {args.db}`"
        f" — {time.strftime('%Y-%m-%d')}, {platform.machine()}, {_cores()} cores, Python {platform.python_version()},"
        f" peak RSS {peak_rss_mb:,.0f} MB",
        "",
        header,
        "|" + "---|" * (len(STAGES) + 2),
    ]
    for scenario, runs in results.items():
        cells = [
            f"{statistics.median(r.get(s, 0.0) for r in runs):.2f}" for s in [*STAGES, "total"]
        ]
        lines.append(f"| {scenario} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        with open(args.write, "a") as handle:
            handle.write("\n" + text)


def _cores() -> str:
    return subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())
