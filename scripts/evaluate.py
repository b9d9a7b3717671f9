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

Choosing settings without the test splits: --occlude 0.6,0.8 pastes the training augmentation's
occluders over every image of the chosen splits (reported as "<split>-occluded"), e.g. on the
validation split; --pose key=value sets the pose estimator's fields (novum3d.inference.pose.PoseConfig),
e.g. --splits val --occlude 0.6,0.8 --pose top_k=4.

Reproducing published numbers: --pose preset=authors sets GenIntel/NOVUM's render-and-compare (their grid, one
hypothesis, 30 Adam steps at lr 0.05, no background in the loss) and runs their protocol (reference: box crop,
ground-truth class) unless --protocols says otherwise; --pose preset=nemo sets NeMo's (300 steps, lr 0.05 falling
5x every 100, the clutter bank's mean) under the ground-truth class (true-class). Results name the preset, and
beside the median error give NeMo's (the classes' medians weighted by their images).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from tqdm import tqdm

from novum3d.cli import command
from novum3d.device import select_device
from novum3d.errors import ConfigError
from novum3d.evaluation.cache import RecordCache, evaluation_key
from novum3d.evaluation.report import write_evaluation
from novum3d.evaluation.run import (
    PRESET_PROTOCOLS,
    PROTOCOLS,
    OccludedSplit,
    chosen_protocols,
    ensure_pose_priors,
    evaluate_splits,
    evenly_spaced,
    initial_distance,
    open_eval_splits,
    selected_splits,
)
from novum3d.inference.loading import load_model
from novum3d.inference.pose import PoseEstimator, pose_config
from novum3d.model.backbone import is_compiled


def parse_fraction(text: str) -> tuple[float, float]:
    """``"0.6,0.8"`` -> (0.6, 0.8); anything else is a ConfigError naming --occlude."""
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise ConfigError(f"--occlude: expected LOW,HIGH (e.g. 0.6,0.8), got {text!r}", field="--occlude") from None
    return low, high


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="a synthetic data set root, or preprocessed PASCAL3D+")
    parser.add_argument("--layout", choices=["synthetic", "pascal3d"], default="synthetic")
    parser.add_argument("--splits", default=None, help="comma list (default: every test split)")
    parser.add_argument("--max-per-split", type=int, default=None, help="evenly spaced subset per split")
    parser.add_argument("--out", default="outputs/evaluation")
    parser.add_argument("--steps", type=int, default=None, help="pose refinement steps (default: the preset's, 30)")
    parser.add_argument("--batch-size", type=int, default=16)
    # Decoding in workers doubled pose evaluation on an H100 (83 -> 158 img/s: benchmarks.eval_throughput,
    # batch 64, protocol full, eager backbone).
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers (0: decode in this process)")
    parser.add_argument(
        "--protocols",
        default=None,
        help="full (whole image, predicted class) and/or reference (ground-truth box and class); default full,reference"
        " (the authors' preset: reference; nemo: true-class)",
    )
    parser.add_argument(
        "--diagnose", action="store_true", help="add the pose diagnosis: templates only, true class, from the truth"
    )
    parser.add_argument("--overwrite", action="store_true", help="recompute caches made from other inputs")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--compile",
        default=None,
        choices=["auto", "on", "off"],
        help="torch.compile the backbone: auto (default) = on CUDA, whatever the checkpoint was trained with",
    )
    parser.add_argument(
        "--occlude", default=None, help="LOW,HIGH: occluders hiding that share of each object (a validation stand-in)"
    )
    parser.add_argument("--pose", action="append", default=[], help="key=value: a PoseConfig field (repeatable)")
    args = parser.parse_args(argv)
    fraction = parse_fraction(args.occlude) if args.occlude else None
    preset = pose_config({}, args.pose).preset  # checked before the model loads: a bad field is one line
    protocols = chosen_protocols(args.protocols or PRESET_PROTOCOLS[preset], args.diagnose)
    device = select_device(args.device)
    model, cfg = load_model(args.checkpoint, device, compile=args.compile)
    splits = open_eval_splits(Path(args.data), args.layout, model.classes)
    wanted = selected_splits(splits, args.splits)
    distance = initial_distance(splits, wanted[0])  # for classes without a prior
    ensure_pose_priors(model, splits)
    steps = {} if args.steps is None else {"steps": args.steps}
    estimator = PoseEstimator(pose_config({"distance": distance, **steps}, args.pose))
    settings = {"pose": dataclasses.asdict(estimator.cfg), "image_size": list(cfg.data.image_size),
                "protocols": list(protocols), "compiled": is_compiled(model.backbone),
                "priors": model.pose_priors.to_dict() if model.pose_priors is not None else None}  # fmt: skip
    chosen = {name: evenly_spaced(splits[name], args.max_per_split) for name in wanted}
    if fraction is not None:
        settings["occlude"] = list(fraction)
        chosen = {f"{name}-occluded": OccludedSplit(ds, fraction) for name, ds in chosen.items()}
    out = Path(args.out)

    hint = "rerun with --overwrite to recompute, or choose another --out"

    def cache_for(name, ds):
        return RecordCache(out / "cache" / f"{name}.jsonl", evaluation_key(args.checkpoint, ds, settings),
                           overwrite=args.overwrite, hint=hint)  # fmt: skip

    results, records = evaluate_splits(
        model, chosen, estimator, cache_for,
        tuple(cfg.data.image_size), protocols, args.batch_size,
        progress=lambda it, n, name: tqdm(it, total=n, desc=name, unit="batch"), num_workers=args.workers,
    )  # fmt: skip
    report = {"checkpoint": args.checkpoint, "data": args.data, "classes": model.classes, "initial_distance": distance,
              "class_temperature": model.class_temperature,
              "pose_preset": preset, "provenance": model.provenance,
              "protocols": {p: f"{PROTOCOLS[p].description}; pose settings: preset {preset}" for p in protocols},
              "splits": results[protocols[0]], "by_protocol": results}  # fmt: skip
    errors = {name: [r[protocols[0]]["pose_error"] for r in recs] for name, recs in records.items()}
    print(write_evaluation(out, report, errors))
    print(f"written to {out}/ (results.json, results.md, plots)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
