"""The drop-zone watch logic on a local zone (no Dagster): completeness, exactly once,
bounded listings, rejected names and sizes, alerts, and the landing store's streaming."""

from __future__ import annotations

import io
import json
import os
from contextlib import nullcontext
from pathlib import Path

import pytest

from roster_pipelines.lib.drops import (
    DropError,
    FileTooLarge,
    archive_streams,
    check_file_name,
    read_log,
)
from roster_pipelines.lib.dropzones import LocalZone
from roster_pipelines.lib.dropzones.watch import WatchOptions, tick
from roster_pipelines_tests.conftest import write_drop

FORMAT = "remind-csv-1.0"
OPTIONS = WatchOptions(format=FORMAT, incomplete_alert_seconds=3600)


def _run(zone_root: Path, landing: Path, cursor, now: float, options=OPTIONS):
    return tick(LocalZone(zone_root), landing, cursor, options=options, now=now)


def test_two_unchanged_ticks_or_a_marker_start_a_drop(tmp_path: Path) -> None:
    zone, landing = tmp_path / "zone", tmp_path / "landing"
    write_drop(zone / "a-usd", {})
    first = _run(zone, landing, None, 100)
    assert first.started == [] and first.waiting == {"a-usd": "waiting for the files to settle"}
    second = _run(zone, landing, first.cursor, 130)
    [started] = second.started
    assert started.manifest.district == "a-usd" and started.previous_hash is None
    assert started.run_key == f"a-usd:{started.manifest.content_hash}:after:none"
    # Nothing changes: nothing is read or started again.
    assert _run(zone, landing, second.cursor, 160).started == []
    # A marker skips the wait.
    write_drop(zone / "b-usd", {"schools.csv": [["S1", "B School"]]})
    (zone / "b-usd" / "_READY").write_text("")
    assert [s.manifest.district for s in _run(zone, landing, second.cursor, 190).started] == [
        "b-usd"
    ]
    # The cursor is small JSON.
    assert len(json.dumps(second.cursor)) < 400


def test_a_file_still_growing_waits(tmp_path: Path) -> None:
    zone, landing = tmp_path / "zone", tmp_path / "landing"
    folder = write_drop(zone / "a-usd", {})
    first = _run(zone, landing, None, 100)
    with (folder / "students.csv").open("a") as handle:
        handle.write("S1,ST1,Cara,Diaz,2016-03-04,3,,,,,,\n")
    second = _run(zone, landing, first.cursor, 130)
    assert second.started == []
    assert len(_run(zone, landing, second.cursor, 160).started) == 1


def test_same_bytes_again_start_nothing_but_an_older_snapshot_resent_runs(tmp_path: Path) -> None:
    zone, landing = tmp_path / "zone", tmp_path / "landing"
    folder = write_drop(zone / "a-usd", {})
    (folder / "_READY").write_text("")
    a = _run(zone, landing, None, 100)
    [drop_a] = a.started
    # The same files uploaded again (new mtimes): a duplicate, nothing to run.
    for f in folder.iterdir():
        os.utime(f, (1_900_000_000, 1_900_000_000))
    again = _run(zone, landing, a.cursor, 130)
    assert again.started == [] and [m.drop for m in again.duplicates] == [drop_a.manifest.drop]
    # B, then A's bytes again (a district restoring a good export): A runs again.
    write_drop(folder, {"schools.csv": [["S1", "B School"]]})
    b = _run(zone, landing, again.cursor, 160)
    [drop_b], cursor_b = b.started, b.cursor
    write_drop(folder, {})
    [resent] = _run(zone, landing, cursor_b, 190).started
    assert resent.manifest.content_hash == drop_a.manifest.content_hash
    assert resent.run_key != drop_a.run_key and drop_b.manifest.content_hash.startswith(
        resent.previous_hash
    )
    events = [e["event"] for e in read_log(landing, "a-usd")]
    assert events.count("started") == 3


def test_partial_drop_waits_and_alerts_once_after_the_timeout(tmp_path: Path) -> None:
    zone, landing = tmp_path / "zone", tmp_path / "landing"
    folder = write_drop(zone / "a-usd", {})
    (folder / "enrollments.csv").unlink()
    t1 = _run(zone, landing, None, 1000)
    assert t1.waiting == {"a-usd": "missing enrollments.csv"} and t1.alerts == []
    t2 = _run(zone, landing, t1.cursor, 1000 + 3599)
    assert t2.alerts == []
    t3 = _run(zone, landing, t2.cursor, 1000 + 3600)
    [alert] = t3.alerts
    assert alert.reason == "incomplete" and alert.missing == ("enrollments.csv",)
    assert alert.key == "incomplete_drop:a-usd:1000"
    assert _run(zone, landing, t3.cursor, 1000 + 7200).alerts == []  # once per episode
    assert not (landing / "a-usd").exists()


