"""One sensor tick over a drop zone: which drops are complete, archived and ready to run.

Completeness (issue 6): a district's drop starts when every file of its format is in
the district's folder and either
- a marker file says the upload is finished (`_READY`; `manifest.csv` for OneRoster
  formats), or
- the listing of those files (names, sizes, mtimes/ETags) is unchanged across two
  ticks.
Partial drops wait. A district that stays incomplete (or unsettled) longer than
`incomplete_alert_seconds` raises one alert per episode.

Exactly once: a ready drop is streamed into the content-addressed landing store
before anything runs (`drops.archive_streams`), and its run key is derived from the
district and the content hash (plus the previous drop's hash, so a district that
re-sends an older snapshot after a newer one gets it applied again). The same bytes
uploaded twice are recognised by their content hash and start nothing.

The state kept between ticks is a small JSON object (the sensor cursor):
``{"v": 1, "next": <district to resume after>, "d": {<district>: {...}}}`` with, per
district, the listing signature last seen (`s`) and since when (`t`), the signature
already dealt with (`done`), the hash of the last drop started (`h`), since when
files have been waiting (`p`) and whether that wait was alerted (`a`).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from roster_pipelines.lib.drops import (
    DropError,
    DropManifest,
    FileTooLarge,
    archive_streams,
    check_file_name,
    check_id,
    latest_started,
    mark_started,
)
from roster_pipelines.lib.dropzones.base import DropZone, ZoneEntry
from roster_pipelines.lib.formats import REQUIRED_FILES

READY_MARKER = "_READY"
ONEROSTER_MANIFEST = "manifest.csv"
CURSOR_VERSION = 1
HASH_PREFIX = 16  # of the last started drop's content hash, kept in the cursor


def markers_for(format: str) -> tuple[str, ...]:
    """Marker files that say a drop is complete: `_READY`, and OneRoster's manifest."""
    return (READY_MARKER, ONEROSTER_MANIFEST) if format.startswith("oneroster") else (READY_MARKER,)


@dataclass(frozen=True)
class WatchOptions:
    format: str
    max_file_bytes: int = 2 << 30  # 2 GiB
    incomplete_alert_seconds: float = 6 * 3600
    max_objects: int = 20_000
    max_drops_per_tick: int = 50  # archives per tick; more ready drops start next tick
    # Once the tick (listing included) has taken this long, further ready drops wait for
    # the next tick, so a tick stays short however slow the zone is (at least one drop
    # always proceeds).
    tick_budget_seconds: float = 8.0

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(REQUIRED_FILES[self.format])


@dataclass(frozen=True)
class ZoneIssue:
    """A file or folder the sensor refused (never read): reported, never trusted."""

    code: str  # UNSAFE_DISTRICT | UNSAFE_NAME | NOT_A_FILE | FILE_TOO_LARGE | TOO_MANY_FILES
    district: str
    name: str
    message: str


@dataclass(frozen=True)
class Alert:
    """A drop that needs someone: the district admin (outbox) and the data team (logs)."""

    district: str
    reason: str  # incomplete | file_too_large
    message: str
    key: str  # idempotency key of the admin email
    missing: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class StartedDrop:
    manifest: DropManifest
    run_key: str
    previous_hash: str | None  # the first HASH_PREFIX characters


@dataclass
class TickOutcome:
    started: list[StartedDrop] = field(default_factory=list)
    duplicates: list[DropManifest] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    alerts: list[Alert] = field(default_factory=list)
    issues: list[ZoneIssue] = field(default_factory=list)
    objects_listed: int = 0
    cursor: dict = field(default_factory=dict)


def load_cursor(raw: str | dict | None) -> dict:
    import json

    data = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
    if data.get("v") != CURSOR_VERSION:
        return {"v": CURSOR_VERSION, "next": None, "d": {}}
    return data


def _signature(entries: list[ZoneEntry]) -> str:
    digest = hashlib.sha256()
    for e in sorted(entries, key=lambda e: e.name):
        digest.update(f"{e.name}\0{e.size}\0{e.version}\n".encode())
    return digest.hexdigest()[:20]


