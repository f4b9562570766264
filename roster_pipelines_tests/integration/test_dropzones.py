"""Drop zones against real servers: moto's S3 server over HTTP, OpenSSH's sftp on loopback.

For each zone: a complete drop runs once; the same upload again does not run; a
partial drop waits until it is complete; a drop in district A's folder never touches
district B; a traversal file name is rejected. Plus a backfill from the landing store
after the drop zone was emptied.
"""

from __future__ import annotations

import contextlib
import io
import posixpath
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import paramiko
import pytest

from roster_pipelines.defs.sync.resources import (
    RosterStore,
    S3DropZone,
    SFTPDropZone,
)
from roster_pipelines.defs.sync.sensors import s3_drop_sensor, sftp_drop_sensor
from roster_pipelines.lib.drops import load_manifest, split_partition_key
from roster_pipelines.lib.dropzones.watch import tick
from roster_pipelines_tests.conftest import write_drop
from roster_pipelines_tests.integration.servers import S3Server, SSHServer

ROWS = {
    "schools.csv": [["S1", "Lincoln Elementary"]],
    "teachers.csv": [["S1", "T1", "Ann", "Lee", "ann@lincoln.k12.us", ""]],
    "students.csv": [["S1", "ST1", "Cara", "Diaz", "2016-03-04", "3", "", "", "", "", "", ""]],
}
FILES = ("schools.csv", "teachers.csv", "students.csv", "classes.csv", "enrollments.csv")


def drop_bytes(tmp_path: Path, rows=ROWS) -> dict[str, bytes]:
    folder = write_drop(tmp_path / f"src-{uuid.uuid4().hex[:6]}", rows)
    return {name: (folder / name).read_bytes() for name in FILES}


class S3Harness:
    key = "s3_drop_zone"
    sensor = s3_drop_sensor

    def __init__(self, server: S3Server) -> None:
        self.client = server.client()
        self.bucket = f"roster-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=self.bucket)
        self.resource = S3DropZone(
            bucket=self.bucket,
            prefix="districts",
            endpoint_url=server.endpoint_url,
            region_name=server.region,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
        )

    def put(self, district: str, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"districts/{district}/{name}", Body=data)

    def put_raw(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"districts/{key}", Body=data)

    def empty(self) -> None:
        for obj in self.client.list_objects_v2(Bucket=self.bucket).get("Contents", []):
            self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])

    def close(self) -> None:
        pass


class SFTPHarness:
    key = "sftp_drop_zone"
    sensor = sftp_drop_sensor

    def __init__(self, server: SSHServer, root: Path) -> None:
        root.mkdir(parents=True)
        self.root = str(root)
        self.resource = SFTPDropZone(
            host=server.host,
            port=server.port,
            username=server.username,
            private_key_path=str(server.private_key),
            known_hosts=str(server.known_hosts),
            root=self.root,
        )
        self.ssh = paramiko.SSHClient()
        self.ssh.load_host_keys(str(server.known_hosts))
        self.ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.ssh.connect(
            server.host,
            port=server.port,
            username=server.username,
            key_filename=str(server.private_key),
            look_for_keys=False,
            allow_agent=False,
        )
        self.sftp = self.ssh.open_sftp()

    def _mkdir(self, path: str) -> None:
        with contextlib.suppress(OSError):
            self.sftp.mkdir(path)

    def put(self, district: str, name: str, data: bytes) -> None:
        folder = posixpath.join(self.root, district)
        self._mkdir(folder)
        self.sftp.putfo(io.BytesIO(data), posixpath.join(folder, name))

    def put_raw(self, key: str, data: bytes) -> None:
        district, _, name = key.partition("/")
        self.put(district, name, data)

    def symlink(self, district: str, name: str, target: str) -> None:
        self.sftp.symlink(target, posixpath.join(self.root, district, name))

    def empty(self) -> None:
        for district in self.sftp.listdir(self.root):
            folder = posixpath.join(self.root, district)
            for name in self.sftp.listdir(folder):
                self.sftp.remove(posixpath.join(folder, name))
            self.sftp.rmdir(folder)

    def close(self) -> None:
        self.sftp.close()
        self.ssh.close()


@pytest.fixture(params=["s3", "sftp"])
def zone(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[S3Harness | SFTPHarness]:
    if request.param == "s3":
        harness = S3Harness(request.getfixturevalue("s3_server"))
    else:
        harness = SFTPHarness(request.getfixturevalue("ssh_server"), tmp_path / "sftp_root")
    yield harness
    harness.close()


@pytest.fixture
def store(tmp_path: Path) -> RosterStore:
    return RosterStore(state_dir=str(tmp_path / "state"))


def _tick(
    instance: dg.DagsterInstance, store: RosterStore, zone, cursor: str | None
) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"roster_store": store, zone.key: zone.resource}
    )
    result = zone.sensor(context)
    assert isinstance(result, dg.SensorResult), result
    return result


