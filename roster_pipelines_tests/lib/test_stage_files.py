"""Stage outputs saved as a pickle plus Arrow IPC frames, and read back unchanged."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl
import pytest

from roster_pipelines.lib import stage_files


@dataclass
class _Inner:
    frame: pl.DataFrame
    label: str


@dataclass
class _Outer:
    people: pl.DataFrame
    nested: list[_Inner]
    same: pl.DataFrame
    counts: dict[str, int]


def _people() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "person_key": ["s:1", "s:2", None],
            "dob": [date(2010, 1, 2), None, date(2011, 3, 4)],
            "active": [True, False, None],
            "n": [1, None, 3],
        }
    )


def test_round_trip_keeps_every_frame_and_value(tmp_path: Path) -> None:
    people = _people()
    empty = pl.DataFrame(schema={"id": pl.Int64, "label": pl.String})
    obj = _Outer(people, [_Inner(empty, "empty"), _Inner(people.head(1), "one")], people, {"a": 1})
    stage_files.save(obj, tmp_path / "out")

    back = stage_files.load(tmp_path / "out")
    assert back.people.equals(people) and back.people.schema == people.schema
    assert back.nested[0].frame.schema == empty.schema and back.nested[0].frame.is_empty()
    assert back.nested[1].frame.equals(people.head(1)) and back.nested[1].label == "one"
    assert back.same.equals(people)
    assert back.counts == {"a": 1}
    # Frames live beside the pickle, not in it.
    assert sorted(p.name for p in (tmp_path / "out").glob("*.arrow")) == [
        "0.arrow",
        "1.arrow",
        "2.arrow",
        "3.arrow",
    ]


def test_save_replaces_and_a_failed_save_keeps_the_previous_output(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    stage_files.save({"v": pl.DataFrame({"x": [1]})}, folder)
    stage_files.save({"v": pl.DataFrame({"x": [2]})}, folder)
    assert stage_files.load(folder)["v"]["x"].to_list() == [2]

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        stage_files.save({"v": pl.DataFrame({"x": [3]}), "bad": Unpicklable()}, folder)
    assert stage_files.load(folder)["v"]["x"].to_list() == [2]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_a_frame_reference_outside_the_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()

    class Evil(pickle.Pickler):
        def persistent_id(self, obj):
            return "../secret.arrow" if isinstance(obj, pl.DataFrame) else None

    with (folder / stage_files.OBJECT).open("wb") as handle:
        Evil(handle).dump({"v": pl.DataFrame({"x": [1]})})
    with pytest.raises(pickle.UnpicklingError, match="unexpected frame reference"):
        stage_files.load(folder)


def test_frames_come_back_in_one_chunk(tmp_path: Path) -> None:
    chunked = pl.concat([_people(), _people(), _people()], rechunk=False)
    assert chunked.n_chunks() == 3
    stage_files.save({"v": chunked}, tmp_path / "out")
    back = stage_files.load(tmp_path / "out")["v"]
    assert back.n_chunks() == 1 and back.equals(chunked)


@dataclass
class _Before:
    frame: pl.DataFrame


@dataclass
class _After:
    frame: pl.DataFrame
    mark: int | None = None
    seen: pl.Series = field(default_factory=lambda: pl.Series([], dtype=pl.Int64))


def test_an_output_saved_before_its_class_gained_fields_loads_with_their_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage_files.save(_Before(_people()), tmp_path / "out")
    # The class as a later version of the code defines it, under the same name.
    monkeypatch.setitem(globals(), "_Before", _After)
    loaded = stage_files.load(tmp_path / "out")
    assert isinstance(loaded, _After)
    assert loaded.frame.equals(_people())
    assert loaded.mark is None
    assert loaded.seen.len() == 0 and loaded.seen.dtype == pl.Int64
