#!/usr/bin/env python3
"""Evaluate a trained NOVUM model: classification accuracy and 3D pose per split and class.

    python scripts/evaluate.py --checkpoint runs/x/last.pt --data data/synthetic-small \\
        [--splits clean,occluded-L1,occluded-L2,occluded-L3,...] [--max-per-split 100] [--out results/x]

Splits of a synthetic data set: clean, occluded-L1..3, corrupted-<name>, ood-<nuisance> (all by
default). For preprocessed PASCAL3D+ (--layout pascal3d): clean and occluded-L1..3.
Writes results.json, results.md, accuracy_vs_occlusion.png and pose_error_cdf.png. Per-image
results are cached under <out>/cache/, keyed by the checkpoint's and the data's contents, the
code and the settings: an interrupted run continues where it stopped, and a cache made from
other inputs stops the run with the parts that differ (--overwrite recomputes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from tqdm import tqdm

from novum3d.cli import command, select_device
from novum3d.errors import Novum3DError
from novum3d.evaluation.cache import RecordCache, evaluation_key
from novum3d.evaluation.metrics import summarize
from novum3d.evaluation.report import accuracy_vs_occlusion, error_cdf, markdown_table
from novum3d.evaluation.run import evaluate_split, evenly_spaced, initial_distance, open_eval_splits
from novum3d.inference.checkpoint import load_model
from novum3d.inference.pose import PoseConfig, PoseEstimator


@command
def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="a synthetic data set root, or preprocessed PASCAL3D+")
    parser.add_argument("--layout", choices=["synthetic", "pascal3d"], default="synthetic")
    parser.add_argument("--splits", default=None, help="comma list (default: every test split)")
    parser.add_argument("--max-per-split", type=int, default=None, help="evenly spaced subset per split")
    parser.add_argument("--out", default="outputs/evaluation")
    parser.add_argument("--steps", type=int, default=30, help="pose refinement steps")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--overwrite", action="store_true", help="recompute caches made from other inputs")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    device = select_device(args.device)
    model, cfg = load_model(args.checkpoint, device)
    splits = open_eval_splits(Path(args.data), args.layout, model.classes)
    wanted = [s for s in splits if s not in ("train", "val")] if args.splits is None else args.splits.split(",")
    unknown = [s for s in wanted if s not in splits]
    if unknown:
        raise Novum3DError(f"--splits: unknown {unknown}; this data set has {sorted(splits)}", field="--splits")
    distance = initial_distance(splits, wanted[0])
    estimator = PoseEstimator(PoseConfig(steps=args.steps, distance=distance))
    settings = {"pose": dataclasses.asdict(estimator.cfg), "image_size": list(cfg.data.image_size)}
    out = Path(args.out)
    hint = "rerun with --overwrite to recompute, or choose another --out"
    results, errors = {}, {}
    for name in wanted:
        ds = evenly_spaced(splits[name], args.max_per_split)
        cache = RecordCache(out / "cache" / f"{name}.jsonl", evaluation_key(args.checkpoint, ds, settings),
                            overwrite=args.overwrite, hint=hint)  # fmt: skip
        records = evaluate_split(
            model, ds, estimator, cache, tuple(cfg.data.image_size), args.batch_size,
            progress=lambda it, n, name=name: tqdm(it, total=n, desc=name, unit="batch"),
        )  # fmt: skip
        results[name] = summarize(records, model.classes)
        errors[name] = [r["pose_error"] for r in records]
    report = {"checkpoint": args.checkpoint, "data": args.data, "classes": model.classes, "initial_distance": distance,
              "splits": results}  # fmt: skip
    (out / "results.json").write_text(json.dumps(report, indent=2))
    table = markdown_table(results)
    (out / "results.md").write_text(f"Evaluation of `{args.checkpoint}` on `{args.data}`\n\n{table}\n")
    accuracy_vs_occlusion(results, out / "accuracy_vs_occlusion.png")
    error_cdf(errors, out / "pose_error_cdf.png")
    print(table)
    print(f"written to {out}/ (results.json, results.md, plots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
