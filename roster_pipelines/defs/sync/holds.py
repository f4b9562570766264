"""The hold decision, launched from the UI (Launchpad) with the drop as config (R10)."""

from typing import Literal

import dagster as dg

from roster_pipelines.defs.sync.resources import RosterStore
from roster_pipelines.lib.holds import decide_hold


class HoldDecisionConfig(dg.Config):
    """Which held drop, what to do with it, and who decides (recorded on the hold)."""

    district: str
    drop: str
    decision: Literal["confirm", "discard"]
    decided_by: str


@dg.op
def decide_held_drop(
    context: dg.OpExecutionContext, config: HoldDecisionConfig, roster_store: RosterStore
) -> None:
    result = decide_hold(
        roster_store.engine(),
        config.district,
        config.drop,
        config.decision,
        actor=config.decided_by,
    )
    context.log.info(
        f"{config.decision} of drop {config.drop} by {config.decided_by}: removed {result.removed}"
    )


@dg.job(
    description="Confirm or discard a held drop, once. Config: district, drop, decision, decided_by."
)
def hold_decision_job() -> None:
    decide_held_drop()
