"""The photograph command end to end: ``scripts/estimate_pose.py`` timed as a user runs it, and its
accuracy on a synthetic split through the same path.

    python -m benchmarks.estimate_pose --checkpoint runs/synthetic-small/last.pt [--images 256] [--batch 32]
        [--device auto] [--quality default,fast] [--template-cache on|off|auto] [--append FILE]
    python -m benchmarks.estimate_pose --checkpoint runs/synthetic-small/last.pt --accuracy data/synthetic-small
        [--split val] [--size 256] [--quality default,fast] [--pose key=value]

Speed: ``--images`` photographs of mixed sizes are written to a temporary folder (scikit-image's own
sample photographs, read from its package folder, cropped and resized at random, when scikit-image is
installed; noise images of random sizes otherwise; the first two are the 741x500 motorbike and the
451x300 cat). Then, per ``--quality``, the command runs four times, each a fresh process as a user
starts it: the first photograph with an empty template cache (cold), the same again (warm: templates
read from disk), all of them cold, and all of them warm. The table gives the command's wall time
(process start, imports and model loading included), the first photograph's time and the mean of the
others as the command prints them, the rate over the images (the command's own "N images in X s"),
template views rendered and the process's peak resident memory.

Accuracy: the split's images are read from their files, letterboxed to ``--size`` (default the
checkpoint's training size), given their annotated intrinsics through the letterbox, classified and
their poses estimated class by class (``pipeline.predict_by_class``), as the command does; the table
gives classification accuracy, Acc@pi/6, Acc@pi/18 and the median rotation error (pose under the
predicted class: evaluate.py's "full" protocol) and seconds per image, per ``--quality``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader

from benchmarks.common import emit, rate
from novum3d.cli import command
from novum3d.data.batch import images_to_device
from novum3d.device import select_device
from novum3d.evaluation.metrics import pose_errors, summary_block
from novum3d.evaluation.run import ensure_pose_priors, open_eval_splits
from novum3d.inference.loading import load_model
from novum3d.inference.photos import (
    QUALITY,
    PhotoSet,
    centred_intrinsics,
    check_input_size,
    collate_photos,
    content_cells,
)
from novum3d.inference.pipeline import predict_by_class
from novum3d.inference.pose import PoseEstimator, pose_config
from rendering import Pose, pascal3d_intrinsics

ROOT = Path(__file__).resolve().parents[1]
# scikit-image's bundled colour photographs (files in its package, never fetched), the motorbike first.
SAMPLES = ("motorcycle_left.png", "chelsea.png", "astronaut.png", "coffee.png", "rocket.jpg")


def sample_photographs() -> list[Image.Image]:
    """scikit-image's bundled colour photographs, or [] without scikit-image."""
    try:
        import skimage.data
    except ImportError:
        return []
    folder = Path(skimage.data.data_dir)
    return [Image.open(folder / name).convert("RGB") for name in SAMPLES if (folder / name).is_file()]


