"""The NOVUM module: a feature backbone and the neural object volumes of all classes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..categories import load_categories
from ..config import ExperimentConfig
from ..errors import ConfigError
from ..volumes import build_volume
from .backbone import build_backbone, normalize_images
from .calibration import DEFAULT_TEMPERATURE
from .matching import class_scores
from .priors import PosePriors
from .volumes import NeuralVolumes


class NOVUM(nn.Module):
    """Backbone (trained by gradients) + volumes and bank (trained by momentum), one per class."""

    def __init__(self, cfg: ExperimentConfig, classes: list[str] | None = None):
        super().__init__()
        categories = {c.name: c for c in load_categories(cfg.volume.categories)}
        classes = classes or cfg.data.classes or list(categories)
        unknown = [c for c in classes if c not in categories]
        if unknown:
            raise ConfigError(
                f"classes: {unknown} not in categories file {cfg.volume.categories!r} ({sorted(categories)})",
                field="data.classes",
            )
        self.backbone = build_backbone(cfg.model)
        geometry = {c: build_volume(categories[c], cfg.volume) for c in classes}
        self.volumes = NeuralVolumes(geometry, cfg.model.feature_dim, cfg.bank.size, seed=cfg.train.seed)
        self.stride = self.backbone.stride
        # Softmax temperature of the class probabilities; training fits it on the validation split
        # (novum3d.model.calibration) and checkpoints carry it.
        self.class_temperature = DEFAULT_TEMPERATURE
        # Per-class pose statistics of the training split (checkpoints carry them); None if unknown.
        self.pose_priors: PosePriors | None = None

    @property
    def classes(self) -> list[str]:
        return self.volumes.classes

    def forward(self, images: Tensor) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] -> unit feature maps [B, D, H/s, W/s], s = ``self.stride``."""
        return self.backbone(normalize_images(images))

    @torch.no_grad()
    def classify(self, images: Tensor, pixel_mask: Tensor | None = None) -> Tensor:
        """Class scores [B, Y] (geometry-free)."""
        v = self.volumes
        return class_scores(self(images), v.features, v.valid, v.bank, pixel_mask)
