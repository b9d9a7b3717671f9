"""Load a trained NOVUM model from a training checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_weights, read_trained
from ..config import ExperimentConfig
from ..model.novum import NOVUM


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[NOVUM, ExperimentConfig]:
    """Rebuild the model a checkpoint was trained with and load its weights, volumes and bank."""
    ckpt, cfg = read_trained(path, "novum", ExperimentConfig)
    cfg.model.backbone_weights = None  # the checkpoint holds the weights
    model = NOVUM(cfg, ckpt["classes"])
    load_weights(model, ckpt, path)
    if ckpt.get("calibration"):
        model.class_temperature = float(ckpt["calibration"]["temperature"])
    return model.to(device).eval(), cfg
