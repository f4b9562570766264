"""The sync report: a short summary for people, Markdown for the Dagster UI, and files.

Files per drop under ``<state>/reports/<district>/<drop>/``:

- ``report.html``: the page for a district admin (Jinja2, autoescaped): per school the
  teachers, students, parents, classes claimed/unclaimed, errors, alerts and status;
  the drop's changes by type; holds and their reasons; merge candidates; a trend chart
  over the last drops; links to the issue CSVs.
- ``report.md``: the same in Markdown, shown on the ``sync_report`` asset.
- ``summary.json``: the CLI's JSON of the drop plus the report data.
- ``issues.csv`` (every issue) and ``issues_<CODE>.csv`` (one per issue code).

CSV cells that a spreadsheet would run as a formula (starting with = + - @ tab CR) are
neutralised with a leading apostrophe.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from sqlalchemy import Engine

from roster_pipelines.lib.report_data import (
    STATUS_LABELS,
    ReportData,
    build_report_data,
    issue_csv_name,
)
from roster_pipelines.lib.sync import SyncOutcome

_SPARK = "▁▂▃▄▅▆▇█"
TREND_SERIES = ("teachers", "students", "parents", "classes", "errors", "alerts")


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


def build_report(
    engine: Engine, outcome: SyncOutcome, *, drop_folder: Path | None = None
) -> ReportData:
    """The report data of a drop's outcome, with the store's per-school figures."""
    return build_report_data(
        engine,
        district=outcome.district,
        drop=outcome.drop,
        status=outcome.status,
        is_initial=outcome.is_initial,
        sync_run_id=outcome.sync_run_id,
        counts=outcome.counts,
        changes=outcome.changes,
        planned=outcome.planned,
        hold_reasons=outcome.hold_reasons,
        issues=outcome.issues,
        drop_folder=drop_folder,
    )


def minimal_report_data(outcome: SyncOutcome) -> ReportData:
    """Report data from the outcome alone (no database): no per-school rows."""
    from roster_pipelines.lib.report_data import build_issue_summary

    data = ReportData(
        district=outcome.district,
        district_name=outcome.district,
        drop=outcome.drop,
        status=outcome.status,
        status_label=STATUS_LABELS.get(outcome.status, outcome.status),
        is_initial=outcome.is_initial,
        sync_run_id=outcome.sync_run_id,
        counts=dict(outcome.counts),
        changes=dict(outcome.changes),
        planned=dict(outcome.planned) if outcome.planned is not None else None,
        hold_reasons=list(outcome.hold_reasons),
    )
    build_issue_summary(data, outcome.issues)
    return data


def _md(value: Any) -> str:
    """A Markdown table cell: no pipes, no line breaks, no HTML."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return text.replace("<", "&lt;").replace(">", "&gt;")


