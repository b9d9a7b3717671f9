"""Which Gaussians a camera sees: in the image, in front of the near plane, not hidden."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .projection import ALPHA_THRESHOLD, MAX_ALPHA, Projected


@torch.no_grad()
def gaussian_visibility(
    proj: Projected,
    opacities: Tensor,
    depth_margin: Tensor,
    width: int,
    height: int,
    threshold: float = 0.5,
    element_budget: int = 1 << 24,
) -> Tensor:
    """Flag Gaussians whose own centre pixel still receives light when it is reached.

    A Gaussian is visible when its projected centre lies inside the image, it was not culled,
    and the transmittance at its centre, accumulated with the rasterizer's alpha rule over the
    Gaussians more than ``depth_margin`` in front of it, exceeds ``threshold``. The margin
    keeps a Gaussian's neighbours on its own surface (which overlap it, a little nearer on a
    tilted face) from counting as occluders; Gaussians behind a closed front surface get
    transmittance near zero.

    Args:
        proj: :class:`~rendering.projection.Projected`, B views of N Gaussians.
        opacities: [N] or [B, N].
        depth_margin: [N] or [B, N] depth, in world units, an occluder must lie in front by
            (about two standard deviations of the Gaussian).
        threshold: transmittance needed to count as visible, in (0, 1).

    Returns:
        [B, N] bool.
    """
    B, N = proj.depths.shape
    culled = (proj.radii <= 0).any(-1)
    m = proj.means2d
    inside = (m[..., 0] >= 0) & (m[..., 0] < width) & (m[..., 1] >= 0) & (m[..., 1] < height)
    candidate = inside & ~culled
    opacities = opacities.expand(B, N)
    depth_margin = depth_margin.expand(B, N)
    chunk = max(1, element_budget // max(1, N * N))
    log_t = []
    for s in range(0, B, chunk):
        sl = slice(s, s + chunk)
        means, conics, depths = m[sl], proj.conics[sl], proj.depths[sl]
        # d[b, i, j]: offset from Gaussian j's mean to Gaussian i's centre.
        d = means[:, :, None, :] - means[:, None, :, :]
        a, b, c = (conics[:, None, :, k] for k in range(3))
        sigma = 0.5 * (a * d[..., 0] ** 2 + c * d[..., 1] ** 2) + b * d[..., 0] * d[..., 1]
        alpha = torch.clamp(opacities[sl, None, :] * torch.exp(-sigma), max=MAX_ALPHA)
        in_front = depths[:, None, :] < depths[:, :, None] - depth_margin[sl, :, None]
        occluder = in_front & ~culled[sl][:, None, :] & (alpha >= ALPHA_THRESHOLD) & (sigma >= 0)
        log_t.append(torch.where(occluder, torch.log1p(-alpha), torch.zeros_like(alpha)).sum(-1))
    transmittance_ok = torch.cat(log_t, dim=0) > math.log(threshold)
    return candidate & transmittance_ok
