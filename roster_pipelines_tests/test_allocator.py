"""polars' allocator keeps freed memory for reuse in a process that runs syncs
(`roster_pipelines/__init__.py`): what jemalloc itself reports it was configured with."""

from __future__ import annotations

import os
import re
import subprocess
import sys

# Loaded as a Dagster run loads the code location: dagster first, then the definitions.
CODE_LOCATION = (
    "import dagster, importlib; importlib.import_module('roster_pipelines.definitions'); "
    "import polars as pl; pl.DataFrame({'a': [1]})"
)


def _jemalloc_options(code: str, **env: str) -> dict[str, str]:
    """jemalloc's `opt.*` values in a fresh interpreter running `code` (its statistics,
    printed at exit, list them), of the first process to exit if it starts others."""
    environ = {
        k: v for k, v in os.environ.items() if k not in ("_RJEM_MALLOC_CONF", "ROSTER_MALLOC_CONF")
    }
    # An operator's own option beside the package's: jemalloc prints its statistics.
    environ["_RJEM_MALLOC_CONF"] = "stats_print:true"
    environ.update(env)
    done = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, check=True
    )
    options: dict[str, str] = {}
    for name, value in re.findall(r"^\s+opt\.(\w+): (\S+)", done.stderr, re.MULTILINE):
        options.setdefault(name, value)  # the first process to exit
    return options


def test_a_process_that_loads_the_code_location_keeps_freed_memory() -> None:
    options = _jemalloc_options(CODE_LOCATION)
    assert options["dirty_decay_ms"] == "-1"
    assert options["muzzy_decay_ms"] == "-1"
    assert options["narenas"] == str(os.cpu_count())
    assert options["stats_print"] == "true"


def test_roster_malloc_conf_replaces_the_setting_and_empty_leaves_polars_own() -> None:
    options = _jemalloc_options(CODE_LOCATION, ROSTER_MALLOC_CONF="dirty_decay_ms:20000")
    assert options["dirty_decay_ms"] == "20000"
    assert options["muzzy_decay_ms"] == "1000"  # polars' own
    options = _jemalloc_options(CODE_LOCATION, ROSTER_MALLOC_CONF="")
    assert (options["dirty_decay_ms"], options["muzzy_decay_ms"]) == ("500", "1000")


def test_a_process_started_after_polars_was_imported_gets_the_setting() -> None:
    """A script that imports polars first (the benchmarks, ruff's import order) cannot
    change its own allocator, but the processes it starts inherit the setting."""
    code = (
        "import polars, roster_pipelines, subprocess, sys; "
        "subprocess.run([sys.executable, '-c', 'import polars as pl; pl.DataFrame({\"a\": [1]})'],"
        " check=True)"
    )
    options = _jemalloc_options(code)  # the child's: it exits first
    assert options["dirty_decay_ms"] == "-1"