def _upload(zone, district: str, files: dict[str, bytes], only=FILES) -> None:
    for name in only:
        zone.put(district, name, files[name])


def _landing(store: RosterStore) -> Path:
    return store.settings().landing_root


def test_complete_drop_runs_once_and_the_same_upload_again_does_not(
    tmp_path: Path, zone, store: RosterStore
) -> None:
    files = drop_bytes(tmp_path)
    _upload(zone, "lincoln-usd", files)
    with dg.instance_for_test() as instance:
        first = _tick(instance, store, zone, None)
        assert first.run_requests == []  # seen once: not yet known to be stable
        second = _tick(instance, store, zone, first.cursor)
        [request] = second.run_requests
        assert request.tags["district"] == "lincoln-usd"
        assert request.tags["roster/zone"] == zone.resource.open_zone().kind
        district, drop = split_partition_key(request.partition_key)
        manifest = load_manifest(_landing(store), district, drop)
        assert {f.name: f.size for f in manifest.files} == {n: len(b) for n, b in files.items()}
        third = _tick(instance, store, zone, second.cursor)
        assert third.run_requests == [] and third.dynamic_partitions_requests == []

        # The district uploads the very same files again, this time with a marker.
        _upload(zone, "lincoln-usd", files)
        zone.put("lincoln-usd", "_READY", b"")
        again = _tick(instance, store, zone, third.cursor)
        again2 = _tick(instance, store, zone, again.cursor)
        assert again.run_requests == [] and again2.run_requests == []
        # ... and a corrected file: a new drop (the marker makes it start at once).
        corrected = drop_bytes(tmp_path, {**ROWS, "classes.csv": [["S1", "C1", "T1", "Art"]]})
        zone.put("lincoln-usd", "classes.csv", corrected["classes.csv"])
        new = _tick(instance, store, zone, again2.cursor)
        [new_request] = new.run_requests
        assert new_request.partition_key != request.partition_key
        assert new_request.run_key != request.run_key


def test_partial_drop_waits_until_complete(tmp_path: Path, zone, store: RosterStore) -> None:
    files = drop_bytes(tmp_path)
    _upload(zone, "lincoln-usd", files, only=FILES[:3])
    with dg.instance_for_test() as instance:
        cursor = None
        for _ in range(3):
            result = _tick(instance, store, zone, cursor)
            assert result.run_requests == []
            cursor = result.cursor
        assert "missing classes.csv, enrollments.csv" in result.skip_reason.skip_message
        assert not (_landing(store) / "lincoln-usd").exists()  # nothing archived yet
        _upload(zone, "lincoln-usd", files, only=FILES[3:])
        arrived = _tick(instance, store, zone, cursor)
        assert arrived.run_requests == []  # the listing changed: wait one more tick
        settled = _tick(instance, store, zone, arrived.cursor)
        assert len(settled.run_requests) == 1


def test_a_drop_in_district_a_never_touches_district_b(
    tmp_path: Path, zone, store: RosterStore
) -> None:
    a_files = drop_bytes(tmp_path)
    b_files = drop_bytes(tmp_path, {**ROWS, "schools.csv": [["S9", "Other School"]]})
    _upload(zone, "district-a", a_files, only=FILES[:4])  # A is missing enrollments.csv
    _upload(zone, "district-b", b_files)
    # Attempts from A's folder at B's files: a nested key / a symlink into B.
    if isinstance(zone, SFTPHarness):
        zone.symlink("district-a", "enrollments.csv", "../district-b/enrollments.csv")
    else:
        zone.put_raw("district-a/../district-b/enrollments.csv", b"school_id,class_id,user_id\n")
    with dg.instance_for_test() as instance:
        first = _tick(instance, store, zone, None)
        second = _tick(instance, store, zone, first.cursor)
        [request] = second.run_requests
        assert request.tags["district"] == "district-b"
        assert request.partition_key.startswith("district-b__")
        assert not (_landing(store) / "district-a").exists()
        _, drop = split_partition_key(request.partition_key)
        manifest = load_manifest(_landing(store), "district-b", drop)
        folder = manifest.folder(_landing(store))
        assert {n: (folder / n).read_bytes() for n in FILES} == b_files

    with zone.resource.open_zone() as dz:
        outcome = tick(dz, tmp_path / "landing2", None, options=zone.resource.options(), now=0)
    codes = {(i.district, i.code) for i in outcome.issues}
    assert ("district-a", "NOT_A_FILE" if isinstance(zone, SFTPHarness) else "UNSAFE_NAME") in codes


