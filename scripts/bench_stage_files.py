"""Benchmark: a validated roster saved and loaded as a stage output, two ways.

`pickle` is what the IO manager did before (the whole object, frames included, through
pickle); `stage_files` is what it does now (`lib/stage_files.py`: the object pickled,
each frame as an uncompressed Arrow IPC file). Prints the median of `--repeat` rounds
of save and load, and the bytes on disk.

    .venv/bin/python scripts/bench_stage_files.py --drop /tmp/roster-bench-data/p1000000/maintenance

Without `--drop` it generates a district of `--people` people first.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from roster_pipelines.lib import contracts, stage_files
from roster_pipelines.lib.config import DEFAULT_FORMAT
from roster_pipelines.lib.formats import get_adapter
from roster_pipelines.lib.generator import generate_district


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drop", help="a drop folder (Remind CSV); default: generate one")
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="roster-stage-files-") as tmp:
        work = Path(tmp)
        drop = Path(args.drop) if args.drop else work / "drop"
        if not args.drop:
            generate_district(drop, people=args.people, seed=1)
        roster = contracts.validate(get_adapter(DEFAULT_FORMAT)(drop))
        rows = sum(frame.height for frame in roster.tables().values())
        times: dict[str, dict[str, list[float]]] = {
            way: {"save": [], "load": []} for way in ("pickle", "stage_files")
        }
        for _ in range(args.repeat):
            target = work / "out.pkl"
            start = time.perf_counter()
            with target.open("wb") as handle:
                pickle.dump(roster, handle, protocol=pickle.HIGHEST_PROTOCOL)
            times["pickle"]["save"].append(time.perf_counter() - start)
            start = time.perf_counter()
            with target.open("rb") as handle:
                pickle.load(handle)
            times["pickle"]["load"].append(time.perf_counter() - start)
            pickled = _size(target)
            target.unlink()

            folder = work / "out"
            start = time.perf_counter()
            stage_files.save(roster, folder)
            times["stage_files"]["save"].append(time.perf_counter() - start)
            start = time.perf_counter()
            stage_files.load(folder)
            times["stage_files"]["load"].append(time.perf_counter() - start)
            staged = _size(folder)
            shutil.rmtree(folder)
        print(f"validated roster of {drop}: {rows:,} rows in its tables")
        print("| way | save s | load s | MB on disk |")
        print("|---|---|---|---|")
        for way, size in (("pickle", pickled), ("stage_files", staged)):
            save = statistics.median(times[way]["save"])
            load = statistics.median(times[way]["load"])
            print(f"| {way} | {save:.2f} | {load:.2f} | {size / 2**20:,.0f} |")


if __name__ == "__main__":
    main()
