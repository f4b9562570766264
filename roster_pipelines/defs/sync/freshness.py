"""R9 freshness: a daily schedule, the `district_freshness` asset and its 90-day check.

The schedule materialises `district_freshness` once a day with its tick time as the
clock (`as_of`); the asset computes each district's days since its last applied
drop (`lib.freshness`), queues the 75- and 85-day warning emails to the district
admin in the outbox, and its check `within_90_days` fails, visibly in the UI, while
any district is 90 days or more without an applied drop. The plan stage holds
removals from the same date (`plan.guard_reasons` -> `freshness.removals_held`).
"""

# No `from __future__ import annotations` here: Dagster reads the annotations at runtime.

from datetime import datetime

import dagster as dg

from roster_pipelines.defs.sync.resources import RosterStore
from roster_pipelines.lib.freshness import LIMIT_DAYS, WARN_DAYS, check_freshness
from roster_pipelines.lib.store.state import utcnow

CHECK = "within_90_days"


class FreshnessConfig(dg.Config):
    """Run config of `district_freshness`."""

    as_of: str = ""  # ISO date-time used as "now" (the schedule passes its tick time)


@dg.asset(
    group_name="roster_freshness",
    kinds={"sql"},
    check_specs=[
        dg.AssetCheckSpec(
            CHECK,
            asset="district_freshness",
            description=f"Every district applied a drop less than {LIMIT_DAYS} days ago (R9).",
        )
    ],
)
def district_freshness(
    context: dg.AssetExecutionContext, config: FreshnessConfig, roster_store: RosterStore
) -> dg.MaterializeResult:
    """Days since each district's last applied drop; warnings at 75 and 85 days (R9)."""
    now = datetime.fromisoformat(config.as_of) if config.as_of else utcnow()
    with roster_store.engine().begin() as conn:
        run = check_freshness(conn, now)
    overdue = [d for d in run.districts if d.overdue]
    for district in run.no_admin:
        context.log.warning(
            f"district {district} is due a freshness warning but has no admin email"
        )
    for d in overdue:
        context.log.warning(
            f"district {d.district}: {d.days} days since the last applied drop "
            f"(limit {LIMIT_DAYS}); the next drop's removals will be held"
        )
    rows = [
        f"| {d.district} | {d.last_drop_date or 'never'} | "
        f"{'' if d.days is None else d.days} | "
        f"{'overdue' if d.overdue else ('warned' if d.days is not None and d.days >= WARN_DAYS[0] else 'ok')} |"
        for d in run.districts
    ]
    table = "| district | last applied drop | days | status |\n|---|---|---|---|\n" + "\n".join(
        rows
    )
    return dg.MaterializeResult(
        metadata={
            "as_of": now.isoformat(),
            "districts": len(run.districts),
            "overdue": len(overdue),
            "warnings_queued": len(run.queued),
            "freshness": dg.MetadataValue.md(table),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=CHECK,
                passed=not overdue,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "overdue": dg.MetadataValue.md(
                        "\n".join(f"- {d.district}: {d.days} days" for d in overdue) or "none"
                    ),
                    "max_days": max(
                        (d.days for d in run.districts if d.days is not None), default=0
                    ),
                },
            )
        ],
    )


district_freshness_job = dg.define_asset_job(
    "district_freshness_job",
    selection=dg.AssetSelection.assets(district_freshness),
    description="R9: days since each district's last applied drop; 75/85-day warnings.",
)


@dg.schedule(
    cron_schedule="0 6 * * *",
    job=district_freshness_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
def district_freshness_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Every day at 06:00 UTC, with the tick's time as the clock."""
    as_of = context.scheduled_execution_time or utcnow()
    return dg.RunRequest(
        run_key=f"freshness:{as_of.date().isoformat()}",
        run_config=dg.RunConfig(
            ops={"district_freshness": FreshnessConfig(as_of=as_of.isoformat())}
        ),
    )
