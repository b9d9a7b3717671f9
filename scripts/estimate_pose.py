#!/usr/bin/env python3
"""Classify images and estimate the 3D pose of their object with a trained NOVUM model.

    python scripts/estimate_pose.py img.jpg [more.jpg | a_folder ...] --checkpoint runs/cube/last.pt [--visualize]

Prints one line per image and writes <out>/<image>.json (class, class scores, azimuth, elevation,
theta in degrees and radians, distance, pose score, seconds, the camera) and the same records, one
line each in the order they finish, to <out>/summary.jsonl; with --visualize also <out>/<image>.png.
Images follow the preprocessed PASCAL3D+ convention: the object near the centre, focal 1 and
viewport 3000 unless --focal/--viewport say otherwise. Each image is letterboxed (aspect kept,
padded) to the model's input size (the checkpoint's training size, or --size) with its intrinsics
changed to match, so the pose is reported in the original image's camera and one set of pose
templates per class serves every image. On the CPU templates are kept on disk beside the checkpoint
(--template-cache), so a second run starts warm. --batch N images go through the backbone together,
and each image's pose is estimated with the next images of its class (up to N at once). A bad image
is reported and skipped; the exit code is 1 if any image failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from novum3d.checkpoint import file_digest
from novum3d.cli import command
from novum3d.data.batch import images_to_device
from novum3d.device import select_device
from novum3d.errors import Novum3DError
from novum3d.inference.loading import load_model
from novum3d.inference.photos import (
    QUALITY,
    PhotoSet,
    centred_intrinsics,
    check_input_size,
    collate_photos,
    content_cells,
    find_images,
    load_image,
    original_camera,
    photo_intrinsics,
    prediction_figure,
    prediction_record,
    summary_line,
    warm_up,
)
from novum3d.inference.pipeline import predict_by_class
from novum3d.inference.pose import PoseEstimator, TemplateStore, pose_config
from rendering.backends import gsplat_available


@contextlib.contextmanager
def stage(what: str):
    """Print what is being done (stderr) and, when it took over a second, how long it took."""
    print(f"{what} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    yield
    if (seconds := time.perf_counter() - start) > 1:
        print(f"  done in {seconds:.1f} s", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--checkpoint", required=True, help="a training checkpoint (last.pt)")
    parser.add_argument("--out", default="outputs/poses", help="folder for JSON (and PNG) results")
    parser.add_argument("--visualize", action="store_true")
    parser.add_argument("--class", dest="category", default=None, help="skip classification: the object's class")
    parser.add_argument("--focal", type=float, default=1.0)
    parser.add_argument("--viewport", type=float, default=3000.0)
    parser.add_argument(
        "--distance", type=float, default=None,
        help="initial distance in the image's camera (default: the class's training median; a given one "
        "renders templates per image size)",
    )  # fmt: skip
    parser.add_argument("--steps", type=int, default=None, help="refinement steps (default: the quality's, 30)")
    parser.add_argument(
        "--quality", choices=sorted(QUALITY), default="default",
        help="fast: 15 refinement steps, pruned after 5, one template hypothesis fewer (about half the "
        "refinement's renders)",
    )  # fmt: skip
    parser.add_argument(
        "--size", type=int, nargs="+", default=None, metavar="SIDE",
        help="model input HEIGHT WIDTH (or one side), multiples of 32 (default: the checkpoint's training size)",
    )  # fmt: skip
    parser.add_argument("--batch", type=int, default=8, help="images per forward and per pose estimate")
    parser.add_argument(
        "--workers", type=int, default=None,
        help="loader processes decoding and letterboxing ahead (default for several images: half the cores, "
        "1 to 4; for one image: 0)",
    )  # fmt: skip
    parser.add_argument(
        "--template-cache", default="auto", metavar="DIR",
        help="folder for pose templates kept between runs, or 'off' (default auto: <checkpoint>.templates on "
        "the CPU, none on CUDA, where gsplat renders a class's templates faster than they are read back)",
    )  # fmt: skip
    parser.add_argument(
        "--class-candidates",
        type=int,
        default=1,
        help="estimate the pose under this many best classes and keep the best-scoring pose and its class "
        "(2: twice the pose renders; on one occlusion-augmented model it lifted L3 classification by 7.8 points "
        "and pose by 2.3; ignored with --class)",
    )
    parser.add_argument(
        "--pose",
        action="append",
        default=[],
        help="key=value: a PoseConfig field (repeatable), e.g. ranking=inliers, or preset=authors (GenIntel/NOVUM's "
        "settings; nemo: NeMo's)",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--compile",
        # Off by default here, unlike evaluation: a compile takes far longer than the few images a
        # photograph command usually runs.
        default="off",
        choices=["auto", "on", "off"],
        help="torch.compile the backbone (auto = on CUDA; default off: a compile pays only over many images)",
    )
    args = parser.parse_args(argv)
    if args.class_candidates < 1:
        parser.error(f"--class-candidates: expected >= 1, got {args.class_candidates}")
    if args.batch < 1:
        parser.error(f"--batch: expected >= 1, got {args.batch}")
    if args.workers is not None and args.workers < 0:
        parser.error(f"--workers: expected >= 0, got {args.workers}")
    return args


def template_store(args: argparse.Namespace, device: torch.device) -> TemplateStore | None:
    # On CUDA a class's 684 templates render in tens of milliseconds (gsplat, about 37k views/s forward on
    # an H100), less than reading back their 0.2-1.4 GB; on a CPU they take seconds to render.
    if args.template_cache == "off" or (args.template_cache == "auto" and device.type == "cuda"):
        return None
    folder = Path(f"{args.checkpoint}.templates" if args.template_cache == "auto" else args.template_cache)
    return TemplateStore(folder, file_digest(args.checkpoint), warn=lambda line: print(line, file=sys.stderr))


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Checked before the model loads: a bad field is a one-line error naming --pose.
    fields = dict(QUALITY[args.quality]) | ({} if args.steps is None else {"steps": args.steps})
    pose_cfg = pose_config(fields, args.pose)
    size = None if args.size is None else check_input_size(args.size)
    device = select_device(args.device)
    with stage(f"loading {args.checkpoint}"):
        model, cfg = load_model(args.checkpoint, device, compile=args.compile)
        store = template_store(args, device)
    size = size or tuple(cfg.data.image_size)
    if device.type == "cuda":
        # The first use of gsplat on a machine compiles its CUDA kernels; say so instead of hanging silently.
        with stage("loading gsplat's CUDA kernels (the first use on a machine compiles them, about 70 s)"):
            if not gsplat_available():
                print("  gsplat is not usable here; rendering with the slower PyTorch backend", file=sys.stderr)
    label = None
    if args.category is not None:
        if args.category not in model.classes:
            raise Novum3DError(
                f"--class {args.category!r} is not one of the model's classes {model.classes}", field="--class"
            )
        label = model.classes.index(args.category)
    # Templates at the input's own focal length: each image scores them with its distances scaled by its
    # letterbox scale (PoseEstimator's reference_focal), so one set per class serves every image size.
    reference = float(centred_intrinsics(args.focal, args.viewport, size, downsample=model.stride)[0, 0, 0])
    estimator = PoseEstimator(pose_cfg, reference_focal=reference, store=store)
    if device.type == "cuda":
        # Blank batches, full and letterboxed, through the whole path: CUDA kernels load, Triton tunes, cuBLAS
        # and gsplat set up here rather than in the first photograph's time (1.2 s of it on an H100).
        with stage(f"warming up on {device} at {size[1]}x{size[0]}"):
            warm_up(model, estimator, size, args.batch, args.focal, args.viewport, label)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = find_images(args.images)
    cores = os.cpu_count() or 1
    workers = args.workers if args.workers is not None else (min(4, max(1, cores // 2)) if len(paths) > 1 else 0)
    loader = DataLoader(PhotoSet(paths, size), batch_size=args.batch, num_workers=workers,
                        collate_fn=collate_photos, pin_memory=device.type == "cuda")  # fmt: skip
    progress = tqdm(total=len(paths), unit="img", disable=len(paths) < 2, file=sys.stderr, dynamic_ncols=True)
    failures = 0
    summary = (out / "summary.jsonl").open("w")

    def batches():
        nonlocal failures
        for batch in loader:
            for index, error in batch["errors"]:
                failures += 1
                progress.write(f"error: {error}", file=sys.stderr)
                summary.write(json.dumps({"image": str(paths[index]), "error": error}) + "\n")
                progress.update()
            if batch["images"] is None:
                continue
            images = images_to_device(batch["images"], device)
            boxes = batch["letterboxes"]
            Ks = torch.cat([photo_intrinsics(b, args.focal, args.viewport, model.stride) for b in boxes])
            map_size = (size[0] // model.stride, size[1] // model.stride)
            mask = content_cells(boxes, map_size)
            tags = list(zip(batch["indices"], boxes, strict=True))
            yield images, Ks.to(device), None if mask is None else mask.to(device), tags

    start = time.perf_counter()
    done = 0
    with summary:
        for tags, pred, seconds in predict_by_class(model, batches(), estimator, args.batch, label, args.distance,
                                                    args.class_candidates):  # fmt: skip
            pred.pose = pred.pose.to("cpu")
            for i, ((index, box), sec) in enumerate(zip(tags, seconds, strict=True)):
                path = paths[index]
                record = prediction_record(path, model.classes, pred, sec, i,
                                           original_camera(box, args.focal, args.viewport), box)  # fmt: skip
                (out / f"{path.stem}.json").write_text(json.dumps(record, indent=2))
                summary.write(json.dumps(record) + "\n")
                progress.write(summary_line(record), file=sys.stdout)
                progress.update()
                done += 1
                if args.visualize:
                    image = load_image(path)
                    K_image = centred_intrinsics(args.focal, args.viewport, tuple(image.shape[-2:]))
                    prediction_figure(model, image, pred, K_image, i).save(out / f"{path.stem}.png")
    progress.close()
    if done > 1:
        elapsed = time.perf_counter() - start
        print(f"{done} images in {elapsed:.1f} s ({elapsed / done:.2f} s each); templates rendered for "
              f"{estimator.rendered['template']} views"
              + (f", {store.stats['loaded']} sets read from {store.folder}" if store is not None else ""),
              file=sys.stderr)  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
