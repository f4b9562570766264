"""R9 freshness: the daily schedule with a frozen clock at 74, 75, 85 and 91 days."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from roster_pipelines.defs.sync.freshness import CHECK, district_freshness_schedule
from roster_pipelines.lib import freshness
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.models import DistrictSettings, NotificationOutbox, SyncRun
from roster_pipelines.lib.store.state import get_or_create_district

LAST_DROP = datetime(2026, 1, 10, 2, 30, tzinfo=UTC)  # the 06:00 ticks come 3.5 h later


def _seed(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        for name, email in (("lincoln-usd", "admin@lincoln.k12.us"), ("quiet-usd", None)):
            district_id = get_or_create_district(conn, name)
            conn.execute(
                sa.update(DistrictSettings)
                .where(DistrictSettings.district_id == district_id)
                .values(admin_email=email)
            )
            for status, finished in (
                ("applied", LAST_DROP - timedelta(days=30)),
                ("applied", LAST_DROP),
                ("rejected", LAST_DROP + timedelta(days=20)),  # does not count
            ):
                conn.execute(
                    sa.insert(SyncRun).values(
                        district_id=district_id,
                        drop_id=f"d-{finished:%Y%m%d}",
                        status=status,
                        started_at=finished,
                        finished_at=finished,
                    )
                )
        get_or_create_district(conn, "new-usd")  # never applied a drop: not late


def _tick(instance: dg.DagsterInstance, days: int) -> dg.ExecuteInProcessResult:
    from roster_pipelines.definitions import defs

    at = (LAST_DROP + timedelta(days=days)).replace(hour=6, minute=0)
    request = district_freshness_schedule(
        dg.build_schedule_context(instance=instance, scheduled_execution_time=at)
    )
    assert isinstance(request, dg.RunRequest)
    job = defs.resolve_job_def("district_freshness_job")
    return job.execute_in_process(run_config=request.run_config, instance=instance)


def _outbox(url: str) -> list[tuple[str, str, str]]:
    with make_engine(url).connect() as conn:
        rows = conn.execute(
            sa.select(
                NotificationOutbox.idempotency_key,
                NotificationOutbox.template,
                NotificationOutbox.destination,
            ).order_by(NotificationOutbox.id)
        ).all()
    return [tuple(r) for r in rows]


def _check(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK]
    return evaluation


def test_freshness_schedule_at_74_75_85_and_91_days(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'app.db'}"
    monkeypatch.setenv("ROSTER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("ROSTER_DATABASE_URL", url)
    _seed(url)
    key = "freshness:lincoln-usd:2026-01-10"
    with dg.instance_for_test() as instance:
        day74 = _tick(instance, 74)
        assert day74.success and _check(day74).passed
        assert _outbox(url) == []

        day75 = _tick(instance, 75)
        assert _check(day75).passed
        assert _outbox(url) == [
            (f"{key}:75", "freshness_warning", "admin@lincoln.k12.us"),
        ]
        _tick(instance, 75)  # the same day again (a retried run): no second email
        assert len(_outbox(url)) == 1

        day85 = _tick(instance, 85)
        assert _check(day85).passed
        assert [k for k, _, _ in _outbox(url)] == [f"{key}:75", f"{key}:85"]

        day91 = _tick(instance, 91)
        assert day91.success  # the check fails; the run does not
        evaluation = _check(day91)
        assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert "lincoln-usd: 91 days" in evaluation.metadata["overdue"].value
        assert "quiet-usd: 91 days" in evaluation.metadata["overdue"].value
        assert len(_outbox(url)) == 2  # warnings are at 75 and 85 only
        [materialization] = day91.asset_materializations_for_node("district_freshness")
        assert materialization.metadata["overdue"].value == 2
    with make_engine(url).connect() as conn:
        payload = conn.execute(
            sa.select(NotificationOutbox.payload, NotificationOutbox.account_id).where(
                NotificationOutbox.idempotency_key == f"{key}:85"
            )
        ).one()
    assert payload.account_id is None  # the admin may have no account
    assert payload.payload["days_since_last_drop"] == 85


def test_the_plan_guard_and_the_check_use_the_same_date_and_rule() -> None:
    last = LAST_DROP
    assert freshness.days_since(None, last) is None and not freshness.removals_held(None, last)
    assert freshness.days_since(last.replace(tzinfo=None), last + timedelta(days=90)) == 90
    assert not freshness.removals_held(last, last + timedelta(days=90))
    assert freshness.removals_held(last, last + timedelta(days=90, seconds=1))
    assert [freshness.warning_due(d) for d in (None, 74, 75, 84, 85, 89, 90, 120)] == [
        None,
        None,
        75,
        75,
        85,
        85,
        None,
        None,
    ]


def test_the_plan_holds_removals_after_90_days() -> None:
    import inspect

    from roster_pipelines.lib import plan

    source = inspect.getsource(plan.guard_reasons)
    assert "freshness.removals_held(current.last_applied_at, now)" in source
