#!/usr/bin/env python3
"""Train NOVUM: backbone + neural object volumes, contrastive loss, momentum-updated volumes.

    python scripts/train.py configs/synthetic-small.yaml                    # CPU demo
    python scripts/train.py configs/cube.yaml data.root=data/PASCAL3D ...  # paper setup
    torchrun --nproc_per_node=4 scripts/train.py configs/cube.yaml         # several GPUs
    python scripts/train.py configs/cube.yaml --resume                     # continue out_dir/last.pt

Overrides are key.sub=value pairs (values parsed as YAML), e.g. optim.epochs=2 train.out_dir=runs/x.
"""

from __future__ import annotations

import sys

from novum3d.config import ExperimentConfig
from novum3d.train.command import train_main
from novum3d.train.trainer import Trainer

if __name__ == "__main__":
    sys.exit(train_main(None, __doc__, Trainer, ExperimentConfig))
