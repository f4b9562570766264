"""roster_pipelines: SIS roster drops synced into the messaging app (see README.md).

Importing the package sets how polars' allocator (jemalloc) hands freed memory back
(`ROSTER_MALLOC_CONF`). jemalloc reads it when polars is imported: in a process that
imported polars first it applies to the processes it starts (a Dagster run's process
imports this package before polars: the code location is loaded first).
"""

import os

# polars sets jemalloc to give freed memory back to the system half a second after it
# is freed (`dirty_decay_ms:500`), so each stage of a sync, which frees what the last
# one built and allocates as much again, pays the page faults anew (BENCHMARKS.md,
# session 15: with this setting the kernel's share of a maintenance drop's CPU time
# fell from about a third to a quarter). A sync runs in a process of its own (a Dagster run, a
# CLI call), which gives the memory back when it ends. polars puts its own settings
# first in `_RJEM_MALLOC_CONF`, and jemalloc takes the last value of an option. One
# arena per core, not four: memory freed in one arena is not reused by another, so
# fewer arenas keep less of it (peak 2.9-3.4 GB against 3.5 GB for the 1 % drop, no
# slower).
ALLOCATOR_CONF = f"dirty_decay_ms:-1,muzzy_decay_ms:-1,narenas:{os.cpu_count() or 1}"

_conf = os.environ.get("ROSTER_MALLOC_CONF", ALLOCATOR_CONF)
_current = os.environ.get("_RJEM_MALLOC_CONF", "")
if _conf and not _current.endswith(_conf):
    os.environ["_RJEM_MALLOC_CONF"] = f"{_current},{_conf}" if _current else _conf
