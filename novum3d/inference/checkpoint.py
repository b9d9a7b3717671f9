"""Load a trained model from a training checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import ConfigError, ExperimentConfig, from_mapping
from ..model.novum import NOVUM
from ..train.trainer import CheckpointError, load_checkpoint


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[NOVUM, ExperimentConfig]:
    """Rebuild the model a checkpoint was trained with and load its weights, volumes and bank."""
    ckpt = load_checkpoint(path, "cpu")
    if ckpt.get("kind", "novum") != "novum":
        raise CheckpointError(
            f"{path}: a {ckpt['kind']} classifier checkpoint, not NOVUM; it classifies only "
            "(novum3d.baselines.load_baseline, benchmarks/robustness.py)"
        )
    try:
        cfg = from_mapping(ExperimentConfig, ckpt["config"], where=f"{path} (config)")
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its config does not load with this version ({exc})") from exc
    cfg.model.backbone_weights = None  # the checkpoint holds the weights
    model = NOVUM(cfg, ckpt["classes"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes ({exc})") from exc
    return model.to(device).eval(), cfg
