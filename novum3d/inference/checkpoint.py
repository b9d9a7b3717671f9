"""Load a trained NOVUM model from a training checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_weights, read_trained
from ..config import ExperimentConfig
from ..errors import CheckpointError
from ..model.novum import NOVUM
from ..model.priors import PosePriors


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[NOVUM, ExperimentConfig]:
    """Rebuild the model a checkpoint was trained with and load its weights, volumes and bank."""
    ckpt, cfg = read_trained(path, "novum", ExperimentConfig)
    cfg.model.backbone_weights = None  # the checkpoint holds the weights
    model = NOVUM(cfg, ckpt["classes"])
    load_weights(model, ckpt, path)
    if ckpt.get("calibration"):
        model.class_temperature = float(ckpt["calibration"]["temperature"])
    if ckpt.get("pose_priors"):
        try:
            model.pose_priors = PosePriors.from_dict(ckpt["pose_priors"])
        except ValueError as exc:
            raise CheckpointError(f"its pose priors do not load ({exc})", path=path) from exc
    return model.to(device).eval(), cfg
