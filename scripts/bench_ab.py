"""Same-process A/B of one stage's library module: this checkout's against another
checkout's (a `git worktree` of an older commit), called in turn on the same input,
with their outputs checked equal.

The machine's speed drifts by 20-40 % within minutes (BENCHMARKS.md, session 8), so
whole-pipeline runs minutes apart cannot show a change of a few percent; the two
versions of a module called in turn in one process can. Only the stage's own module
is swapped (loaded from the other checkout's file under another name); what it
imports comes from this checkout.

    git worktree add /tmp/rb/old <rev>
    .venv/bin/python scripts/bench_ab.py --old /tmp/rb/old --stage validate \\
        --drop /tmp/rbench/data/p1000000/maintenance --repeat 5

Stages: `parse` (the CSV adapter), `validate` (the contracts, on this checkout's
parse), `rows` (the report's placing of rows by school). Identity and the plan need a
database: compare them with `bench_stages.py` runs, alternated. Not part of the tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl

from roster_pipelines.lib import contracts, report_data
from roster_pipelines.lib.canonical import Roster
from roster_pipelines.lib.formats import remind_csv

# stage -> (module of this checkout, its file inside a checkout)
STAGES: dict[str, tuple[ModuleType, str]] = {
    "parse": (remind_csv, "roster_pipelines/lib/formats/remind_csv.py"),
    "validate": (contracts, "roster_pipelines/lib/contracts.py"),
    "rows": (report_data, "roster_pipelines/lib/report_data.py"),
}


def load_other(root: Path, relative: str, name: str) -> ModuleType:
    """The module at `root/relative`, imported as `name` (dataclasses and type hints
    resolve through `sys.modules`, so it is registered there)."""
    spec = importlib.util.spec_from_file_location(name, root / relative)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {root / relative}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def call_for(stage: str, module: ModuleType, drop: Path) -> Callable[[], Any]:
    if stage == "parse":
        return lambda: module.parse(drop)
    if stage == "validate":
        parsed = remind_csv.parse(drop)
        return lambda: module.validate(parsed)
    return lambda: module.row_schools(drop)


def frames_of(result: Any) -> dict[str, pl.DataFrame]:
    if isinstance(result, Roster):
        return {**result.tables(), "issues": result.issues}
    return {"result": result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, type=Path, help="the other checkout")
    parser.add_argument("--stage", required=True, choices=sorted(STAGES))
    parser.add_argument("--drop", required=True, type=Path, help="a drop folder (five CSVs)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    current, relative = STAGES[args.stage]
    versions = {
        "old": call_for(args.stage, load_other(args.old, relative, f"old_{args.stage}"), args.drop),
        "new": call_for(args.stage, current, args.drop),
    }
    outputs = {name: frames_of(call()) for name, call in versions.items()}  # warm-up too
    for table, frame in outputs["old"].items():
        if not frame.equals(outputs["new"][table]):
            raise SystemExit(f"the two versions differ on {table}")
    print(f"{args.stage}: outputs equal ({', '.join(outputs['old'])})")
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in versions}
    for _ in range(args.repeat):
        for name, call in versions.items():
            wall, cpu = time.perf_counter(), time.process_time()
            call()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    for name, runs in times.items():
        walls = ", ".join(f"{w:.2f}" for w, _ in runs)
        print(
            f"{name}: wall median {statistics.median(w for w, _ in runs):.2f} s "
            f"(cpu {statistics.median(c for _, c in runs):.2f} s); runs {walls}"
        )


if __name__ == "__main__":
    main()
