"""Runs a drop's assets in this process (the CLI and the end-to-end tests use it).

The run goes through Dagster's executor with the same assets, checks and resources as
a run launched from the UI; only the instance differs (the one at `DAGSTER_HOME` when
set, else an ephemeral one).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import dagster as dg

from roster_pipelines.defs.sync.assets import SYNC_ASSETS, ApplyConfig
from roster_pipelines.defs.sync.partitions import drops_partitions
from roster_pipelines.defs.sync.resources import DropStorageIOManager, RosterStore
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.drops import DropManifest
from roster_pipelines.lib.sync import SyncOutcome, rejected_outcome


class SyncCrashed(RuntimeError):
    """A stage failed for a reason other than the drop's data (nothing was applied)."""


@dataclass
class InProcessRun:
    outcome: SyncOutcome
    result: dg.ExecuteInProcessResult


def _instance() -> dg.DagsterInstance:
    return (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )


def run_drop(
    manifest: DropManifest,
    settings: Settings,
    *,
    dry_run: bool = False,
    force: bool = False,
    instance: dg.DagsterInstance | None = None,
    log_level: str = "WARNING",
) -> InProcessRun:
    instance = instance or _instance()
    key = manifest.partition_key
    if not instance.has_dynamic_partition(drops_partitions.name, key):
        instance.add_dynamic_partitions(drops_partitions.name, [key])
    result = dg.materialize(
        SYNC_ASSETS,
        partition_key=key,
        instance=instance,
        resources={
            "roster_store": RosterStore(
                state_dir=str(settings.state_dir), database_url=settings.database_url
            ),
            "io_manager": DropStorageIOManager(state_dir=str(settings.state_dir)),
        },
        run_config=dg.RunConfig(
            ops={"applied_sync": ApplyConfig(dry_run=dry_run, force=force)},
            loggers={"console": {"config": {"log_level": log_level}}},
        ),
        tags={"district": manifest.district},
        raise_on_error=False,
    )
    rejected = any(
        not evaluation.passed and evaluation.check_name == "drop_is_usable"
        for evaluation in result.get_asset_check_evaluations()
    )
    failures = [
        e
        for e in result.get_step_failure_events()
        if not (rejected and e.step_key == "validated_roster")
    ]
    if failures:
        error = failures[0].event_specific_data.error  # type: ignore[union-attr]
        raise SyncCrashed(
            f"step {failures[0].step_key} failed: {error.message.strip() if error else 'unknown'}"
        )
    if rejected:
        outcome = rejected_outcome(manifest, result.output_for_node("validated_roster"))
    else:
        outcome = result.output_for_node("applied_sync")
    return InProcessRun(outcome=outcome, result=result)
