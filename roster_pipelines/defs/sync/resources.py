"""Resources of the sync: the state folder and app database, and drop storage."""

from __future__ import annotations

import pickle
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy import Engine

from roster_pipelines.lib.config import Settings
from roster_pipelines.lib.store.engine import make_engine


@cache
def _engine(url: str) -> Engine:
    return make_engine(url)


class RosterStore(dg.ConfigurableResource):
    """The state folder (landing store, reports) and the app database.

    Empty values fall back to `ROSTER_STATE_DIR` / `ROSTER_DATABASE_URL` /
    `ROSTER_DROP_ZONE` at execution time, then to `.roster_state/`, a SQLite file in
    it (the embedded default) and `.roster_state/drop_zone/`.
    """

    state_dir: str = ""
    database_url: str = ""
    drop_zone: str = ""

    def settings(self) -> Settings:
        return Settings.from_env(
            state_dir=self.state_dir or None,
            database_url=self.database_url or None,
            drop_zone=self.drop_zone or None,
        )

    def engine(self) -> Engine:
        return _engine(self.settings().database_url)


class DropStorageIOManager(dg.ConfigurableIOManager):
    """Keeps each stage's output per drop under ``<state>/stage_outputs/`` (pickled).

    Polars frames pickle through Arrow IPC, so this stays fast at district scale.
    """

    state_dir: str = ""

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        root = Settings.from_env(state_dir=self.state_dir or None).state_dir / "stage_outputs"
        partition = context.partition_key if context.has_partition_key else "_unpartitioned"
        return root.joinpath(*context.asset_key.path, f"{partition}.pkl")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            pickle.dump(obj, handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    def load_input(self, context: dg.InputContext) -> Any:
        with self._path(context).open("rb") as handle:
            return pickle.load(handle)
