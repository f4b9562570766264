"""Benchmark: one drop-zone sensor tick over a zone holding 10,000 objects.

Fills a zone with `--districts` district folders, each holding a complete Remind CSV
drop (5 files) and `--other-files` files the sensor ignores (old exports left behind);
200 x (5 + 45) = 10,000 objects by default. Times the real sensor
(`build_sensor_context`, the same code the daemon runs) on:
- first tick: lists everything and records each district's listing signature;
- ready tick: every drop is now stable; the tick archives drops into the landing store
  until its limits (50 drops, 5 s of archiving) and requests their runs;
- steady tick: every drop started already (untimed ticks drain the rest); nothing new;
- one new drop: one district uploads a new drop with `_READY`.
Zones: local folder, S3 (moto's server mode, over HTTP through boto3), SFTP (OpenSSH
sshd on loopback; needs root). Target (issue 6): every tick under 10 s.

    .venv/bin/python scripts/bench_sensor.py                       # all three zones
    .venv/bin/python scripts/bench_sensor.py --zones local s3 --write BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import posixpath
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from roster_pipelines.defs.sync.resources import (  # noqa: E402
    DropZoneResource,
    LocalDropZone,
    RosterStore,
    S3DropZone,
    SFTPDropZone,
)
from roster_pipelines.defs.sync.sensors import ZONES, build_drop_sensor  # noqa: E402
from roster_pipelines_tests.conftest import REMIND_HEADERS  # noqa: E402
from roster_pipelines_tests.integration.servers import (  # noqa: E402
    moto_s3_server,
    openssh_server,
)

OTHER_FILES = 45


def _files(i: int) -> dict[str, bytes]:
    files = {name: (",".join(header) + "\n").encode() for name, header in REMIND_HEADERS.items()}
    files["schools.csv"] += f"S{i},School {i}\n".encode()
    for n in range(OTHER_FILES):
        files[f"export-2025-{n:03d}.zip"] = b"old"
    return files


def _time_ticks(resource: DropZoneResource, key: str, state: Path, new_drop) -> dict:
    sensor = build_drop_sensor(f"bench_{key}", key)
    store = RosterStore(state_dir=str(state))
    figures: dict[str, float | int] = {}
    with dg.instance_for_test() as instance:

        def run(cursor):
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"roster_store": store, key: resource}
            )
            started = time.perf_counter()
            result = sensor(context)
            seconds = time.perf_counter() - started
            print(f"  {key}: tick in {seconds:.2f} s, {len(result.run_requests)} runs", flush=True)
            return result, seconds

        first, figures["first tick (s)"] = run(None)
        ready, figures["ready tick (s)"] = run(first.cursor)
        figures["runs requested by the ready tick"] = len(ready.run_requests)
        cursor, drained = ready.cursor, len(ready.run_requests)
        while True:  # start every other drop (not timed), 50 per tick
            result, _ = run(cursor)
            cursor = result.cursor
            if not result.run_requests:
                break
            drained += len(result.run_requests)
        figures["drops started in all"] = drained
        steady, figures["steady tick (s)"] = run(cursor)
        assert not steady.run_requests
        new_drop()
        one, figures["one new drop tick (s)"] = run(steady.cursor)
        figures["runs requested by the new-drop tick"] = len(one.run_requests)
        figures["cursor size (bytes)"] = len(one.cursor or "")
    return figures


def bench_local(districts: int, work: Path) -> dict:
    root = work / "local_zone"
    for i in range(districts):
        folder = root / f"district-{i:05d}"
        folder.mkdir(parents=True)
        for name, data in _files(i).items():
            (folder / name).write_bytes(data)

    def new_drop() -> None:
        folder = root / "district-00007"
        (folder / "schools.csv").write_bytes(b"school_id,school_name\nS7,Renamed\n")
        (folder / "_READY").write_bytes(b"")

    return _time_ticks(
        LocalDropZone(root=str(root)), "local_drop_zone", work / "state_local", new_drop
    )


def bench_s3(districts: int, work: Path) -> dict:
    with moto_s3_server() as server:
        client = server.client()
        client.create_bucket(Bucket="bench")
        jobs = [
            (f"districts/district-{i:05d}/{name}", data)
            for i in range(districts)
            for name, data in _files(i).items()
        ]
        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda j: client.put_object(Bucket="bench", Key=j[0], Body=j[1]), jobs))
        print(f"  s3: uploaded {len(jobs)} objects in {time.perf_counter() - started:.1f} s")

        def new_drop() -> None:
            client.put_object(
                Bucket="bench",
                Key="districts/district-00007/schools.csv",
                Body=b"school_id,school_name\nS7,Renamed\n",
            )
            client.put_object(Bucket="bench", Key="districts/district-00007/_READY", Body=b"")

        resource = S3DropZone(
            bucket="bench",
            prefix="districts",
            endpoint_url=server.endpoint_url,
            region_name=server.region,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
        )
        return _time_ticks(resource, "s3_drop_zone", work / "state_s3", new_drop)


def bench_sftp(districts: int, work: Path) -> dict:
    root = work / "sftp_zone"
    for i in range(districts):
        folder = root / f"district-{i:05d}"
        folder.mkdir(parents=True)
        for name, data in _files(i).items():
            (folder / name).write_bytes(data)
    with openssh_server(work / "sshd") as server:
        resource = SFTPDropZone(
            host=server.host,
            port=server.port,
            username=server.username,
            private_key_path=str(server.private_key),
            known_hosts=str(server.known_hosts),
            root=str(root),
        )

        def new_drop() -> None:
            zone = resource.open_zone()
            try:
                folder = posixpath.join(str(root), "district-00007")
                zone.sftp.putfo(
                    io.BytesIO(b"school_id,school_name\nS7,Renamed\n"),
                    posixpath.join(folder, "schools.csv"),
                )
                zone.sftp.putfo(io.BytesIO(b""), posixpath.join(folder, "_READY"))
            finally:
                zone.close()

        return _time_ticks(resource, "sftp_drop_zone", work / "state_sftp", new_drop)


BENCHES = {"local": bench_local, "s3": bench_s3, "sftp": bench_sftp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--districts", type=int, default=200, help="district folders")
    parser.add_argument("--other-files", type=int, default=45, help="ignored files per folder")
    parser.add_argument("--zones", nargs="+", default=list(BENCHES), choices=list(BENCHES))
    parser.add_argument("--write", type=Path, help="append the figures to this Markdown file")
    args = parser.parse_args()
    global OTHER_FILES
    OTHER_FILES = args.other_files
    assert set(ZONES) >= {"local_drop_sensor", "s3_drop_sensor", "sftp_drop_sensor"}
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_sensor_") as tmp:
        for zone in args.zones:
            objects = args.districts * (5 + args.other_files)
            print(f"{zone}: {objects:,} objects in {args.districts:,} district folders")
            results[zone] = BENCHES[zone](args.districts, Path(tmp) / zone)
            print(json.dumps(results[zone], indent=2))
    rows = list(next(iter(results.values())))
    table = ["| | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for row in rows:
        cells = [
            f"{results[z][row]:.2f}"
            if isinstance(results[z][row], float)
            else f"{results[z][row]:,}"
            for z in results
        ]
        table.append(f"| {row} | " + " | ".join(cells) + " |")
    command = "`.venv/bin/python scripts/bench_sensor.py " + " ".join(sys.argv[1:]) + "`"
    header = (
        f"{command} — {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{len(__import__('os').sched_getaffinity(0))} cores, Python {platform.python_version()}"
    )
    text = header + "\n\n" + "\n".join(table) + "\n"
    print(text)
    if args.write:
        with args.write.open("a") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
