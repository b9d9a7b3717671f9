"""Classify images and estimate their poses with a trained NOVUM model.

Every step takes feature maps, so a caller computes them once and runs both protocols on them:
the full image (today's default), or a pixel mask such as the ground-truth box (the authors'
``mask_out_padded``, GenIntel/NOVUM src/inference.py L148-170).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rendering import Pose

from ..model.novum import NOVUM
from .pose import PoseEstimator, PoseResult


@dataclass
class Prediction:
    labels: Tensor  # [B] predicted (or given) class indices
    class_scores: Tensor  # [B, Y] geometry-free scores
    probabilities: Tensor  # [B, Y] softmax of the scores at the model's calibrated temperature
    pose: PoseResult


def mask_maps(maps: Tensor, pixel_mask: Tensor | None) -> Tensor:
    """Feature maps [B, D, h, w] with the features outside ``pixel_mask`` [B, h, w] set to zero.

    For render-and-compare this is the crop: at a zero feature both the object score R.F and the
    background score max_b F.b are 0, so those pixels add a constant to the score and nothing to
    its gradient.
    """
    return maps if pixel_mask is None else maps * pixel_mask[:, None].to(maps.dtype)


def estimate_poses(
    model: NOVUM,
    maps: Tensor,
    Ks: Tensor,
    estimator: PoseEstimator,
    labels: Tensor,
    distance: float | None = None,
    init: Pose | Tensor | None = None,
    steps: int | None = None,
) -> PoseResult:
    """Poses of B images under the given classes [B]: one batched estimate per class present.

    Each class starts from the model's pose prior for it (its training distance and ranges) unless
    ``distance`` is given; ``init`` (B poses, or [B, 4] rows) refines from given poses instead of the
    templates; ``steps`` overrides the estimator's refinement steps (0: the best template).
    """
    priors = model.pose_priors
    v = model.volumes
    if labels.numel() == 0:
        empty = maps.new_zeros(0, dtype=torch.float32)
        return PoseResult(empty, empty, empty, empty, score=empty)
    parts, order = [], []
    for y in labels.unique().tolist():
        idx = torch.nonzero(labels == y)[:, 0]
        k = v.count(y)
        prior = priors.for_class(y) if priors is not None else None
        parts.append(estimator.estimate(maps[idx], v.volume(y), v.features[y, :k], v.bank, Ks[idx], class_key=y,
                                        prior=prior, distance=distance, init=None if init is None else init[idx],
                                        steps=steps))  # fmt: skip
        order.append(idx)
    return PoseResult.cat(parts)[torch.argsort(torch.cat(order))].to(dtype=torch.float32)


def estimate_poses_top_classes(
    model: NOVUM,
    maps: Tensor,
    Ks: Tensor,
    estimator: PoseEstimator,
    scores: Tensor,
    candidates: int = 2,
    distance: float | None = None,
) -> tuple[Tensor, PoseResult]:
    """Poses under each image's ``candidates`` best-scoring classes; each image keeps the class whose
    pose scores best by render-and-compare (a departure from NOVUM, which takes the classifier's
    class: GenIntel/NOVUM src/inference.py estimates the pose under one class).

    The render-and-compare score is comparable across classes under the background objectives
    (``PoseConfig.clutter`` "max" or "mean"): every class is scored against the same bank on the
    same pixels. Under "none" a larger silhouette can score higher whatever the class, and under
    ``ranking="inliers"`` each class's hypothesis is chosen by inliers but the class by this score.
    Ties keep the classifier's order.

    Args:
        maps: [B, D, h, w] unit features; Ks: [B, 3, 3] intrinsics at feature-map scale.
        scores: [B, Y] class scores (:meth:`NOVUM.score_maps <novum3d.model.novum.NOVUM.score_maps>`).
        candidates: classes tried per image (1: the classifier's class alone).
        distance: starting distance for every class (default: each class's prior).

    Returns:
        (labels [B] on ``maps``' device, poses of B images under those labels).
    """
    if candidates < 1:
        raise ValueError(f"candidates: expected >= 1, got {candidates}")
    B = maps.shape[0]
    scores = scores.to(maps.device)
    k = min(candidates, scores.shape[1])
    top = scores.topk(k, dim=1).indices.reshape(-1)  # [B * k], each image's classes best first
    rows = torch.arange(B, device=maps.device).repeat_interleave(k)
    poses = estimate_poses(model, maps[rows], Ks[rows], estimator, top, distance)
    pick = torch.arange(B, device=maps.device) * k + poses.score.view(B, k).argmax(1)
    return top[pick], poses[pick]


def predict(
    model: NOVUM,
    images: Tensor,
    Ks: Tensor,
    estimator: PoseEstimator,
    labels: Tensor | None = None,
    pixel_mask: Tensor | None = None,
    distance: float | None = None,
    class_candidates: int = 1,
) -> Prediction:
    """Class (unless given) and pose of B images.

    Args:
        images: [B, 3, H, W] in [0, 1]; Ks: [B, 3, 3] intrinsics at feature-map scale.
        labels: [B] known classes, or None to use the classifier's.
        pixel_mask: [B, h, w] bool on the feature map: only these pixels classify and are compared.
        distance: starting distance for every class (default: each class's prior, else the estimator's).
        class_candidates: without ``labels``, estimate the pose under this many best classes and keep
            the best-scoring one (:func:`estimate_poses_top_classes`; that many times the pose cost).
    """
    model.eval()
    with torch.no_grad():
        maps = model(images)
    scores = model.score_maps(maps, pixel_mask)
    probabilities = model.probabilities(scores)
    masked = mask_maps(maps, pixel_mask)
    if labels is None and class_candidates > 1:
        labels, pose = estimate_poses_top_classes(model, masked, Ks, estimator, scores, class_candidates, distance)
    else:
        labels = scores.argmax(1) if labels is None else labels.to(scores.device)
        pose = estimate_poses(model, masked, Ks, estimator, labels, distance)
    return Prediction(labels, scores, probabilities, pose)
