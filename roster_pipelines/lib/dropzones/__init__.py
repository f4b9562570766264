"""Drop zones: where districts deliver files (a local folder, an S3 prefix, an SFTP home).

One small interface (`DropZone`), three implementations, and the watch logic that a
sensor tick runs over any of them (`watch.tick`). Nothing here imports dagster; the
Dagster resources in `defs/sync/resources.py` build these objects at execution time.

Layout of every zone: ``<root>/<district>/<files>``, one folder (or key prefix) per
district. Only the files directly in a district's folder count; anything nested, any
name that is not one plain file name, and anything that is not a regular file is
rejected and never read.
"""

from __future__ import annotations

from roster_pipelines.lib.dropzones.base import DropZone, ZoneEntry, ZoneListing
from roster_pipelines.lib.dropzones.local import LocalZone

__all__ = ["DropZone", "LocalZone", "ZoneEntry", "ZoneListing"]
