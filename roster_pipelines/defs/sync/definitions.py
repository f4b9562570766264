"""Everything of the sync domain, for the top-level Definitions."""

import dagster as dg

from roster_pipelines.defs.sync.assets import SYNC_ASSETS
from roster_pipelines.defs.sync.jobs import roster_sync_job
from roster_pipelines.defs.sync.resources import DropStorageIOManager, RosterStore
from roster_pipelines.defs.sync.sensors import local_drop_sensor

defs = dg.Definitions(
    assets=SYNC_ASSETS,
    jobs=[roster_sync_job],
    sensors=[local_drop_sensor],
    resources={"roster_store": RosterStore(), "io_manager": DropStorageIOManager()},
)
