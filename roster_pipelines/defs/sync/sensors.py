"""Drop-zone sensors: one factory, one sensor per configured zone (local, S3, SFTP).

Every sensor runs the same tick (`lib.dropzones.watch.tick`) over its zone:
``<zone root>/<district>/<the format's files>``. A drop starts when all its files are
there and either a `_READY` marker says so or the listing is unchanged across two
ticks. The sensor streams the bytes into the content-addressed landing store before
it asks for a run, so the run (and any later backfill) reads the archive, never the
drop zone. Run keys are district + content hash (+ the previous drop's hash): the
same files again start nothing. Drops that stay incomplete alert the district admin
(an `incomplete_drop` email in the outbox) and the data team (a warning in the
sensor's tick log).

When a newer drop of a district arrives while an older one still waits in the run
queue (one run per district at a time, see dagster.yaml), both run in order and the
older run is tagged `roster/superseded_by=<newer partition>` (and logged in the
district's landing log).
"""

# No `from __future__ import annotations` here: Dagster reads the annotations at runtime.

import json
import time

import dagster as dg

from roster_pipelines.defs.sync.jobs import roster_sync_job
from roster_pipelines.defs.sync.partitions import drops_partitions
from roster_pipelines.defs.sync.resources import (
    DropZoneResource,
    LocalDropZone,
    RosterStore,
    S3DropZone,
    SFTPDropZone,
)
from roster_pipelines.lib.drops import append_log
from roster_pipelines.lib.dropzones.watch import Alert, StartedDrop, TickOutcome, tick
from roster_pipelines.lib.freshness import admin_email, queue_admin_email

SENSOR_INTERVAL_SECONDS = 30
MAX_LOGGED_ISSUES = 20
_PENDING = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
]

# The zones of a deployment: sensor name -> resource key (resources in definitions.py).
ZONES = {
    "local_drop_sensor": ("local_drop_zone", LocalDropZone),
    "s3_drop_sensor": ("s3_drop_zone", S3DropZone),
    "sftp_drop_sensor": ("sftp_drop_zone", SFTPDropZone),
}


def _now() -> float:
    return time.time()


def _alert_admin(
    context: dg.SensorEvaluationContext, store: RosterStore, zone_kind: str, alert: Alert
) -> None:
    context.log.warning(f"drop of district {alert.district} needs attention: {alert.message}")
    with store.engine().begin() as conn:
        found = admin_email(conn, alert.district)
        if not found or not found[1]:
            context.log.warning(
                f"district {alert.district} has no admin email: nobody was emailed "
                "(roster-sync admin set-contact)"
            )
            return
        queue_admin_email(
            conn,
            district_id=found[0],
            template="incomplete_drop",
            idempotency_key=alert.key,
            destination=found[1],
            payload={
                "district": alert.district,
                "reason": alert.reason,
                "message": alert.message,
                "missing": list(alert.missing),
                "files": list(alert.files),
                "zone": zone_kind,
            },
        )


def _record_superseded(
    context: dg.SensorEvaluationContext, landing_root, started: list[StartedDrop]
) -> None:
    """Tag runs still waiting in the queue for a district that just got a newer drop."""
    newer = {s.manifest.district: s.manifest.partition_key for s in started}
    if not newer:
        return
    records = context.instance.get_run_records(  # one query per tick
        dg.RunsFilter(tags={"district": sorted(newer)}, statuses=_PENDING)
    )
    for record in records:
        run = record.dagster_run
        district, older = run.tags.get("district"), run.tags.get("dagster/partition")
        if district not in newer or not older or older == newer[district]:
            continue
        context.instance.add_run_tags(run.run_id, {"roster/superseded_by": newer[district]})
        append_log(
            landing_root, district, {"event": "superseded", "drop": older, "by": newer[district]}
        )
        context.log.info(
            f"{older} still waits in the queue; it runs first, then {newer[district]} "
            "(recorded as superseded)"
        )


def evaluate_zone(
    context: dg.SensorEvaluationContext, store: RosterStore, zone_resource: DropZoneResource
) -> dg.SensorResult | dg.SkipReason:
    """One tick over one zone (the body of every drop-zone sensor)."""
    if not zone_resource.configured():
        return dg.SkipReason(f"{type(zone_resource).__name__} is not configured")
    landing = store.settings().landing_root
    with zone_resource.open_zone() as zone:
        outcome: TickOutcome = tick(
            zone, landing, context.cursor, options=zone_resource.options(), now=_now()
        )
    if len(outcome.issues) > MAX_LOGGED_ISSUES:
        context.log.warning(
            f"{len(outcome.issues)} files or folders rejected this tick; the first "
            f"{MAX_LOGGED_ISSUES} follow"
        )
    for issue in outcome.issues[:MAX_LOGGED_ISSUES]:
        context.log.warning(
            f"rejected {issue.code} in {zone.kind} zone, district {issue.district!r}"
            + (f", file {issue.name!r}" if issue.name else "")
            + f": {issue.message}"
        )
    for alert in outcome.alerts:
        _alert_admin(context, store, zone.kind, alert)
    for duplicate in outcome.duplicates:
        context.log.info(
            f"{duplicate.district}: the same files as drop {duplicate.drop} again; nothing to run"
        )
    _record_superseded(context, landing, outcome.started)
    run_requests = []
    for started in outcome.started:
        manifest = started.manifest
        run_requests.append(
            dg.RunRequest(
                run_key=started.run_key,
                partition_key=manifest.partition_key,
                tags={
                    "district": manifest.district,
                    "roster/zone": zone.kind,
                    "roster/content_hash": manifest.content_hash,
                },
            )
        )
    cursor = json.dumps(outcome.cursor, sort_keys=True, separators=(",", ":"))
    if not run_requests:
        waiting = "; ".join(f"{d}: {why}" for d, why in sorted(outcome.waiting.items()))
        return dg.SensorResult(
            skip_reason=f"no complete new drop ({outcome.objects_listed} objects listed)"
            + (f"; waiting: {waiting}" if waiting else ""),
            cursor=cursor,
        )
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[
            drops_partitions.build_add_request([r.partition_key for r in run_requests])
        ],
        cursor=cursor,
    )


def build_drop_sensor(name: str, zone_key: str) -> dg.SensorDefinition:
    """A sensor watching the drop zone of resource `zone_key` (off by default)."""

    @dg.sensor(
        name=name,
        job=roster_sync_job,
        minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={"roster_store", zone_key},
        description=f"Watches the drop zone of resource `{zone_key}`, one folder per district.",
    )
    def _drop_sensor(context: dg.SensorEvaluationContext, **_resources):
        # Resources come from context.resources (their keys vary by zone); direct
        # invocation in tests also passes them as keyword arguments.
        return evaluate_zone(
            context, context.resources.roster_store, getattr(context.resources, zone_key)
        )

    return _drop_sensor


DROP_SENSORS = [build_drop_sensor(name, key) for name, (key, _) in ZONES.items()]
ZONE_RESOURCES = {key: cls() for key, cls in ZONES.values()}
local_drop_sensor, s3_drop_sensor, sftp_drop_sensor = DROP_SENSORS