def _label(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")


def tick(
    zone: DropZone,
    landing_root: Path,
    cursor: dict | str | None,
    *,
    options: WatchOptions,
    now: float,
    clock: Callable[[], float] = time.monotonic,
) -> TickOutcome:
    """List the zone (bounded), update the per-district state, archive what is ready."""
    tick_started, attempts = clock(), 0
    state = load_cursor(cursor)
    districts_state: dict[str, dict] = dict(state["d"])
    listing = zone.list(max_objects=options.max_objects, start_after=state.get("next"))
    out = TickOutcome(objects_listed=listing.objects_listed)
    by_district: dict[str, list[ZoneEntry]] = {d: [] for d in listing.complete_districts}
    for entry in listing.entries:
        if entry.district in by_district:
            by_district[entry.district].append(entry)
    required, markers = options.required, markers_for(options.format)
    wanted = set(required) | set(markers)

    for raw_district, entries in by_district.items():
        try:
            district = check_id("district", raw_district)
        except DropError as err:
            out.issues.append(ZoneIssue("UNSAFE_DISTRICT", raw_district, "", str(err)))
            continue
        if raw_district in listing.overfull:
            out.issues.append(
                ZoneIssue(
                    "TOO_MANY_FILES",
                    district,
                    "",
                    f"more than {options.max_objects} objects in the folder; clean it up",
                )
            )
        relevant: dict[str, ZoneEntry] = {}
        too_large: list[str] = []
        for e in entries:
            try:
                check_file_name(e.name)
            except DropError as err:
                out.issues.append(ZoneIssue("UNSAFE_NAME", district, e.name, str(err)))
                continue
            if e.name not in wanted:
                continue  # other files in the folder are ignored
            if not e.regular:
                out.issues.append(
                    ZoneIssue("NOT_A_FILE", district, e.name, "not a regular file (symlink?)")
                )
                continue
            if e.size > options.max_file_bytes:
                too_large.append(e.name)
                out.issues.append(
                    ZoneIssue(
                        "FILE_TOO_LARGE",
                        district,
                        e.name,
                        f"{e.size:,} bytes, above the limit of {options.max_file_bytes:,}",
                    )
                )
                continue
            relevant[e.name] = e
        st = dict(districts_state.get(district, {}))
        if not relevant and not too_large:
            districts_state.pop(district, None)  # idle folder: nothing to remember
            continue
        sig = _signature(list(relevant.values())) + ("!" if too_large else "")
        if sig == st.get("done"):
            continue  # this exact listing was already archived (or found a duplicate)
        stable = st.get("s") == sig
        if not stable:
            st["s"], st["t"] = sig, now
        st.setdefault("p", now)
        missing = tuple(n for n in required if n not in relevant)
        has_marker = any(m in relevant for m in markers)
        if too_large:
            if st.get("a") != sig:
                st["a"] = sig
                out.alerts.append(
                    Alert(
                        district,
                        "file_too_large",
                        f"{', '.join(too_large)} above the size limit of "
                        f"{options.max_file_bytes:,} bytes: the drop was rejected",
                        key=f"incomplete_drop:{district}:{sig}",
                        files=tuple(too_large),
                    )
                )
            out.waiting[district] = "file too large"
            districts_state[district] = st
            continue
        if not missing and (has_marker or stable):
            archived = len(out.started) + len(out.duplicates)
            over_budget = attempts and clock() - tick_started > options.tick_budget_seconds
            if archived >= options.max_drops_per_tick or over_budget:
                out.waiting[district] = "ready; starts on a later tick (per-tick limit)"
                districts_state[district] = st
                continue
            attempts += 1
            started = _start(zone, landing_root, district, relevant, st, options, now, out)
            if started:
                st = {"done": sig, "h": st.get("h")} | started
            districts_state[district] = st
            continue
        out.waiting[district] = (
            f"missing {', '.join(missing)}" if missing else "waiting for the files to settle"
        )
        if now - st["p"] >= options.incomplete_alert_seconds and not st.get("a"):
            st["a"] = 1
            hours = (now - st["p"]) / 3600
            out.alerts.append(
                Alert(
                    district,
                    "incomplete",
                    f"the drop has been incomplete for {hours:.1f} h"
                    + (f"; missing {', '.join(missing)}" if missing else ""),
                    key=f"incomplete_drop:{district}:{int(st['p'])}",
                    missing=missing,
                    files=tuple(sorted(relevant)),
                )
            )
        districts_state[district] = st

    if listing.whole:
        # The whole zone was listed: forget districts whose folders are gone.
        listed = set(by_district)
        districts_state = {d: s for d, s in districts_state.items() if d in listed}
    out.cursor = {"v": CURSOR_VERSION, "next": listing.resume_after, "d": districts_state}
    return out


def _start(
    zone: DropZone,
    landing_root: Path,
    district: str,
    relevant: dict[str, ZoneEntry],
    st: dict,
    options: WatchOptions,
    now: float,
    out: TickOutcome,
) -> dict | None:
    """Archive a ready drop; returns the state to keep, or None to try again next tick."""
    names = [n for n in options.required if n in relevant]
    # The cursor knows the last drop started; without a cursor, the landing store does.
    last = st.get("h") or (latest_started(landing_root, district) or {}).get("hash")
    previous = last[:HASH_PREFIX] if last else None
    try:
        # The drop id is the newest file's time plus the content hash: the same upload
        # always gets the same id; bytes equal to the last drop started are not copied.
        manifest = archive_streams(
            landing_root,
            district=district,
            format=options.format,
            sources=[(n, functools.partial(zone.open, district, n)) for n in names],
            label=_label(max(relevant[n].mtime for n in names) or now),
            source=f"{zone.describe()} / {district}",
            max_bytes=options.max_file_bytes,
            same_as=previous,
        )
    except FileTooLarge as err:
        out.issues.append(ZoneIssue("FILE_TOO_LARGE", district, "", str(err)))
        out.alerts.append(
            Alert(
                district,
                "file_too_large",
                f"{err}: the drop was rejected",
                key=f"incomplete_drop:{district}:{st['s']}",
            )
        )
        return {"a": 1}
    except (OSError, DropError) as err:  # a file vanished or changed while downloading
        out.waiting[district] = f"archiving failed, retrying next tick: {err}"
        st.pop("s", None)
        return None
    sizes = {f.name: f.size for f in manifest.files}
    if any(sizes.get(n) != relevant[n].size for n in names):
        # The bytes read differ from the listing: still being written. The archive is
        # kept (content-addressed, harmless); the drop starts once it settles.
        out.waiting[district] = "files changed while they were being archived"
        st.pop("s", None)
        return None
    if previous == manifest.content_hash[:HASH_PREFIX]:
        out.duplicates.append(manifest)
        return {"h": previous}
    run_key = f"{district}:{manifest.content_hash}:after:{previous or 'none'}"
    mark_started(landing_root, manifest, at=datetime.fromtimestamp(now, UTC).isoformat())
    out.started.append(StartedDrop(manifest, run_key, previous))
    return {"h": manifest.content_hash[:HASH_PREFIX]}
