"""Drops, their partition keys, and the immutable landing store.

A drop is one complete snapshot of a district's files. Before anything runs, its
bytes are copied into the landing store (``<state>/landing/<district>/<drop>/``) with a
manifest of SHA-256 checksums, so a drop can be re-run (backfilled) from the archive
even after the drop zone was emptied, and nothing downstream reads the drop zone.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

PARTITION_SEPARATOR = "__"
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(?:_[A-Za-z0-9.-]+)*$")
MANIFEST = "manifest.json"


class DropError(ValueError):
    """A drop that cannot be archived (unsafe id, missing folder, changed bytes)."""


def check_id(kind: str, value: str) -> str:
    """District and drop ids become folder names and partition keys: keep them plain."""
    if not value or len(value) > 120 or not _SAFE_ID.match(value) or PARTITION_SEPARATOR in value:
        raise DropError(
            f"{kind} id {value!r} is not allowed: use letters, digits, '.', '-' and single '_' "
            "(at most 120 characters)"
        )
    return value


def partition_key(district: str, drop: str) -> str:
    return f"{check_id('district', district)}{PARTITION_SEPARATOR}{check_id('drop', drop)}"


def split_partition_key(key: str) -> tuple[str, str]:
    district, sep, drop = key.partition(PARTITION_SEPARATOR)
    if not sep:
        raise DropError(f"partition key {key!r} is not '<district>__<drop>'")
    return check_id("district", district), check_id("drop", drop)


@dataclass(frozen=True)
class ArchivedFile:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class DropManifest:
    district: str
    drop: str
    format: str
    content_hash: str
    files: tuple[ArchivedFile, ...]
    archived_at: str
    source: str

    @property
    def partition_key(self) -> str:
        return partition_key(self.district, self.drop)

    def folder(self, landing_root: Path) -> Path:
        return Path(landing_root) / self.district / self.drop


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hash(files: Sequence[ArchivedFile]) -> str:
    """One hash for the drop: the same files (names and bytes) give the same hash."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.name):
        digest.update(f"{f.name}\0{f.sha256}\n".encode())
    return digest.hexdigest()


def fingerprint(source_dir: Path, names: Sequence[str]) -> tuple[ArchivedFile, ...]:
    """Checksums of the named files in `source_dir` (files that are absent are skipped)."""
    result = []
    for name in sorted(names):
        path = Path(source_dir) / name
        if path.is_file() and not path.is_symlink():
            result.append(ArchivedFile(name=name, sha256=_sha256(path), size=path.stat().st_size))
    return tuple(result)


def default_drop_id(label: str, digest: str, now: datetime | None = None) -> str:
    """A readable drop id: the label (folder name or UTC time) plus the content hash."""
    label = re.sub(r"[^A-Za-z0-9.-]+", "-", label).strip("-.") or (
        now or datetime.now(UTC)
    ).strftime("%Y%m%dT%H%M%SZ")
    return f"{label[:80]}-{digest[:10]}"


def archive_drop(
    source_dir: Path,
    landing_root: Path,
    *,
    district: str,
    drop: str | None,
    format: str,
    file_names: Sequence[str],
) -> DropManifest:
    """Copy the drop's files into the landing store and write its manifest.

    Archiving is idempotent for identical bytes; the same drop id with other bytes is
    refused, because archived drops are immutable.
    """
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise DropError(f"drop folder {source_dir} does not exist")
    check_id("district", district)
    files = fingerprint(source_dir, file_names)
    digest = content_hash(files)
    drop = check_id("drop", drop or default_drop_id(source_dir.name, digest))
    manifest = DropManifest(
        district=district,
        drop=drop,
        format=format,
        content_hash=digest,
        files=files,
        archived_at=datetime.now(UTC).isoformat(timespec="seconds"),
        source=str(source_dir),
    )
    target = manifest.folder(landing_root)
    if (target / MANIFEST).exists():
        existing = load_manifest(landing_root, district, drop)
        if existing.content_hash != digest:
            raise DropError(
                f"drop {drop} of district {district} is already archived with other files; "
                "archived drops are immutable, give the new drop another id"
            )
        return existing
    staging = target.with_name(f".{drop}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for f in files:
        shutil.copyfile(source_dir / f.name, staging / f.name)
        if _sha256(staging / f.name) != f.sha256:
            raise DropError(f"{f.name} changed while it was being archived; try again")
    (staging / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2))
    staging.rename(target)  # atomic: a drop is archived whole or not at all
    return manifest


def load_manifest(landing_root: Path, district: str, drop: str) -> DropManifest:
    path = Path(landing_root) / check_id("district", district) / check_id("drop", drop) / MANIFEST
    if not path.exists():
        raise DropError(
            f"drop {drop} of district {district} is not in the landing store ({path.parent})"
        )
    data = json.loads(path.read_text())
    data["files"] = tuple(ArchivedFile(**f) for f in data["files"])
    return DropManifest(**data)


def verify_archive(landing_root: Path, manifest: DropManifest) -> None:
    """Re-check every archived file against its checksum before it is parsed."""
    folder = manifest.folder(landing_root)
    for f in manifest.files:
        if _sha256(folder / f.name) != f.sha256:
            raise DropError(
                f"archived {f.name} of drop {manifest.drop} does not match its checksum"
            )
