"""Classify images and estimate their poses with a trained NOVUM model.

Every step takes feature maps, so a caller computes them once and runs both protocols on them:
the full image (today's default), or a pixel mask such as the ground-truth box (the authors'
``mask_out_padded``, GenIntel/NOVUM src/inference.py L148-170).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

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
        name = model.classes[y]  # the class in template caches
        parts.append(estimator.estimate(maps[idx], v.volume(y), v.features[y, :k], v.bank, Ks[idx], class_key=name,
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


def _classify(model: NOVUM, images: Tensor, pixel_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Feature maps [B, D, h, w] of ``images``, class scores and probabilities [B, Y] over ``pixel_mask``
    [B, h, w] (or every cell), and the maps with the cells outside the mask zeroed."""
    with torch.no_grad():
        maps = model(images)
    scores = model.score_maps(maps, pixel_mask)
    return maps, scores, model.probabilities(scores), mask_maps(maps, pixel_mask)


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
    _, scores, probabilities, masked = _classify(model, images, pixel_mask)
    if labels is None and class_candidates > 1:
        labels, pose = estimate_poses_top_classes(model, masked, Ks, estimator, scores, class_candidates, distance)
    else:
        labels = scores.argmax(1) if labels is None else labels.to(scores.device)
        pose = estimate_poses(model, masked, Ks, estimator, labels, distance)
    return Prediction(labels, scores, probabilities, pose)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def predict_by_class(
    model: NOVUM,
    batches: Iterable[tuple[Tensor, Tensor, Tensor | None, list[Any]]],
    estimator: PoseEstimator,
    batch_size: int,
    label: int | None = None,
    distance: float | None = None,
    class_candidates: int = 1,
    max_waiting: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[tuple[list[Any], Prediction, list[float]]]:
    """:func:`predict` over a stream of batches, with the poses estimated class by class.

    Each batch is classified as it comes; its images then wait, feature maps kept, until
    ``batch_size`` images of one class wait (or ``max_waiting`` in all, default 4 x ``batch_size``:
    the most numerous class goes first; or the stream ends), and those are estimated together. On a
    GPU one estimate of a full batch costs about what one of a few images does, and a batch of mixed
    classes would take one estimate per class. With ``class_candidates`` > 1 (and no ``label``) every
    batch is estimated as it comes (:func:`estimate_poses_top_classes`), since each image needs several
    classes' estimates.

    Args:
        batches: (images [B, 3, H, W] in [0, 1], Ks [B, 3, 3] at feature-map scale, pixel_mask [B, h, w]
            bool or None, B tags) each, on the model's device; a tag is anything that names an image.
        label: the class of every image (skips the classifier's choice), or None.

    Yields:
        (tags, a :class:`Prediction` of those images, seconds each): each image's share of the
        classification of its batch plus its share of its pose estimate.
    """
    max_waiting = 4 * batch_size if max_waiting is None else max_waiting
    waiting: dict[int, list[tuple]] = {}

    def estimate(y: int, count: int):
        group, waiting[y] = waiting[y][:count], waiting[y][count:]
        tags, maps, Ks, scores, probs, before = (list(x) for x in zip(*group, strict=True))
        start = clock()
        labels = torch.full((len(group),), y, dtype=torch.long, device=maps[0].device)
        pose = estimate_poses(model, torch.stack(maps), torch.stack(Ks), estimator, labels, distance)
        _sync(labels.device)
        share = (clock() - start) / len(group)
        return tags, Prediction(labels, torch.stack(scores), torch.stack(probs), pose), [b + share for b in before]

    model.eval()
    for images, Ks, pixel_mask, tags in batches:
        start = clock()
        maps, scores, probabilities, masked = _classify(model, images, pixel_mask)
        if label is None and class_candidates > 1:
            labels, pose = estimate_poses_top_classes(model, masked, Ks, estimator, scores, class_candidates, distance)
            _sync(maps.device)
            n = len(tags)
            yield tags, Prediction(labels, scores, probabilities, pose), [(clock() - start) / n] * n
            continue
        labels = scores.argmax(1).tolist() if label is None else [label] * len(tags)
        _sync(maps.device)
        share = (clock() - start) / max(len(tags), 1)
        for i, y in enumerate(labels):
            waiting.setdefault(y, []).append((tags[i], masked[i], Ks[i], scores[i], probabilities[i], share))
        for y in list(waiting):
            while len(waiting[y]) >= batch_size:
                yield estimate(y, batch_size)
        while sum(len(w) for w in waiting.values()) > max_waiting:
            y = max(waiting, key=lambda c: len(waiting[c]))
            yield estimate(y, len(waiting[y]))
    for y in sorted(waiting, key=lambda c: -len(waiting[c])):
        if waiting[y]:
            yield estimate(y, len(waiting[y]))
