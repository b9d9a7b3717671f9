"""Training throughput: images/s of NOVUM train steps, with and without the data loader.

    python -m benchmarks.train_throughput configs/cube.yaml data.root=data/synthetic-full --steps 20
    python -m benchmarks.train_throughput configs/cube.yaml model.backbone=timm:vit_small_patch14_dinov2 \
        model.freeze_trunk=true ...                      # a frozen DINOv2 ViT-S/14 with the DPT head

The backbone is compiled as ``model.compile`` says (auto: on CUDA; the first warm-up step compiles
it). Times (1) whole steps on batches already in memory (compute only), (2) the parts of one step
(backbone forward+backward, correspondences, loss), both through torch.utils.benchmark's Timer
with fixed counts (every rank under torchrun runs the same collectives), and (3) one pass of
``--steps`` steps fed by the configured DataLoader, timed from the epoch's second batch (the first
batch and its step are reported apart), with the time spent waiting for the loader; also (4) the
same count of distinct batches held in memory. The training split needs ``--steps`` + 1 batches.
Prints a table with the device; ``--append FILE`` appends it to a Markdown file.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time

import torch

from benchmarks.common import emit, time_call, time_once
from novum3d.config import load_experiment
from novum3d.data.batch import batch_cameras, images_to_device
from novum3d.model.backbone import normalize_images
from novum3d.train.correspondence import find_correspondences
from novum3d.train.loss import contrastive_loss
from novum3d.train.trainer import Trainer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--steps", type=int, default=20, help="steps of the DataLoader-fed pass")
    parser.add_argument("--append", default="", metavar="FILE", help="also append the table to this Markdown file")
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
    reps = max(1, args.steps // len(batches))
    step_s = time_call(lambda: [trainer.train_step(b) for b in batches], warmup=0, number=reps) / len(batches)

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
        "backbone fwd+bwd": time_call(backbone, warmup=0, number=5),
        "correspondences": time_call(
            lambda: find_correspondences(v, maps.detach(), labels, vm, Ks), warmup=0, number=5
        ),
        "loss fwd+bwd": time_call(loss, warmup=0, number=5),
    }
    # Distinct batches in memory (epoch 1), then the same count fed by the loader (epoch 2): the
    # in-memory rate above repeats 4 batches, and a gap between it and the loader-fed rate could come
    # from new batches (new correspondence counts, allocator) as well as from the loader.
    distinct = [b for _, b in zip(range(args.steps), trainer.train_loader(1), strict=False)]
    distinct_s = time_once(lambda: [trainer.train_step(b) for b in distinct]) / len(distinct)
    n, waits = 0, []
    # One pass, not repeats: what is measured is the loader keeping up over consecutive steps of an
    # epoch (its workers, prefetching, pinned copies), which a repeat would restart. The clock starts
    # once the epoch's first batch has been trained on: the trainer's workers persist across epochs,
    # but each epoch's prefetch queue starts empty; that first wait is reported apart. Batches come
    # as the trainer's fit() takes them (Trainer.epoch_batches: on CUDA copied one batch ahead).
    batches = iter(trainer.epoch_batches(2))

    def loader_steps():
        nonlocal n
        for _ in range(args.steps):
            start = time.perf_counter()
            b = next(batches, None)
            waits.append(time.perf_counter() - start)
            if b is None:
                break
            trainer.train_step(b)  # ends by reading the loss: the step is done when it returns
            n += b["image"].shape[0] * world

    first_batch = time_once(lambda: trainer.train_step(next(batches)))
    seconds = time_once(loader_steps)
    loader_rate = n / seconds
    wait_ms = 1000 * sum(waits) / max(len(waits), 1)
    if trainer.rank != 0:
        return 0

    name = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    name = f"{world} x {name}" if world > 1 else name
    H, W = cfg.data.image_size
    launcher = f"torchrun --nproc_per_node={world}" if world > 1 else "python"
    lines = [
        f"### Training throughput, {name} ({datetime.date.today().isoformat()})",
        "",
        f"{cfg.model.backbone} ({type(trainer.model.backbone.decoder).__name__}"
        f"{', trunk frozen' if cfg.model.freeze_trunk else ''}), "
        f"D={cfg.model.feature_dim}, {H}x{W}, batch {B}, {len(trainer.model.classes)} classes x "
        f"{int(v.valid.sum(1).max())} Gaussians, bank {v.bank.shape[0]}, bf16 autocast {trainer.amp}, "
        f"compiled backbone {trainer.compiled} (model.compile {cfg.model.compile}), "
        f"{len(corr.batch_ids)} correspondences in the timed batch. torch {torch.__version__}. "
        f"Command: `{launcher} -m benchmarks.train_throughput {shlex.join([args.config, *args.overrides])}`",
        "",
        f"{world} process(es); the parts below are one rank's." if world > 1 else "",
        "",
        "| measure | value |",
        "|---|---|",
        f"| train step, batches in memory | {B / step_s:,.1f} img/s ({step_s * 1000:.0f} ms/step) |",
        f"| train steps on {len(distinct)} distinct batches in memory | {B / distinct_s:,.1f} img/s |",
        f"| train steps fed by the DataLoader ({cfg.data.num_workers} workers, {n // B} steps) "
        f"| {loader_rate:,.1f} img/s |",
        f"| of which waiting for the loader | {wait_ms:.1f} ms/step |",
        f"| the epoch's first batch and its step (not in the rate) | {first_batch:.2f} s |",
    ]
    if world > 1:
        lines += [
            f"| per process, batches in memory | {B / world / step_s:,.1f} img/s |",
            f"| per process, fed by the DataLoader | {loader_rate / world:,.1f} img/s |",
        ]
    lines += [f"| {k} (one batch) | {s * 1000:.1f} ms |" for k, s in parts.items()]
    text = "\n".join(lines)
    emit(text, args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
