"""One dynamic partition per drop, keyed ``<district>__<drop>``."""

import dagster as dg

drops_partitions = dg.DynamicPartitionsDefinition(name="drops")
