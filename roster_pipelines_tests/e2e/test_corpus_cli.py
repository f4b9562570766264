"""`roster-sync sync --json` on every corpus drop: exit code 2 exactly for file-level
errors, and every issue printed with its message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roster_pipelines.cli import main
from roster_pipelines_tests.lib.test_corpus import CASE_NAMES, CORPUS, expected


@pytest.mark.parametrize("case", CASE_NAMES)
def test_cli_sync_json(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    want = expected(case)
    code = main(
        [
            "sync",
            str(CORPUS / case),
            "--district",
            "corpus-district",
            "--state-dir",
            str(tmp_path / "state"),
            "--db",
            f"sqlite:///{tmp_path / 'app.db'}",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    file_level = any(i["severity"] == "file_error" for i in out["issues"])
    assert code == want["exit_code"]
    assert (code == 2) == file_level == (out["status"] == "rejected")
    got = [{k: i[k] for k in ("code", "severity", "file", "row", "ids")} for i in out["issues"]]
    assert got == want["issues"]
    for issue in out["issues"]:
        assert issue["message"] and issue["remediation"], issue
