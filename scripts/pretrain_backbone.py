#!/usr/bin/env python3
"""Pretrain a ResNet backbone on the procedural corpus: supervised classification, as ImageNet weights are made.

    python scripts/pretrain_backbone.py configs/pretrain.yaml [key.sub=value ...] [--resume]
    torchrun --nproc_per_node=8 scripts/pretrain_backbone.py configs/pretrain.yaml

Makes (or finishes) the corpus the config's ``corpus`` section describes at ``data.root`` first, then
trains with the baselines' trainer (random resized crops, flips, colour jitter, label smoothing,
warm-up and cosine schedule, bf16 on CUDA, compiled, DDP under torchrun, checkpoints each epoch,
exact --resume), measures held-out accuracy each epoch, and writes the network's torchvision
state_dict as safetensors (<train.out_dir>/<arch>-pretrained.safetensors, fp16, its sha256 and
record in the .json beside it), for model.weights (baselines) and model.backbone_weights (NOVUM).
"""

from __future__ import annotations

import sys

from novum3d.baselines.pretrain import PretrainTrainer
from novum3d.baselines.pretrain_config import PretrainConfig
from novum3d.train.command import train_main

if __name__ == "__main__":
    sys.exit(train_main(None, __doc__, PretrainTrainer, PretrainConfig))
