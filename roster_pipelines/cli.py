"""`roster-sync`: run drops through the same Dagster assets in process, and admin tasks.

Exit codes of `sync`: 0 applied or dry run, 3 held, 2 rejected, 1 crash.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from roster_pipelines.lib.config import DEFAULT_FORMAT, Settings
from roster_pipelines.lib.sync import APPLIED, DRY_RUN, HELD, REJECTED, SyncOutcome

EXIT_OK, EXIT_CRASH, EXIT_REJECTED, EXIT_HELD = 0, 1, 2, 3
_EXIT_BY_STATUS = {APPLIED: EXIT_OK, DRY_RUN: EXIT_OK, HELD: EXIT_HELD, REJECTED: EXIT_REJECTED}

SAMPLE_DISTRICT = "sample-district"


def _sample_data_dir() -> Path:
    for candidate in (Path(__file__).resolve().parents[1] / "data", Path.cwd() / "data"):
        if (candidate / "sample_district").is_dir():
            return candidate / "sample_district"
    raise SystemExit("the sample district is not here: run the demo from the repository root")


def sync_folder(
    folder: Path,
    *,
    district: str,
    settings: Settings,
    format: str = DEFAULT_FORMAT,
    drop: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    log_level: str = "CRITICAL",
) -> SyncOutcome:
    """Archive a drop folder into the landing store and run its assets in process."""
    from roster_pipelines.defs.sync.inprocess import run_drop
    from roster_pipelines.lib.drops import archive_drop
    from roster_pipelines.lib.formats import REQUIRED_FILES, get_adapter

    get_adapter(format)  # fail early on an unknown format
    manifest = archive_drop(
        folder,
        settings.landing_root,
        district=district,
        drop=drop,
        format=format,
        file_names=REQUIRED_FILES[format],
    )
    return run_drop(manifest, settings, dry_run=dry_run, force=force, log_level=log_level).outcome


def _print_outcome(outcome: SyncOutcome, as_json: bool) -> None:
    from roster_pipelines.lib.report import summary_lines

    if as_json:
        print(outcome.to_json_text())
    else:
        print("\n".join(summary_lines(outcome)))


def cmd_sync(args: argparse.Namespace) -> int:
    settings = Settings.from_env(state_dir=args.state_dir, database_url=args.db)
    outcome = sync_folder(
        Path(args.dir),
        district=args.district,
        settings=settings,
        format=args.format,
        drop=args.drop,
        dry_run=args.dry_run,
        force=args.force,
        log_level="DEBUG" if args.verbose else "CRITICAL",
    )
    _print_outcome(outcome, args.json)
    return _EXIT_BY_STATUS[outcome.status]


def cmd_demo(args: argparse.Namespace) -> int:
    base = Settings.from_env(state_dir=args.state_dir)
    demo_state = base.state_dir / "demo"
    shutil.rmtree(demo_state, ignore_errors=True)  # a fresh sample district every time
    settings = Settings.from_env(state_dir=str(demo_state), database_url=args.db)
    sample = _sample_data_dir()
    print(f"Demo: syncing {sample} as district '{SAMPLE_DISTRICT}'")
    print(f"State (database, archived drops, reports): {demo_state}\n")
    worst = EXIT_OK
    for name in ("initial", "maintenance"):
        outcome = sync_folder(sample / name, district=SAMPLE_DISTRICT, settings=settings, drop=name)
        print("\n".join(_summary(outcome)))
        print(
            f"  report:   {settings.reports_root / outcome.district / outcome.drop / 'report.md'}\n"
        )
        worst = max(worst, _EXIT_BY_STATUS[outcome.status])
    return worst


def _summary(outcome: SyncOutcome) -> list[str]:
    from roster_pipelines.lib.report import summary_lines

    return summary_lines(outcome)


def cmd_generate(args: argparse.Namespace) -> int:
    from roster_pipelines.lib.generator import generate_district

    summary = generate_district(
        Path(args.out_dir),
        people=args.people,
        seed=args.seed,
        problem_rate=args.problem_rate,
        maintenance_of=Path(args.maintenance_of) if args.maintenance_of else None,
        churn=args.churn,
    )
    print(f"wrote {args.out_dir}: {summary}")
    return EXIT_OK


def cmd_accounts(args: argparse.Namespace) -> int:
    """`admin merge-accounts KEEP OTHER --by ACTOR` and `admin merge-candidates DISTRICT`."""
    from roster_pipelines.lib.merge import MergeError, list_candidates, merge_accounts_engine
    from roster_pipelines.lib.store.engine import make_engine

    engine = make_engine(
        Settings.from_env(state_dir=args.state_dir, database_url=args.db).database_url
    )
    try:
        if args.admin_command == "merge-accounts":
            result = merge_accounts_engine(engine, args.keep, args.other, actor=args.by)
            print(json.dumps(result.to_json(), indent=2))
        else:
            rows = list_candidates(engine, args.district, status=args.status)
            print(json.dumps(rows, indent=2, default=str))
    except MergeError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_REJECTED
    return EXIT_OK


def cmd_admin(args: argparse.Namespace) -> int:
    from roster_pipelines.lib import admin
    from roster_pipelines.lib.store.engine import make_engine

    engine = make_engine(
        Settings.from_env(state_dir=args.state_dir, database_url=args.db).database_url
    )
    try:
        if args.admin_command == "set-contact":
            admin.set_admin_contact(engine, args.district, name=args.name, email=args.email)
        elif args.admin_command == "set-threshold":
            admin.set_threshold(
                engine, args.district, kind=args.type, percent=args.percent, count=args.count
            )
        elif args.admin_command == "set-enforcement":
            admin.set_enforcement(engine, args.district, enabled=args.state == "on")
        print(json.dumps(admin.describe_district(engine, args.district), indent=2, default=str))
    except admin.AdminError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_REJECTED
    return EXIT_OK


def _engine(args: argparse.Namespace):
    from roster_pipelines.lib.store.engine import make_engine

    return make_engine(
        Settings.from_env(state_dir=args.state_dir, database_url=args.db).database_url
    )


def cmd_hold(args: argparse.Namespace) -> int:
    from roster_pipelines.lib.holds import HoldError, decide_hold

    try:
        decision = decide_hold(
            _engine(args), args.district, args.drop, args.decision, actor=args.by
        )
    except HoldError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_REJECTED
    print(
        json.dumps(
            {
                "district": decision.district,
                "drop": decision.drop,
                "decision": decision.decision,
                "by": decision.actor,
                "removed": decision.removed,
            }
        )
    )
    return EXIT_OK


def cmd_app(args: argparse.Namespace) -> int:
    from roster_pipelines.lib import operations as ops

    engine = _engine(args)
    try:
        if args.app_command == "claim-class":
            ops.claim_class(
                engine, ops.find_class(engine, args.district, args.class_id), by_account_id=args.by
            )
        elif args.app_command == "edit-class":
            ops.edit_class(
                engine,
                ops.find_class(engine, args.district, args.class_id),
                by_account_id=args.by,
                name=args.name,
                join_code=args.join_code,
            )
        elif args.app_command == "add-participant":
            ops.add_participant(
                engine,
                ops.find_class(engine, args.district, args.class_id),
                args.account,
                role=args.role,
                by_account_id=args.by,
            )
        elif args.app_command == "leave-organisation":
            ops.leave_organisation(engine, args.district, args.account)
        elif args.app_command == "remove-person":
            ops.remove_person(engine, args.district, args.account, by=args.by)
    except ops.OperationRefused as err:
        print(f"refused: {err}", file=sys.stderr)
        return EXIT_REJECTED
    print("ok")
    return EXIT_OK


def cmd_notify(args: argparse.Namespace) -> int:
    """Notifications: send what the outbox holds, or an administrator's manual send."""
    from roster_pipelines.lib.notify import dispatch_pending, enqueue_manual, senders_from_env
    from roster_pipelines.lib.store.engine import make_engine
    from roster_pipelines.lib.store.state import find_district

    engine = make_engine(
        Settings.from_env(state_dir=args.state_dir, database_url=args.db).database_url
    )
    summary: dict[str, object] = {}
    district_id = None
    if args.notify_command == "manual":
        with engine.begin() as conn:
            district_id = find_district(conn, args.district)
            if district_id is None:
                print(f"error: district {args.district!r} is not known", file=sys.stderr)
                return EXIT_REJECTED
            summary["queued"] = enqueue_manual(conn, district_id, args.audience)
    if args.notify_command == "send-pending" or not args.queue_only:
        summary.update(dispatch_pending(engine, senders_from_env()).to_json())
    print(json.dumps(summary))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="roster-sync", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--state-dir", help="state folder (default: $ROSTER_STATE_DIR or .roster_state)"
    )
    common.add_argument(
        "--db", help="database URL (default: $ROSTER_DATABASE_URL or SQLite in the state folder)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", parents=[common], help="sync the sample district: initial, then maintenance"
    )
    demo.set_defaults(func=cmd_demo)

    sync = sub.add_parser("sync", parents=[common], help="sync one drop folder")
    sync.add_argument("dir", help="folder holding the drop's files")
    sync.add_argument("--district", required=True, help="district id (its drop-zone folder name)")
    sync.add_argument(
        "--format", default=DEFAULT_FORMAT, help=f"input format (default {DEFAULT_FORMAT})"
    )
    sync.add_argument("--drop", help="drop id (default: folder name + content hash)")
    sync.add_argument("--dry-run", action="store_true", help="plan and report, apply nothing")
    sync.add_argument("--force", action="store_true", help="apply even if a newer drop was applied")
    sync.add_argument("--json", action="store_true", help="print one JSON object")
    sync.add_argument("--verbose", action="store_true", help="show Dagster's step log on stderr")
    sync.set_defaults(func=cmd_sync)

    gen = sub.add_parser("generate", help="write a synthetic district drop")
    gen.add_argument("out_dir")
    gen.add_argument("--people", type=int, required=True)
    gen.add_argument("--seed", type=int, default=1)
    gen.add_argument(
        "--problem-rate", type=float, default=0.01, help="share of rows with data problems"
    )
    gen.add_argument(
        "--maintenance-of", help="previous drop folder: write a maintenance drop from it"
    )
    gen.add_argument(
        "--churn", type=float, default=0.05, help="share of students changing (maintenance)"
    )
    gen.set_defaults(func=cmd_generate)

    adm = sub.add_parser("admin", help="district settings")
    adm_sub = adm.add_subparsers(dest="admin_command", required=True)
    show = adm_sub.add_parser(
        "show", parents=[common], help="a district's settings and recent runs"
    )
    show.add_argument("district")
    contact = adm_sub.add_parser(
        "set-contact", parents=[common], help="who receives the sync reports"
    )
    contact.add_argument("district")
    contact.add_argument("--email", required=True)
    contact.add_argument("--name")
    threshold = adm_sub.add_parser(
        "set-threshold", parents=[common], help="removal threshold for holds"
    )
    threshold.add_argument("district")
    threshold.add_argument("--type", required=True, choices=["people", "classes", "enrollments"])
    threshold.add_argument("--percent", type=float, required=True)
    threshold.add_argument("--count", type=int, required=True)
    enforcement = adm_sub.add_parser(
        "set-enforcement", parents=[common], help="SIS rostering enforcement"
    )
    enforcement.add_argument("district")
    enforcement.add_argument("state", choices=["on", "off"])
    adm.set_defaults(func=cmd_admin)
    merge = adm_sub.add_parser(
        "merge-accounts",
        parents=[common],
        help="merge account OTHER into KEEP (memberships, classes, guardianships, contacts, SIS links)",
    )
    merge.add_argument("keep", type=int, help="account id that stays")
    merge.add_argument("other", type=int, help="account id merged into KEEP (becomes a tombstone)")
    merge.add_argument("--by", required=True, help="who merges (recorded in the merge audit)")
    merge.set_defaults(func=cmd_accounts)
    candidates = adm_sub.add_parser(
        "merge-candidates", parents=[common], help="a district's likely duplicate accounts"
    )
    candidates.add_argument("district")
    candidates.add_argument("--status", default="open", choices=["open", "merged", "dismissed"])
    candidates.set_defaults(func=cmd_accounts)
    hold = adm_sub.add_parser(
        "hold", parents=[common], help="confirm or discard a held drop (once)"
    )
    hold.add_argument("decision", choices=["confirm", "discard"])
    hold.add_argument("district")
    hold.add_argument("drop")
    hold.add_argument("--by", required=True, help="who decides (recorded on the hold)")
    hold.set_defaults(func=cmd_hold)
    remove = adm_sub.add_parser(
        "remove-person", parents=[common], help="remove a person from the people list"
    )
    remove.add_argument("district")
    remove.add_argument("account", type=int)
    remove.add_argument("--by", required=True)
    remove.set_defaults(func=cmd_app, app_command="remove-person")

    app = sub.add_parser("app", help="what the app does between syncs (claims, edits, leaving)")
    app_sub = app.add_subparsers(dest="app_command", required=True)
    claim = app_sub.add_parser(
        "claim-class", parents=[common], help="a teacher claims a rostered class"
    )
    edit = app_sub.add_parser(
        "edit-class", parents=[common], help="the owner renames a class or its join code"
    )
    add = app_sub.add_parser(
        "add-participant", parents=[common], help="the owner adds a member by hand"
    )
    for p in (claim, edit, add):
        p.add_argument("district")
        p.add_argument("class_id", help="the class's SIS id")
        p.add_argument("--by", type=int, required=True, help="account id of the teacher acting")
    edit.add_argument("--name")
    edit.add_argument("--join-code")
    add.add_argument("account", type=int)
    add.add_argument("--role", choices=["teacher", "student", "parent"], default="student")
    leave = app_sub.add_parser(
        "leave-organisation", parents=[common], help="a person leaves the district"
    )
    leave.add_argument("district")
    leave.add_argument("account", type=int)
    app.set_defaults(func=cmd_app)

    notify = sub.add_parser("notify", help="notifications: send the outbox, manual sends")
    notify_sub = notify.add_subparsers(dest="notify_command", required=True)
    notify_sub.add_parser(
        "send-pending", parents=[common], help="send the outbox's due messages (at most once)"
    )
    manual = notify_sub.add_parser(
        "manual", parents=[common], help="send the fixed welcome message (R12) to an audience"
    )
    manual.add_argument("--district", required=True)
    manual.add_argument("--audience", required=True, choices=["teachers", "students", "parents"])
    manual.add_argument(
        "--queue-only", action="store_true", help="queue in the outbox; the dispatcher sends"
    )
    notify.set_defaults(func=cmd_notify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as err:  # the CLI's contract: a crash is exit 1 with a clear line
        from roster_pipelines.defs.sync.inprocess import SyncCrashed
        from roster_pipelines.lib.drops import DropError

        if isinstance(err, SyncCrashed | DropError | ValueError):
            print(f"error: {err}", file=sys.stderr)
        else:
            import traceback

            traceback.print_exc()
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
