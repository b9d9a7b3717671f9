#!/usr/bin/env python3
"""Inference speed: geometry-free classification and render-and-compare pose estimation.

    python benchmarks/inference.py [--batch 64] [--pose-images 64]

Classification: ResNet-50 + heads (random weights: speed does not depend on them) at 640x800,
bf16 on CUDA, plus the class scores against 12 x 1100 Gaussians and a 2560-vector bank.
Pose: the paper's settings (12 x 4 x 3 templates, top 3 hypotheses, 30 Adam steps) on 80x100
oracle feature maps (a 128-d volume rendered at known poses, noised, 40% of the object replaced
by background), batched against one image at a time, with the accuracy of both so that speed is
not bought with accuracy. Prints a table and appends it to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit, rate, sync
from novum3d.config import ExperimentConfig
from novum3d.inference.classify import class_scores
from novum3d.inference.pose import PoseConfig, PoseEstimator
from novum3d.model.backbone import normalize_images
from novum3d.model.novum import NOVUM
from rendering import (
    cuboid_volume,
    pascal3d_intrinsics,
    pose_to_viewmat,
    rasterize_features,
    rotation_error,
    rotation_from_pose,
)


def classification_rate(device, batch: int, reps: int = 5) -> float:
    model = NOVUM(ExperimentConfig()).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    images = torch.rand(batch, 3, 640, 800, device=device)
    v = model.volumes

    def run():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            maps = model.backbone(normalize_images(images).contiguous(memory_format=torch.channels_last))
            class_scores(maps.float(), v.features, v.valid, v.bank).argmax(1)

    run()
    sync(device.type)
    t = time.perf_counter()
    for _ in range(reps):
        run()
    sync(device.type)
    return batch * reps / (time.perf_counter() - t)


def oracle(device, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    vol = cuboid_volume((0.8, 1.8, 0.6), 1100).to(device)
    feats = F.normalize(torch.randn(len(vol), 128, generator=g), dim=-1).to(device)
    bank = F.normalize(torch.randn(2560, 128, generator=g), dim=-1).to(device)
    K = pascal3d_intrinsics(1.0, 3000.0, (400.0, 320.0), downsample=8).to(device)
    az = torch.rand(n, generator=g) * 2 * math.pi
    el = torch.deg2rad(torch.rand(n, generator=g) * 40 - 8)
    th = torch.deg2rad(torch.rand(n, generator=g) * 16 - 8)
    dist = 10.0 * (0.9 + 0.2 * torch.rand(n, generator=g))
    vm = pose_to_viewmat(az, el, th, dist).to(device)
    out = rasterize_features(vol.means, vol.quats, vol.scales, vol.opacities, feats, vm, K.expand(n, 3, 3), 100, 80,
                             with_depth=False)  # fmt: skip
    maps = F.normalize(out.features + 0.1 * torch.randn(out.features.shape, generator=g).to(device), dim=-1)
    bg = bank[torch.randint(len(bank), (n, 80, 100), generator=g).to(device)]
    obj = out.alpha > 0.5
    hide = obj & (torch.rand(n, 80, 100, generator=g).to(device) < 0.4)
    maps = torch.where((~obj | hide)[..., None], bg, maps).permute(0, 3, 1, 2).contiguous()
    return vol, feats, bank, K, maps, (az, el, th)


def pose_run(estimator, vol, feats, bank, K, maps, truth, batch):
    n = maps.shape[0]
    results = []
    sync(maps.device)
    t = time.perf_counter()
    for s in range(0, n, batch):
        r = estimator.estimate(
            maps[s : s + batch], vol, feats, bank, K.expand(min(batch, n - s), 3, 3), class_key="car"
        )
        results.append(r)
    sync(maps.device)
    per_s = n / (time.perf_counter() - t)
    az, el, th = (torch.cat([getattr(r, k) for r in results]).cpu() for k in ("azimuth", "elevation", "theta"))
    err = rotation_error(rotation_from_pose(az, el, th), rotation_from_pose(*truth))
    return per_s, float((err < math.pi / 6).float().mean()), float(torch.rad2deg(err).median())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64, help="classification batch")
    parser.add_argument("--pose-images", type=int, default=64)
    parser.add_argument("--pose-batch", type=int, default=64)
    parser.add_argument("--out", default="BENCHMARKS.md")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cls = classification_rate(device, args.batch)
    vol, feats, bank, K, maps, truth = oracle(device, args.pose_images)
    est = PoseEstimator(PoseConfig(distance=10.0))
    pose_run(est, vol, feats, bank, K, maps[:2], tuple(t[:2] for t in truth), 2)  # warm-up and template cache
    batched = pose_run(est, vol, feats, bank, K, maps, truth, args.pose_batch)
    single = pose_run(est, vol, feats, bank, K, maps, truth, 1)
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    lines = [
        f"### Inference speed, {name} ({datetime.date.today().isoformat()})",
        "",
        f"Command: `python benchmarks/inference.py --batch {args.batch} --pose-images {args.pose_images} "
        f"--pose-batch {args.pose_batch}`. torch {torch.__version__}.",
        "",
        "| task | setting | img/s | Acc@pi/6 | median error deg |",
        "|---|---|---|---|---|",
        f"| classification (ResNet-50 + class scores, 640x800) | batch {args.batch} | {rate(cls)} | - | - |",
        f"| pose (12x4x3 templates, top 3, 30 steps, 80x100, 1100 Gaussians) | batch {args.pose_batch} | "
        f"{rate(batched[0])} | {100 * batched[1]:.1f}% | {batched[2]:.2f} |",
        f"| pose, same | batch 1 | {rate(single[0])} | {100 * single[1]:.1f}% | {single[2]:.2f} |",
    ]
    text = "\n".join(lines)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
