"""The drop-zone interface every implementation provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import BinaryIO


@dataclass(frozen=True)
class ZoneEntry:
    """One object in a district's folder, as listed (nothing is read yet).

    `district` and `name` are raw strings from the zone (an S3 key's parts, an SFTP
    listing): they are validated before they are used for anything. `version` is what
    changes when the bytes change (an mtime, an ETag); with `size` it decides whether a
    file is unchanged between two sensor ticks. `regular` is false for symlinks,
    folders and special files.
    """

    district: str
    name: str
    size: int
    version: str
    mtime: float = 0.0  # seconds since the epoch (labels the drop id)
    regular: bool = True


@dataclass
class ZoneListing:
    """A bounded listing of a zone, in district order.

    `complete_districts` lists the districts whose folders were listed whole; when the
    object budget ran out, the last district is left out and `resume_after` says where
    the next tick starts (round robin over the zone).
    """

    entries: list[ZoneEntry] = field(default_factory=list)
    complete_districts: list[str] = field(default_factory=list)
    resume_after: str | None = None
    objects_listed: int = 0
    overfull: list[str] = field(default_factory=list)
    whole: bool = False  # every district folder of the zone was listed in this tick


class DropZone(ABC):
    """A place districts deliver files to: list it cheaply, open one file as a stream."""

    kind: str = "zone"

    @abstractmethod
    def describe(self) -> str:
        """Where the zone is, for logs (no secrets)."""

    @abstractmethod
    def list(self, *, max_objects: int, start_after: str | None = None) -> ZoneListing:
        """List at most `max_objects` objects, districts in sorted order after `start_after`."""

    @abstractmethod
    def open(self, district: str, name: str) -> AbstractContextManager[BinaryIO]:
        """A binary stream of one file (validated `district` and `name` only)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (SFTP)."""

    def __enter__(self) -> DropZone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bounded_listing(
    districts: Iterable[str],
    list_folder: Callable[[str, int], list[ZoneEntry]],
    *,
    max_objects: int,
    start_after: str | None,
) -> ZoneListing:
    """Helper for zones listed folder by folder (local, SFTP): round robin, bounded.

    Districts after `start_after` come first, then the rest; folders are listed until
    the object budget is spent. `list_folder(district, limit)` returns at most `limit`
    + 1 entries, so an overfull folder is noticed without listing all of it (a tick
    reads at most `max_objects` + 1 entries).
    """
    ordered = sorted(set(districts))
    if start_after is not None:
        ordered = [d for d in ordered if d > start_after] + [d for d in ordered if d <= start_after]
    listing = ZoneListing()
    for district in ordered:
        budget = max_objects - listing.objects_listed
        if budget <= 0:
            break
        entries = list_folder(district, budget)
        if len(entries) > budget:
            if listing.complete_districts:  # try it first next tick, with the whole budget
                break
            entries = entries[:budget]  # more files than a tick may list: flagged by watch
            listing.overfull.append(district)
        listing.objects_listed += len(entries)
        listing.entries += entries
        listing.complete_districts.append(district)
    if listing.complete_districts and len(listing.complete_districts) < len(ordered):
        listing.resume_after = listing.complete_districts[-1]
    listing.whole = len(listing.complete_districts) == len(ordered) and not listing.overfull
    return listing
