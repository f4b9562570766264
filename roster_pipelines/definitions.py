"""The code location: every domain's definitions under `defs/`, merged."""

import dagster as dg

from roster_pipelines.defs.sync.definitions import defs as sync_defs

defs = dg.Definitions.merge(sync_defs)
