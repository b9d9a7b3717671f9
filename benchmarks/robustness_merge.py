#!/usr/bin/env python3
"""Merge robustness.json files of separate runs (e.g. one seed per device session) into one table.

    python benchmarks/robustness_merge.py docs/results/robustness-h100-seed0.json \\
        docs/results/robustness-h100-seed1.json [--benchmarks BENCHMARKS.md]

Each method's seeds are pooled; cells become ``mean +- std`` over them. The margin row is the
NOVUM method (--novum; its full-image and GT-box rows) minus the baseline, per seed, then averaged.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit
from novum3d.evaluation.robustness import margin_rows, markdown_rows


def merge(reports: list[dict]) -> tuple[dict, dict, list[int]]:
    rows: dict[str, list[dict]] = {}
    pose: dict[str, list[dict]] = {}
    seeds: list[int] = []
    for report in reports:
        seeds += report["seeds"]
        for name, runs in report["columns"].items():
            rows.setdefault(name, []).extend(runs)
        for name, runs in report["pose_columns"].items():
            pose.setdefault(name, []).extend(runs)
    return rows, pose, seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="robustness.json files written by benchmarks/robustness.py")
    parser.add_argument("--novum", default="NOVUM (cube)", help="method for the margin row")
    parser.add_argument("--baseline", default="ResNet-50", help="baseline for the margin row")
    parser.add_argument("--benchmarks", default="", help="append the tables to this file")
    args = parser.parse_args(argv)
    reports = [json.loads(Path(p).read_text()) for p in args.reports]
    rows, pose, seeds = merge(reports)
    if len(set(seeds)) != len(seeds):
        print(f"error: seeds repeat across the reports ({seeds}); merge runs of different seeds", file=sys.stderr)
        return 2
    table = markdown_rows(rows)
    margins = margin_rows(rows, args.novum, args.baseline)
    table += "\n" + margins if margins else ""
    files = " ".join(args.reports)
    text = "\n".join(
        [
            f"### Robustness, seeds {', '.join(map(str, seeds))} pooled (mean +- population std over seeds)",
            "",
            f"Command: `python benchmarks/robustness_merge.py {files}`",
            "",
            "Classification accuracy (%):",
            "",
            table,
            "",
            *(["Pose Acc@pi/6 (%):", "", markdown_rows(pose)] if pose else []),
        ]
    )
    emit(text, args.benchmarks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
