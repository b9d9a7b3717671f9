#!/usr/bin/env python3
"""Generate the synthetic PASCAL3D+-format benchmark (the embedded default data).

    python scripts/make_synthetic.py --preset small --out data/synthetic-small --workers 2 --preview

Presets: tiny (tests, seconds), small (256x256, a CPU user trains on it in minutes),
full (640x800, for the GPU benchmark). Same seed -> byte-identical files, whatever --workers.

--version 2 (the default) is the benchmark of docs/synthetic-benchmark.md (class-typical part
materials, front/back asymmetry, context-biased natural backgrounds, occluders over object and
background, ImageNet-C's corruption recipes); --version 1 reproduces the first one byte for byte.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from tqdm import tqdm

from novum3d.cli import command
from novum3d.data.synthetic import PRESETS, generate, open_splits
from novum3d.data.synthetic.generate import DEFAULT_CONTEXT_BIAS, DEFAULT_VERSION, VERSIONS
from novum3d.data.synthetic.preview import write_preview
from novum3d.errors import ConfigError, Novum3DError


def with_counts(preset, text: str):
    """The preset with ``--counts`` (``train=40,val=4,...``) applied."""
    fields = {f.name for f in dataclasses.fields(preset)} & {"train", "val", "test", "corrupted"}
    try:
        counts = {k.strip(): int(v) for k, v in (item.split("=") for item in text.split(","))}
    except ValueError as exc:
        raise ConfigError(f"--counts: expected e.g. train=40,val=4 ({exc})", field="--counts") from exc
    unknown = sorted(set(counts) - fields)
    if unknown or any(v < 0 for v in counts.values()):
        raise ConfigError(f"--counts: keys among {sorted(fields)} with counts >= 0, got {text!r}", field="--counts")
    return dataclasses.replace(preset, **counts)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--out", default=None, help="output folder (default: data/synthetic-<preset>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes")
    parser.add_argument("--classes", default=None, help="comma list (default: all 12)")
    parser.add_argument("--preview", action="store_true", help="also write preview.png, samples of each split")
    parser.add_argument(
        "--counts", default=None, help="override the preset's per-class counts, e.g. train=40,val=4,test=0,corrupted=0"
    )
    parser.add_argument(
        "--version",
        type=int,
        choices=VERSIONS,
        default=DEFAULT_VERSION,
        help=f"benchmark version (default {DEFAULT_VERSION}; 1 reproduces the first one byte for byte)",
    )
    parser.add_argument(
        "--context-bias",
        type=float,
        default=None,
        help=f"version 2: probability of a class's preferred background families (default {DEFAULT_CONTEXT_BIAS})",
    )
    parser.add_argument("--corruptions", choices=("own", "imagecorruptions"), default="own",
                        help="version 2: ImageNet-C recipes transcribed (own, default) or the imagecorruptions "
                             "package where it runs reproducibly (pip install -e '.[corruptions]')")  # fmt: skip
    args = parser.parse_args(argv)
    out = Path(args.out or f"data/synthetic-{args.preset}")
    if (out / "dataset.json").exists():
        raise Novum3DError("already holds a data set (dataset.json); choose another --out", path=out, field="--out")
    classes = args.classes.split(",") if args.classes else None
    preset = with_counts(PRESETS[args.preset], args.counts) if args.counts else PRESETS[args.preset]
    start = time.perf_counter()

    def progress(it, total):
        return tqdm(it, total=total, unit="img", desc=f"synthetic {args.preset}")

    bias = DEFAULT_CONTEXT_BIAS if args.context_bias is None else args.context_bias
    manifest = generate(out, preset, args.seed, args.workers, classes, progress=progress, version=args.version,
                        context_bias=bias, corruption_backend=args.corruptions)  # fmt: skip
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(
        f"wrote {manifest['images']} images to {out} in {seconds:.1f} s "
        f"({manifest['images'] / seconds:.1f} img/s, {args.workers} worker(s)), {size / 1e6:.1f} MB, "
        f"version {args.version}"
    )
    for split, count in manifest["counts"].items():
        print(f"  {split:32s} {count:6d}")
    if args.preview:
        path = write_preview(open_splits(out), out / "preview.png")
        print(f"preview: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