def write_photographs(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` JPEGs of mixed sizes in ``folder``: the samples as they are, then random crops (60-100%
    of each side) resized by 0.5-1.5; noise images of 100-800 pixels a side without scikit-image."""
    rng = random.Random(seed)
    samples = sample_photographs()
    paths = []
    for i in range(count):
        if samples:
            src = samples[i % len(samples)]
            if i >= len(samples):
                w, h = src.size
                cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
                x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
                s = rng.uniform(0.5, 1.5)
                src = src.crop((x, y, x + cw, y + ch)).resize((max(64, round(cw * s)), max(64, round(ch * s))))
        else:
            size = (rng.randint(100, 800), rng.randint(100, 800))
            src = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
        paths.append(folder / f"photo_{i:04d}_{src.size[0]}x{src.size[1]}.jpg")
        src.save(paths[-1], quality=90)
    return paths


def run_command(args: list[str]) -> dict:
    """One run of the command in a fresh process: wall seconds, peak RSS (GiB), the loop's seconds and
    templates rendered (parsed from its last line), and its per-image seconds (from summary.jsonl)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "estimate_pose.py"), *args], cwd=ROOT,
                                env=env, stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"estimate_pose.py {shlex.join(args)} failed ({proc.returncode}):\n{stderr[-2000:]}")
    out = Path(args[args.index("--out") + 1])
    records = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    seconds = [r["seconds"] for r in records]
    loop = re.search(r"(\d+) images in ([\d.]+) s .*templates rendered for (\d+) views", stderr)
    return {
        "wall": wall,
        "rss_gib": usage.ru_maxrss / 2**20,  # KiB on Linux
        "seconds": seconds,
        # Images wait for others of their predicted class, so the spread over classes sets the pose batches.
        "classes": len({r["class"] for r in records}),
        "loop": float(loop.group(2)) if loop else sum(seconds),
        "templates": int(loop.group(3)) if loop else None,
    }


def speed_rows(args, folder: Path, paths: list[Path]) -> list[str]:
    rows = [
        f"`python -m benchmarks.estimate_pose {shlex.join(sys.argv[1:])}` ({torch.get_num_threads()} threads, "
        f"{len(paths)} photographs, {'scikit-image samples' if sample_photographs() else 'noise images'})",
        "",
        "| quality | run | images | batch | command s | first image s | mean s per image after the first | "
        "images/s | predicted classes | template views rendered | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for quality in args.quality.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            cache = {"on": str(tmp / "templates"), "off": "off", "auto": "auto"}[args.template_cache]
            common = ["--checkpoint", args.checkpoint, "--batch", str(args.batch), "--device", args.device,
                      "--quality", quality, "--template-cache", cache]  # fmt: skip
            for name, images in (("cold", [paths[0]]), ("warm", [paths[0]]), ("cold", [folder]), ("warm", [folder])):
                if name == "cold":
                    for f in (*(tmp / "templates").glob("*"), *Path(f"{args.checkpoint}.templates").glob("*")):
                        f.unlink()
                r = run_command([*map(str, images), "--out", str(tmp / "out"), *common])
                n = len(r["seconds"])
                rest = r["seconds"][1:]
                rows.append(
                    f"| {quality} | {name} | {n} | {args.batch} | {r['wall']:.1f} | {r['seconds'][0]:.2f} | "
                    f"{sum(rest) / len(rest):.2f} | {rate(n / r['loop'])} | {r['classes']} | "
                    f"{'-' if r['templates'] is None else r['templates']} | {r['rss_gib']:.2f} |"
                    if rest
                    else f"| {quality} | {name} | 1 | {args.batch} | {r['wall']:.1f} | {r['seconds'][0]:.2f} | - | "
                    f"{rate(1 / r['loop'])} | {r['classes']} | - | {r['rss_gib']:.2f} |"
                )
                print(rows[-1], file=sys.stderr, flush=True)
    return rows


def photo_records(model, items, estimator: PoseEstimator, size, batch: int = 16, workers: int = 0) -> list[dict]:
    """Records ``{"id", "label", "predicted", "pose_error"}`` of data set items through the command's path:
    files decoded and letterboxed to ``size`` (h, w), annotated intrinsics through the letterbox, poses
    estimated class by class; in the items' order."""
    device = next(model.parameters()).device
    map_size = (size[0] // model.stride, size[1] // model.stride)
    loader = DataLoader(PhotoSet([it.image for it in items], size), batch_size=batch, num_workers=workers,
                        collate_fn=collate_photos)  # fmt: skip

    def batches():
        for b in loader:
            if b["errors"]:
                raise RuntimeError(f"unreadable images: {b['errors']}")
            Ks = []
            for i, box in zip(b["indices"], b["letterboxes"], strict=True):
                a = items[i].annotation
                K = box.intrinsics(pascal3d_intrinsics(a.focal, a.viewport, a.principal))
                K[:, :2] /= model.stride
                Ks.append(K)
            mask = content_cells(b["letterboxes"], map_size)
            yield (images_to_device(b["images"], device), torch.cat(Ks).to(device),
                   None if mask is None else mask.to(device), b["indices"])  # fmt: skip

    records = {}
    for indices, pred, _ in predict_by_class(model, batches(), estimator, batch):
        truth = Pose.from_mapping({k: torch.tensor([getattr(items[i].annotation, k) for i in indices])
                                   for k in ("azimuth", "elevation", "theta", "distance")})  # fmt: skip
        errors = pose_errors(pred.pose.to("cpu"), truth)
        for j, i in enumerate(indices):
            it = items[i]
            records[i] = {"id": f"{it.category}/{it.name}", "label": model.classes.index(it.category),
                          "predicted": int(pred.labels[j]), "pose_error": float(errors[j])}  # fmt: skip
    return [records[i] for i in range(len(items))]


def accuracy_rows(args, device: torch.device) -> list[str]:
    """The split through the command's path, one row per quality."""
    model, cfg = load_model(args.checkpoint, device, compile="off")
    splits = open_eval_splits(args.accuracy, "synthetic", model.classes)
    ensure_pose_priors(model, splits)
    items = splits[args.split].items
    if args.max_images:
        items = items[:: max(1, len(items) // args.max_images)][: args.max_images]
    size = check_input_size(args.size) if args.size else tuple(cfg.data.image_size)
    ann = items[0].annotation
    reference = float(centred_intrinsics(ann.focal, ann.viewport, size, downsample=model.stride)[0, 0, 0])
    rows = [
        f"`python -m benchmarks.estimate_pose {shlex.join(sys.argv[1:])}` ({len(items)} images of "
        f"{args.split}, input {size[1]}x{size[0]}, {torch.get_num_threads()} threads)",
        "",
        "| quality | images | accuracy % | Acc@pi/6 % | Acc@pi/18 % | median error deg | s per image |",
        "|---|---|---|---|---|---|---|",
    ]
    for quality in args.quality.split(","):
        estimator = PoseEstimator(pose_config(dict(QUALITY[quality]), args.pose), reference_focal=reference)
        start = time.perf_counter()
        records = photo_records(model, items, estimator, size, args.batch, args.workers)
        seconds = (time.perf_counter() - start) / len(records)
        s = summary_block(records)
        rows.append(
            f"| {quality} | {s['images']} | {100 * s['accuracy']:.1f} | {100 * s['acc_pi_6']:.1f} | "
            f"{100 * s['acc_pi_18']:.1f} | {s['median_error_deg']:.1f} | {seconds:.2f} |"
        )
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--images", type=int, default=256, help="photographs of mixed sizes for the folder runs")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quality", default="default,fast", help=f"comma list of {sorted(QUALITY)}")
    parser.add_argument(
        "--template-cache", default="on", choices=["on", "off", "auto"],
        help="on: a fresh folder (emptied before each cold run); off; auto: the command's default, whose "
        "folder beside the checkpoint is emptied before each cold run",
    )  # fmt: skip
    parser.add_argument("--accuracy", default=None, metavar="DATA", help="a synthetic data set: measure accuracy")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-images", type=int, default=None, help="evenly spaced images of the split")
    parser.add_argument("--size", type=int, nargs="+", default=None, help="input HEIGHT WIDTH for --accuracy")
    parser.add_argument("--workers", type=int, default=2, help="loader processes for --accuracy")
    parser.add_argument("--pose", action="append", default=[], help="key=value PoseConfig fields for --accuracy")
    parser.add_argument("--append", default=None, help="also append the table to this Markdown file")
    args = parser.parse_args(argv)
    unknown = [q for q in args.quality.split(",") if q not in QUALITY]
    if unknown:
        parser.error(f"--quality: unknown {unknown}; expected some of {sorted(QUALITY)}")
    if args.accuracy:
        rows = accuracy_rows(args, select_device(args.device))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "photos"
            folder.mkdir()
            rows = speed_rows(args, folder, write_photographs(folder, args.images))
    emit("\n".join(rows), args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
