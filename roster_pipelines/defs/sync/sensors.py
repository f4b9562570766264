"""The drop-zone sensor: a complete, settled drop in a district folder starts one run.

Local layout: ``<ROSTER_DROP_ZONE>/<district>/<the format's files>``. A drop is
complete when every required file is there and none changed for `settle_seconds`.
The sensor archives the bytes to the landing store before it asks for a run, so the
run (and any later backfill) reads the archive, never the drop zone. Run keys are
district + content hash: the same files again start nothing.
"""

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg

from roster_pipelines.defs.sync.jobs import roster_sync_job
from roster_pipelines.defs.sync.partitions import drops_partitions
from roster_pipelines.defs.sync.resources import RosterStore
from roster_pipelines.lib.config import DEFAULT_FORMAT
from roster_pipelines.lib.drops import (
    DropError,
    archive_drop,
    check_id,
    content_hash,
    default_drop_id,
    fingerprint,
)
from roster_pipelines.lib.formats import REQUIRED_FILES

MAX_DISTRICTS_PER_TICK = 500


def _settle_seconds() -> float:
    return float(os.environ.get("ROSTER_DROP_SETTLE_SECONDS", "30"))


def _ready_drop(folder: Path, names: tuple[str, ...], settle: float, now: float) -> bool:
    paths = [folder / n for n in names]
    if not all(p.is_file() for p in paths):
        return False
    return max(p.stat().st_mtime for p in paths) <= now - settle


@dg.sensor(
    job=roster_sync_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED
)
def local_drop_sensor(
    context: dg.SensorEvaluationContext, roster_store: RosterStore
) -> dg.SensorResult:
    """Watches the local drop zone, one folder per district."""
    settings = roster_store.settings()
    cursor: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    names = REQUIRED_FILES[DEFAULT_FORMAT]
    now = time.time()
    run_requests, new_keys = [], []
    zone = settings.drop_zone
    districts = sorted(p for p in zone.iterdir() if p.is_dir()) if zone.is_dir() else []
    for folder in districts[:MAX_DISTRICTS_PER_TICK]:
        try:
            district = check_id("district", folder.name)
        except DropError as err:
            context.log.warning(f"skipping drop-zone folder {folder.name!r}: {err}")
            continue
        if not _ready_drop(folder, names, _settle_seconds(), now):
            continue
        digest = content_hash(fingerprint(folder, names))
        if cursor.get(district) == digest:
            continue
        newest = max((folder / n).stat().st_mtime for n in names)
        label = datetime.fromtimestamp(newest, UTC).strftime("%Y%m%dT%H%M%SZ")
        manifest = archive_drop(
            folder,
            settings.landing_root,
            district=district,
            drop=default_drop_id(label, digest),
            format=DEFAULT_FORMAT,
            file_names=names,
        )
        cursor[district] = manifest.content_hash
        new_keys.append(manifest.partition_key)
        run_requests.append(
            dg.RunRequest(
                run_key=f"{district}:{manifest.content_hash}",
                partition_key=manifest.partition_key,
                tags={"district": district},
            )
        )
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[drops_partitions.build_add_request(new_keys)]
        if new_keys
        else [],
        cursor=json.dumps(cursor, sort_keys=True),
    )
