"""Benchmark: would validating only what changed make a maintenance drop faster? (issue 5)

A drop is validated whole (`lib/contracts.py`); at a million people that is about 2.6 s
of the part of a maintenance drop that follows the district. The design measured here
(not built): validate again only the rows whose outcome can differ from the last
applied drop's, the *closure* of the changed lines, and carry every other row as that
drop left it. The closure, from the contracts' cross-row rules:

- dirty lines: a line of a file that the previous drop's same file does not hold, that
  repeats in its file, that had an issue in the previous drop (its issue must be raised
  again, at its new row number), or that has a parse issue now;
- a person's outcome depends on every line they are on (an error on a line drops all
  its rows), on the other people of those lines, and on everyone sharing one of their
  contact points (one owner per point): the closure takes whole components of that
  graph, from the people of the dirty lines;
- a class depends on its lines and its teacher, an enrollment on its line, its class,
  its person and its repeats: dirty classes and enrollments are those that touch a
  dirty line or person, or repeat;
- what a dirty enrollment or class needs to be validated again (its class, the class's
  teacher, its person, with their components) is validated with it; schools are small
  and validated whole.

The script works the closure out on a generated district's initial and 1 % maintenance
drops, validates it with the same contracts, and checks that, on the closure's rows,
it decides what a full validation decides (the same rows kept, the same issues: every
issue of the drop is on a closure row). It then times, medians of `--repeat`:

- the full validation (what the sync does);
- the closure's validation alone;
- the least any such design must add to it: a hash of every line of the five files
  (to know which changed; the files' reading is shared with the parse), the closure's
  rows taken out, and the closure's rows put back together with the carried rows in
  file order (one filter, concatenation and sort per table);
- this script's computation of the closure (reported apart).

    .venv/bin/python scripts/bench_incremental_validation.py --people 1000000 --data /tmp/rbench/data

Not part of the test run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

sys.path.insert(0, str(Path(__file__).parent))

from bench_sync import ensure_drops

import roster_pipelines  # noqa: F401  (the allocator settings a sync runs with)
from roster_pipelines.lib import canonical as c
from roster_pipelines.lib.contracts import validate
from roster_pipelines.lib.formats import remind_csv

SRC = ["src_file", "src_row"]
PERSON_TABLES = ("people", "contacts", "school_memberships", "guardianships")
ROW_SPAN = 100_000_000  # a line's id: file index * ROW_SPAN + row number


def line_of(files: dict[str, int], file: str = "src_file", row: str = "src_row") -> pl.Expr:
    """The id of the line a row names (its file and row number)."""
    return pl.col(file).replace_strict(files, return_dtype=pl.Int64) * ROW_SPAN + pl.col(row)


def with_lines(parsed: c.Roster, files: dict[str, int]) -> dict[str, pl.DataFrame]:
    """Each table with `_line`, its line's id: the adapter would emit it beside
    `src_row` (not timed)."""
    return {
        name: frame.with_columns(_line=line_of(files)) for name, frame in parsed.tables().items()
    }


def issue_lines(issues: pl.DataFrame, files: dict[str, int]) -> pl.Series:
    return issues.filter(pl.col("row").is_not_null()).select(line=line_of(files, "file", "row"))[
        "line"
    ]


def read_lines(folder: Path) -> dict[str, pl.DataFrame]:
    """The five files as the adapter reads them (the parse reads them anyway)."""
    frames = {}
    for name in remind_csv.REQUIRED_FILES:
        frame, _ = remind_csv.read_file(folder, name)
        assert frame is not None, f"{folder / name} cannot be read"
        frames[name] = frame
    return frames


def line_hashes(frames: dict[str, pl.DataFrame], files: dict[str, int]) -> pl.DataFrame:
    """(line, h): a hash of each data line of the five files, its file's index in it (a
    production design would take 128 bits, as the roster fingerprint does)."""
    return pl.concat(
        pl.DataFrame(
            {
                "line": frame["src_row"].cast(pl.Int64) + files[name] * ROW_SPAN,
                "h": frame.drop("src_row").with_columns(_f=pl.lit(files[name])).hash_rows(seed=11),
            }
        )
        for name, frame in frames.items()
    )


def dirty_lines(
    old: pl.DataFrame, new: pl.DataFrame, old_issue_lines: pl.Series, new_issue_lines: pl.Series
) -> pl.Series:
    """Lines the last drop does not hold, that repeat, or had or have an issue."""
    issued = old.filter(pl.col("line").is_in(old_issue_lines.implode()))["h"]
    return new.filter(
        ~pl.col("h").is_in(old["h"].implode())
        | pl.col("h").is_duplicated()
        | pl.col("h").is_in(issued.implode())
        | pl.col("line").is_in(new_issue_lines.implode())
    )["line"]


def closure(t: dict[str, pl.DataFrame], dirty: pl.Series) -> dict[str, pl.Series]:
    """The lines of people, the classes and the enrollments to validate again. People
    and contact points are taken by hash: two that collide are joined into one
    component, which is validated whole (more work, the same result)."""
    person = pl.col("person_key").hash(seed=3)
    on_line = pl.concat(
        [
            t["people"].select(p=person, line="_line"),
            t["contacts"].select(p=person, line="_line"),
            t["guardianships"].select(p=pl.col("parent_person_key").hash(seed=3), line="_line"),
        ]
    )
    points = t["contacts"].select(p=person, v=pl.struct("kind", "value").hash(seed=5))

    def components(seeds: pl.Series, known: pl.Series) -> pl.Series:
        """`known` and every person connected to `seeds` by a line or a contact point."""
        frontier = seeds.filter(~seeds.is_in(known.implode())).unique()
        everyone = known.append(frontier)
        while frontier.len():
            lines = on_line.filter(pl.col("p").is_in(frontier.implode()))["line"]
            shared = points.filter(pl.col("p").is_in(frontier.implode()))["v"]
            more = (
                on_line.filter(pl.col("line").is_in(lines.implode()))["p"]
                .append(points.filter(pl.col("v").is_in(shared.implode()))["p"])
                .unique()
            )
            frontier = more.filter(~more.is_in(everyone.implode()))
            everyone = everyone.append(frontier)
        return everyone

    empty = pl.Series("p", [], pl.UInt64)
    people = components(on_line.filter(pl.col("line").is_in(dirty.implode()))["p"], empty)
    classes = t["classes"].with_columns(owner=pl.col("owner_person_key").hash(seed=3))
    enrollments = t["enrollments"].with_columns(p=person)
    dirty_classes = classes.filter(
        pl.col("_line").is_in(dirty.implode())
        | pl.col("owner").is_in(people.implode())
        | pl.col("class_id").is_duplicated()
    )["class_id"]
    again = enrollments.filter(
        pl.col("_line").is_in(dirty.implode())
        | pl.col("class_id").is_in(dirty_classes.implode())
        | pl.col("p").is_in(people.implode())
        | pl.struct("class_id", "person_key").is_duplicated()
    )
    class_ids = dirty_classes.append(again["class_id"]).unique()
    needed = (
        classes.filter(pl.col("class_id").is_in(class_ids.implode()))["owner"]
        .drop_nulls()
        .append(again["p"])
    )
    people = components(needed, people)
    lines = on_line.filter(pl.col("p").is_in(people.implode()))["line"]
    return {"lines": lines, "class_ids": class_ids, "enrollments": again["_line"]}


def sub_roster(t: dict[str, pl.DataFrame], scope: dict[str, pl.Series]) -> c.Roster:
    def rows(name: str, lines: pl.Series) -> pl.DataFrame:
        return t[name].filter(pl.col("_line").is_in(lines.implode())).drop("_line")

    return c.Roster(
        **{name: rows(name, scope["lines"]) for name in PERSON_TABLES},
        schools=t["schools"].drop("_line"),
        classes=t["classes"]
        .filter(pl.col("class_id").is_in(scope["class_ids"].implode()))
        .drop("_line"),
        enrollments=rows("enrollments", scope["enrollments"]),
        issues=pl.DataFrame(),  # set by the caller: the parse's issues
    )


def disagreements(full: c.Roster, part: c.Roster, sub: c.Roster) -> list[str]:
    """Where the closure's validation decides otherwise than the full one on its rows."""
    found = []
    for name, frame in part.tables().items():
        mine = frame.select(SRC)
        theirs = getattr(full, name).join(getattr(sub, name).select(SRC), on=SRC, how="semi")
        if not theirs.select(SRC).equals(mine):
            found.append(f"{name}: {mine.height:,} rows kept against {theirs.height:,}")
    if not part.issues.equals(full.issues):
        found.append(f"issues: {part.issues.height:,} against {full.issues.height:,}")
    return found


