"""Where a maintenance drop's time goes, below the stage level.

Syncs a generated district's initial drop on a fresh Postgres database, then its 1 %
churn maintenance drop and the same drop again, through the Dagster job (in process),
with wall-clock timers around the library calls the assets make (parsing, contracts,
identity's reads and contact-owner lookup, the plan's state read and diff, the apply's
writes, the report, stage outputs saved and loaded). Prints one table per drop.

    .venv/bin/python scripts/bench_stages.py --people 1000000 --data /tmp/roster-bench-data

With `--baseline NAME` the state after the initial drop (its database, as a Postgres
template, and its state folder) is kept under NAME and reused by later runs, which then
sync only the maintenance drop and its repeat: a quicker loop while working on them.
`--profile FILE` writes a pyinstrument profile (HTML, or text for a `.txt` name) of the
maintenance drop. `--churn 0.001 0.01 0.05` syncs, instead of the maintenance drop and
its repeat, one maintenance drop per churn share, each from the state after the initial
drop, and prints how each stage grows with the change (`--steady`: the baseline holds
the maintenance drop too, and the drop timed is the next 1 % drop after it, as a
district's daily drops follow each other):

    .venv/bin/python scripts/bench_stages.py --people 1000000 --data /tmp/roster-bench-data \
        --churn 0.001 0.01 0.05

Timers nest (a stage's total includes the calls inside it), so rows do not add up to
the total. It also prints each drop's peak anonymous and file-backed (mapped stage
files) resident memory, its work in CPU seconds: the sync's process (every thread)
and the Postgres server (its processes, those that ended included), and the rows it
wrote: the roster tables' and the run's issue rows apart. `--json FILE` appends each
churn share's medians to FILE, for `fit_sweep.py` (how the drop splits between the
district and the change, over sweeps at several district sizes). Not part of the
test run.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import sqlalchemy as sa
from bench_sync import (
    PG_ADMIN,
    _db_now,
    _drop_database,
    _fresh_database,
    _rows_written,
    admin,
    archive,
    ensure_drops,
    ensure_following_drop,
    settle,
)

from roster_pipelines.defs.sync import assets
from roster_pipelines.defs.sync.inprocess import run_drop
from roster_pipelines.defs.sync.resources import DropStorageIOManager
from roster_pipelines.lib import contracts, identity, stage_files, sync
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.generator import generate_district
from roster_pipelines.lib.store import writer

PARSE = "parse: format adapter"
TIMED: list[tuple[Any, str, str]] = [
    (contracts, "validate", "validate: contracts"),
    (assets, "resolve_drop", "identity: resolve_drop"),
    (identity, "_read_district", "  identity: district reads"),
    (identity, "contact_owners", "  identity: contact owners"),
    # The similar-people scan (in a thread): before session 10 one function.
    (identity, "_similar_candidates", "  identity: similar-people candidates (in a thread)"),
    (identity, "scan", "  identity: similar-people scan in full (in a thread)"),
    (identity, "scan_scoped", "  identity: similar-people scan from the last keys (in a thread)"),
    (identity, "_people_of", "    identity: the rescanned accounts' rows"),
    (assets, "plan_drop", "plan: plan_drop"),
    # The incremental scope: worked out with identity since session 9, by the plan before.
    (sync, "_incremental_base", "  identity: base drop's run (incremental)"),
    # Read in threads since session 11 (in `_incremental_base` before).
    (sync, "_base_roster", "  identity: base drop's fingerprint read (in a thread)"),
    (sync, "_stored_keys", "  identity: last drop's similar-people keys read (in a thread)"),
    (sync, "_changed_since", "  identity: roster delta, in a thread (incremental)"),
    (sync, "_scope_after_identity", "  identity: scope closure (incremental)"),
    (sync, "_incremental_scope", "  plan: incremental scope (delta, closure)"),
    (sync, "changed_people", "    roster delta"),
    (sync, "fingerprint", "  plan: roster fingerprint (made while identity runs)"),
    (sync, "roster_digest", "  apply: roster digest"),
    (sync, "load_current_state", "  plan: state read"),
    (sync, "build_plan", "  plan: diff (build_plan)"),
    (assets, "write_plan_files", "plan: plan.csv"),
    (assets, "apply_drop", "apply: apply_drop"),
    (sync, "apply_plan", "  apply: roster writes"),
    (writer, "_insert", "    apply: inserts (COPY)"),
    (writer, "_set_active", "    apply: removals and reactivations"),
    (writer, "_update_by_id", "    apply: updates"),
    (sync, "record_sync_run", "  apply: run and issues"),
    (sync, "enqueue_sync_notifications", "  apply: notification outbox"),
    (sync, "refresh_statistics", "  apply: ANALYZE check"),
    # Since session 13 both at once (`sync.keep_for_next_drop`); before, one by one.
    (assets, "keep_for_next_drop", "apply: keys and links kept"),
    (sync, "keep_similar_keys", "  apply: similar-people keys kept (in a thread)"),
    (sync, "keep_links", "  apply: links kept"),
    (assets, "keep_similar_keys", "apply: similar-people keys kept"),
    (assets, "build_report", "report: data"),
    (assets, "write_report", "report: files"),
    (stage_files, "save", "stage outputs saved"),
    (stage_files, "load", "stage outputs loaded"),
]


def _instrument(totals: dict[str, float], cpu_totals: dict[str, float]) -> None:
    """Wall-clock and CPU seconds (every thread of this process) per timed call."""
    real_get_adapter = assets.get_adapter

    def get_adapter(format_name: str) -> Any:
        # The asset calls `get_adapter(format)(folder)`: time the adapter it returns.
        adapter = real_get_adapter(format_name)

        def parse(*args: Any, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return adapter(*args, **kwargs)
            finally:
                totals[PARSE] += time.perf_counter() - start
                cpu_totals[PARSE] += time.process_time() - cpu

        return parse

    assets.get_adapter = get_adapter  # type: ignore[assignment]
    for module, name, label in TIMED:
        original = getattr(module, name, None)
        if original is None:  # an older checkout's code (`/tmp/rb/run_at.py`)
            continue

        def timed(*args: Any, _f: Any = original, _label: str = label, **kwargs: Any) -> Any:
            start, cpu = time.perf_counter(), time.process_time()
            try:
                return _f(*args, **kwargs)
            finally:
                totals[_label] += time.perf_counter() - start
                cpu_totals[_label] += time.process_time() - cpu

        setattr(module, name, functools.wraps(original)(timed))


class MemorySampler:
    """Peak anonymous and file-backed resident memory (RssAnon, RssFile), sampled every
    50 ms: file-backed pages are memory-mapped files (page cache the kernel can drop),
    anonymous ones are the process's own."""

    def __init__(self) -> None:
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict[str, int]:
        out = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) // 1024
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for key, value in self.read().items():
                self.peak[key] = max(self.peak[key], value)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def postgres_cpu_seconds() -> float | None:
    """CPU seconds (user + system) the local Postgres server has used: its running
    processes' own, plus what the postmaster holds of the backends it has reaped (a
    connection closed during a sync still counts). None when no local server is seen.
    Read before and after a drop, it is the database's work for the drop, which the
    wall time on two shared cores does not show apart from ours."""
    tick = os.sysconf("SC_CLK_TCK")
    total, seen = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()
        if name != "postgres":
            continue
        seen = True
        # fields[0] is the state (field 3 of proc(5)); utime, stime, cutime, cstime
        # are fields 14-17.
        utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
        parent_is_postgres = _process_name(int(fields[1])) == "postgres"
        total += utime + stime + (0 if parent_is_postgres else cutime + cstime)
    return total / tick if seen else None


