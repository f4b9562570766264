"""How a maintenance drop's time and work split between the district and the change.

Reads the lines `bench_stages.py --churn ... --json FILE` appended (one per district
size and churn share, medians of its runs) and fits, by least squares,

    measure = fixed + per person × people + per changed row × changed rows

for the drop's wall time, the CPU seconds of the sync's process and of Postgres, and
fits the Postgres seconds once more on the changed rows and the run's issue rows (the
district's issues, which every drop records again). Run the sweep at two or more
district sizes, with churn shares that give changes of the same size at each, so that
the district and the change can be told apart:

    for args in "250000 0.01 0.04" "500000 0.005 0.02" "1000000 0.0025 0.01"; do
        set -- $args
        .venv/bin/python scripts/bench_stages.py --people $1 --data /tmp/rbench/data \\
            --baseline grid --churn $2 $3 --repeat 3 --json /tmp/rbench/sweep.jsonl
    done
    .venv/bin/python scripts/fit_sweep.py /tmp/rbench/sweep.jsonl

Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def fit(rows: list[dict[str, float]], measure: str, by: list[str]) -> tuple[list[float], float]:
    """Coefficients of `measure` = c0 + c1 × by[0] + ..., and the largest residual."""
    x = np.array([[1.0, *(r[k] for k in by)] for r in rows])
    y = np.array([r[measure] for r in rows])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return [float(c) for c in coef], float(np.max(np.abs(y - x @ coef)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the file bench_stages.py --json appended to")
    rows = [json.loads(line) for line in parser.parse_args().sweep.read_text().splitlines()]
    print(
        "| people | churn | changed rows | issue rows | total s | CPU s: sync | Postgres |\n"
        "|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['people']:,} | {r['churn'] * 100:g} % | {r['changed_rows']:,} | "
            f"{r['issue rows']:,.0f} | {r['total']:.2f} | {r['cpu']:.2f} | {r['db cpu']:.2f} |"
        )
    print(f"\nLeast squares over {len(rows)} sweeps:\n")
    print("| measure | fixed s | µs per person | µs per changed row | largest residual s |")
    print("|---|---|---|---|---|")
    for label, measure in (
        ("wall", "total"),
        ("CPU, sync", "cpu"),
        ("CPU, Postgres", "db cpu"),
    ):
        (c0, c1, c2), worst = fit(rows, measure, ["people", "changed_rows"])
        print(f"| {label} | {c0:.2f} | {c1 * 1e6:.2f} | {c2 * 1e6:.1f} | {worst:.2f} |")
    (c0, c1, c2), worst = fit(rows, "db cpu", ["changed_rows", "issue rows"])
    print(
        f"\nCPU, Postgres = {c0:.2f} s + {c1 * 1e6:.1f} µs per changed row "
        f"+ {c2 * 1e6:.1f} µs per issue row (largest residual {worst:.2f} s)"
    )


if __name__ == "__main__":
    main()
