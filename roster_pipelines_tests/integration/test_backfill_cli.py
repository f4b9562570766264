"""The README's backfill procedure, with the real `dagster` CLI: re-run an archived drop
after its drop-zone folder is gone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from roster_pipelines.lib.drops import archive_drop
from roster_pipelines.lib.formats import REQUIRED_FILES
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.models import SyncRun
from roster_pipelines_tests.conftest import write_drop

ROWS = {
    "schools.csv": [["S1", "Lincoln Elementary"]],
    "teachers.csv": [["S1", "T1", "Ann", "Lee", "ann@lincoln.k12.us", ""]],
    "students.csv": [["S1", "ST1", "Cara", "Diaz", "2016-03-04", "3", "", "", "", "", "", ""]],
}


@pytest.mark.slow
def test_dagster_cli_rematerialises_an_archived_drop(tmp_path: Path) -> None:
    home, state = tmp_path / "dagster_home", tmp_path / "state"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    source = write_drop(tmp_path / "zone" / "lincoln-usd", ROWS)
    manifest = archive_drop(
        source,
        state / "landing",
        district="lincoln-usd",
        drop=None,
        format="remind-csv-1.0",
        file_names=REQUIRED_FILES["remind-csv-1.0"],
    )
    shutil.rmtree(tmp_path / "zone")  # the drop zone was emptied
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("ROSTER_", "DAGSTER_"))},
        "DAGSTER_HOME": str(home),
        "ROSTER_STATE_DIR": str(state),
    }
    old_home = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:  # the instance at DAGSTER_HOME
            instance.add_dynamic_partitions("drops", [manifest.partition_key])  # as the sensor
    finally:
        if old_home is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = old_home
    dagster = str(Path(sys.executable).with_name("dagster"))
    proc = subprocess.run(
        [
            dagster,
            "asset",
            "materialize",
            "-m",
            "roster_pipelines.definitions",
            "-a",
            "defs",
            "--select",
            "group:roster_sync",
            "--partition",
            manifest.partition_key,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with make_engine(f"sqlite:///{state / 'roster.db'}").connect() as conn:
        assert conn.execute(sa.select(SyncRun.status)).scalars().all() == ["applied"]
