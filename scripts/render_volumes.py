#!/usr/bin/env python3
"""Render every category's neural object volume, coloured by 3D position, into one PNG.

python scripts/render_volumes.py configs/volumes/cuboid.yaml --out outputs/volumes.png
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time

from novum3d.categories import build_category_volumes
from novum3d.cli import command
from novum3d.config import VolumeConfig, load_config
from novum3d.volume_sheet import volume_sheet


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="volume config YAML, e.g. configs/volumes/cuboid.yaml")
    parser.add_argument("--out", default="outputs/volumes.png", help="PNG to write")
    parser.add_argument("--azimuth", type=float, default=30.0, help="degrees")
    parser.add_argument("--elevation", type=float, default=20.0, help="degrees")
    parser.add_argument("--theta", type=float, default=0.0, help="degrees")
    parser.add_argument("--distance", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(VolumeConfig, args.config)
    volumes = build_category_volumes(cfg)
    start = time.perf_counter()
    path = volume_sheet(
        volumes,
        args.out,
        azimuth=math.radians(args.azimuth),
        elevation=math.radians(args.elevation),
        theta=math.radians(args.theta),
        distance=args.distance,
    )
    sizes = ", ".join(f"{name} {len(v)}" for name, v in volumes.items())
    print(f"Gaussians per category: {sizes}")
    print(f"wrote {path} ({len(volumes)} renders in {time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
