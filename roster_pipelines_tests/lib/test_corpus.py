"""The broken-drop corpus (roster_pipelines_tests/corpus/<case>/): every way a real SIS
export goes wrong, with the exact issues each case must give (code, severity, file, row,
ids). The files are bytes as a broken export has them; `corpus/build.py` wrote them."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from roster_pipelines.lib.contracts import validate
from roster_pipelines.lib.formats.remind_csv import parse
from roster_pipelines.lib.issues import CATALOGUE, FILE_ERROR
from roster_pipelines_tests.corpus.build import CASES

CORPUS = Path(__file__).parents[1] / "corpus"
CASE_NAMES = sorted(p.name for p in CORPUS.iterdir() if (p / "expected.json").is_file())

# Every code the Remind CSV adapter and the contracts can raise (named in their source)
# needs a corpus case, but VALUE_INVALID: a value outside a canonical set (a role, a
# contact kind) is a bug in an adapter, not something a file can cause.
UNREACHABLE_FROM_FILES = {"VALUE_INVALID"}


def raised_by_parsing() -> set[str]:
    from roster_pipelines.lib import contracts
    from roster_pipelines.lib.formats import remind_csv

    source = Path(remind_csv.__file__).read_text() + Path(contracts.__file__).read_text()
    return {code for code in CATALOGUE if f'"{code}"' in source} - UNREACHABLE_FROM_FILES


def expected(case: str) -> dict:
    return json.loads((CORPUS / case / "expected.json").read_text())


def test_the_corpus_is_complete() -> None:
    assert len(CASE_NAMES) >= 30
    assert set(CASE_NAMES) == set(CASES), "corpus/build.py and the folders disagree"
    shown = {i["code"] for case in CASE_NAMES for i in expected(case)["issues"]}
    raised = raised_by_parsing()
    assert len(raised) > 30
    missing = raised - shown
    assert not missing, f"no corpus case shows {sorted(missing)}"


@pytest.mark.parametrize("case", CASE_NAMES)
def test_case_gives_exactly_the_expected_issues(case: str) -> None:
    want = expected(case)
    roster = validate(parse(CORPUS / case))
    got = [
        {k: r[k] for k in ("code", "severity", "file", "row", "ids")}
        for r in roster.issues.iter_rows(named=True)
    ]
    assert got == want["issues"]
    for issue in roster.issues.iter_rows(named=True):
        assert issue["severity"] == CATALOGUE[issue["code"]].severity
        assert issue["remediation"] == CATALOGUE[issue["code"]].remediation
        message = issue["message"]
        assert message and "\n" not in message
        assert message.startswith(issue["file"]), message  # names its file...
        if issue["row"] is not None:  # ...and its row
            assert f" row {issue['row']}" in message, message
    file_level = roster.issues.filter(pl.col("severity") == FILE_ERROR).height > 0
    assert roster.rejected == file_level == (want["exit_code"] == 2)
