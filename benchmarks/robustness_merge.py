"""Merge robustness.json files of separate runs (e.g. one seed per device session) into one table.

    python -m benchmarks.robustness_merge docs/results/robustness-h100-seed0.json \\
        docs/results/robustness-h100-seed1.json [--benchmarks BENCHMARKS.md]

Reports of other seeds, or of other methods run apart (one process per method), pool by row;
each row's seeds must differ. Cells become ``mean +- std`` over them. The margin row is the
NOVUM method (--novum; its full-image and GT-box rows) minus the baseline, per seed, then averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.common import emit
from novum3d.cli import command
from novum3d.errors import Novum3DError
from novum3d.evaluation.robustness import margin_rows, markdown_rows


def merge(reports: list[dict]) -> tuple[dict, dict, list[int]]:
    """Pool the rows of several reports (other seeds, or other methods of one seed).

    Raises Novum3DError when one row would get the same seed twice."""
    rows: dict[str, list[dict]] = {}
    pose: dict[str, list[dict]] = {}
    row_seeds: dict[str, list[int]] = {}
    for report in reports:
        for name, runs in report["columns"].items():
            rows.setdefault(name, []).extend(runs)
            row_seeds.setdefault(name, []).extend(report["seeds"])
        for name, runs in report["pose_columns"].items():
            pose.setdefault(name, []).extend(runs)
    for name, seeds in row_seeds.items():
        if len(set(seeds)) != len(seeds):
            raise Novum3DError(f"seeds repeat across the reports for {name!r} ({seeds}); merge runs of different seeds")
    return rows, pose, sorted({s for seeds in row_seeds.values() for s in seeds})


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="robustness.json files written by benchmarks.robustness")
    parser.add_argument("--novum", default="NOVUM (cube)", help="method for the margin row")
    parser.add_argument("--baseline", default="ResNet-50", help="baseline for the margin row")
    parser.add_argument("--benchmarks", default="", help="append the tables to this file")
    parser.add_argument("--json", default="", help="write the pooled rows (per seed) to this JSON file")
    args = parser.parse_args(argv)
    reports = [json.loads(Path(p).read_text()) for p in args.reports]
    rows, pose, seeds = merge(reports)
    table = markdown_rows(rows)
    margins = margin_rows(rows, args.novum, args.baseline)
    table += "\n" + margins if margins else ""
    files = " ".join(args.reports)
    text = "\n".join(
        [
            f"### Robustness, seeds {', '.join(map(str, seeds))} pooled (mean +- population std over seeds)",
            "",
            f"Command: `python -m benchmarks.robustness_merge {files}`",
            "",
            "Classification accuracy (%):",
            "",
            table,
            "",
            *(["Pose Acc@pi/6 (%):", "", markdown_rows(pose)] if pose else []),
        ]
    )
    emit(text, args.benchmarks)
    if args.json:
        merged = {"reports": args.reports, "seeds": seeds, "columns": rows, "pose_columns": pose}
        Path(args.json).write_text(json.dumps(merged, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
