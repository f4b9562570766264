"""Resources of the sync: the state folder and app database, drop storage, drop zones."""

from __future__ import annotations

import dataclasses
import os
import pickle
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy import Engine

from roster_pipelines.lib import contracts, stage_files
from roster_pipelines.lib.canonical import Roster
from roster_pipelines.lib.config import DEFAULT_FORMAT, Settings
from roster_pipelines.lib.dropzones import DropZone, LocalZone
from roster_pipelines.lib.dropzones.watch import WatchOptions
from roster_pipelines.lib.formats import get_adapter
from roster_pipelines.lib.incremental import RosterFingerprint, fingerprint
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.sync import IdentityResult


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


PARSED_ROSTER = dg.AssetKey("parsed_roster")
VALIDATED_ROSTER = dg.AssetKey("validated_roster")


def stage_outputs_root(settings: Settings) -> Path:
    """Where the stages' outputs are kept: `<state>/stage_outputs/<asset>/<partition>`."""
    return settings.state_dir / "stage_outputs"


@dataclass(frozen=True)
class _ParsedFromArchive:
    """What is on disk for a parsed roster: a note that it is the format adapter's
    reading of the archived drop (`raw_roster_files`), which is read again when a
    stage loads it from disk. The largest stage output (about 750 MB at a million
    people), written while validation runs, slowed it by a third on two cores."""


@dataclass(frozen=True)
class _ValidatedFromArchive:
    """What is on disk for a validated roster: the contracts applied to the archived
    drop's reading (validation is a function of the files), read again that way when a
    stage loads it from disk; and its fingerprint, all the next drop's plan needs of
    it (lib/incremental.py). The roster itself was 620 MB at a million people."""

    fingerprint: RosterFingerprint


def stored_fingerprint(settings: Settings, partition: str) -> RosterFingerprint | None:
    """The fingerprint of a drop's validated roster, if its storage has one."""
    folder = stage_outputs_root(settings).joinpath(*VALIDATED_ROSTER.path, partition)
    if not (folder / stage_files.OBJECT).exists():
        return None
    stored = stage_files.load(folder)
    return stored.fingerprint if isinstance(stored, _ValidatedFromArchive) else None


def _on_disk(asset: dg.AssetKey, obj: Any) -> Any:
    """What is written for a stage's output: for the rosters a note instead; identity's
    without the contact points and owners it read (a plan made from the stored result
    reads them again, as the database has them then) and without its similar-people
    keys and links (an apply made from the stored result keeps none: the next drop
    reads them in full). Its merge candidates are left out when they are still to be
    worked out (the apply starts them, on a core its transaction leaves idle; they
    are recorded in the merge_candidates table, not read from here)."""
    if asset == PARSED_ROSTER:
        return _ParsedFromArchive()
    if asset == VALIDATED_ROSTER and isinstance(obj, Roster):
        stored = fingerprint(obj)
        stored.digest()  # kept with it (the next drop's plan checks it)
        return _ValidatedFromArchive(stored)
    if isinstance(obj, IdentityResult):
        return dataclasses.replace(
            obj.settled() if obj.candidates_started() else obj.without_candidates(),
            contact_owners=None,
            district_contacts=None,
            similar_keys=None,
            links=None,
        )
    return obj


@dataclass
class _Handoff:
    obj: Any
    saved: Future[tuple[int, int] | None]  # the save of this run: the write it made
    readers: int  # the stages still to read it


