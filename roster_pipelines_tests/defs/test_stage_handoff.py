"""The IO manager hands a sync stage's output to the stages that read it in the same
run without reading it back from disk, and still writes every output to disk (the
parsed and validated rosters as notes to read the archived drop again)."""

import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import sqlalchemy as sa

from roster_pipelines.defs.sync import resources
from roster_pipelines.defs.sync.inprocess import SyncCrashed, run_drop
from roster_pipelines.defs.sync.resources import DropStorageIOManager
from roster_pipelines.lib import contracts, incremental, stage_files
from roster_pipelines.lib.config import DEFAULT_FORMAT, Settings
from roster_pipelines.lib.drops import DropManifest, archive_drop
from roster_pipelines.lib.formats import REQUIRED_FILES, get_adapter
from roster_pipelines.lib.store.engine import make_engine
from roster_pipelines.lib.store.models import SyncRun
from roster_pipelines_tests.lib.test_corpus import CORPUS


def _contexts(manager: DropStorageIOManager, asset: str):
    key = dg.AssetKey(asset)
    out = dg.build_output_context(asset_key=key, partition_key="d|1")
    return out, dg.build_input_context(asset_key=key, partition_key="d|1", upstream_output=out)


def _run_digest(settings: Settings, manifest: DropManifest) -> str:
    """The roster digest the drop's run recorded."""
    engine = make_engine(settings.database_url)
    with engine.connect() as conn:
        return conn.execute(
            sa.select(SyncRun.roster_digest).where(SyncRun.drop_id == manifest.drop)
        ).scalar_one()


def _archived(tmp_path: Path) -> tuple[Settings, DropManifest]:
    settings = Settings.from_env(
        state_dir=str(tmp_path / "state"), database_url=f"sqlite:///{tmp_path / 'app.db'}"
    )
    manifest = archive_drop(
        CORPUS / "contact_conflicts",
        settings.landing_root,
        district="handoff",
        drop=None,
        format=DEFAULT_FORMAT,
        file_names=REQUIRED_FILES[DEFAULT_FORMAT],
    )
    return settings, manifest


def test_a_sync_run_reads_no_stage_output_back_from_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[str] = []
    real_load = stage_files.load

    def counting_load(folder: Path):
        loaded.append(folder.parent.name)
        return real_load(folder)

    monkeypatch.setattr(resources.stage_files, "load", counting_load)
    settings, manifest = _archived(tmp_path)
    run = run_drop(manifest, settings)
    assert run.outcome.status == "applied"
    # Only what the caller reads after the run (the outcome) came from disk.
    assert set(loaded) <= {"applied_sync"}
    # Every stage's output is on disk all the same, equal to what the stages used.
    root = settings.state_dir / "stage_outputs"
    for asset in ("parsed_roster", "validated_roster", "identity_resolution", "sync_plan"):
        assert (root / asset / manifest.partition_key / stage_files.OBJECT).exists(), asset
    validated = real_load(root / "validated_roster" / manifest.partition_key)
    people = validated.fingerprint.tables["people"]
    assert people.height == sum(run.outcome.counts[r] for r in ("teachers", "students", "parents"))
    # Identity's result without the contact points and owners it read (a plan made from
    # it reads them).
    identity = real_load(root / "identity_resolution" / manifest.partition_key)
    assert identity.identities.height == people.height
    assert identity.contact_owners is None and identity.district_contacts is None


def test_an_output_is_read_from_disk_once_every_reader_had_it_or_it_was_rewritten(
    tmp_path: Path,
) -> None:
    manager = DropStorageIOManager(state_dir=str(tmp_path))
    out, inp = _contexts(manager, "sync_plan")  # one reader: applied_sync
    handed = {"frame": pl.DataFrame({"x": [1, 2]})}
    manager.handle_output(out, handed)
    assert manager.load_input(inp) is handed
    again = manager.load_input(inp)  # its reader had it: from disk
    assert again is not handed and again["frame"].equals(handed["frame"])

    manager.handle_output(out, handed)
    stage_files.save({"frame": pl.DataFrame({"x": [3]})}, manager._path(out))  # another run
    assert manager.load_input(inp)["frame"]["x"].to_list() == [3]


def test_outputs_of_assets_outside_the_sync_graph_are_not_held(tmp_path: Path) -> None:
    manager = DropStorageIOManager(state_dir=str(tmp_path))
    out, inp = _contexts(manager, "sync_report")  # nothing reads it
    manager.handle_output(out, "report folder")
    assert manager._handoff == {}
    assert manager.load_input(inp) == "report folder"


def test_a_failed_write_of_a_stage_output_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outputs are written in the background; a write that fails still fails the run
    (at the next step), with its reason."""
    real_save = stage_files.save

    def failing_save(obj, folder: Path) -> None:
        if folder.parent.name == "identity_resolution":
            raise OSError("No space left on device")
        real_save(obj, folder)

    monkeypatch.setattr(resources.stage_files, "save", failing_save)
    settings, manifest = _archived(tmp_path)
    with pytest.raises(SyncCrashed, match="No space left on device"):
        run_drop(manifest, settings)


def test_a_slow_failed_write_fails_a_step_not_only_the_teardown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write still in flight when its readers had the object fails the next stage's
    output (Dagster only logs a failed teardown); the last stage writes at once."""
    real_save = stage_files.save

    def slow_failing_save(obj, folder: Path) -> None:
        if folder.parent.name in ("sync_plan", "sync_report"):
            time.sleep(0.5)
            raise OSError(f"No space left on device ({folder.parent.name})")
        real_save(obj, folder)

    monkeypatch.setattr(resources.stage_files, "save", slow_failing_save)
    settings, manifest = _archived(tmp_path)
    with pytest.raises(SyncCrashed, match=r"No space left on device \(sync_plan\)"):
        run_drop(manifest, settings)


@pytest.mark.parametrize("asset", ["parsed_roster", "validated_roster"])
def test_the_rosters_are_stored_as_the_archived_drop_and_read_again_from_it(
    tmp_path: Path, asset: str
) -> None:
    settings, manifest = _archived(tmp_path)
    run = run_drop(manifest, settings)
    assert run.outcome.status == "applied"
    folder = settings.state_dir / "stage_outputs" / asset / manifest.partition_key
    # No roster written: the validated roster's note keeps its fingerprint only (key
    # columns and row hashes), not the rows.
    written = {f.name for f in folder.glob("*.arrow")}
    tables = len(incremental._DIFFED_KEYS)  # one frame per compared table
    assert written == (set() if asset == "parsed_roster" else {f"{i}.arrow" for i in range(tables)})
    # Loaded from disk (a re-execution from the UI), it is the archived drop read again.
    stored = DropStorageIOManager(state_dir=str(settings.state_dir)).stored(
        asset, manifest.partition_key
    )
    expected = get_adapter(manifest.format)(manifest.folder(settings.landing_root))
    if asset == "validated_roster":
        expected = contracts.validate(expected)
        assert incremental.fingerprint(stored).digest() == _run_digest(settings, manifest)
        # The note keeps the digest of its fingerprint, which the next plan checks
        # without hashing the rows again.
        kept = stage_files.load(folder).fingerprint
        assert kept.known_digest == _run_digest(settings, manifest)
        assert incremental.RosterFingerprint(kept.tables).digest() == kept.known_digest
    assert stored.tables().keys() == expected.tables().keys()
    for name, frame in expected.tables().items():
        assert stored.tables()[name].equals(frame), name
    assert stored.issues.equals(expected.issues)
