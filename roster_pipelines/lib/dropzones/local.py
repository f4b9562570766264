"""A drop zone on the local file system (development, and mounted shares)."""

from __future__ import annotations

import os
import stat
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from roster_pipelines.lib.drops import check_file_name, check_id
from roster_pipelines.lib.dropzones.base import DropZone, ZoneEntry, ZoneListing, bounded_listing


class LocalZone(DropZone):
    kind = "local"

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"local folder {self.root}"

    def _districts(self) -> list[str]:
        try:
            with os.scandir(self.root) as it:
                return [e.name for e in it if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return []

    def _folder(self, district: str, limit: int) -> list[ZoneEntry]:
        entries = []
        try:
            with os.scandir(self.root / district) as it:
                for e in it:
                    st = e.stat(follow_symlinks=False)
                    entries.append(
                        ZoneEntry(
                            district=district,
                            name=e.name,
                            size=st.st_size,
                            version=str(st.st_mtime_ns),
                            mtime=st.st_mtime,
                            regular=stat.S_ISREG(st.st_mode),
                        )
                    )
                    if len(entries) > limit:
                        break
        except (FileNotFoundError, NotADirectoryError):
            return []
        return entries

    def list(self, *, max_objects: int, start_after: str | None = None) -> ZoneListing:
        return bounded_listing(
            self._districts(), self._folder, max_objects=max_objects, start_after=start_after
        )

    def open(self, district: str, name: str) -> AbstractContextManager[BinaryIO]:
        path = self.root / check_id("district", district) / check_file_name(name)
        # O_NOFOLLOW: a symlink swapped in after the listing is refused, never followed.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{path} is not a regular file")
        return os.fdopen(fd, "rb")
