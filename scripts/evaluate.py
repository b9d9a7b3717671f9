#!/usr/bin/env python3
"""Evaluate a trained NOVUM model: classification accuracy and 3D pose per split and class.

    python scripts/evaluate.py --checkpoint runs/x/last.pt --data data/synthetic-small \\
        [--splits clean,occluded-L1,occluded-L2,occluded-L3,...] [--max-per-split 100] [--out results/x]

Splits of a synthetic data set: clean, occluded-L1..3, corrupted-<name>, ood-<nuisance> (all by
default). For preprocessed PASCAL3D+ (--layout pascal3d): clean and occluded-L1..3.
Two protocols, side by side (--protocols): "full" classifies the whole image and estimates the
pose under the predicted class; "reference" is the authors' (GT box crop, pose under the
ground-truth class). Class probabilities use the temperature fitted on the validation split at
training time; ECE is reported per split.
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

from novum3d.cli import command
from novum3d.device import select_device
from novum3d.errors import Novum3DError
from novum3d.evaluation.cache import RecordCache, evaluation_key
from novum3d.evaluation.report import accuracy_vs_occlusion, error_cdf, markdown_table
from novum3d.evaluation.run import (
    DIAGNOSIS,
    PROTOCOLS,
    evaluate_split,
    evenly_spaced,
    initial_distance,
    open_eval_splits,
    protocol_summary,
)
from novum3d.inference.checkpoint import load_model
from novum3d.inference.pose import PoseConfig, PoseEstimator
from novum3d.model.priors import PosePriors


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
    parser.add_argument(
        "--protocols",
        default="full,reference",
        help="full (whole image, predicted class) and/or reference (ground-truth box and class)",
    )
    parser.add_argument(
        "--diagnose", action="store_true", help="add the pose diagnosis: templates only, true class, from the truth"
    )
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
    distance = initial_distance(splits, wanted[0])  # for classes without a prior
    if model.pose_priors is None and "train" in splits:  # a checkpoint from before priors were saved
        model.pose_priors = PosePriors.from_dataset(splits["train"], model.classes)
    estimator = PoseEstimator(PoseConfig(steps=args.steps, distance=distance))
    protocols = tuple(args.protocols.split(","))
    if args.diagnose:
        protocols += tuple(p for p in DIAGNOSIS if p not in protocols)
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise Novum3DError(f"--protocols: unknown {unknown}; choose from {list(PROTOCOLS)}", field="--protocols")
    settings = {"pose": dataclasses.asdict(estimator.cfg), "image_size": list(cfg.data.image_size),
                "protocols": list(protocols),
                "priors": model.pose_priors.to_dict() if model.pose_priors is not None else None}  # fmt: skip
    out = Path(args.out)
    hint = "rerun with --overwrite to recompute, or choose another --out"
    results: dict[str, dict] = {p: {} for p in protocols}
    errors: dict[str, list[float]] = {}
    for name in wanted:
        ds = evenly_spaced(splits[name], args.max_per_split)
        cache = RecordCache(out / "cache" / f"{name}.jsonl", evaluation_key(args.checkpoint, ds, settings),
                            overwrite=args.overwrite, hint=hint)  # fmt: skip
        records = evaluate_split(
            model, ds, estimator, cache, tuple(cfg.data.image_size), args.batch_size,
            progress=lambda it, n, name=name: tqdm(it, total=n, desc=name, unit="batch"), protocols=protocols,
        )  # fmt: skip
        for protocol in protocols:
            results[protocol][name] = protocol_summary(records, model.classes, protocol)
        errors[name] = [r[protocols[0]]["pose_error"] for r in records]
    described = {p: PROTOCOLS[p].description for p in protocols}
    report = {"checkpoint": args.checkpoint, "data": args.data, "classes": model.classes, "initial_distance": distance,
              "class_temperature": model.class_temperature, "protocols": described,
              "splits": results[protocols[0]], "by_protocol": results}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    tables = "\n\n".join(
        f"Protocol `{p}`: {PROTOCOLS[p].description}.\n\n{markdown_table(results[p])}" for p in protocols
    )
    (out / "results.md").write_text(f"Evaluation of `{args.checkpoint}` on `{args.data}`\n\n{tables}\n")
    labels = {p: p if len(protocols) > 1 else "" for p in protocols}
    accuracy_vs_occlusion({labels[p]: results[p] for p in protocols}, out / "accuracy_vs_occlusion.png")
    error_cdf(errors, out / "pose_error_cdf.png")
    print(tables)
    print(f"written to {out}/ (results.json, results.md, plots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
