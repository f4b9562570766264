"""Notifications: the outbox (written in the transaction of the change that causes
them), message templates, provider clients and the exactly-once dispatcher.

Never imports dagster; the Dagster resources, sensor and jobs live in
`roster_pipelines.defs.sync.notifications`.
"""

from __future__ import annotations

from roster_pipelines.lib.notify.config import senders_from_env
from roster_pipelines.lib.notify.dispatch import (
    DispatchPolicy,
    DispatchResult,
    Senders,
    dispatch_pending,
)
from roster_pipelines.lib.notify.outbox import (
    AUDIENCES,
    enqueue_admin_report,
    enqueue_claim_notifications,
    enqueue_manual,
    enqueue_sync_notifications,
)

__all__ = [
    "AUDIENCES",
    "DispatchPolicy",
    "DispatchResult",
    "Senders",
    "dispatch_pending",
    "enqueue_admin_report",
    "enqueue_claim_notifications",
    "enqueue_manual",
    "enqueue_sync_notifications",
    "senders_from_env",
]
