"""The sync's assets, one per stage of ARCHITECTURE.md. Each body loads its inputs,
calls one `lib` function and attaches metadata; the logic lives in `lib/`."""

# No `from __future__ import annotations` here: Dagster reads the annotations at runtime.

from collections.abc import Callable

import dagster as dg
import polars as pl

from roster_pipelines.defs.sync.partitions import drops_partitions
from roster_pipelines.defs.sync.resources import RosterStore, stored_fingerprint
from roster_pipelines.lib import contracts
from roster_pipelines.lib.canonical import Roster
from roster_pipelines.lib.drops import (
    DropManifest,
    load_manifest,
    partition_key,
    split_partition_key,
    verify_archive,
)
from roster_pipelines.lib.formats import get_adapter
from roster_pipelines.lib.identity import LinksFolder
from roster_pipelines.lib.incremental import RosterFingerprint
from roster_pipelines.lib.issues import counts_by_code, sample_messages
from roster_pipelines.lib.notify.outbox import enqueue_report_email
from roster_pipelines.lib.plan import SyncPlan
from roster_pipelines.lib.report import build_report, render_markdown, write_report
from roster_pipelines.lib.similar_people import KeysFolder
from roster_pipelines.lib.store.state import utcnow
from roster_pipelines.lib.sync import (
    IdentityResult,
    SyncOutcome,
    apply_drop,
    keep_for_next_drop,
    plan_drop,
    record_rejection,
    resolve_drop,
    write_plan_files,
)

GROUP = "roster_sync"


def _issue_metadata(issues: pl.DataFrame) -> dict[str, int]:
    by = issues.group_by("severity").len()
    counts = dict(zip(by["severity"].to_list(), by["len"].to_list(), strict=True))
    return {f"issues_{s}": int(counts.get(s, 0)) for s in ("file_error", "error", "alert")}


def _check_metadata(failures: pl.DataFrame, sample: int = 5) -> dict[str, object]:
    """A check's failures: the count per code (one entry each, and all as JSON) and the
    first `sample` messages of each code."""
    counts = counts_by_code(failures)
    return {
        **{f"code_{code}": n for code, n in counts.items()},
        "failures_by_code": dg.MetadataValue.json(counts),
        "sample": dg.MetadataValue.md(
            "\n".join(f"- {m}" for m in sample_messages(failures, sample)) or "none"
        ),
    }


def _table_schema(frame: pl.DataFrame) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(name, str(dtype)) for name, dtype in frame.schema.items()]
    )


class ApplyConfig(dg.Config):
    """Run config of `applied_sync`."""

    dry_run: bool = False  # plan and report, but apply nothing
    force: bool = False  # apply even if a newer drop of the district was applied


@dg.asset(partitions_def=drops_partitions, group_name=GROUP, kinds={"python"})
def raw_roster_files(context: dg.AssetExecutionContext, roster_store: RosterStore) -> DropManifest:
    """The drop's archived bytes in the landing store, checked against their checksums."""
    district, drop = split_partition_key(context.partition_key)
    landing = roster_store.settings().landing_root
    manifest = load_manifest(landing, district, drop)
    verify_archive(landing, manifest)
    context.add_output_metadata(
        {
            "district": district,
            "format": manifest.format,
            "content_hash": manifest.content_hash,
            "files": len(manifest.files),
            "bytes": sum(f.size for f in manifest.files),
            "archive": dg.MetadataValue.path(str(manifest.folder(landing))),
        }
    )
    return manifest


@dg.asset(partitions_def=drops_partitions, group_name=GROUP, kinds={"polars"})
def parsed_roster(
    context: dg.AssetExecutionContext, roster_store: RosterStore, raw_roster_files: DropManifest
) -> Roster:
    """The drop in canonical tables, through its format's adapter."""
    folder = raw_roster_files.folder(roster_store.settings().landing_root)
    roster = get_adapter(raw_roster_files.format)(folder)
    context.add_output_metadata(
        {"rejected": roster.rejected, **roster.counts(), **_issue_metadata(roster.issues)}
    )
    return roster