def test_traversal_file_names_are_rejected(tmp_path: Path, zone, store: RosterStore) -> None:
    files = drop_bytes(tmp_path)
    _upload(zone, "lincoln-usd", files)
    zone.put("lincoln-usd", "_READY", b"")
    if isinstance(zone, SFTPHarness):
        bad = ["..\\..\\escape.csv", ".hidden.csv", "schools.csv;rm -rf"]
    else:
        bad = ["../../escape.csv", "..\\..\\escape.csv", "sub/../../../escape.csv", ".hidden.csv"]
    for name in bad:
        zone.put_raw(f"lincoln-usd/{name}", b"x")
    landing = tmp_path / "state" / "landing"
    with zone.resource.open_zone() as dz:
        outcome = tick(dz, landing, None, options=zone.resource.options(), now=time.time())
    rejected = {i.name for i in outcome.issues if i.code == "UNSAFE_NAME"}
    assert rejected == set(bad)
    [started] = outcome.started  # the drop's own files still start the drop
    assert {f.name for f in started.manifest.files} == set(FILES)
    every_file = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert "escape.csv" not in every_file and "..\\..\\escape.csv" not in {
        p.name for p in landing.rglob("*")
    }


def test_backfill_rereads_the_archive_after_the_zone_was_emptied(
    tmp_path: Path, s3_server: S3Server, store: RosterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlalchemy as sa

    from roster_pipelines.definitions import defs
    from roster_pipelines.lib.store.engine import make_engine
    from roster_pipelines.lib.store.models import SyncRun

    monkeypatch.setenv("ROSTER_STATE_DIR", str(tmp_path / "state"))
    zone = S3Harness(s3_server)
    _upload(zone, "lincoln-usd", drop_bytes(tmp_path))
    zone.put("lincoln-usd", "_READY", b"")
    with dg.instance_for_test() as instance:
        result = _tick(instance, store, zone, None)
        [request] = result.run_requests
        instance.add_dynamic_partitions(
            "drops", list(result.dynamic_partitions_requests[0].partition_keys)
        )
        job = defs.resolve_job_def("roster_sync_job")
        assert job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags
        ).success
        zone.empty()  # the district's files are gone from the drop zone
        assert zone.client.list_objects_v2(Bucket=zone.bucket).get("KeyCount", 0) == 0
        # The data team re-runs the drop's partition (UI: Materialize; CLI: see README).
        rerun = job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags
        )
        assert rerun.success
        raw = rerun.asset_materializations_for_node("raw_roster_files")[0]
        assert raw.metadata["content_hash"].value in request.run_key
    engine = make_engine(f"sqlite:///{tmp_path / 'state' / 'roster.db'}")
    with engine.connect() as conn:
        statuses = conn.execute(sa.select(SyncRun.status).order_by(SyncRun.id)).scalars().all()
    assert statuses == ["applied", "applied"]


def test_a_tick_lists_a_bounded_number_of_objects(tmp_path: Path, zone) -> None:
    files = drop_bytes(tmp_path)
    for i in range(5):
        _upload(zone, f"d{i}", files)
        zone.put(f"d{i}", "_READY", b"")
    options = zone.resource.options()
    bounded = type(options)(format=options.format, max_objects=14)  # two folders of 6
    landing, cursor, started = tmp_path / "landing", None, []
    with zone.resource.open_zone() as dz:
        for now in range(4):
            outcome = tick(dz, landing, cursor, options=bounded, now=float(now))
            assert outcome.objects_listed <= 14
            started += [s.manifest.district for s in outcome.started]
            cursor = outcome.cursor
    assert sorted(started) == [f"d{i}" for i in range(5)]


def test_sftp_refuses_an_unknown_host_key(tmp_path: Path, ssh_server: SSHServer) -> None:
    import subprocess

    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    key_type, key = other.with_suffix(".pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{ssh_server.port} {key_type} {key}\n")
    for hosts in (known_hosts, tmp_path / "empty_known_hosts"):
        hosts.touch()
        resource = SFTPDropZone(
            host=ssh_server.host,
            port=ssh_server.port,
            username=ssh_server.username,
            private_key_path=str(ssh_server.private_key),
            known_hosts=str(hosts),
            root=str(tmp_path),
        )
        with pytest.raises(paramiko.SSHException), resource.open_zone() as dz:
            dz.list(max_objects=10)