def _process_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _database_exists(name: str) -> bool:
    with sa.create_engine(PG_ADMIN).connect() as conn:
        return bool(
            conn.execute(
                sa.text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": name}
            ).scalar_one()
        )


def _report(
    people: int, drop: str, run: Any, total: float, memory: MemorySampler, cpu: dict[str, float]
) -> None:
    print(
        f"\n{people:,} people, {drop}: {run.outcome.status} in {total:.2f} s; "
        f"peak RssAnon {memory.peak['RssAnon']:,} MB, "
        f"peak RssFile {memory.peak['RssFile']:,} MB; "
        f"CPU s: sync {cpu['cpu']:.2f}, Postgres {cpu['db cpu']:.2f}"
    )


STAGES = {
    "parse": PARSE,
    "validate": "validate: contracts",
    "identity": "identity: resolve_drop",
    "plan": "plan: plan_drop",
    "apply": "apply: apply_drop",
    "report": "report: data",
}


class Bench:
    """One database and state folder; drops synced into them with the stage timers."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.totals: dict[str, float] = collections.defaultdict(float)
        self.cpu: dict[str, float] = collections.defaultdict(float)
        _instrument(self.totals, self.cpu)
        self.url = _fresh_database("postgres", work)
        self.name = self.url.rsplit("/", 1)[-1]
        self.state = work / "state"
        self.settings = Settings.from_env(state_dir=str(self.state), database_url=self.url)
        baseline = args.baseline or ("sweep" if args.churn else None)
        if baseline and args.steady:
            baseline += "_steady"
        self.template = f"roster_benchbase_{baseline}_p{args.people}" if baseline else None
        self.kept_state = Path(tempfile.gettempdir()) / (self.template or "-")

    def restore(self) -> bool:
        """Back to the state after the initial drop, if one was kept."""
        if not (self.template and _database_exists(self.template) and self.kept_state.exists()):
            return False
        admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        admin(f'CREATE DATABASE "{self.name}" TEMPLATE "{self.template}"')
        shutil.rmtree(self.state, ignore_errors=True)
        shutil.copytree(self.kept_state, self.state, symlinks=True)
        return True

    def keep(self) -> None:
        """Keep the state after the initial drop (database as a template, state folder)."""
        if not self.template:
            return
        admin(f'DROP DATABASE IF EXISTS "{self.template}"')
        admin(  # the run's pooled connections would block the copy
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
        )
        admin(f'CREATE DATABASE "{self.template}" TEMPLATE "{self.name}"')
        shutil.rmtree(self.kept_state, ignore_errors=True)
        shutil.copytree(self.state, self.kept_state, symlinks=True)

    def sync(self, drop: str, folder: Path, *, profile: str | None = None) -> dict[str, Any]:
        manifest = archive(folder, self.settings, drop)
        settle()
        self.totals.clear()
        self.cpu.clear()
        profiler = None
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.005)
            profiler.start()
        engine = sa.create_engine(self.url)
        since = _db_now(engine)
        start, cpu_start, db_start = (
            time.perf_counter(),
            time.process_time(),
            postgres_cpu_seconds(),
        )
        with MemorySampler() as memory:
            run = run_drop(manifest, self.settings)
        total = time.perf_counter() - start
        db_end = postgres_cpu_seconds()
        work = {
            "cpu": time.process_time() - cpu_start,
            "db cpu": (db_end - db_start) if db_start is not None and db_end is not None else 0.0,
        }
        written = _rows_written(engine, since)
        engine.dispose()
        # The run's issue and notification rows apart: they follow the district's issues.
        work["roster rows"] = sum(
            v for k, v in written.items() if k not in ("sync_issues", "notification_outbox")
        )
        work["issue rows"] = written["sync_issues"]
        print(f"rows written: {written}")
        if profiler is not None:
            profiler.stop()
            text = profile.endswith(".txt")
            Path(profile).write_text(
                profiler.output_text(show_all=False) if text else profiler.output_html()
            )
        _report(self.args.people, drop, run, total, memory, work)
        scope = (
            DropStorageIOManager(state_dir=str(self.settings.state_dir))
            .stored("sync_plan", manifest.partition_key)
            .scope
        )
        print(f"planned {'in full' if scope is None else 'incrementally'}: {scope}")
        # The apply's outcome: identity's stored result is written before the scan
        # (which the apply starts) has worked anything out.
        rescanned = (
            DropStorageIOManager(state_dir=str(self.settings.state_dir))
            .stored("applied_sync", manifest.partition_key)
            .rescanned
        )
        print(
            "similar-people scan: "
            + ("in full" if rescanned is None else f"{rescanned:,} accounts again")
        )
        print("| call | s | cpu s |\n|---|---|---|")
        for label in (PARSE, *(label for _, _, label in TIMED)):
            if label in self.totals:
                print(f"| {label} | {self.totals[label]:.2f} | {self.cpu[label]:.2f} |")
        stages = {k: self.totals[v] for k, v in STAGES.items()}
        return {"total": total, "scope": scope, **stages, **work}

    def close(self) -> None:
        _drop_database(self.url)


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per column, the median of the runs (the scope is the same in each)."""
    numbers = [k for k in runs[0] if k != "scope"]
    return {"scope": runs[0]["scope"]} | {k: statistics.median(r[k] for r in runs) for k in numbers}


