"""The local drop-zone sensor: one complete drop, one run and one partition, once.

A drop starts when all its files are there and unchanged across two ticks, or at
once when a `_READY` marker is there (issue 6).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from roster_pipelines.defs.sync.resources import LocalDropZone, RosterStore
from roster_pipelines.defs.sync.sensors import local_drop_sensor
from roster_pipelines.lib.drops import load_manifest
from roster_pipelines_tests.conftest import write_drop

ROWS = {
    "schools.csv": [["S1", "Lincoln Elementary"]],
    "teachers.csv": [["S1", "T1", "Ann", "Lee", "ann@lincoln.k12.us", ""]],
    "students.csv": [["S1", "ST1", "Cara", "Diaz", "2016-03-04", "3", "", "", "", "", "", ""]],
}


@pytest.fixture
def store(tmp_path: Path) -> RosterStore:
    return RosterStore(state_dir=str(tmp_path / "state"), drop_zone=str(tmp_path / "zone"))


@pytest.fixture
def zone(tmp_path: Path) -> LocalDropZone:
    return LocalDropZone(root=str(tmp_path / "zone"))


def _tick(
    instance: dg.DagsterInstance, store: RosterStore, zone: LocalDropZone, cursor: str | None
) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"roster_store": store, "local_drop_zone": zone},
    )
    result = local_drop_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_complete_drop_runs_once(tmp_path: Path, store: RosterStore, zone: LocalDropZone) -> None:
    folder = write_drop(tmp_path / "zone" / "lincoln-usd", ROWS)
    with dg.instance_for_test() as instance:
        first = _tick(instance, store, zone, None)
        assert first.run_requests == []  # seen once: it must be unchanged on the next tick
        result = _tick(instance, store, zone, first.cursor)
        assert len(result.run_requests) == 1
        request = result.run_requests[0]
        assert request.tags["district"] == "lincoln-usd"
        assert request.run_key.startswith("lincoln-usd:")
        [partitions] = result.dynamic_partitions_requests
        assert list(partitions.partition_keys) == [request.partition_key]
        district, drop = request.partition_key.split("__")
        assert district == "lincoln-usd"
        # The bytes are archived before the run is requested.
        manifest = load_manifest(tmp_path / "state" / "landing", district, drop)
        assert {f.name for f in manifest.files} == {
            "schools.csv",
            "teachers.csv",
            "students.csv",
            "classes.csv",
            "enrollments.csv",
        }
        assert manifest.content_hash in request.run_key

        # The same files again: nothing.
        again = _tick(instance, store, zone, result.cursor)
        assert again.run_requests == [] and again.dynamic_partitions_requests == []

        # Changed files: a new drop, once they settle.
        (folder / "classes.csv").write_text(
            "school_id,class_id,teacher_id,class_name\nS1,C1,T1,Art\n"
        )
        seen = _tick(instance, store, zone, again.cursor)
        assert seen.run_requests == []
        changed = _tick(instance, store, zone, seen.cursor)
        assert len(changed.run_requests) == 1
        assert changed.run_requests[0].partition_key != request.partition_key


def test_ready_marker_starts_at_once(
    tmp_path: Path, store: RosterStore, zone: LocalDropZone
) -> None:
    folder = write_drop(tmp_path / "zone" / "lincoln-usd", ROWS)
    (folder / "_READY").write_text("")
    with dg.instance_for_test() as instance:
        assert len(_tick(instance, store, zone, None).run_requests) == 1


def test_incomplete_or_unsettled_drop_waits(
    tmp_path: Path, store: RosterStore, zone: LocalDropZone
) -> None:
    folder = write_drop(tmp_path / "zone" / "lincoln-usd", ROWS)
    (folder / "enrollments.csv").unlink()
    (folder / "_READY").write_text("")  # a marker does not make a partial drop complete
    with dg.instance_for_test() as instance:
        first = _tick(instance, store, zone, None)
        second = _tick(instance, store, zone, first.cursor)
        assert first.run_requests == [] and second.run_requests == []  # a file is missing
        assert "missing enrollments.csv" in second.skip_reason.skip_message
        write_drop(folder, ROWS)  # the last file arrives
        assert len(_tick(instance, store, zone, second.cursor).run_requests) == 1


def test_unsafe_folder_names_are_skipped(
    tmp_path: Path, store: RosterStore, zone: LocalDropZone
) -> None:
    write_drop(tmp_path / "zone" / "bad__name", ROWS)
    with dg.instance_for_test() as instance:
        first = _tick(instance, store, zone, None)
        assert _tick(instance, store, zone, first.cursor).run_requests == []


def test_unconfigured_zone_skips(tmp_path: Path, store: RosterStore) -> None:
    from roster_pipelines.defs.sync.resources import S3DropZone
    from roster_pipelines.defs.sync.sensors import s3_drop_sensor

    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={"roster_store": store, "s3_drop_zone": S3DropZone()}
        )
        result = s3_drop_sensor(context)
        assert isinstance(result, dg.SkipReason)


def _register(store: RosterStore, district: str, email: str | None) -> None:
    import sqlalchemy as sa

    from roster_pipelines.lib.store.models import DistrictSettings
    from roster_pipelines.lib.store.state import get_or_create_district

    with store.engine().begin() as conn:
        district_id = get_or_create_district(conn, district)
        conn.execute(
            sa.update(DistrictSettings)
            .where(DistrictSettings.district_id == district_id)
            .values(admin_email=email)
        )


def _outbox(store: RosterStore) -> list:
    import sqlalchemy as sa

    from roster_pipelines.lib.store.models import NotificationOutbox

    with store.engine().connect() as conn:
        return conn.execute(
            sa.select(
                NotificationOutbox.template,
                NotificationOutbox.destination,
                NotificationOutbox.payload,
                NotificationOutbox.account_id,
            )
        ).all()


def test_incomplete_drop_alerts_the_district_admin_once(
    tmp_path: Path, store: RosterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from roster_pipelines.defs.sync import sensors

    _register(store, "lincoln-usd", "admin@lincoln.k12.us")
    zone = LocalDropZone(root=str(tmp_path / "zone"), incomplete_alert_minutes=60)
    folder = write_drop(tmp_path / "zone" / "lincoln-usd", ROWS)
    (folder / "classes.csv").unlink()
    clock = [1_000_000.0]
    monkeypatch.setattr(sensors, "_now", lambda: clock[0])
    cursor = None
    with dg.instance_for_test() as instance:
        for minutes in (0, 30, 59):
            clock[0] = 1_000_000.0 + 60 * minutes
            cursor = _tick(instance, store, zone, cursor).cursor
        assert _outbox(store) == []
        for minutes in (60, 90, 600):
            clock[0] = 1_000_000.0 + 60 * minutes
            result = _tick(instance, store, zone, cursor)
            cursor = result.cursor
            assert result.run_requests == []
    [(template, destination, payload, account_id)] = _outbox(store)
    assert (template, destination, account_id) == ("incomplete_drop", "admin@lincoln.k12.us", None)
    assert payload["missing"] == ["classes.csv"] and payload["reason"] == "incomplete"


def test_oversize_file_is_rejected_with_an_alert_and_never_archived(
    tmp_path: Path, store: RosterStore
) -> None:
    _register(store, "lincoln-usd", "admin@lincoln.k12.us")
    zone = LocalDropZone(root=str(tmp_path / "zone"), max_file_bytes=150)
    folder = write_drop(tmp_path / "zone" / "lincoln-usd", ROWS)
    (folder / "_READY").write_text("")
    with dg.instance_for_test() as instance:
        result = _tick(instance, store, zone, None)
        assert result.run_requests == []
        assert "file too large" in result.skip_reason.skip_message
        again = _tick(instance, store, zone, result.cursor)
        assert again.run_requests == []
    [(template, _, payload, _)] = _outbox(store)
    assert template == "incomplete_drop" and payload["reason"] == "file_too_large"
    assert payload["files"] == ["students.csv"]
    assert not (tmp_path / "state" / "landing" / "lincoln-usd").exists()


def test_a_newer_drop_marks_the_queued_older_run_superseded(
    tmp_path: Path, store: RosterStore, zone: LocalDropZone
) -> None:
    from dagster._core.test_utils import create_run_for_test

    from roster_pipelines.lib.drops import read_log

    folder = write_drop(tmp_path / "zone" / "lincoln-usd", ROWS)
    (folder / "_READY").write_text("")
    with dg.instance_for_test() as instance:
        first = _tick(instance, store, zone, None)
        [older] = first.run_requests
        queued = create_run_for_test(
            instance,
            job_name="roster_sync_job",
            status=dg.DagsterRunStatus.NOT_STARTED,  # waiting its turn (QUEUED needs a daemon origin)
            tags={**older.tags, "dagster/partition": older.partition_key},
        )
        (folder / "classes.csv").write_text(
            "school_id,class_id,teacher_id,class_name\nS1,C1,T1,Art\n"
        )
        [newer] = _tick(instance, store, zone, first.cursor).run_requests
        tags = instance.get_run_by_id(queued.run_id).tags
        assert tags["roster/superseded_by"] == newer.partition_key
    events = read_log(tmp_path / "state" / "landing", "lincoln-usd")
    assert {
        "event": "superseded",
        "drop": older.partition_key,
        "by": newer.partition_key,
    }.items() <= (next(e for e in events if e["event"] == "superseded").items())


def test_sensor_run_request_executes_the_job(
    tmp_path: Path, store: RosterStore, zone: LocalDropZone, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run the sensor asks for syncs the drop through `roster_sync_job`."""
    import sqlalchemy as sa

    from roster_pipelines.definitions import defs
    from roster_pipelines.lib.store.engine import make_engine
    from roster_pipelines.lib.store.models import SisLink, SyncRun

    monkeypatch.setenv("ROSTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("ROSTER_S3_BUCKET", raising=False)
    monkeypatch.delenv("ROSTER_SFTP_HOST", raising=False)
    folder = write_drop(tmp_path / "zone" / "lincoln-usd", ROWS)
    (folder / "_READY").write_text("")
    with dg.instance_for_test() as instance:
        result = _tick(instance, store, zone, None)
        [request] = result.run_requests
        instance.add_dynamic_partitions(
            "drops", list(result.dynamic_partitions_requests[0].partition_keys)
        )
        job = defs.resolve_job_def("roster_sync_job")
        run = job.execute_in_process(
            instance=instance, partition_key=request.partition_key, tags=request.tags
        )
        assert run.success
    engine = make_engine(f"sqlite:///{tmp_path / 'state' / 'roster.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.select(SyncRun.status)).scalars().all() == ["applied"]
        assert set(conn.execute(sa.select(SisLink.person_key)).scalars()) == {
            "teacher:T1",
            "student:ST1",
        }
