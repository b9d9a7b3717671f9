"""Evaluation throughput: images/s of classification and of pose evaluation on one split.

    python -m benchmarks.eval_throughput --checkpoint runs/x/last.pt --data data/synthetic-small \\
        [--split clean] [--pose-images 128] [--workers 0,4] [--protocols full,top2-classes]

Times ``classify_split`` (the robustness benchmark's classification pass) twice (the first pass
includes cuDNN and Triton autotuning) and ``evaluate_split`` (classification and render-and-compare
pose) once per DataLoader worker count and protocol (``--protocols``, each alone: "full" by default;
"top2-classes" estimates the pose under the two best classes, so the ratio of its rate to "full"'s is
what that protocol costs). Prints a table. Running several copies at
once shows what processes that share a machine cost each other; set ``OMP_NUM_THREADS`` to give
each its share of the cores.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import sys
import tempfile

import torch

from benchmarks.common import time_once
from novum3d.cli import command
from novum3d.device import select_device
from novum3d.evaluation.cache import RecordCache
from novum3d.evaluation.run import (
    chosen_protocols,
    ensure_pose_priors,
    evaluate_split,
    evenly_spaced,
    initial_distance,
    open_eval_splits,
)
from novum3d.evaluation.suite import classify_split
from novum3d.inference.loading import load_model
from novum3d.inference.pose import PoseConfig, PoseEstimator


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True, help="a synthetic data set")
    parser.add_argument("--split", default="clean")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pose-images", type=int, default=128, help="evenly spaced images for the pose rows")
    parser.add_argument("--workers", default="0,4", help="comma list of DataLoader worker counts for the pose rows")
    parser.add_argument("--protocols", default="full", help="comma list of evaluate.py protocols, each timed alone")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    protocols = chosen_protocols(args.protocols)  # before the model loads: a typo fails at once
    device = select_device(args.device)
    model, cfg = load_model(args.checkpoint, device, compile="off")
    splits = open_eval_splits(args.data, "synthetic", model.classes)
    ensure_pose_priors(model, splits)
    size = tuple(cfg.data.image_size)
    ds = splits[args.split]
    rows = []
    for k in range(2):
        seconds = time_once(lambda: classify_split(model, ds, size, args.batch_size))
        rows.append((f"classify_split, pass {k + 1}", len(ds), len(ds) / seconds))
    sub = evenly_spaced(ds, args.pose_images)
    estimator = PoseEstimator(PoseConfig(steps=30, distance=initial_distance(splits, args.split)))
    for protocol, workers in itertools.product(protocols, (int(w) for w in args.workers.split(","))):
        with tempfile.TemporaryDirectory() as tmp:
            cache = RecordCache(f"{tmp}/records.jsonl", {"workers": workers})
            run = functools.partial(
                evaluate_split, model, sub, estimator, cache, size, args.batch_size, num_workers=workers,
                protocols=(protocol,),
            )  # fmt: skip
            label = f"evaluate_split (pose, {protocol}), {workers} loader workers"
            rows.append((label, len(sub), len(sub) / time_once(run)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, {torch.get_num_threads()} torch threads, {args.split}, {size[0]}x{size[1]}\n")
    print("| pass | images | img/s |\n|---|---|---|")
    for label, n, rate in rows:
        print(f"| {label} | {n} | {rate:,.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