def _changed_rows(scope: dict[str, Any]) -> int:
    """The roster delta's canonical rows, over its tables."""
    return sum(v for k, v in scope.items() if k.startswith("changed_"))


def _sweep_table(people: int, rows: dict[float, dict[str, Any]], repeat: int) -> None:
    print(f"\n{people:,} people, maintenance drops by churn (median of {repeat}):\n")
    print(
        "| churn | changed rows | scope people | "
        + " | ".join(STAGES)
        + " | total s | CPU s: sync | Postgres | rows written: roster | issues |\n|"
        + "---|" * (len(STAGES) + 8)
    )
    for churn, r in rows.items():
        scope = r["scope"] or {}
        changed = _changed_rows(scope)
        people = scope.get("scope_people", "full plan")
        cells = " | ".join(f"{r[k]:.2f}" for k in STAGES)
        print(
            f"| {churn * 100:g} % | {changed:,} | {people:,} | {cells} | {r['total']:.2f} | "
            f"{r['cpu']:.2f} | {r['db cpu']:.2f} | {r['roster rows']:,.0f} | "
            f"{r['issue rows']:,.0f} |"
        )


def _append_sweep(path: Path, people: int, rows: dict[float, dict[str, Any]]) -> None:
    """One JSON line per churn share (its medians), for `fit_sweep.py`."""
    with path.open("a") as out:
        for churn, r in rows.items():
            line = {
                "people": people,
                "churn": churn,
                "changed_rows": _changed_rows(r["scope"] or {}),
                **{k: v for k, v in r.items() if k != "scope"},
            }
            out.write(json.dumps(line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=100_000)
    parser.add_argument("--data", help="keep generated drops here and reuse them")
    parser.add_argument("--baseline", help="keep (and reuse) the state after the initial drop")
    parser.add_argument("--profile", help="write a pyinstrument profile of the maintenance drop")
    parser.add_argument(
        "--churn",
        type=float,
        nargs="+",
        help="instead of maintenance and repeat: one maintenance drop per churn share "
        "(0.001 = 0.1 %% of the people), each from the state after the initial drop",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per churn share (median)")
    parser.add_argument(
        "--json", help="with --churn: append each share's medians to this file (fit_sweep.py)"
    )
    parser.add_argument(
        "--steady",
        action="store_true",
        help="the baseline holds the maintenance drop too; time the next 1 %% drop after "
        "it (a maintenance drop after a maintenance drop, as a district's daily drops "
        "are) and that drop again",
    )
    parser.add_argument(
        "--full-scan",
        action="store_true",
        help="forget the similar-people keys the baseline kept: the scan runs in full "
        "(to compare with the scan from the last drop's keys)",
    )
    args = parser.parse_args()
    print(f"polars {metadata.version('polars')}, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="roster-bench-stages-") as tmp:
        work = Path(tmp)
        data = Path(args.data) / f"p{args.people}" if args.data else work / "data"
        initial, maintenance = ensure_drops(data, args.people)
        bench = Bench(args, work)
        try:
            if not bench.restore():
                bench.sync("initial", initial)
                if args.steady:
                    bench.sync("maintenance", maintenance)
                bench.keep()
            if args.full_scan:
                shutil.rmtree(bench.state / "similar_people_keys", ignore_errors=True)
            if args.steady:
                following = ensure_following_drop(data, args.people)
                bench.sync("following", following, profile=args.profile)
                bench.sync("repeat", following)
                return
            if not args.churn:
                bench.sync("maintenance", maintenance, profile=args.profile)
                bench.sync("repeat", maintenance)
                return
            runs: dict[float, list[dict[str, Any]]] = {churn: [] for churn in args.churn}
            for round_ in range(args.repeat):  # interleaved: a slow spell hits every churn
                for churn in args.churn:
                    folder = data / f"maintenance_c{churn:g}"
                    if not (folder / "enrollments.csv").exists():
                        generate_district(
                            folder, people=args.people, seed=2, maintenance_of=initial, churn=churn
                        )
                    if runs[churn] or round_ or churn != args.churn[0]:
                        bench.restore()
                    runs[churn].append(bench.sync(f"maintenance_c{churn:g}", folder))
            medians = {c: _median_run(r) for c, r in runs.items()}
            _sweep_table(args.people, medians, args.repeat)
            if args.json:
                _append_sweep(Path(args.json), args.people, medians)
        finally:
            bench.close()


if __name__ == "__main__":
    main()
