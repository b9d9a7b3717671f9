#!/usr/bin/env python3
"""Train NOVUM: backbone + neural object volumes, contrastive loss, momentum-updated volumes.

    python scripts/train.py configs/synthetic-small.yaml                    # CPU demo
    python scripts/train.py configs/cube.yaml data.root=data/PASCAL3D ...  # paper setup
    torchrun --nproc_per_node=4 scripts/train.py configs/cube.yaml         # several GPUs
    python scripts/train.py configs/cube.yaml --resume                     # continue out_dir/last.pt

Overrides are key.sub=value pairs (values parsed as YAML), e.g. optim.epochs=2 train.out_dir=runs/x.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.distributed as dist

from novum3d.config import ConfigError, load_experiment
from novum3d.data.pascal3d import DataError
from novum3d.train.trainer import CheckpointError, Trainer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="experiment YAML, e.g. configs/cube.yaml")
    parser.add_argument("overrides", nargs="*", help="key.sub=value")
    parser.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/last.pt")
    args = parser.parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        cfg = load_experiment(args.config, args.overrides)
        if distributed:
            backend = "nccl" if torch.cuda.is_available() and cfg.train.device != "cpu" else "gloo"
            dist.init_process_group(backend)
        trainer = Trainer(cfg, resume=args.resume)
        history = trainer.fit()
    except (ConfigError, DataError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
    if history and trainer.rank == 0:
        last = history[-1]
        acc = last.get("val_accuracy")
        print(
            f"done: {last['epoch']} epochs, loss {last['loss']:.3f}"
            + (f", val accuracy {acc:.3f}" if acc is not None else "")
            + f"; checkpoint {trainer.out / 'last.pt'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
