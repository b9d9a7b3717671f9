"""The render-and-compare objective, its correspondence-inlier alternative, and the principal-point shift."""

from __future__ import annotations

import torch
from torch import Tensor

from ...model.matching import object_or_background


def compare(rendered: Tensor, features: Tensor, background: Tensor, temperature: float = 0.0) -> Tensor:
    """Render-and-compare scores: mean over pixels of max(object score R.F, background score)
    (softened at ``temperature`` > 0, :func:`~novum3d.model.matching.object_or_background`).

    Args:
        rendered: [..., h, w, D] composited features (zero where nothing is rendered).
        features: [..., h, w, D] unit image features (channels last; broadcast against ``rendered``).
        background: [..., h, w] background score per pixel.

    Returns:
        [...] scores.
    """
    return compare_cells(rendered, features, background, temperature).mean(dim=(-2, -1))


def compare_cells(rendered: Tensor, features: Tensor, background: Tensor, temperature: float = 0.0) -> Tensor:
    """[..., h, w] the per-pixel terms whose mean is :func:`compare`'s score (same arguments)."""
    obj = (rendered * features).sum(-1)
    return object_or_background(obj, background, temperature)


def best_matches(
    features: Tensor, volume_features: Tensor, means: Tensor, background: Tensor, budget: int = 1 << 24
) -> tuple[Tensor, Tensor]:
    """Each pixel's best-matching Gaussian of one class: where it sits, and whether it beats the background.

    Args:
        features: [B, h, w, D] unit image features (channels last).
        volume_features: [N, D] the class's Gaussian features; means: [N, 3] their centres (object frame).
        background: [B, h, w] background score per pixel.
        budget: similarities computed at once (pixels x N), bounding memory.

    Returns:
        ([B, h, w, 3] float32 centre of each pixel's best Gaussian, [B, h, w] bool: its score beats
        the background).
    """
    B, h, w, D = features.shape
    flat = features.reshape(B * h * w, D)
    vf = volume_features.to(flat.dtype)
    step = max(1, budget // max(vf.shape[0], 1))
    parts = [(flat[s : s + step] @ vf.t()).max(-1) for s in range(0, flat.shape[0], step)]
    best = torch.cat([p.values for p in parts]).view(B, h, w).float()
    idx = torch.cat([p.indices for p in parts])
    return means[idx].float().view(B, h, w, 3), best > background.float()


def count_inliers(rendered: Tensor, points: Tensor, matched: Tensor, radius: float) -> Tensor:
    """Share of pixels where a pose's rendered surface point lies within ``radius`` of the pixel's
    best-matching Gaussian (:func:`best_matches`), counted only where that match beats the background
    and the object covers the pixel (alpha > 0.5). The reference for the template path's product form.

    Args:
        rendered: [..., h, w, 4] composited (x, y, z, 1) of the Gaussian centres: channels 0-2 are
            alpha-weighted centres, channel 3 the alpha.
        points: [..., h, w, 3]; matched: [..., h, w] bool (both broadcast against ``rendered``).
        radius: in object units.

    Returns:
        [...] shares in [0, 1].
    """
    alpha = rendered[..., 3]
    surface = rendered[..., :3] / alpha.clamp_min(1e-6)[..., None]
    near = (surface - points).square().sum(-1) < radius**2
    return (near & matched & (alpha > 0.5)).float().mean(dim=(-2, -1))


def inliers_then_score(inliers: Tensor, score: Tensor, cells: int) -> Tensor:
    """One ranking value: the inlier share first, the score only breaking ties. A share moves in
    steps of 1 / cells; the score (within [-1, 1], or 1 + t log 2 at temperature t) is scaled so that
    any two scores differ by less than one step."""
    return inliers + score / (4 * cells)


def principal_offsets(Ks: Tensor, size: tuple[int, int]) -> Tensor:
    """[B, 2] integer cell offsets (dx, dy) of each principal point from the map centre (w/2, h/2)."""
    h, w = size
    return torch.stack([Ks[:, 0, 2] - w / 2, Ks[:, 1, 2] - h / 2], dim=-1).round().long()


def shift_to_centre(features: Tensor, background: Tensor, offsets: Tensor, pad_background: float = 1.0):
    """Move each image so that its principal point sits at the map centre.

    ``out[b, i, j] = in[b, i + dy_b, j + dx_b]``: an object seen with the principal point ``dx``
    cells right of the centre appears ``dx`` cells right of where a centred camera sees it, and
    comes back. Cells from outside the map get feature 0 and background score ``pad_background``
    (1: certain background), which adds the same constant to every template's score of that image.

    Args:
        features: [B, h, w, D]; background: [B, h, w]; offsets: [B, 2] (dx, dy) integers.

    Returns:
        ([B, h, w, D], [B, h, w]).
    """
    B, h, w = background.shape
    if not bool(offsets.any()):
        return features, background
    dev = features.device
    ys = torch.arange(h, device=dev)[None] + offsets[:, 1:2].to(dev)  # [B, h]
    xs = torch.arange(w, device=dev)[None] + offsets[:, 0:1].to(dev)  # [B, w]
    inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]  # [B, h, w]
    bi = torch.arange(B, device=dev)[:, None, None]
    yi, xi = ys.clamp(0, h - 1)[:, :, None], xs.clamp(0, w - 1)[:, None, :]
    f = torch.where(inside[..., None], features[bi, yi, xi], features.new_zeros(()))
    bg = torch.where(inside, background[bi, yi, xi], background.new_full((), pad_background))
    return f, bg
