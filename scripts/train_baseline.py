#!/usr/bin/env python3
"""Train a baseline classifier (ResNet-50, ConvNeXt-T, ViT-B/16) on the data NOVUM trains on.

    python scripts/train_baseline.py configs/baseline-resnet50.yaml [key.sub=value ...] [--resume]
    torchrun --nproc_per_node=2 scripts/train_baseline.py configs/baseline-resnet50.yaml

The same trainer as scripts/train.py: same data order for a seed, checkpoints each epoch
(last.pt, previous.pt), metrics.jsonl, validation accuracy, bf16 on CUDA; cross-entropy loss.
"""

from __future__ import annotations

import sys

from novum3d.baselines import BaselineTrainer
from novum3d.config import BaselineConfig
from novum3d.train.command import train_main

if __name__ == "__main__":
    sys.exit(train_main(None, __doc__, BaselineTrainer, BaselineConfig))
