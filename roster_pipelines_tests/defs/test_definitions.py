"""The code location loads the way `dagster dev` loads it, with every definition."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import dagster as dg

from roster_pipelines.definitions import defs

REPO = Path(__file__).resolve().parents[2]
STAGES = [
    "raw_roster_files",
    "parsed_roster",
    "validated_roster",
    "identity_resolution",
    "sync_plan",
    "applied_sync",
    "sync_report",
]


def test_workspace_yaml_validates_with_the_dagster_cli(tmp_path: Path) -> None:
    dagster = shutil.which("dagster", path=str(Path(os.sys.executable).parent)) or "dagster"
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    # Like `make dev`: from a scratch folder, so the production dagster.yaml at the
    # repository root (Postgres from DAGSTER_PG_*) is not picked up as the instance.
    proc = subprocess.run(
        [dagster, "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "roster_pipelines" in proc.stdout + proc.stderr


def test_every_asset_check_sensor_and_job_is_defined() -> None:
    repo = defs.get_repository_def()
    # The drop stages, plus the R9 freshness asset of the daily schedule (issue 6).
    assert {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()} == {
        *STAGES,
        "district_freshness",
    }
    check_keys = {(k.asset_key.to_user_string(), k.name) for k in repo.asset_graph.asset_check_keys}
    assert ("validated_roster", "drop_is_usable") in check_keys
    assert ("applied_sync", "applied_in_full") in check_keys
    assert {j.name for j in repo.get_all_jobs()} >= {"roster_sync_job", "hold_decision_job"}
    assert {s.name for s in repo.sensor_defs} >= {
        "local_drop_sensor",
        "s3_drop_sensor",
        "sftp_drop_sensor",
    }
    assert ("district_freshness", "within_90_days") in check_keys
    assert {s.name for s in repo.schedule_defs} >= {"district_freshness_schedule"}
    job = repo.get_job("roster_sync_job")
    assert isinstance(job.partitions_def, dg.DynamicPartitionsDefinition)
    assert job.partitions_def.name == "drops"
    # The stages run in the order of ARCHITECTURE.md.
    deps = {
        k.to_user_string(): {d.to_user_string() for d in repo.asset_graph.get(k).parent_keys}
        for k in repo.asset_graph.get_all_asset_keys()
    }
    for upstream, downstream in itertools.pairwise(STAGES):
        assert upstream in deps[downstream]
