"""The command line shared by scripts/train.py and scripts/train_baseline.py."""

from __future__ import annotations

import argparse
import os

import torch
import torch.distributed as dist

from ..cli import command
from ..config import load_experiment
from .trainer import Trainer


@command
def train_main(argv: list[str] | None, description: str, trainer_cls: type[Trainer], config_cls: type) -> int:
    """Parse ``config [key=value ...] [--resume]``, train (DDP under torchrun), print a summary.

    Returns the exit code: 0, or 2 with a one-line error for bad configs, data or checkpoints.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="experiment YAML under configs/")
    parser.add_argument("overrides", nargs="*", help="key.sub=value")
    parser.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/last.pt")
    args = parser.parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    try:
        cfg = load_experiment(args.config, args.overrides, cls=config_cls)
        if distributed:
            backend = "nccl" if torch.cuda.is_available() and cfg.train.device != "cpu" else "gloo"
            dist.init_process_group(backend)
        trainer = trainer_cls(cfg, resume=args.resume)
        history = trainer.fit()
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
