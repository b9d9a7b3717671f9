"""The NOVUM module: a feature backbone and the neural object volumes of all classes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rendering import GaussianVolume

from ..categories import build_volume, load_categories
from ..config import ExperimentConfig
from ..errors import ConfigError
from .backbone import build_backbone, normalize_images
from .calibration import DEFAULT_TEMPERATURE
from .matching import class_scores
from .neural_volumes import NeuralVolumes
from .priors import PosePriors


class NOVUM(nn.Module):
    """Backbone (trained by gradients) + volumes and bank (trained by momentum), one per class."""

    def __init__(
        self, cfg: ExperimentConfig, classes: list[str] | None = None, geometry: dict[str, GaussianVolume] | None = None
    ):
        """``geometry`` (class -> volume) replaces the volumes ``cfg.volume`` would build from the categories file:
        a ``points`` volume's Gaussians, which its checkpoint holds (:meth:`NeuralVolumes.stored_geometry`)."""
        super().__init__()
        if geometry is None:
            categories = {c.name: c for c in load_categories(cfg.volume.categories)}
            classes = classes or cfg.data.classes or list(categories)
            unknown = [c for c in classes if c not in categories]
            if unknown:
                raise ConfigError(
                    f"classes: {unknown} not in categories file {cfg.volume.categories!r} ({sorted(categories)})",
                    field="data.classes",
                )
        else:
            classes = list(classes or geometry)
            if list(geometry) != classes:
                raise ValueError(f"geometry: classes {list(geometry)} differ from the model's {classes}")
        self.backbone = build_backbone(cfg.model)
        if geometry is None:
            geometry = {c: build_volume(categories[c], cfg.volume) for c in classes}
        self.volumes = NeuralVolumes(geometry, cfg.model.feature_dim, cfg.bank.size, seed=cfg.train.seed)
        self.stride = self.backbone.stride
        # Softmax temperature of the class probabilities; training fits it on the validation split
        # (novum3d.model.calibration) and checkpoints carry it.
        self.class_temperature = DEFAULT_TEMPERATURE
        # Per-class pose statistics of the training split (checkpoints carry them); None if unknown.
        self.pose_priors: PosePriors | None = None
        # Where the weights came from, as the checkpoint records it (plain data; None if it does not).
        self.provenance: dict | None = None

    @property
    def classes(self) -> list[str]:
        return self.volumes.classes

    def forward(self, images: Tensor) -> Tensor:
        """Images [B, 3, H, W] in [0, 1] -> unit feature maps [B, D, H/s, W/s], s = ``self.stride``."""
        return self.backbone(normalize_images(images))

    @torch.no_grad()
    def classify(self, images: Tensor, pixel_mask: Tensor | None = None) -> Tensor:
        """Geometry-free class scores [B, Y] of images [B, 3, H, W] in [0, 1] (``pixel_mask`` [B, H/s, W/s]
        bool: only these feature cells vote). The entry point for classification, as for the baselines."""
        return self.score_maps(self(images), pixel_mask)

    @torch.no_grad()
    def score_maps(self, maps: Tensor, pixel_mask: Tensor | None = None) -> Tensor:
        """:meth:`classify` of feature maps [B, D, h, w] already computed (``self(images)``)."""
        v = self.volumes
        return class_scores(maps, v.features, v.valid, v.bank, pixel_mask)

    def probabilities(self, scores: Tensor) -> Tensor:
        """Class probabilities [B, Y] of scores [B, Y]: a softmax at the temperature fitted on validation."""
        return torch.softmax(scores / self.class_temperature, dim=1)