def sparkline(values: list[int]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1
    return "".join(_SPARK[round((v - low) / span * (len(_SPARK) - 1))] for v in values)


def render_markdown(
    outcome: SyncOutcome, *, max_issues: int = 50, data: ReportData | None = None
) -> str:
    lines = [
        f"# Sync report: {_md(outcome.district)} / {_md(outcome.drop)}",
        "",
        f"**Status:** {outcome.status}" + (" (initial sync)" if outcome.is_initial else ""),
    ]
    if data is not None and data.schools:
        lines += [
            "",
            "| school | teachers | students | parents | classes claimed | unclaimed | errors | alerts | status |",
            "|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {_md(s.name)} ({_md(s.school_id)}) | {s.teachers} | {s.students} | {s.parents} "
                f"| {s.classes_claimed} | {s.classes_unclaimed} | {s.errors} | {s.alerts} | {s.status} |"
                for s in data.schools
            ),
        ]
        if any(data.district_wide.values()):
            lines.append(
                f"| district-wide | | | | | | {data.district_wide['errors']} "
                f"| {data.district_wide['alerts']} | |"
            )
    lines += [
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
        lines += ["", "## On hold", *(f"- {_md(r)}" for r in outcome.hold_reasons)]
        if outcome.planned:
            held = {k: v for k, v in outcome.planned.items() if k.endswith("_removed") and v}
            lines += [f"- held back: {', '.join(f'{k} {v}' for k, v in held.items()) or 'nothing'}"]
    if data is not None and len(data.history) >= 2:
        lines += ["", f"## Trend (last {len(data.history)} drops)", ""]
        lines += ["| count | trend | first | latest |", "|---|---|---|---|"]
        for key in TREND_SERIES:
            values = [h[key] for h in data.history]
            lines.append(f"| {key} | {sparkline(values)} | {values[0]} | {values[-1]} |")
    if data is not None and (data.merge_candidates or data.open_merge_candidates):
        lines += ["", f"## Merge candidates ({len(data.merge_candidates)})", ""]
        lines += [
            f"{data.open_merge_candidates} open for review in the district (found by this "
            "drop or an earlier one, not merged or dismissed yet).",
            "",
        ]
        lines += [
            f"- {_md(m['person'])}: {_md(m['contact'])} ({_md(m['where'])}); "
            f"possibly the same person as account {m['existing_account_id']}"
            for m in data.merge_candidates[:20]
        ]
    if outcome.issues.height:
        by_code = outcome.issues.group_by("code", "severity").len().sort("code")
        lines += [
            "",
            f"## Issues ({outcome.issues.height})",
            "",
            "| code | severity | count | CSV |",
            "|---|---|---|---|",
            *(
                f"| {_md(r['code'])} | {r['severity']} | {r['len']} | {issue_csv_name(r['code'])} |"
                for r in by_code.iter_rows(named=True)
            ),
            "",
            "| severity | code | message |",
            "|---|---|---|",
        ]
        for row in outcome.issues.head(max_issues).iter_rows(named=True):
            lines.append(f"| {row['severity']} | {_md(row['code'])} | {_md(row['message'])} |")
        if outcome.issues.height > max_issues:
            lines.append(f"| … | … | {outcome.issues.height - max_issues} more in issues.csv |")
    return "\n".join(lines) + "\n"


def _chart(history: list[dict[str, Any]], key: str, width: int = 180, height: int = 48) -> dict:
    """Points of one small line chart (numbers only; the template draws the SVG)."""
    values = [int(h[key]) for h in history]
    low, high = min(values), max(values)
    span = (high - low) or 1
    step = (width - 8) / max(len(values) - 1, 1)
    points = [
        (
            round(4 + i * step, 1),
            round(height / 2 if high == low else height - 6 - (v - low) / span * (height - 14), 1),
        )
        for i, v in enumerate(values)
    ]
    return {
        "key": key,
        "points": " ".join(f"{x},{y}" for x, y in points),
        "last": points[-1],
        "first_value": values[0],
        "last_value": values[-1],
        "low": low,
        "high": high,
        "width": width,
        "height": height,
    }


_ENV = Environment(
    loader=PackageLoader("roster_pipelines.lib", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
)


def render_html(outcome: SyncOutcome, data: ReportData) -> str:
    charts = [_chart(data.history, key) for key in TREND_SERIES] if len(data.history) >= 2 else []
    issues = outcome.issues
    samples: dict[str, list[dict[str, Any]]] = {}
    if issues.height:
        for code in issues["code"].unique().to_list():
            samples[code] = issues.filter(pl.col("code") == code).head(5).to_dicts()
    return _ENV.get_template("report.html.j2").render(
        data=data,
        outcome=outcome,
        charts=charts,
        samples=samples,
        held={k: v for k, v in (outcome.planned or {}).items() if k.endswith("_removed") and v}
        if outcome.hold_reasons
        else {},
    )


def write_report(
    outcome: SyncOutcome, reports_root: Path, *, data: ReportData | None = None
) -> Path:
    """Write the drop's report files and return their folder."""
    data = data or minimal_report_data(outcome)
    folder = Path(reports_root) / outcome.district / outcome.drop
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.md").write_text(render_markdown(outcome, data=data))
    # Compact: indented JSON goes through the pure-Python encoder, 3x slower at 100k issues.
    (folder / "summary.json").write_text(outcome.to_json_text(report=data.to_json()))
    safe = neutralise_formulas(outcome.issues)
    safe.write_csv(folder / "issues.csv")
    for stale in folder.glob("issues_*.csv"):
        stale.unlink()
    for code in sorted(set(outcome.issues["code"].to_list())):
        safe.filter(pl.col("code") == code).write_csv(folder / issue_csv_name(code))
    (folder / "report.html").write_text(render_html(outcome, data), encoding="utf-8")
    return folder
