"""Benchmark: parse + contracts + issues of one generated drop (issue 3).

Generates a district with `lib.generator.generate_district` into a temporary folder,
then runs the Remind CSV adapter (`parse`) and the contracts (`validate`) --repeat
times, each in a fresh Python process so that every run's peak RSS is its own
(`resource.getrusage` in the worker, which only parses and validates). Prints the
median wall time of parse, validate and both, and the largest peak RSS.

    .venv/bin/python scripts/bench_validate.py --people 1000000 --repeat 3
    .venv/bin/python scripts/bench_validate.py --people 1000000 --repeat 3 --drop /tmp/d  # reuse a drop
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 30.0
TARGET_RSS_MB = 3 * 1024


def worker(folder: Path) -> dict[str, float]:
    """One run in this process: parse, then validate; times and peak RSS."""
    from roster_pipelines.lib.contracts import validate
    from roster_pipelines.lib.formats.remind_csv import parse

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    c0, t0 = cpu(), time.perf_counter()
    parsed = parse(folder)
    t1 = time.perf_counter()
    roster = validate(parsed)
    c2, t2 = cpu(), time.perf_counter()
    counts = roster.counts()
    return {
        "parse": t1 - t0,
        "validate": t2 - t1,
        "total": t2 - t0,
        "cpu": c2 - c0,
        "load": os.getloadavg()[0],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "people": sum(counts[k] for k in ("teachers", "students", "parents")),
        "issues": roster.issues.height,
        "rejected": roster.rejected,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--drop", help="an existing drop folder to measure (skips generating)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(Path(args.worker))))
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_validate_") as tmp:
        folder = Path(args.drop) if args.drop else Path(tmp) / "drop"
        if not args.drop:
            from roster_pipelines.lib.generator import generate_district

            t0 = time.perf_counter()
            generate_district(folder, people=args.people, seed=args.seed)
            print(f"generated {args.people:,} people in {time.perf_counter() - t0:.1f} s: {folder}")
        size = sum(p.stat().st_size for p in folder.glob("*.csv"))
        rows = sum(p.read_bytes().count(b"\n") - 1 for p in folder.glob("*.csv"))
        runs = []
        for i in range(args.repeat):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", str(folder)],
                check=True,
                capture_output=True,
                text=True,
            )
            run = json.loads(out.stdout.strip().splitlines()[-1])
            runs.append(run)
            print(
                f"run {i + 1}: parse {run['parse']:.2f} s, validate {run['validate']:.2f} s, "
                f"total {run['total']:.2f} s (CPU {run['cpu']:.1f} s, load average "
                f"{run['load']:.1f}), peak RSS {run['peak_rss_mb']:,.0f} MB, "
                f"{run['people']:,} people applied, {run['issues']:,} issues"
            )
    median = {
        k: statistics.median(r[k] for r in runs) for k in ("parse", "validate", "total", "cpu")
    }
    peak = max(r["peak_rss_mb"] for r in runs)
    what = f"drop {args.drop}" if args.drop else f"{args.people:,} people"
    print(
        f"\n{what} ({rows:,} data rows, {size / 1e6:,.0f} MB), median of "
        f"{args.repeat}: parse {median['parse']:.2f} s, validate {median['validate']:.2f} s, "
        f"parse + validate {median['total']:.2f} s (CPU {median['cpu']:.1f} s); "
        f"peak RSS {peak:,.0f} MB "
        f"({platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
        f"Python {platform.python_version()})"
    )
    ok = median["total"] < TARGET_SECONDS and peak < TARGET_RSS_MB
    print(f"target (< {TARGET_SECONDS:.0f} s, < {TARGET_RSS_MB:,} MB): {'met' if ok else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
