#!/usr/bin/env python3
"""Training throughput: images/s of NOVUM train steps, with and without the data loader.

    python benchmarks/train_throughput.py configs/cube.yaml data.root=data/synthetic-full --steps 20

Times (1) whole steps on batches already in memory (compute only), (2) the parts of one step
(backbone forward+backward, correspondences, loss, volume and bank updates), and (3) steps fed
by the configured DataLoader. Prints a table and appends it to BENCHMARKS.md with the device.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit, sync
from novum3d.config import load_experiment
from novum3d.data.batch import batch_cameras, images_to_device
from novum3d.model.backbone import normalize_images
from novum3d.train.correspondence import find_correspondences
from novum3d.train.loss import contrastive_loss
from novum3d.train.trainer import Trainer


def timed(fn, device, reps: int) -> float:
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default="BENCHMARKS.md")
    args = parser.parse_args()
    cfg = load_experiment(args.config, [*args.overrides, "train.out_dir=/tmp/novum3d-bench"])
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # under torchrun: optim.batch_size is the global batch, split over ranks
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    trainer = Trainer(cfg, quiet=True)
    dev = trainer.device
    loader = trainer.train_loader(0)
    batches = [b for _, b in zip(range(min(4, len(loader))), loader, strict=False)]
    B = batches[0]["image"].shape[0] * world  # global batch
    for b in batches[:2]:
        trainer.train_step(b)  # warm-up: cuDNN autotuning, allocator
    step_s = timed(lambda: [trainer.train_step(b) for b in batches], dev, max(1, args.steps // len(batches))) / len(
        batches
    )

    batch = batches[0]
    images = images_to_device(batch["image"], dev)
    vm, Ks = batch_cameras(batch, trainer.model.stride, dev)
    labels = batch["label"].to(dev)
    v = trainer.model.volumes

    def backbone():
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=trainer.amp):
            maps = trainer.backbone(normalize_images(images))
        maps.float().sum().backward()

    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=trainer.amp):
        maps = trainer.backbone(normalize_images(images)).float().detach().requires_grad_(True)
    corr = find_correspondences(v, maps, labels, vm, Ks)

    def loss():
        out = contrastive_loss(
            corr.features, corr.class_ids, corr.gauss_ids, v.features, v.valid, trainer.neighbors, v.bank, cfg.loss
        )
        out.backward(retain_graph=True)

    parts = {
        "backbone fwd+bwd": timed(backbone, dev, 5),
        "correspondences": timed(lambda: find_correspondences(v, maps.detach(), labels, vm, Ks), dev, 5),
        "loss fwd+bwd": timed(loss, dev, 5),
    }
    t = time.perf_counter()
    n = 0
    for i, b in enumerate(trainer.train_loader(1)):
        if i >= args.steps:
            break
        trainer.train_step(b)
        n += b["image"].shape[0] * world
    sync(dev)
    loader_rate = n / (time.perf_counter() - t)
    if trainer.rank != 0:
        return 0

    name = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    name = f"{world} x {name}" if world > 1 else name
    H, W = cfg.data.image_size
    lines = [
        f"### Training throughput, {name} ({datetime.date.today().isoformat()})",
        "",
        f"{cfg.model.backbone}, D={cfg.model.feature_dim}, {H}x{W}, batch {B}, {len(trainer.model.classes)} classes x "
        f"{int(v.valid.sum(1).max())} Gaussians, bank {v.bank.shape[0]}, bf16 autocast {trainer.amp}, "
        f"{len(corr.batch_ids)} correspondences in the timed batch. torch {torch.__version__}. "
        f"Command: `python benchmarks/train_throughput.py {args.config} {' '.join(args.overrides)}`",
        "",
        f"{world} process(es); the parts below are one rank's." if world > 1 else "",
        "",
        "| measure | value |",
        "|---|---|",
        f"| train step, batches in memory | {B / step_s:,.1f} img/s ({step_s * 1000:.0f} ms/step) |",
        f"| train steps fed by the DataLoader ({cfg.data.num_workers} workers) | {loader_rate:,.1f} img/s |",
    ]
    lines += [f"| {k} (one batch) | {s * 1000:.1f} ms |" for k, s in parts.items()]
    text = "\n".join(lines)
    emit(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
