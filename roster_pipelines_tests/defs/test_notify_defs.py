"""The Dagster side of notifications: the dispatcher sensor, the dispatch job and the
manual-send job, with the provider resources pointed at the local stand-in."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from roster_pipelines.cli import sync_folder
from roster_pipelines.defs.sync.notifications import (
    SendGridResource,
    SmsResource,
    manual_notification_job,
    notification_dispatch_job,
    notification_dispatch_sensor,
)
from roster_pipelines.defs.sync.resources import RosterStore
from roster_pipelines.lib.admin import set_admin_contact
from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines_tests.e2e.test_walking_skeleton import DISTRICT, initial_drop


def test_sensor_dispatch_job_and_manual_job(
    tmp_path: Path, sqlite_url: str, notify_standin
) -> None:
    settings = Settings.from_env(state_dir=str(tmp_path / "state"), database_url=sqlite_url)
    set_admin_contact(make_engine(sqlite_url), DISTRICT, name="Pat", email="admin@lincoln.k12.us")
    sync_folder(initial_drop(tmp_path / "d1"), district=DISTRICT, settings=settings, drop="d1")
    store = RosterStore(state_dir=str(settings.state_dir), database_url=sqlite_url)
    resources = {
        "roster_store": store,
        "sendgrid": SendGridResource(
            api_key="SG.key", host=notify_standin.url, from_email="sync@roster.example"
        ),
        "sms": SmsResource(
            base_url=notify_standin.url,
            account_sid="AC1",
            auth_token="token",
            from_number="+15005550006",
        ),
    }

    # The admin's report is due: the sensor asks for one dispatch run, keyed by the state.
    context = dg.build_sensor_context(resources={"roster_store": store})
    request = notification_dispatch_sensor(context)
    assert isinstance(request, dg.RunRequest)
    assert (
        notification_dispatch_sensor(
            dg.build_sensor_context(resources={"roster_store": store})
        ).run_key
        == request.run_key
    )

    result = notification_dispatch_job.execute_in_process(resources=resources)
    assert result.success
    assert result.output_for_node("dispatch_notifications")["sent"] == 1
    assert [m.to for m in notify_standin.emails()] == ["admin@lincoln.k12.us"]
    skip = notification_dispatch_sensor(dg.build_sensor_context(resources={"roster_store": store}))
    assert isinstance(skip, dg.SkipReason)

    # The manual send (R12): parents get the fixed welcome, each on their channel.
    result = manual_notification_job.execute_in_process(
        resources=resources,
        run_config={
            "ops": {
                "send_manual_notifications": {
                    "config": {"district": DISTRICT, "audience": "parents"}
                }
            }
        },
    )
    assert result.success
    summary = result.output_for_node("send_manual_notifications")
    assert summary["queued"] == 3 and summary["sent"] == 3
    assert sorted(r.to for r in notify_standin.accepted[1:]) == [
        "+16173332211",
        "dana.diaz@gmail.com",
        "hana.park@yahoo.com",
    ]
