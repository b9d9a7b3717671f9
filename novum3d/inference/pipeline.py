"""Classify images and estimate their poses with a trained NOVUM model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..model.novum import NOVUM
from .classify import class_scores
from .pose import PoseEstimator, PoseResult


@dataclass
class Prediction:
    labels: Tensor  # [B] predicted (or given) class indices
    class_scores: Tensor  # [B, Y] geometry-free scores
    probabilities: Tensor  # [B, Y] softmax of the scores
    pose: PoseResult


@torch.no_grad()
def _features(model: NOVUM, images: Tensor) -> Tensor:
    return model(images)


def predict(
    model: NOVUM,
    images: Tensor,
    Ks: Tensor,
    estimator: PoseEstimator,
    labels: Tensor | None = None,
    temperature: float = 0.07,
) -> Prediction:
    """Class (unless given) and pose of B images.

    Args:
        images: [B, 3, H, W] in [0, 1]; Ks: [B, 3, 3] intrinsics at feature-map scale.
        labels: [B] known classes, or None to use the classifier's.
        temperature: softmax temperature over the mean per-pixel scores.
    """
    model.eval()
    maps = _features(model, images)
    v = model.volumes
    scores = class_scores(maps, v.features, v.valid, v.bank)
    labels = scores.argmax(1) if labels is None else labels.to(scores.device)
    B = images.shape[0]
    fields = {k: torch.zeros(B, device=maps.device) for k in ("azimuth", "elevation", "theta", "distance", "score")}
    for y in labels.unique().tolist():
        idx = torch.nonzero(labels == y)[:, 0]
        k = v.count(y)
        res = estimator.estimate(maps[idx], v.volume(y), v.features[y, :k], v.bank, Ks[idx], class_key=y)
        for name in fields:
            fields[name][idx] = getattr(res, name)
    return Prediction(labels, scores, torch.softmax(scores / temperature, dim=1), PoseResult(**fields))
