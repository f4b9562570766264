"""Settings read from the environment (documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from roster_pipelines.lib.store.engine import sqlite_url

DEFAULT_STATE_DIR = ".roster_state"
DEFAULT_FORMAT = "remind-csv-1.0"


@dataclass(frozen=True)
class Settings:
    state_dir: Path
    database_url: str
    drop_zone: Path

    @property
    def landing_root(self) -> Path:
        return self.state_dir / "landing"

    @property
    def reports_root(self) -> Path:
        return self.state_dir / "reports"

    def similar_keys_folder(self, district: str) -> Path:
        """Where a district's last applied drop keeps its similar-people keys."""
        return self.state_dir / "similar_people_keys" / district

    def district_links_folder(self, district: str) -> Path:
        """Where a district's last applied drop keeps the district's SIS links."""
        return self.state_dir / "district_links" / district

    @classmethod
    def from_env(
        cls,
        *,
        state_dir: str | None = None,
        database_url: str | None = None,
        drop_zone: str | None = None,
    ) -> Settings:
        state = Path(state_dir or os.environ.get("ROSTER_STATE_DIR") or DEFAULT_STATE_DIR).resolve()
        url = database_url or os.environ.get("ROSTER_DATABASE_URL") or sqlite_url(state)
        zone = Path(
            drop_zone or os.environ.get("ROSTER_DROP_ZONE") or state / "drop_zone"
        ).resolve()
        return cls(state_dir=state, database_url=url, drop_zone=zone)
