"""validated_roster's checks (per-code failure counts and a sample) and the CSV files a
sync writes (no cell a spreadsheet would run as a formula)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import dagster as dg

from roster_pipelines.defs.sync.inprocess import run_drop
from roster_pipelines.lib.config import DEFAULT_FORMAT, Settings
from roster_pipelines.lib.drops import archive_drop
from roster_pipelines.lib.formats import REQUIRED_FILES
from roster_pipelines_tests.lib.test_corpus import CORPUS

FORMULA_START = ("=", "+", "-", "@")


def _run(folder: Path, tmp_path: Path):
    settings = Settings.from_env(
        state_dir=str(tmp_path / "state"), database_url=f"sqlite:///{tmp_path / 'app.db'}"
    )
    manifest = archive_drop(
        folder,
        settings.landing_root,
        district="checks-district",
        drop=None,
        format=DEFAULT_FORMAT,
        file_names=REQUIRED_FILES[DEFAULT_FORMAT],
    )
    return run_drop(manifest, settings), settings


def _checks(run) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in run.result.get_asset_check_evaluations()}


def _md(evaluation: dg.AssetCheckEvaluation, key: str):
    return evaluation.metadata[key].value


def test_row_errors_warn_with_counts_per_code_and_a_sample(tmp_path: Path) -> None:
    run, _ = _run(CORPUS / "teacher_without_email", tmp_path)
    checks = _checks(run)
    usable, rows = checks["drop_is_usable"], checks["no_row_errors"]
    assert usable.passed and usable.severity == dg.AssetCheckSeverity.ERROR
    assert _md(usable, "file_errors") == 0
    assert not rows.passed and rows.severity == dg.AssetCheckSeverity.WARN
    assert _md(rows, "row_errors") == 4
    assert _md(rows, "failures_by_code") == {
        "CLASS_SKIPPED": 2,
        "PERSON_SKIPPED": 1,
        "TEACHER_EMAIL_INVALID": 1,
    }
    assert _md(rows, "code_CLASS_SKIPPED") == 2
    sample = _md(rows, "sample")
    assert "- TEACHER_EMAIL_INVALID: teachers.csv row 2: teacher T1 has no email" in sample
    assert run.outcome.status == "applied"  # a warning does not stop the drop


def test_file_errors_fail_the_blocking_check_with_counts_and_a_sample(tmp_path: Path) -> None:
    run, _ = _run(CORPUS / "ragged_rows", tmp_path)
    usable = _checks(run)["drop_is_usable"]
    assert not usable.passed and usable.severity == dg.AssetCheckSeverity.ERROR
    assert _md(usable, "file_errors") == 2
    assert _md(usable, "failures_by_code") == {"ROW_RAGGED": 2}
    assert "- ROW_RAGGED: teachers.csv row 3 has 5 values" in _md(usable, "sample")
    assert run.outcome.status == "rejected"


def test_every_csv_a_sync_writes_neutralises_formulas(tmp_path: Path) -> None:
    """Ids, names and contact values that start like a formula reach issues.csv (and any
    other CSV the sync writes) with a leading apostrophe."""
    folder = tmp_path / "drop"
    shutil.copytree(CORPUS / "class_unknown_teacher", folder)
    (folder / "classes.csv").write_text(
        "school_id,class_id,teacher_id,class_name\n"
        'S1,C1,T1,"=HYPERLINK(""http://x.example"",""Grades"")"\n'
        "S1,@C2,+T9,Art\n"
        "S1,-C3,=1+1,Gym\n"
    )
    (folder / "enrollments.csv").write_text("school_id,class_id,user_id\nS1,=C9,-ST1\n")
    _, settings = _run(folder, tmp_path)
    csvs = sorted(settings.reports_root.rglob("*.csv"))
    names = {p.name for p in csvs}
    assert "issues.csv" in names
    assert "issues_UNKNOWN_USER.csv" in names  # report.py's per-code CSVs are checked too
    cells = []
    for path in csvs:
        with path.open(newline="") as handle:
            cells += [(path.name, cell) for row in csv.reader(handle) for cell in row]
    assert not [c for c in cells if c[1].startswith(FORMULA_START)]
    values = {cell for _, cell in cells}
    assert "'+T9" in values and "'-ST1" in values  # neutralised, not dropped