class DropStorageIOManager(dg.ConfigurableIOManager):
    """Keeps each stage's output per drop under ``<state>/stage_outputs/``.

    One folder per asset and partition: the object pickled, its polars frames as
    Arrow IPC files beside it (`lib/stage_files.py`): several times faster than
    pickling the frames at district scale, and no serialised copy in memory.

    Within one run and process, a sync stage's output is written in a background
    thread while the next stage works (about 4 s per drop at a million people), and
    handed to the stages that read it as the object itself, not read back from disk
    (about 1.8 s), while the files on disk are still the ones this run wrote. It is
    let go once each of those stages has read it. The next stage's output waits for
    the write, so a failed write fails that stage; an output nothing reads is written
    at once.
    """

    state_dir: str = ""
    _handoff: dict[Path, _Handoff] = PrivateAttr(default_factory=dict)
    _saving: dict[Path, Future[tuple[int, int] | None]] = PrivateAttr(default_factory=dict)
    _saver: ThreadPoolExecutor | None = PrivateAttr(default=None)

    def _root(self) -> Path:
        return stage_outputs_root(Settings.from_env(state_dir=self.state_dir or None))

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        partition = context.partition_key if context.has_partition_key else "_unpartitioned"
        return self._root().joinpath(*context.asset_key.path, partition)

    def stored(self, asset: str, partition: str) -> Any:
        """What a run stored for `asset` and `partition` (how a caller reads a result)."""
        return self._load(self._root() / asset / partition)

    def _load(self, path: Path) -> Any:
        obj = stage_files.load(path)
        if isinstance(obj, _ParsedFromArchive | _ValidatedFromArchive):
            manifest = self.stored("raw_roster_files", path.name)
            landing = Settings.from_env(state_dir=self.state_dir or None).landing_root
            parsed = get_adapter(manifest.format)(manifest.folder(landing))
            return parsed if isinstance(obj, _ParsedFromArchive) else contracts.validate(parsed)
        return obj

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._handoff, self._saving = {}, {}
        self._saver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage-output")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        try:
            self._finish_saves()
        finally:
            self._handoff.clear()
            if self._saver is not None:
                self._saver.shutdown(wait=True)
                self._saver = None

    def _finish_saves(self, path: Path | None = None) -> None:
        """Wait for the writes in flight (of `path` only, if given); raise the first
        that failed."""
        for key in [path] if path is not None else list(self._saving):
            future = self._saving.pop(key, None)
            if future is not None:
                future.result()

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        path = self._path(context)
        # One write in flight at most (the previous stage's, overlapping this one's
        # work): a write that failed fails this step, not just the run's teardown,
        # which Dagster only logs.
        self._finish_saves()
        self._handoff.pop(path, None)
        asset = context.asset_key
        readers = _sync_readers().get(asset, 0)
        saved: Future[tuple[int, int] | None]
        # Outside a run, or for the last stage: written now.
        if self._saver is None or not readers:
            saved = Future()
            saved.set_result(_save(_on_disk(asset, obj), path))
        else:
            saved = self._saver.submit(lambda: _save(_on_disk(asset, obj), path))
            self._saving[path] = saved
        if readers:
            self._handoff[path] = _Handoff(obj, saved, readers)

    def load_input(self, context: dg.InputContext) -> Any:
        path = self._path(context)
        handed = self._handoff.get(path)
        if handed is not None:
            if not handed.saved.done() or handed.saved.result() == _signature(path):
                handed.readers -= 1
                if handed.readers <= 0:
                    del self._handoff[path]
                return handed.obj
            del self._handoff[path]  # rewritten since (another run): read it from disk
        self._finish_saves(path)
        legacy = path.with_name(f"{path.name}.pkl")  # written before stage folders
        if not path.exists() and legacy.exists():
            with legacy.open("rb") as handle:
                return stage_files.with_new_fields(pickle.load(handle))
        return self._load(path)


def _save(obj: Any, path: Path) -> tuple[int, int] | None:
    stage_files.save(obj, path)
    return _signature(path)


def _signature(folder: Path) -> tuple[int, int] | None:
    """Which write of a stage output is on disk (a save replaces the whole folder)."""
    try:
        stat = (folder / stage_files.OBJECT).stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


@cache
def _sync_readers() -> dict[dg.AssetKey, int]:
    """How many sync stages read each sync stage's output (the sync job's graph)."""
    # Imported here: the assets module imports this one.
    from roster_pipelines.defs.sync.assets import SYNC_ASSETS

    readers: dict[dg.AssetKey, int] = {}
    for asset in SYNC_ASSETS:
        for key in set(asset.keys_by_input_name.values()):
            readers[key] = readers.get(key, 0) + 1
    return readers


def _env(value: str, name: str, default: str = "") -> str:
    return value or os.environ.get(name, "") or default


def _env_int(value: int, name: str, default: int) -> int:
    return value or int(os.environ.get(name, "") or default)


