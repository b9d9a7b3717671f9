"""Which feature-map location corresponds to which Gaussian, from the annotated pose."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from rendering import project_visible

from ..data.batch import box_cells, host_to_device
from ..model.neural_volumes import NeuralVolumes


@dataclass
class Correspondences:
    batch_ids: Tensor  # [P] image in the batch
    class_ids: Tensor  # [P]
    gauss_ids: Tensor  # [P] Gaussian within its class
    features: Tensor  # [P, D] unit backbone features at the Gaussians' projected centres
    covered: Tensor  # [B, h, w] bool: cells where the centre of any Gaussian of the image's volume projects
    points: Tensor  # [P, 2] projected centres (x, y) on the h x w map (cell j spans [j, j + 1))


def sample_features(feature_maps: Tensor, points: Tensor) -> Tensor:
    """Bilinear unit samples of maps [B, D, h, w] at each image's pixel coordinates [B, N, 2] (x, y;
    cell centres at +0.5): [B, N, D].

    Every point of every image goes through one ``grid_sample``; the caller picks the rows it needs.
    Sampling all B x N points (36,000 at batch 32) costs less than finding the longest visible list
    first, which waited for the GPU.
    """
    h, w = feature_maps.shape[-2:]
    grid = torch.stack([points[..., 0] / w * 2 - 1, points[..., 1] / h * 2 - 1], dim=-1)  # [B, N, 2]
    # Culled Gaussians may project to non-finite points; outside [-1, 1] they read zeros and take no gradient.
    grid = grid.nan_to_num(nan=-2.0, posinf=-2.0, neginf=-2.0)
    sampled = F.grid_sample(feature_maps, grid[:, None].to(feature_maps.dtype), mode="bilinear", align_corners=False)
    return F.normalize(sampled[:, :, 0].transpose(1, 2), dim=-1)


def find_correspondences(
    volumes: NeuralVolumes, feature_maps: Tensor, labels: Tensor, viewmats: Tensor, Ks: Tensor
) -> Correspondences:
    """Project each image's class volume at its pose and sample features at the visible Gaussians.

    All images go through one projection call: each view gets its own class's Gaussians, padded
    ones carry opacity 0 and are culled.

    Args:
        feature_maps: [B, D, h, w]; labels: [B]; viewmats: [B, 4, 4]; Ks: [B, 3, 3] at feature-map scale.
    """
    h, w = feature_maps.shape[-2:]
    v = volumes
    with torch.no_grad():
        opacities = v.opacities[labels] * v.valid[labels]
        means2d, visible = project_visible(
            v.means[labels], v.quats[labels], v.scales[labels], opacities, viewmats.float(), Ks.float(), w, h
        )
    b, k = torch.nonzero(visible, as_tuple=True)
    covered = covered_cells(means2d, v.valid[labels], h, w)
    points = means2d[b, k]
    return Correspondences(b, labels[b], k, sample_features(feature_maps, means2d)[b, k], covered, points)


def covered_cells(means2d: Tensor, valid: Tensor, h: int, w: int) -> Tensor:
    """[B, h, w] bool: the cells the projected centres fall in, hidden Gaussians included.

    Args:
        means2d: [B, N, 2] pixel coordinates on the h x w map (cell j spans [j, j + 1)); valid: [B, N] bool.
    """
    B = means2d.shape[0]
    x, y = means2d[..., 0].floor().long(), means2d[..., 1].floor().long()
    inside = valid & (x >= 0) & (x < w) & (y >= 0) & (y < h)
    b = torch.arange(B, device=means2d.device)[:, None].expand_as(x)
    covered = torch.zeros(B, h * w, dtype=torch.bool, device=means2d.device)
    covered[b[inside], (y * w + x)[inside]] = True
    return covered.view(B, h, w)


def background_features(feature_maps: Tensor, object_masks: Tensor, per_image: int, seeds: list[int]) -> Tensor:
    """Up to ``per_image`` features per image from cells off the object, drawn uniformly without replacement.

    Args:
        feature_maps: [B, D, h, w]; object_masks: [B, h, w] bool, True on the object.
        seeds: one per image, so that the same image draws the same cells on any rank.

    Returns:
        [Q, D] unit features, with gradients when ``feature_maps`` has them (the clutter loss uses
        them; the bank stores them detached).
    """
    B, D = feature_maps.shape[:2]
    if per_image == 0:
        return feature_maps.new_zeros(0, D)
    # One uniform key per cell from each image's own CPU generator (the same draw on any device or
    # rank); object cells get keys no free cell has, so the per_image smallest keys are a uniform draw
    # without replacement from the free cells. One gather for the batch: a loop over images waited
    # for the GPU once per image (32 times a step); what still waits is the final count of free cells.
    cells = object_masks[0].numel()
    # float64: ties among 8,000 float32 keys would fall at the cut about once in 10^4 images, and
    # CPU and CUDA topk may break them differently.
    keys = torch.stack([torch.rand(cells, generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                        for s in seeds])  # fmt: skip
    keys = host_to_device(keys, feature_maps.device).masked_fill(object_masks.reshape(B, cells), 2.0)
    drawn, pick = keys.topk(min(per_image, cells), dim=1, largest=False)  # [B, n]
    feats = feature_maps.reshape(B, D, cells).gather(2, pick[:, None].expand(-1, D, -1))  # [B, D, n]
    free = (drawn < 2.0).reshape(-1)  # an image with fewer free cells than per_image gives what it has
    return F.normalize(feats.transpose(1, 2).reshape(-1, D)[free].float(), dim=-1)


def object_cells(
    masks: Tensor | None, bboxes: Tensor, image_size: tuple[int, int], map_size: tuple[int, int]
) -> Tensor:
    """Feature-map cells touching the object: [B, h, w] bool, from masks [B, H, W] or boxes [B, 4]."""
    if masks is not None:
        return F.adaptive_max_pool2d(masks.float()[:, None], map_size)[:, 0] > 0
    return box_cells(bboxes, image_size, map_size)


def occluded_cells(occluders: Tensor, map_size: tuple[int, int]) -> Tensor:
    """[B, h, w] bool: cells more than half covered by the occluder masks [B, H, W] (data.augment)."""
    return F.adaptive_avg_pool2d(occluders.float()[:, None], map_size)[:, 0] > 0.5


def drop_occluded(corr: Correspondences, occluded: Tensor) -> Correspondences:
    """``corr`` without the correspondences whose projected centre falls in an occluded cell [B, h, w] bool:
    no Gaussian learns from, or is moved towards, an occluder's features. ``covered`` is kept."""
    h, w = occluded.shape[-2:]
    x = corr.points[:, 0].floor().long().clamp(0, w - 1)
    y = corr.points[:, 1].floor().long().clamp(0, h - 1)
    keep = ~occluded[corr.batch_ids, y, x]
    return replace(corr, batch_ids=corr.batch_ids[keep], class_ids=corr.class_ids[keep],
                   gauss_ids=corr.gauss_ids[keep], features=corr.features[keep], points=corr.points[keep])  # fmt: skip
