"""Drops, their partition keys, and the immutable landing store.

A drop is one complete snapshot of a district's files. Before anything runs, its
bytes are copied into the landing store (``<state>/landing/<district>/<drop>/``) with a
manifest of SHA-256 checksums, so a drop can be re-run (backfilled) from the archive
even after the drop zone was emptied, and nothing downstream reads the drop zone.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

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
    archived_at: str  # ISO, to the microsecond, so drops archived in one second still order
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
        path = Path(source_dir) / check_file_name(name)
        if path.is_file() and not path.is_symlink():
            result.append(ArchivedFile(name=name, sha256=_sha256(path), size=path.stat().st_size))
    return tuple(result)


def default_drop_id(label: str, digest: str, now: datetime | None = None) -> str:
    """A readable drop id: the label (folder name or UTC time) plus the content hash."""
    label = re.sub(r"[^A-Za-z0-9.-]+", "-", label).strip("-.") or (
        now or datetime.now(UTC)
    ).strftime("%Y%m%dT%H%M%SZ")
    return f"{label[:80]}-{digest[:10]}"


# File names come from a drop zone (an S3 key, an SFTP listing): they are never trusted
# as paths. A name is one plain path component: letters, digits, '.', '_', '-', ' ',
# starting with a letter, a digit or '_' (so never '.', '..', a hidden file or a separator).
_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._ -]{0,199}$")
_INDEX = ".index"  # <district>/.index/<content hash> -> drop id (content addressing)
_LATEST = ".latest.json"  # <district>/.latest.json: the last drop a sensor started
_LOG = ".log.jsonl"  # <district>/.log.jsonl: archived / started / superseded events
CHUNK = 1 << 20


class FileTooLarge(DropError):
    """A file above the configured size limit (it is never read into memory)."""


def check_file_name(name: str) -> str:
    if not isinstance(name, str) or not _SAFE_FILE_NAME.match(name) or name.strip() != name:
        raise DropError(f"file name {name!r} is not allowed (one plain file name, no path)")
    return name


def _inside(folder: Path, name: str) -> Path:
    """`folder/name`, refusing anything that would resolve outside `folder`."""
    path = (folder / check_file_name(name)).resolve()
    if path.parent != folder.resolve():
        raise DropError(f"file name {name!r} escapes the landing store")
    return path


Opener = Callable[[], AbstractContextManager[BinaryIO]]


def _copy_stream(
    opener: Opener, target: Path, *, max_bytes: int | None, name: str
) -> tuple[str, int]:
    """Stream one file into `target` in chunks, hashing as it goes; never whole in memory."""
    digest, size = hashlib.sha256(), 0
    with opener() as source, target.open("xb") as out:
        while block := source.read(CHUNK):
            size += len(block)
            if max_bytes is not None and size > max_bytes:
                raise FileTooLarge(f"{name} is larger than the limit of {max_bytes:,} bytes")
            digest.update(block)
            out.write(block)
    return digest.hexdigest(), size


def find_by_hash(landing_root: Path, district: str, digest: str) -> DropManifest | None:
    """The archived drop of `district` holding exactly these bytes, if there is one."""
    index = Path(landing_root) / check_id("district", district) / _INDEX / digest
    if not re.fullmatch(r"[0-9a-f]{64}", digest) or not index.is_file():
        return None
    try:
        return load_manifest(landing_root, district, index.read_text().strip())
    except DropError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def archive_streams(
    landing_root: Path,
    *,
    district: str,
    format: str,
    sources: Sequence[tuple[str, Opener]],
    drop: str | None = None,
    label: str = "",
    source: str = "",
    max_bytes: int | None = None,
    same_as: str | None = None,
) -> DropManifest:
    """Archive a drop from streams (a local file, an S3 object, an SFTP file).

    Bytes are streamed into a staging folder inside the landing store while they are
    hashed; the staging folder is renamed into place only when every file is there, so
    a drop is archived whole or not at all. The district's `.index/<content hash>`
    points at the latest drop holding those bytes (content addressing). When the bytes
    hash to `same_as` (a hash or its prefix: the sensors pass the last drop they
    started), that drop is
    returned instead of a copy. A drop id already archived with the same bytes is
    returned as is; with other bytes it is refused (archived drops are immutable).
    """
    landing_root = Path(landing_root)
    district_dir = landing_root / check_id("district", district)
    district_dir.mkdir(parents=True, exist_ok=True)
    staging = district_dir / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        files = []
        for name, opener in sorted(sources, key=lambda s: s[0]):
            sha, size = _copy_stream(opener, _inside(staging, name), max_bytes=max_bytes, name=name)
            files.append(ArchivedFile(name=name, sha256=sha, size=size))
        digest = content_hash(files)
        if (
            same_as
            and digest.startswith(same_as)
            and (existing := find_by_hash(landing_root, district, digest))
        ):
            return existing
        drop = check_id("drop", drop or default_drop_id(label, digest))
        manifest = DropManifest(
            district=district,
            drop=drop,
            format=format,
            content_hash=digest,
            files=tuple(files),
            archived_at=datetime.now(UTC).isoformat(timespec="microseconds"),
            source=source,
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
        (staging / MANIFEST).write_text(json.dumps(asdict(manifest), indent=2))
        staging.rename(target)  # atomic: a drop is archived whole or not at all
        _write_atomic(district_dir / _INDEX / digest, drop)
        append_log(landing_root, district, {"event": "archived", "drop": drop, "hash": digest})
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def archive_drop(
    source_dir: Path,
    landing_root: Path,
    *,
    district: str,
    drop: str | None,
    format: str,
    file_names: Sequence[str],
) -> DropManifest:
    """Copy a local drop folder's files into the landing store and write its manifest.

    Archiving is idempotent for identical bytes; the same drop id with other bytes is
    refused, because archived drops are immutable. Files that are absent are skipped
    (the format adapter then reports them missing).
    """
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise DropError(f"drop folder {source_dir} does not exist")
    check_id("district", district)
    present = []
    for name in sorted(file_names):
        path = source_dir / check_file_name(name)
        if path.is_file() and not path.is_symlink():
            present.append((name, functools.partial(path.open, "rb")))
    return archive_streams(
        landing_root,
        district=district,
        format=format,
        sources=present,
        drop=drop,
        label=source_dir.name,
        source=str(source_dir),
    )


def latest_started(landing_root: Path, district: str) -> dict | None:
    """The last drop a sensor started for `district` ({drop, hash, at}), if any."""
    path = Path(landing_root) / check_id("district", district) / _LATEST
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def mark_started(landing_root: Path, manifest: DropManifest, *, at: str) -> None:
    record = {"drop": manifest.drop, "hash": manifest.content_hash, "at": at}
    _write_atomic(Path(landing_root) / manifest.district / _LATEST, json.dumps(record))
    append_log(landing_root, manifest.district, {"event": "started", **record})


def append_log(landing_root: Path, district: str, event: dict) -> None:
    """Append one event to the district's landing log (archived, started, superseded)."""
    path = Path(landing_root) / check_id("district", district) / _LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    event = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **event}
    with path.open("a") as handle:
        handle.write(json.dumps(event, sort_keys=True) + "\n")


def read_log(landing_root: Path, district: str) -> list[dict]:
    path = Path(landing_root) / check_id("district", district) / _LOG
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
