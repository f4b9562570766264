"""dagster.yaml: Dagster's storage on Postgres from env vars, one run per district."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.postgres
def test_dagster_yaml_uses_postgres_and_limits_runs_per_district(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sa.engine.make_url(pg_url)
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database or "")
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        coordinator = instance.run_coordinator
        assert type(coordinator).__name__ == "QueuedRunCoordinator"
        limits = coordinator.get_run_queue_config().tag_concurrency_limits
        assert {
            "key": "district",
            "value": {"applyLimitPerUniqueValue": True},
            "limit": 1,
        } in limits
        # Dagster really wrote its tables into that database.
        instance.add_dynamic_partitions("drops", ["d__x"])
        assert instance.get_dynamic_partitions("drops") == ["d__x"]
    with sa.create_engine(url).connect() as conn:
        assert "runs" in sa.inspect(conn).get_table_names()