class DropZoneResource(dg.ConfigurableResource):
    """What every drop zone shares: the format it receives and the sensor's limits.

    Zero/empty values fall back to env vars at execution time (see the README's
    Configuration table), so one deployment configures its zones without code.
    """

    format: str = ""  # ROSTER_DROP_FORMAT, default remind-csv-1.0
    max_file_bytes: int = 0  # ROSTER_DROP_MAX_FILE_BYTES, default 2 GiB
    incomplete_alert_minutes: int = 0  # ROSTER_DROP_INCOMPLETE_ALERT_MINUTES, default 360
    max_objects_per_tick: int = 0  # ROSTER_DROP_MAX_OBJECTS_PER_TICK, default 20,000
    max_drops_per_tick: int = 0  # ROSTER_DROP_MAX_DROPS_PER_TICK, default 50

    def options(self) -> WatchOptions:
        return WatchOptions(
            format=_env(self.format, "ROSTER_DROP_FORMAT", DEFAULT_FORMAT),
            max_file_bytes=_env_int(self.max_file_bytes, "ROSTER_DROP_MAX_FILE_BYTES", 2 << 30),
            incomplete_alert_seconds=60.0
            * _env_int(self.incomplete_alert_minutes, "ROSTER_DROP_INCOMPLETE_ALERT_MINUTES", 360),
            max_objects=_env_int(
                self.max_objects_per_tick, "ROSTER_DROP_MAX_OBJECTS_PER_TICK", 20_000
            ),
            max_drops_per_tick=_env_int(
                self.max_drops_per_tick, "ROSTER_DROP_MAX_DROPS_PER_TICK", 50
            ),
        )

    def configured(self) -> bool:
        return True

    def open_zone(self) -> DropZone:
        raise NotImplementedError


class LocalDropZone(DropZoneResource):
    """A local folder (`ROSTER_DROP_ZONE`, default `$ROSTER_STATE_DIR/drop_zone`)."""

    root: str = ""

    def open_zone(self) -> DropZone:
        return LocalZone(self.root or Settings.from_env().drop_zone)


class S3DropZone(DropZoneResource):
    """An S3 bucket and prefix, on AWS or any S3-compatible endpoint.

    Credentials: the fields, else boto3's usual chain (AWS_ACCESS_KEY_ID, instance
    roles, ...). Unconfigured (no bucket), its sensor skips.
    """

    bucket: str = ""  # ROSTER_S3_BUCKET
    prefix: str = ""  # ROSTER_S3_PREFIX
    endpoint_url: str = ""  # ROSTER_S3_ENDPOINT_URL (MinIO, Ceph, ...)
    region_name: str = ""  # ROSTER_S3_REGION
    aws_access_key_id: str = ""
    aws_secret_access_key: str = ""

    def configured(self) -> bool:
        return bool(_env(self.bucket, "ROSTER_S3_BUCKET"))

    def open_zone(self) -> DropZone:
        from roster_pipelines.lib.dropzones.s3 import S3Zone

        return S3Zone(
            _env(self.bucket, "ROSTER_S3_BUCKET"),
            _env(self.prefix, "ROSTER_S3_PREFIX"),
            endpoint_url=_env(self.endpoint_url, "ROSTER_S3_ENDPOINT_URL") or None,
            region_name=_env(self.region_name, "ROSTER_S3_REGION") or None,
            aws_access_key_id=self.aws_access_key_id or None,
            aws_secret_access_key=self.aws_secret_access_key or None,
        )


class SFTPDropZone(DropZoneResource):
    """An SFTP server; host keys verified against `known_hosts` (no trust on first use).

    Unconfigured (no host), its sensor skips.
    """

    host: str = ""  # ROSTER_SFTP_HOST
    port: int = 0  # ROSTER_SFTP_PORT, default 22
    username: str = ""  # ROSTER_SFTP_USERNAME
    password: str = ""  # ROSTER_SFTP_PASSWORD
    private_key_path: str = ""  # ROSTER_SFTP_PRIVATE_KEY (a file)
    known_hosts: str = ""  # ROSTER_SFTP_KNOWN_HOSTS (a file), required
    root: str = ""  # ROSTER_SFTP_ROOT, default: the login folder

    def configured(self) -> bool:
        return bool(_env(self.host, "ROSTER_SFTP_HOST"))

    def open_zone(self) -> DropZone:
        from roster_pipelines.lib.dropzones.sftp import SFTPZone

        return SFTPZone(
            _env(self.host, "ROSTER_SFTP_HOST"),
            port=_env_int(self.port, "ROSTER_SFTP_PORT", 22),
            username=_env(self.username, "ROSTER_SFTP_USERNAME"),
            password=_env(self.password, "ROSTER_SFTP_PASSWORD") or None,
            private_key_path=_env(self.private_key_path, "ROSTER_SFTP_PRIVATE_KEY") or None,
            known_hosts=_env(self.known_hosts, "ROSTER_SFTP_KNOWN_HOSTS"),
            root=_env(self.root, "ROSTER_SFTP_ROOT", "."),
        )