def test_unsafe_names_symlinks_and_oversize_files_are_rejected(tmp_path: Path) -> None:
    zone, landing = tmp_path / "zone", tmp_path / "landing"
    write_drop(zone / "b-usd", {})
    folder = write_drop(zone / "a-usd", {})
    (folder / "students.csv").unlink()
    (folder / "students.csv").symlink_to(zone / "b-usd" / "students.csv")  # into B
    (folder / "..evil").write_text("x")
    (folder / "-rf").write_text("x")
    (zone / "..bad__district").mkdir()
    out = _run(zone, landing, None, 100, WatchOptions(format=FORMAT, max_file_bytes=120))
    codes = {(i.district, i.name, i.code) for i in out.issues}
    assert ("a-usd", "students.csv", "NOT_A_FILE") in codes
    assert ("a-usd", "..evil", "UNSAFE_NAME") in codes and ("a-usd", "-rf", "UNSAFE_NAME") in codes
    assert any(i.code == "UNSAFE_DISTRICT" for i in out.issues)
    # students.csv's header alone is above 120 bytes: rejected before anything is read.
    assert ("b-usd", "students.csv", "FILE_TOO_LARGE") in codes
    assert [a.reason for a in out.alerts] == ["file_too_large"]
    assert out.started == [] and not landing.exists()


@pytest.mark.parametrize(
    "name", ["../x.csv", "..", ".", "a/b.csv", "a\\b.csv", "", ".hidden", "x\0"]
)
def test_file_names_are_never_paths(name: str) -> None:
    with pytest.raises(DropError):
        check_file_name(name)


def test_archive_streams_in_chunks_and_refuses_oversize_bytes(tmp_path: Path) -> None:
    big = b"x" * (3 << 20)
    with pytest.raises(FileTooLarge):
        archive_streams(
            tmp_path,
            district="a-usd",
            format=FORMAT,
            sources=[("schools.csv", lambda: nullcontext(io.BytesIO(big)))],
            max_bytes=1 << 20,
        )
    assert [p.name for p in (tmp_path / "a-usd").iterdir()] == []  # no staging left behind
    manifest = archive_streams(
        tmp_path,
        district="a-usd",
        format=FORMAT,
        sources=[("schools.csv", lambda: nullcontext(io.BytesIO(big)))],
        label="x",
    )
    assert manifest.files[0].size == len(big)
    with pytest.raises(DropError):
        archive_streams(
            tmp_path,
            district="a-usd",
            format=FORMAT,
            sources=[("../../escape.csv", lambda: nullcontext(io.BytesIO(b"x")))],
        )
    assert not (tmp_path.parent / "escape.csv").exists()


def test_a_tick_lists_a_bounded_number_of_objects_round_robin(tmp_path: Path) -> None:
    zone, landing = tmp_path / "zone", tmp_path / "landing"
    for i in range(7):
        folder = write_drop(zone / f"d{i}", {})
        (folder / "_READY").write_text("")
    options = WatchOptions(format=FORMAT, max_objects=14)  # two folders of 6 per tick
    cursor, started, now = None, [], 100.0
    for _ in range(4):
        out = _run(zone, landing, cursor, now, options)
        assert out.objects_listed <= 14
        started += [s.manifest.district for s in out.started]
        cursor, now = out.cursor, now + 30
    assert sorted(started) == [f"d{i}" for i in range(7)]


def test_archiving_stops_for_the_tick_when_its_time_budget_is_spent(tmp_path: Path) -> None:
    """The budget counts from the start of the tick (listing included); one drop always runs."""
    zone, landing = tmp_path / "zone", tmp_path / "landing"
    for i in range(4):
        (write_drop(zone / f"d{i}", {}) / "_READY").write_text("")
    ticks = iter(range(0, 1000, 3))  # every look at the clock: 3 s later
    options = WatchOptions(format=FORMAT, tick_budget_seconds=5)
    out = tick(LocalZone(zone), landing, None, options=options, now=100, clock=lambda: next(ticks))
    # The tick starts at 0 s; d0 always runs; before d1 the clock says 3 s, before d2 6 s.
    assert [s.manifest.district for s in out.started] == ["d0", "d1"]
    assert out.waiting == {
        d: "ready; starts on a later tick (per-tick limit)" for d in ("d2", "d3")
    }
    later = tick(LocalZone(zone), landing, out.cursor, options=OPTIONS, now=130)
    assert [s.manifest.district for s in later.started] == ["d2", "d3"]
