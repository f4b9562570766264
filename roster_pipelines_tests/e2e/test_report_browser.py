"""The sample district's HTML report, rendered by headless Chromium (Debian's
`chromium` package): the per-school table and the issue links, as a browser sees them.

Fails, never skips, when Chromium is missing (`.ci/run` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from roster_pipelines.cli import sync_folder
from roster_pipelines.lib.config import Settings

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample_district"
DISTRICT = "sample-district"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("Chromium is required for this test: apt-get install -y chromium")


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


class _Dom(HTMLParser):
    """The rows of table#schools and the hrefs of the issue links, from the DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.in_schools = False
        self.row: list[str] | None = None
        self.cell: list[str] | None = None
        self.schools: list[list[str]] = []
        self.issue_links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") == "schools":
            self.in_schools = True
        elif self.in_schools and tag == "tr" and a.get("class") == "school":
            self.row = []
        elif self.row is not None and tag == "td":
            self.cell = []
        elif tag == "a" and "issue-csv" in (a.get("class") or ""):
            self.issue_links.append(a["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.in_schools = False
        elif tag == "td" and self.cell is not None and self.row is not None:
            self.row.append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "tr" and self.row is not None:
            self.schools.append(self.row)
            self.row = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell.append(data)


def test_sample_district_report_in_chromium(tmp_path: Path) -> None:
    settings = Settings.from_env(
        state_dir=str(tmp_path / "state"), database_url=f"sqlite:///{tmp_path / 'app.db'}"
    )
    for name in ("initial", "maintenance"):
        outcome = sync_folder(SAMPLE / name, district=DISTRICT, settings=settings, drop=name)
        assert outcome.status == "applied"
    folder = settings.reports_root / DISTRICT / "maintenance"
    page = (folder / "report.html").as_uri()

    dom = _Dom()
    dom.feed(run_chromium(tmp_path, "--dump-dom", page).stdout)

    # One row per school and program, with numbers a person can read.
    by_id = {row[1]: row for row in dom.schools}
    assert set(by_id) == {"101", "102", "103", "PRG-01"}
    for row in dom.schools:
        name, _, teachers, students, parents, claimed, unclaimed, errors, alerts, status = row
        assert name and status == "Connected"
        assert int(teachers) > 0 and int(students) > 0 and int(parents) > 0
        assert int(claimed) == 0 and int(unclaimed) > 0  # nobody claimed a class yet (R5)
        assert int(errors) >= 0 and int(alerts) >= 0
    assert "(program)" in by_id["PRG-01"][0]
    total = sum(int(r[5]) + int(r[6]) for r in dom.schools)
    assert 0 < total <= outcome.counts["classes"]  # the classes applied, per school

    # One link per issue code, each to a CSV beside the report holding that code only.
    codes = sorted(set(outcome.issues["code"].to_list()))
    assert sorted(dom.issue_links) == sorted(f"issues_{c}.csv" for c in codes)
    for href, code in zip(sorted(dom.issue_links), sorted(codes), strict=True):
        lines = (folder / href).read_text().splitlines()
        assert lines[0].startswith("code,severity,file,row")
        assert all(line.startswith(code + ",") for line in lines[1:])

    # And it draws: a screenshot of the page.
    shot = tmp_path / "report.png"
    run_chromium(tmp_path, "--window-size=1150,1300", f"--screenshot={shot}", page)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