@dg.asset(
    partitions_def=drops_partitions,
    group_name=GROUP,
    kinds={"pandera"},
    check_specs=[
        dg.AssetCheckSpec(
            "drop_is_usable",
            asset="validated_roster",
            blocking=True,
            description="No file-level error: a drop with one is rejected whole and nothing applies.",
        ),
        dg.AssetCheckSpec(
            "no_row_errors",
            asset="validated_roster",
            blocking=False,
            description="No row-level error (a warning): rows with errors were skipped, with "
            "what depends on them; the rest of the drop applies.",
        ),
    ],
)
def validated_roster(
    context: dg.AssetExecutionContext,
    roster_store: RosterStore,
    raw_roster_files: DropManifest,
    parsed_roster: Roster,
):
    """Contracts applied: clean, consistent tables plus every error and alert."""
    started_at = utcnow()
    roster = contracts.validate(parsed_roster)
    metadata: dict[str, object] = {
        "rejected": roster.rejected,
        **roster.counts(),
        **_issue_metadata(roster.issues),
        **{f"schema_{name}": _table_schema(frame) for name, frame in roster.tables().items()},
    }
    if roster.rejected:
        settings = roster_store.settings()
        outcome = record_rejection(
            roster_store.engine(), raw_roster_files, roster, started_at=started_at
        )
        engine = roster_store.engine()
        data = build_report(
            engine, outcome, drop_folder=raw_roster_files.folder(settings.landing_root)
        )
        folder = write_report(outcome, settings.reports_root, data=data)
        metadata["report"] = dg.MetadataValue.md(render_markdown(outcome, data=data))
        metadata["report_folder"] = dg.MetadataValue.path(str(folder))
        metadata["report_html"] = dg.MetadataValue.path(str(folder / "report.html"))
        # R15: the district's administrator hears about a rejected drop too.
        metadata["admin_email_queued"] = enqueue_report_email(
            engine, data.to_json(), report_location=str(folder / "report.html")
        )
    file_errors = roster.issues.filter(pl.col("severity") == "file_error")
    row_errors = roster.issues.filter(pl.col("severity") == "error")
    yield dg.Output(roster, metadata=metadata)
    yield dg.AssetCheckResult(
        check_name="drop_is_usable",
        passed=not roster.rejected,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"file_errors": file_errors.height, **_check_metadata(file_errors)},
    )
    yield dg.AssetCheckResult(
        check_name="no_row_errors",
        passed=row_errors.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "row_errors": row_errors.height,
            "alerts": roster.issues.filter(pl.col("severity") == "alert").height,
            **_check_metadata(row_errors),
        },
    )


def _scan_extent(rescanned: int | None) -> str:
    return "in full" if rescanned is None else f"{rescanned} accounts again, the rest kept"


def _candidates_found(outcome: SyncOutcome) -> dict[str, int]:
    """The merge candidates the drop found, when its run worked them out (an apply
    re-executed from identity's stored result did not: they are in the table)."""
    found = outcome.decisions.get("candidates")
    return {} if found is None else {"merge_candidates": found}


def _similar_keys(roster_store: RosterStore, district: str) -> KeysFolder:
    return KeysFolder(roster_store.settings().similar_keys_folder(district))


def _district_links(roster_store: RosterStore, district: str) -> LinksFolder:
    return LinksFolder(roster_store.settings().district_links_folder(district))


def _stored_fingerprints(
    roster_store: RosterStore, district: str
) -> Callable[[str], RosterFingerprint | None]:
    """The fingerprint of a drop of the district's validated roster, by drop id, as
    this run's storage kept it (None: not kept)."""

    def previous(previous_drop: str) -> RosterFingerprint | None:
        return stored_fingerprint(roster_store.settings(), partition_key(district, previous_drop))

    return previous


@dg.asset(partitions_def=drops_partitions, group_name=GROUP, kinds={"sql"})
def identity_resolution(
    context: dg.AssetExecutionContext,
    roster_store: RosterStore,
    raw_roster_files: DropManifest,
    validated_roster: Roster,
) -> IdentityResult:
    """Every SIS person matched to an existing account or marked for creation (R1).

    A maintenance drop's people are compared with the last applied drop's (its stored
    fingerprint) first: the plan's scope is worked out here, and only the people in it
    are matched against the district's contact points (lib/incremental.py)."""
    result = resolve_drop(
        roster_store.engine(),
        raw_roster_files.district,
        validated_roster,
        drop=raw_roster_files.drop,
        # Worked out while the drop is applied (the apply starts them and waits).
        candidates_in_background=True,
        previous=_stored_fingerprints(roster_store, raw_roster_files.district),
        similar_keys=_similar_keys(roster_store, raw_roster_files.district),
        links=_district_links(roster_store, raw_roster_files.district),
    )
    context.add_output_metadata(
        {
            **result.decisions,
            "people": result.identities.height,
            "links_from_last_drop": result.links_kept,
        }
    )
    return result


