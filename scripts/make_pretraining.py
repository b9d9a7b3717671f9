#!/usr/bin/env python3
"""Make the pretraining corpus: procedural object categories that are not the benchmark's twelve.

    python scripts/make_pretraining.py --categories 1000 --per-category 100 --size 160 \
        --out data/pretraining --workers 16

Each category is a structure of parts from a shape grammar of its own; its instances vary in
proportions and details; materials, lighting, full-sphere viewpoints, backgrounds and clutter are
random, the backgrounds and clutter from families no benchmark split uses (docs/pretraining.md).
Same seed -> the same bytes, whatever --workers. Interrupted? Run the same command again: finished
images are kept and the rest rendered. Writes corpus.json, categories.json and preview.png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from novum3d.cli import command
from novum3d.data.pretraining import CorpusConfig, generate_corpus


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = CorpusConfig()
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--categories", type=int, default=defaults.categories)
    parser.add_argument("--per-category", type=int, default=defaults.per_category, help="training images each")
    parser.add_argument("--val-per-category", type=int, default=defaults.val_per_category,
                        help="held-out images each (other instances), for pretraining's own accuracy")  # fmt: skip
    parser.add_argument("--size", type=int, default=defaults.size, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--workers", type=int, default=1, help="processes")
    parser.add_argument("--no-preview", action="store_true", help="skip preview.png")
    args = parser.parse_args(argv)
    cfg = CorpusConfig(args.categories, args.per_category, args.val_per_category, args.size, args.seed)
    out = Path(args.out)
    start = time.perf_counter()

    def progress(it, total):
        return tqdm(it, total=total, unit="img", desc="corpus", smoothing=0.05)

    manifest = generate_corpus(out, cfg, args.workers, progress, preview=not args.no_preview)
    seconds = time.perf_counter() - start
    images = sum(manifest["counts"].values())
    size = sum(p.stat().st_size for p in out.rglob("*.jpg"))
    print(f"{images} images in {out} ({manifest['categories']} categories, {manifest['size']} px), "
          f"{seconds:.1f} s with {args.workers} worker(s), {size / 1e6:.0f} MB")  # fmt: skip
    for split, digest in manifest["digests"].items():
        print(f"  {split:5s} {manifest['counts'][split]:7d} images  sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
