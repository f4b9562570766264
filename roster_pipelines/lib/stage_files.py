"""Saving a stage's output (dataclasses of polars frames) to disk and back, fast.

A stage output is pickled, except its polars frames: each frame is written beside the
pickle as an uncompressed Arrow IPC file and the pickle keeps only a reference to it.
Writing IPC is close to a memory copy and reading it back needs no decoding, where
pickling a frame first builds the whole serialised copy in memory; at a million
people this is what kept the pipeline's peak memory and step overhead up.

One output is one folder (`<name>/`: `object.pkl`, `0.arrow`, `1.arrow`, ...), written
under a temporary name and moved into place, so a reader never sees half of one.
"""

from __future__ import annotations

import dataclasses
import pickle
import shutil
import uuid
from pathlib import Path
from typing import Any

import polars as pl

OBJECT = "object.pkl"


class _Pickler(pickle.Pickler):
    def __init__(self, file: Any, folder: Path) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.folder = folder
        self.frames = 0

    def persistent_id(self, obj: Any) -> str | None:
        if isinstance(obj, pl.DataFrame):
            name = f"{self.frames}.arrow"
            self.frames += 1
            # One chunk per column: joins on many-chunk frames (parsed in batches, read
            # from the database in record batches) were up to a third slower.
            obj.rechunk().write_ipc(self.folder / name, compression="uncompressed")
            return name
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: Any, folder: Path) -> None:
        super().__init__(file)
        self.folder = folder

    def persistent_load(self, pid: Any) -> pl.DataFrame:
        name = str(pid)
        if "/" in name or not name.endswith(".arrow"):
            raise pickle.UnpicklingError(f"unexpected frame reference {name!r}")
        # scan + collect: 2-3x faster than read_ipc (scripts/bench_stage_files.py). It
        # reads the frame into memory (it does not map the file).
        return pl.scan_ipc(self.folder / name).collect()


def save(obj: Any, folder: Path) -> None:
    """Write `obj` to `folder` (replacing what was there) atomically."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()
    try:
        with (tmp / OBJECT).open("wb") as handle:
            _Pickler(handle, tmp).dump(obj)
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.{uuid.uuid4().hex[:8]}.old")
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load(folder: Path) -> Any:
    """Read back what `save` wrote to `folder`."""
    with (folder / OBJECT).open("rb") as handle:
        return with_new_fields(_Unpickler(handle, folder).load())


def with_new_fields(obj: Any) -> Any:
    """`obj`, a stage output written before its dataclass gained fields, with those
    fields at their defaults (unpickling restores the attributes that were saved, and
    only those): a stage re-executed from the UI reads an older drop's outputs."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            if f.name in vars(obj):
                continue
            if f.default is not dataclasses.MISSING:
                object.__setattr__(obj, f.name, f.default)
            elif f.default_factory is not dataclasses.MISSING:
                object.__setattr__(obj, f.name, f.default_factory())
    return obj


class KeptFolder:
    """What one district's applied drops keep for its next drop, one folder per drop
    (written with `save`). Subclasses name the kind of object kept (`kind`)."""

    kind: type = object

    def __init__(self, root: Path) -> None:
        self.root = root

    def save(self, drop_id: str, kept: Any) -> None:
        """Keep `kept` for drop `drop_id`, and let the older drops' go."""
        save(kept, self.root / drop_id)
        for other in self.root.iterdir():
            if other.name != drop_id and other.is_dir() and not other.name.startswith("."):
                shutil.rmtree(other, ignore_errors=True)

    def holds(self, drop_id: str) -> bool:
        """Whether something is kept for the drop (`load` may still find it stale)."""
        return (self.root / drop_id / OBJECT).exists()

    def load(self, drop_id: str, run_id: int | None = None) -> Any | None:
        """What drop `drop_id` kept; with `run_id`, only if that run kept it (`kind`
        has a `run_id`): a drop run again keeps its own."""
        if not self.holds(drop_id):
            return None
        kept = load(self.root / drop_id)
        if not isinstance(kept, self.kind):
            return None
        return kept if run_id is None or kept.run_id == run_id else None
