"""The local drop-zone sensor: one complete drop, one run and one partition, once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import dagster as dg
import pytest

from roster_pipelines.defs.sync.resources import RosterStore
from roster_pipelines.defs.sync.sensors import local_drop_sensor
from roster_pipelines.lib.drops import load_manifest
from roster_pipelines_tests.conftest import write_drop

ROWS = {
    "schools.csv": [["S1", "Lincoln Elementary"]],
    "teachers.csv": [["S1", "T1", "Ann", "Lee", "ann@lincoln.k12.us", ""]],
    "students.csv": [["S1", "ST1", "Cara", "Diaz", "2016-03-04", "3", "", "", "", "", "", ""]],
}


def _age(folder: Path, seconds: float = 120) -> None:
    past = time.time() - seconds
    for f in folder.iterdir():
        os.utime(f, (past, past))


@pytest.fixture
def store(tmp_path: Path) -> RosterStore:
    return RosterStore(state_dir=str(tmp_path / "state"), drop_zone=str(tmp_path / "zone"))


def _tick(instance: dg.DagsterInstance, store: RosterStore, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"roster_store": store}
    )
    return local_drop_sensor(context)


def test_complete_drop_runs_once(tmp_path: Path, store: RosterStore) -> None:
    zone = tmp_path / "zone"
    _age(write_drop(zone / "lincoln-usd", ROWS))
    with dg.instance_for_test() as instance:
        result = _tick(instance, store, None)
        assert len(result.run_requests) == 1
        request = result.run_requests[0]
        assert request.tags["district"] == "lincoln-usd"
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

        # The same files again: nothing.
        again = _tick(instance, store, result.cursor)
        assert again.run_requests == [] and again.dynamic_partitions_requests == []

        # Changed files: a new drop.
        (zone / "lincoln-usd" / "classes.csv").write_text(
            "school_id,class_id,teacher_id,class_name\nS1,C1,T1,Art\n"
        )
        _age(zone / "lincoln-usd")
        changed = _tick(instance, store, again.cursor)
        assert len(changed.run_requests) == 1
        assert changed.run_requests[0].partition_key != request.partition_key


def test_incomplete_or_unsettled_drop_waits(tmp_path: Path, store: RosterStore) -> None:
    zone = tmp_path / "zone"
    folder = write_drop(zone / "lincoln-usd", ROWS)
    with dg.instance_for_test() as instance:
        assert _tick(instance, store, None).run_requests == []  # files still being written
        (folder / "enrollments.csv").unlink()
        _age(folder)
        assert _tick(instance, store, None).run_requests == []  # a file is missing


def test_unsafe_folder_names_are_skipped(tmp_path: Path, store: RosterStore) -> None:
    _age(write_drop(tmp_path / "zone" / "bad__name", ROWS))
    with dg.instance_for_test() as instance:
        assert _tick(instance, store, None).run_requests == []


def test_sensor_run_request_executes_the_job(
    tmp_path: Path, store: RosterStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run the sensor asks for syncs the drop through `roster_sync_job`."""
    import sqlalchemy as sa

    from roster_pipelines.definitions import defs
    from roster_pipelines.lib.store.engine import make_engine
    from roster_pipelines.lib.store.models import SisLink, SyncRun

    monkeypatch.setenv("ROSTER_STATE_DIR", str(tmp_path / "state"))
    _age(write_drop(tmp_path / "zone" / "lincoln-usd", ROWS))
    with dg.instance_for_test() as instance:
        result = _tick(instance, store, None)
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
