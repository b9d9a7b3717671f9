#!/usr/bin/env python3
"""Classify images and estimate the 3D pose of their object with a trained NOVUM model.

    python scripts/estimate_pose.py img.jpg [more.jpg | a_folder ...] --checkpoint runs/cube/last.pt [--visualize]

Prints one line per image and writes <out>/<image>.json (class, class scores, azimuth,
elevation, theta in degrees and radians, distance, pose score, seconds); with --visualize also
<out>/<image>.png. Images follow the preprocessed PASCAL3D+ convention: the object near the
centre, focal 1 and viewport 3000 unless --focal/--viewport say otherwise. A bad image is
reported and skipped; the exit code is 1 if any image failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch

from novum3d.cli import command, select_device
from novum3d.data.pascal3d import IMAGE_EXTENSIONS, load_rgb
from novum3d.errors import DataError, Novum3DError
from novum3d.inference.checkpoint import load_model
from novum3d.inference.pipeline import predict
from novum3d.inference.pose import PoseConfig, PoseEstimator
from novum3d.inference.visualize import correspondence_map, pose_figure, volume_silhouette
from rendering import pascal3d_intrinsics
from rendering.backends import gsplat_available

MIN_SIDE = 64


def image_paths(items: list[str]) -> list[Path]:
    """The images named, folders expanded to the images they hold (a folder without any is an error)."""
    paths = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in IMAGE_EXTENSIONS)
            if not found:
                raise Novum3DError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder", path=p)
            paths += found
        else:
            paths.append(p)
    return paths


@contextlib.contextmanager
def stage(what: str):
    """Print what is being done (stderr) and, when it took over a second, how long it took."""
    print(f"{what} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    if (seconds := time.perf_counter() - start) > 1:
        print(f"  done in {seconds:.1f} s", file=sys.stderr, flush=True)


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--checkpoint", required=True, help="a training checkpoint (last.pt)")
    parser.add_argument("--out", default="outputs/poses", help="folder for JSON (and PNG) results")
    parser.add_argument("--visualize", action="store_true")
    parser.add_argument("--class", dest="category", default=None, help="skip classification: the object's class")
    parser.add_argument("--focal", type=float, default=1.0)
    parser.add_argument("--viewport", type=float, default=3000.0)
    parser.add_argument(
        "--distance", type=float, default=None, help="initial distance (default: the class's training median)"
    )
    parser.add_argument("--steps", type=int, default=30, help="refinement steps")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    device = select_device(args.device)
    with stage(f"loading {args.checkpoint}"):
        model, _ = load_model(args.checkpoint, device)
    if device.type == "cuda":
        # The first use of gsplat on a machine compiles its CUDA kernels; say so instead of hanging silently.
        with stage("loading gsplat's CUDA kernels (the first use on a machine compiles them, about 70 s)"):
            if not gsplat_available():
                print("  gsplat is not usable here; rendering with the slower PyTorch backend", file=sys.stderr)
    if args.category is not None and args.category not in model.classes:
        raise Novum3DError(
            f"--class {args.category!r} is not one of the model's classes {model.classes}", field="--class"
        )
    cfg = PoseConfig(steps=args.steps)  # each class starts from its pose prior (saved by training)
    estimator = PoseEstimator(cfg)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in image_paths(args.images):
        start = time.perf_counter()
        try:
            image = load_rgb(path)
            h, w = image.shape[-2:]
            if min(h, w) < MIN_SIDE:
                raise DataError(f"{path}: image is {w}x{h}; need at least {MIN_SIDE} pixels a side")
        except DataError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failures += 1
            continue
        K_img = pascal3d_intrinsics(args.focal, args.viewport, (w / 2, h / 2))[0]
        K_map = pascal3d_intrinsics(args.focal, args.viewport, (w / 2, h / 2), downsample=model.stride)
        labels = None if args.category is None else torch.tensor([model.classes.index(args.category)])
        pred = predict(model, image[None].to(device), K_map.to(device), estimator, labels, distance=args.distance)
        y = int(pred.labels[0])
        pose = {k: float(getattr(pred.pose, k)[0]) for k in ("azimuth", "elevation", "theta", "distance")}
        record = {
            "image": str(path),
            "class": model.classes[y],
            "class_scores": {c: round(float(s), 5) for c, s in zip(model.classes, pred.class_scores[0], strict=True)},
            "class_probabilities": {
                c: round(float(p), 5) for c, p in zip(model.classes, pred.probabilities[0], strict=True)
            },
            "pose_radians": pose,
            "pose_degrees": {k: math.degrees(v) for k, v in pose.items() if k != "distance"},
            "distance": pose["distance"],
            "pose_score": float(pred.pose.score[0]),
            "seconds": time.perf_counter() - start,
        }
        (out / f"{path.stem}.json").write_text(json.dumps(record, indent=2))
        deg = record["pose_degrees"]
        print(
            f"{path.name}: {record['class']} (p={record['class_probabilities'][record['class']]:.2f}) "
            f"azimuth {deg['azimuth']:.1f} elevation {deg['elevation']:.1f} theta {deg['theta']:.1f} deg, "
            f"distance {pose['distance']:.2f}, score {record['pose_score']:.3f}, {record['seconds']:.1f} s"
        )
        if args.visualize:
            k = model.volumes.count(y)
            vol = model.volumes.volume(y)
            with torch.no_grad():
                maps = model(image[None].to(device))
            sil = volume_silhouette(vol, pose, K_img, (h, w))
            corr = correspondence_map(maps[0].float().cpu(), vol.to("cpu"), model.volumes.features[y, :k].cpu(),
                                      model.volumes.bank.cpu())  # fmt: skip
            pose_figure(image, sil, corr, f"{record['class']}  az {deg['azimuth']:.0f}  el {deg['elevation']:.0f}"
                        f"  th {deg['theta']:.0f}").save(out / f"{path.stem}.png")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
