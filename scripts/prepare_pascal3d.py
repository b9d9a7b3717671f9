#!/usr/bin/env python3
"""Convert raw PASCAL3D+ (and OccludedPASCAL3D+) into the preprocessed layout novum3d trains on.

    python scripts/prepare_pascal3d.py --raw data/PASCAL3D+_release1.1 --out data/PASCAL3D \\
        [--occluded data/OccludedPASCAL3D] [--split val] [--size 640x800] [--mode nemo|exact]

Resumable: run it again after an interruption and finished objects are kept. Broken records
are skipped and listed in <out>/broken.txt. With --cad-sizes, also writes <out>/categories.yaml
(cuboid sizes measured from the CAD models) for configs' ``categories:`` key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from novum3d.categories import load_categories
from novum3d.cli import command
from novum3d.data.prepare import PrepareOptions, cad_category_sizes, prepare_pascal3d, write_categories_yaml
from novum3d.errors import Novum3DError


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", required=True, help="the PASCAL3D+_release1.1 folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--occluded", default=None, help="OccludedPASCAL3D+ root (images/<cls>FGL*_BGL*/)")
    parser.add_argument("--classes", default=None, help="comma list (default: all 12)")
    parser.add_argument("--split", choices=["train", "val"], default=None)
    parser.add_argument("--size", default="640x800", help="HEIGHTxWIDTH of the output images")
    parser.add_argument("--distance", type=float, default=5.0, help="distance every object is brought to")
    parser.add_argument("--mode", choices=["nemo", "exact"], default="nemo")
    parser.add_argument("--cad-sizes", action="store_true", help="also write <out>/categories.yaml from CAD/")
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise Novum3DError(
            f"--size: expected HEIGHTxWIDTH such as 640x800, got {args.size!r}", field="--size"
        ) from None
    classes = args.classes.split(",") if args.classes else [c.name for c in load_categories()]
    opts = PrepareOptions(height=height, width=width, target_distance=args.distance, mode=args.mode)
    result = prepare_pascal3d(
        args.raw, args.out, classes, opts, args.occluded, args.split,
        progress=lambda it, n: tqdm(it, total=n, unit="obj", desc="PASCAL3D+"),
    )  # fmt: skip
    if args.cad_sizes:
        path = write_categories_yaml(cad_category_sizes(args.raw, classes), Path(args.out) / "categories.yaml")
        print(f"category sizes from CAD: {path}")
    broken = result["broken"]
    print(f"written {result['written']}, already there {result['resumed']}, broken {len(broken)}")
    if broken:
        print(f"broken records listed in {Path(args.out) / 'broken.txt'}; first: {broken[0][0]}: {broken[0][1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
