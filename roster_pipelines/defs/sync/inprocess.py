"""Runs a drop's assets in this process (the CLI and the end-to-end tests use it).

The run is `roster_sync_job` from the code location, with its assets, checks and
resources, executed in this process: what a run launched from the UI does, except
that the instance is the one at `DAGSTER_HOME` when set, else an ephemeral one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import dagster as dg

from roster_pipelines.defs.sync.jobs import roster_sync_job
from roster_pipelines.defs.sync.partitions import drops_partitions
from roster_pipelines.defs.sync.resources import DropStorageIOManager
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.drops import DropManifest
from roster_pipelines.lib.sync import SyncOutcome, rejected_outcome


class SyncCrashed(RuntimeError):
    """A stage failed for a reason other than the drop's data (nothing was applied)."""


@dataclass
class InProcessRun:
    outcome: SyncOutcome
    result: dg.JobExecutionResult


def _instance() -> dg.DagsterInstance:
    return (
        dg.DagsterInstance.get()
        if os.environ.get("DAGSTER_HOME")
        else dg.DagsterInstance.ephemeral()
    )


def sync_job() -> dg.JobDefinition:
    """`roster_sync_job` as the code location resolves it (`reconstructable` target)."""
    from roster_pipelines.definitions import defs

    return defs.resolve_job_def(roster_sync_job.name)


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
    # `execute_job`, not `materialize`: materialize keeps every step's output in memory
    # until the run ends (several GB at a million people); this run, like one launched
    # from the UI, hands outputs on through the IO manager only.
    with dg.execute_job(
        dg.reconstructable(sync_job),
        instance=instance,
        run_config={
            "execution": {"config": {"in_process": {}}},
            "resources": {
                "roster_store": {
                    "config": {
                        "state_dir": str(settings.state_dir),
                        "database_url": settings.database_url,
                    }
                },
                "io_manager": {"config": {"state_dir": str(settings.state_dir)}},
            },
            "ops": {"applied_sync": {"config": {"dry_run": dry_run, "force": force}}},
            "loggers": {"console": {"config": {"log_level": log_level}}},
        },
        tags={"district": manifest.district, "dagster/partition": key},
        raise_on_error=False,
    ) as result:
        return _finish(manifest, result, DropStorageIOManager(state_dir=str(settings.state_dir)))


def _finish(
    manifest: DropManifest, result: dg.JobExecutionResult, storage: DropStorageIOManager
) -> InProcessRun:
    key = manifest.partition_key
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
        reasons = []
        while error is not None:  # Dagster's wrapper first, the cause last
            reasons.append(error.message.strip())
            error = error.cause
        raise SyncCrashed(
            f"step {failures[0].step_key} failed: {' <- '.join(reasons) or 'unknown'}"
        )
    if rejected:
        outcome = rejected_outcome(manifest, storage.stored("validated_roster", key))
    else:
        outcome = storage.stored("applied_sync", key)
    return InProcessRun(outcome=outcome, result=result)
