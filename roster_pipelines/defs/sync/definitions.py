"""Everything of the sync domain, for the top-level Definitions."""

import dagster as dg

from roster_pipelines.defs.sync.assets import SYNC_ASSETS
from roster_pipelines.defs.sync.freshness import (
    district_freshness,
    district_freshness_job,
    district_freshness_schedule,
)
from roster_pipelines.defs.sync.holds import hold_decision_job
from roster_pipelines.defs.sync.jobs import roster_sync_job
from roster_pipelines.defs.sync.notifications import (
    NOTIFICATION_JOBS,
    NOTIFICATION_RESOURCES,
    NOTIFICATION_SENSORS,
)
from roster_pipelines.defs.sync.resources import DropStorageIOManager, RosterStore
from roster_pipelines.defs.sync.sensors import DROP_SENSORS, ZONE_RESOURCES

defs = dg.Definitions(
    assets=[*SYNC_ASSETS, district_freshness],
    jobs=[roster_sync_job, hold_decision_job, district_freshness_job, *NOTIFICATION_JOBS],
    sensors=[*DROP_SENSORS, *NOTIFICATION_SENSORS],
    schedules=[district_freshness_schedule],
    resources={
        "roster_store": RosterStore(),
        "io_manager": DropStorageIOManager(),
        **ZONE_RESOURCES,
        **NOTIFICATION_RESOURCES,
    },
)
