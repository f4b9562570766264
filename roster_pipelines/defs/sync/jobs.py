"""The job that syncs one drop: every stage asset of a drop partition."""

import dagster as dg

from roster_pipelines.defs.sync.assets import SYNC_ASSETS

roster_sync_job = dg.define_asset_job(
    "roster_sync_job",
    selection=dg.AssetSelection.assets(*SYNC_ASSETS),
    description="Sync one drop: archive check, parse, validate, identity, plan, apply, report.",
)