@dg.asset(partitions_def=drops_partitions, group_name=GROUP, kinds={"polars"})
def sync_plan(
    context: dg.AssetExecutionContext,
    roster_store: RosterStore,
    validated_roster: Roster,
    identity_resolution: IdentityResult,
) -> SyncPlan:
    """Desired minus current state, per type; guards decide apply or hold.

    A maintenance drop whose district holds exactly what its last applied drop left is
    planned for the people it changes only (lib/incremental.py), against the
    fingerprint of that drop's validated roster as this run's storage kept it."""
    district, drop = split_partition_key(context.partition_key)
    plan = plan_drop(
        roster_store.engine(),
        identity_resolution,
        validated_roster,
        # For an identity result that did not work out the scope (stored by an
        # earlier version): the plan does.
        previous=_stored_fingerprints(roster_store, district),
    )
    files = write_plan_files(plan, roster_store.settings().reports_root / district / drop)
    context.add_output_metadata(
        {
            **plan.counts(),
            "planned": "in full" if plan.scope is None else "incrementally",
            **(plan.scope or {}),
            "plan_files": dg.MetadataValue.json([str(f) for f in files]),
            "held": plan.held,
            "hold_reasons": dg.MetadataValue.md(
                "\n".join(f"- {r}" for r in plan.hold_reasons) or "none"
            ),
        }
    )
    return plan


@dg.asset(
    partitions_def=drops_partitions,
    group_name=GROUP,
    kinds={"sql"},
    check_specs=[
        dg.AssetCheckSpec(
            "applied_in_full",
            asset="applied_sync",
            description="Warns when the drop was held or refused: a held drop is never a success (R10).",
        )
    ],
)
def applied_sync(
    context: dg.AssetExecutionContext,
    config: ApplyConfig,
    roster_store: RosterStore,
    raw_roster_files: DropManifest,
    validated_roster: Roster,
    identity_resolution: IdentityResult,
    sync_plan: SyncPlan,
):
    """The plan applied in one transaction (or only recorded, on a dry run)."""
    started_at = utcnow()
    # The merge candidates are worked out while the apply's transaction keeps the
    # database busy on one core and leaves the other idle; it commits once they are
    # recorded (their failure applies nothing).
    identity_resolution.start_candidates()
    outcome = apply_drop(
        roster_store.engine(),
        raw_roster_files,
        validated_roster,
        sync_plan,
        dry_run=config.dry_run,
        force=config.force,
        started_at=started_at,
        before_commit=identity_resolution.settled,
    )
    identity_resolution = identity_resolution.settled()
    outcome.decisions = identity_resolution.decisions
    outcome.rescanned = identity_resolution.rescanned
    # For the next drop's similar-people scan and identity (after the commit: a crash
    # here costs them their shortcut, nothing else).
    keep_for_next_drop(
        roster_store.engine(),
        _similar_keys(roster_store, raw_roster_files.district),
        _district_links(roster_store, raw_roster_files.district),
        identity_resolution,
        sync_plan,
        outcome,
        validated_roster,
    )
    yield dg.Output(
        outcome,
        metadata={
            "status": outcome.status,
            **outcome.changes,
            # (Worked out while the drop was applied: not in identity's metadata.)
            **_candidates_found(outcome),
            "similar_people_scan": _scan_extent(outcome.rescanned),
        },
    )
    yield dg.AssetCheckResult(
        check_name="applied_in_full",
        passed=outcome.status in ("applied", "dry_run"),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "status": outcome.status,
            "hold_reasons": dg.MetadataValue.md(
                "\n".join(f"- {r}" for r in outcome.hold_reasons) or "none"
            ),
        },
    )


@dg.asset(partitions_def=drops_partitions, group_name=GROUP, kinds={"markdown"})
def sync_report(
    context: dg.AssetExecutionContext, roster_store: RosterStore, applied_sync: SyncOutcome
) -> str:
    """The district's report: Markdown here; HTML, JSON and issue CSVs beside the drop;
    the administrator's email queued in the outbox (R15, R16)."""
    settings = roster_store.settings()
    engine = roster_store.engine()
    drop_folder = settings.landing_root / applied_sync.district / applied_sync.drop
    data = build_report(engine, applied_sync, drop_folder=drop_folder)
    folder = write_report(applied_sync, settings.reports_root, data=data)
    markdown = render_markdown(applied_sync, data=data)
    queued = enqueue_report_email(
        engine, data.to_json(), report_location=str(folder / "report.html")
    )
    context.add_output_metadata(
        {
            "status": applied_sync.status,
            "report": dg.MetadataValue.md(markdown),
            "report_folder": dg.MetadataValue.path(str(folder)),
            "report_html": dg.MetadataValue.path(str(folder / "report.html")),
            "schools": len(data.schools),
            "admin_email_queued": queued,
            **_issue_metadata(applied_sync.issues),
        }
    )
    return str(folder)


SYNC_ASSETS = [
    raw_roster_files,
    parsed_roster,
    validated_roster,
    identity_resolution,
    sync_plan,
    applied_sync,
    sync_report,
]
