"""Pose accuracy of several ``scripts/evaluate.py`` results, seeds pooled as mean +- std.

    python -m benchmarks.pose_table RESULTS/volume-background-seed*-max RESULTS/... [--benchmarks BENCHMARKS.md]

Each argument is an evaluate.py output folder (its ``results.json``). Folders whose names differ
only in ``-seed<N>`` form one row group; each row is (group, split, protocol) with Acc@pi/6,
Acc@pi/18 and the median error (plain PASCAL3D+ metric), Acc@pi/6 over the classes not symmetric
in reality (the mean of their per-class figures, as issue 11 counts it) and the classification
accuracy, each the mean +- population std over the group's seeds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from benchmarks.common import emit
from novum3d.cli import command
from novum3d.errors import DataError
from novum3d.evaluation.metrics import symmetry_of
from novum3d.evaluation.robustness import seed_cell

SEED = re.compile(r"-seed\d+")


def read_results(folder: Path) -> dict:
    path = folder / "results.json"
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"not a readable evaluate.py result ({exc})", path=path) from None
    if not isinstance(results, dict) or not isinstance(results.get("by_protocol"), dict):
        raise DataError("no 'by_protocol' results; is it scripts/evaluate.py's results.json?", path=path)
    return results


def asymmetric_acc(summary: dict) -> float | None:
    """Mean over the classes not symmetric in reality (with images) of their Acc@pi/6."""
    values = [c["acc_pi_6"] for name, c in summary.get("per_class", {}).items()
              if symmetry_of(name) == "none" and c.get("images") and "acc_pi_6" in c]  # fmt: skip
    return sum(values) / len(values) if values else None


def row_values(summary: dict) -> dict[str, float | None]:
    return {
        "Acc@pi/6 %": summary.get("acc_pi_6"),
        "Acc@pi/18 %": summary.get("acc_pi_18"),
        "median deg": summary.get("median_error_deg"),
        "Acc@pi/6 asymmetric classes %": asymmetric_acc(summary),
        "class accuracy %": summary.get("accuracy"),
    }


def pose_table(folders: list[Path], splits: list[str] | None = None) -> str:
    """The Markdown table of ``folders`` (evaluate.py outputs), rows for ``splits`` only if given."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for folder in folders:
        groups[SEED.sub("", folder.name)].append(read_results(folder))
    header = ["run", "seeds", "split", "protocol", "images", *row_values({})]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, results in groups.items():
        for protocol, names in results[0]["by_protocol"].items():
            for split in (s for s in names if splits is None or s in splits):
                summaries = [r["by_protocol"][protocol][split] for r in results
                             if split in r["by_protocol"].get(protocol, {})]  # fmt: skip
                rows = [row_values(s) for s in summaries]
                cells = []
                for key in rows[0]:
                    scale = 100.0 if "%" in key else 1.0
                    cells.append(seed_cell([scale * row[key] for row in rows if row[key] is not None]))
                images = sum(s.get("images", 0) for s in summaries)
                lines.append(
                    f"| {name} | {len(summaries)} | {split} | {protocol} | {images} | " + " | ".join(cells) + " |"
                )
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="evaluate.py --out folders")
    parser.add_argument("--splits", default=None, help="comma list: only these splits' rows")
    parser.add_argument("--benchmarks", default="", help="append the table to this file")
    args = parser.parse_args(argv)
    emit(pose_table(args.folders, args.splits.split(",") if args.splits else None), args.benchmarks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
