"""How busy the machine's cores are through each stage of a 1 % maintenance drop.

Restores `bench_stages.py`'s baseline (the state after the initial drop, kept with
`--baseline NAME`), syncs the maintenance drop once in this process, and samples the
machine's CPU (`/proc/stat`, every 0.25 s) meanwhile. Prints each stage's start, end
and the mean number of busy cores while it ran (2.00: both cores of this machine), then
the samples. A stage well under the machine's cores leaves room for work that could
run beside it; one at the machine's cores can only be shortened by less work.

    .venv/bin/python scripts/bench_stages.py --people 1000000 --data /tmp/rbench/data --baseline base
    .venv/bin/python scripts/bench_timeline.py --people 1000000 --data /tmp/rbench/data --baseline base

Linux only; not part of the test run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

import dagster as dg
from bench_stages import Bench
from bench_sync import archive, ensure_drops, settle

from roster_pipelines.defs.sync.inprocess import run_drop

SAMPLE_S = 0.25


def _cpu_ticks() -> tuple[int, int]:
    """(all ticks, idle ticks) of the machine since boot."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    return sum(values), values[3] + values[4]  # idle + iowait


class Sampler(threading.Thread):
    """Busy cores every `SAMPLE_S` seconds, as (time, cores)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        cores = os.cpu_count() or 1
        before = _cpu_ticks()
        while not self.stopped.wait(SAMPLE_S):
            now = _cpu_ticks()
            total, idle = now[0] - before[0], now[1] - before[1]
            self.samples.append((time.time(), cores * (1 - idle / total) if total else 0.0))
            before = now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--data", required=True, help="the generated drops (bench_stages')")
    parser.add_argument("--baseline", required=True, help="bench_stages' kept baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="roster-bench-timeline-") as tmp:
        _, maintenance = ensure_drops(Path(args.data) / f"p{args.people}", args.people)
        bench = Bench(
            argparse.Namespace(
                people=args.people, baseline=args.baseline, steady=False, churn=None
            ),
            Path(tmp),
        )
        try:
            if not bench.restore():
                raise SystemExit(f"no baseline {args.baseline!r}: run bench_stages.py first")
            manifest = archive(maintenance, bench.settings, "maintenance")
            settle()
            instance = dg.DagsterInstance.ephemeral()  # its logs hold the steps' times
            sampler = Sampler()
            sampler.start()
            start = time.time()
            run = run_drop(manifest, bench.settings, instance=instance)
            total = time.time() - start
            sampler.stopped.set()
            sampler.join()
        finally:
            bench.close()
    steps: dict[str, dict[str, float]] = {}
    for record in instance.all_logs(run.result.run_id):
        event = record.dagster_event
        if event is not None and event.event_type_value in ("STEP_START", "STEP_SUCCESS"):
            steps.setdefault(event.step_key or "?", {})[event.event_type_value] = record.timestamp
    print(f"{args.people:,} people, maintenance: {run.outcome.status} in {total:.2f} s")
    print("| stage | from s | to s | s | busy cores |\n|---|---|---|---|---|")
    for key, times in sorted(steps.items(), key=lambda kv: kv[1].get("STEP_START", 0)):
        begin, end = times.get("STEP_START", start), times.get("STEP_SUCCESS", start + total)
        busy = [cores for at, cores in sampler.samples if begin <= at <= end]
        mean = sum(busy) / len(busy) if busy else 0.0
        print(
            f"| {key} | {begin - start:.2f} | {end - start:.2f} | {end - begin:.2f} | {mean:.2f} |"
        )
    overall = [cores for _, cores in sampler.samples]
    print(f"\nbusy cores over the drop: {sum(overall) / max(len(overall), 1):.2f}")
    print("samples:", " ".join(f"{cores:.1f}" for _, cores in sampler.samples))


if __name__ == "__main__":
    main()
