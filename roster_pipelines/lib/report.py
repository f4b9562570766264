"""The sync report: a short summary for people, Markdown for the Dagster UI, and files.

Files per drop under ``<state>/reports/<district>/<drop>/``: ``report.md``,
``summary.json`` and ``issues.csv``. CSV cells that a spreadsheet would run as a
formula (starting with = + - @) are neutralised with a leading apostrophe.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from roster_pipelines.lib.sync import SyncOutcome


def neutralise_formulas(frame: pl.DataFrame) -> pl.DataFrame:
    """Prefix string cells that start like a spreadsheet formula with an apostrophe."""
    return frame.with_columns(
        pl.when(pl.col(c).str.contains(r"^[=+\-@\t\r]"))
        .then(pl.lit("'") + pl.col(c))
        .otherwise(pl.col(c))
        .alias(c)
        for c, dtype in frame.schema.items()
        if dtype == pl.String
    )


def summary_lines(outcome: SyncOutcome) -> list[str]:
    """A few lines for a terminal: status, snapshot counts, changes, issue counts."""
    counts = ", ".join(f"{k} {v}" for k, v in outcome.counts.items())
    changed = ", ".join(f"{k} {v}" for k, v in outcome.changes.items() if v) or "no changes"
    sev = outcome.issue_counts()
    lines = [
        f"{outcome.district} / {outcome.drop}: {outcome.status.upper()}"
        + (" (initial sync)" if outcome.is_initial else ""),
        f"  snapshot: {counts}",
        f"  changes:  {changed}",
        f"  issues:   {sev.get('file_error', 0)} file errors, {sev.get('error', 0)} errors, "
        f"{sev.get('alert', 0)} alerts",
    ]
    if outcome.planned is not None:
        planned = ", ".join(f"{k} {v}" for k, v in outcome.planned.items() if v) or "nothing"
        lines.append(f"  planned:  {planned}")
    lines.extend(f"  on hold:  {reason}" for reason in outcome.hold_reasons)
    return lines


def render_markdown(outcome: SyncOutcome, *, max_issues: int = 50) -> str:
    lines = [
        f"# Sync report: {outcome.district} / {outcome.drop}",
        "",
        f"**Status:** {outcome.status}" + (" (initial sync)" if outcome.is_initial else ""),
        "",
        "| snapshot | count |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in outcome.counts.items()),
        "",
        "| change | count |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in outcome.changes.items()),
    ]
    if outcome.hold_reasons:
        lines += ["", "## On hold", *(f"- {r}" for r in outcome.hold_reasons)]
    if outcome.issues.height:
        lines += [
            "",
            f"## Issues ({outcome.issues.height})",
            "",
            "| severity | code | message |",
            "|---|---|---|",
        ]
        for row in outcome.issues.head(max_issues).iter_rows(named=True):
            message = str(row["message"]).replace("|", "\\|")
            lines.append(f"| {row['severity']} | {row['code']} | {message} |")
        if outcome.issues.height > max_issues:
            lines.append(f"| … | … | {outcome.issues.height - max_issues} more in issues.csv |")
    return "\n".join(lines) + "\n"


def write_report(outcome: SyncOutcome, reports_root: Path) -> Path:
    """Write the drop's report files and return their folder."""
    folder = Path(reports_root) / outcome.district / outcome.drop
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.md").write_text(render_markdown(outcome))
    (folder / "summary.json").write_text(json.dumps(outcome.to_json(), indent=2, default=str))
    neutralise_formulas(outcome.issues).write_csv(folder / "issues.csv")
    return folder