def put_together(t: dict[str, pl.DataFrame], part: c.Roster, files: dict[str, int]) -> None:
    """The floor of carrying: the rows outside the closure beside the closure's, in
    file order (which of those rows survived the last drop is not even looked up)."""
    for name, frame in part.tables().items():
        if name == "schools":
            continue
        kept = frame.with_columns(_line=line_of(files))
        rest = t[name].filter(~pl.col("_line").is_in(kept["_line"].implode()))
        pl.concat([kept, rest]).sort("_line", maintain_order=True)


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--data", help="keep generated drops here and reuse them")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_incval_") as tmp:
        data = Path(args.data) / f"p{args.people}" if args.data else Path(tmp)
        initial, maintenance = ensure_drops(data, args.people)
        files = {name: i for i, name in enumerate(remind_csv.REQUIRED_FILES)}
        before = validate(remind_csv.parse(initial))
        parsed = remind_csv.parse(maintenance)
        old_issue_lines = issue_lines(before.issues, files)
        new_issue_lines = issue_lines(parsed.issues, files)
        tables = with_lines(parsed, files)
        empty_lines = pl.Series("line", [], pl.Int64)
        old_lines = line_hashes(read_lines(initial), files)
        del before

        times: dict[str, list[float]] = {}

        def clock(label: str, seconds: float) -> None:
            times.setdefault(label, []).append(seconds)

        for _ in range(args.repeat):
            full, seconds = timed(validate, parsed)
            clock("full validation", seconds)
            frames, seconds = timed(read_lines, maintenance)
            clock("read the files (the parse does: not counted)", seconds)
            new_lines, seconds = timed(line_hashes, frames, files)
            clock("  a hash of every line", seconds)
            dirty, seconds = timed(
                dirty_lines, old_lines, new_lines, old_issue_lines, new_issue_lines
            )
            clock("  the changed, repeated and issued lines", seconds)
            scope, seconds = timed(closure, tables, dirty)
            clock("the closure's computation (this script's)", seconds)
            sub, seconds = timed(sub_roster, tables, scope)
            sub.issues = parsed.issues
            clock("  the closure's rows", seconds)
            part, seconds = timed(validate, sub)
            clock("  the closure validated", seconds)
            _, seconds = timed(put_together, tables, part, files)
            clock("  the rows put back together in file order", seconds)
            wrong = disagreements(full, part, sub)

        median = {label: statistics.median(runs) for label, runs in times.items()}
        # The indented rows: what the design costs besides its closure's computation.
        floor = sum(s for label, s in median.items() if label.startswith("  "))
        print(f"\n{args.people:,} people, 1 % maintenance drop, median of {args.repeat}:\n")
        print("| | s |\n|---|---|")
        for label, seconds in median.items():
            print(f"| {label} | {seconds:.2f} |")
        print(f"| incremental, the indented rows | **{floor:.2f}** |")
        with_closure = floor + median["the closure's computation (this script's)"]
        print(f"| incremental, with the closure's computation | **{with_closure:.2f}** |")
        print(
            f"\n{dirty.len():,} dirty lines of {new_lines.height:,}; the closure: "
            + ", ".join(
                f"{name} {frame.height:,} of {getattr(parsed, name).height:,}"
                for name, frame in sub.tables().items()
            )
        )
        print(
            "the closure decides as the full validation on its rows: "
            + ("yes, every issue included" if not wrong else "NO: " + "; ".join(wrong))
        )
        # Sizing only (not exact: the last drop's issues would have to be carried with
        # their row numbers moved): the closure of the changed lines alone.
        unissued = dirty_lines(old_lines, new_lines, empty_lines, empty_lines)
        alone = sub_roster(tables, closure(tables, unissued))
        alone.issues = parsed.issues
        _, seconds = timed(validate, alone)
        rows = sum(frame.height for frame in alone.tables().values())
        total = sum(frame.height for frame in parsed.tables().values())
        print(
            f"without the lines of the last drop's issues: {unissued.len():,} dirty lines, "
            f"a closure of {rows:,} rows of {total:,}, validated in {seconds:.2f} s"
        )
        return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
