"""Pure-PyTorch reference rasterizer: dense front-to-back alpha compositing.

Every pixel evaluates every Gaussian whose tile rectangle covers its tile, in depth order,
with gsplat's rules (alpha capped at 0.999, contributions under 1/255 skipped, a pixel stops
before the Gaussian that would bring its transmittance to 1e-4 or below). Compositing is
written with cumulative sums of ``log(1 - alpha)`` so autograd gives exact gradients with
respect to features, means, covariances and cameras. Memory is bounded by rendering a few
views at a time; it runs on any device, CPU included.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..projection import (
    ALPHA_THRESHOLD,
    MAX_ALPHA,
    TRANSMITTANCE_STOP,
    Projected,
    tile_bounds,
)

# Elements of one [views, pixels, gaussians] slab; sets how many views render at once.
DEFAULT_ELEMENT_BUDGET = 1 << 24


def composite_views(
    proj: Projected,
    opacities: Tensor,
    features: Tensor,
    width: int,
    height: int,
    tile_size: int = 16,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite projected Gaussians for a chunk of views.

    Args:
        proj: :class:`Projected` with B views.
        opacities: [N].
        features: [B, N, D].
        width, height: image size.
        tile_size: gsplat's tile size; a Gaussian reaches only pixels of tiles it is binned to.

    Returns:
        features [B, H, W, D], alpha [B, H, W], accumulated depth [B, H, W] (not normalised).
    """
    B, N = proj.depths.shape
    device, dtype = features.device, features.dtype
    culled = (proj.radii <= 0).any(-1)
    order = torch.argsort(torch.where(culled, torch.inf, proj.depths.detach()), dim=-1)

    def take(x: Tensor) -> Tensor:
        return torch.gather(x, 1, order.view(B, N, *([1] * (x.dim() - 2))).expand_as(x))

    means2d, conics, depths = take(proj.means2d), take(proj.conics), take(proj.depths)
    feats = take(features)
    opac = torch.gather(opacities.expand(B, N), 1, order)
    rects = take(tile_bounds(proj.means2d, proj.radii, tile_size, width, height))

    ys, xs = torch.meshgrid(
        torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij"
    )
    px = (xs.reshape(-1).to(dtype) + 0.5)[None, :, None]  # [1, P, 1]
    py = (ys.reshape(-1).to(dtype) + 0.5)[None, :, None]
    tx = (xs.reshape(-1) // tile_size)[None, :, None]
    ty = (ys.reshape(-1) // tile_size)[None, :, None]
    in_rect = (
        (tx >= rects[:, None, :, 0])
        & (ty >= rects[:, None, :, 1])
        & (tx < rects[:, None, :, 2])
        & (ty < rects[:, None, :, 3])
    )  # [B, P, N]

    dx = means2d[:, None, :, 0] - px
    dy = means2d[:, None, :, 1] - py
    a, b, c = (conics[:, None, :, i] for i in range(3))
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp(opac[:, None, :] * torch.exp(-sigma), max=MAX_ALPHA)
    used = in_rect & (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))

    log_t = torch.cumsum(torch.log1p(-alpha), dim=-1)  # transmittance after each Gaussian
    used = used & (log_t > math.log(TRANSMITTANCE_STOP))
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))
    log_t_before = torch.cumsum(torch.log1p(-alpha), dim=-1) - torch.log1p(-alpha)
    weights = alpha * torch.exp(log_t_before)  # [B, P, N]

    out_feats = torch.bmm(weights, feats).reshape(B, height, width, -1)
    out_alpha = weights.sum(-1).reshape(B, height, width)
    out_depth = (weights * depths[:, None, :]).sum(-1).reshape(B, height, width)
    return out_feats, out_alpha, out_depth


def rasterize_torch(
    proj: Projected,
    opacities: Tensor,
    features: Tensor,
    width: int,
    height: int,
    tile_size: int = 16,
    element_budget: int = DEFAULT_ELEMENT_BUDGET,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render B views in chunks of views that keep each [views, H*W, N] slab under budget.

    Args:
        proj: :class:`Projected` with B views of N Gaussians.
        opacities: [N]; features: [B, N, D].

    Returns:
        features [B, H, W, D], alpha [B, H, W], accumulated depth [B, H, W].
    """
    B, N = proj.depths.shape
    per_view = max(1, width * height * N)
    chunk = max(1, element_budget // per_view)
    outs = []
    for start in range(0, B, chunk):
        sl = slice(start, start + chunk)
        part = Projected(*(t[sl] for t in proj))
        outs.append(composite_views(part, opacities, features[sl], width, height, tile_size))
    return tuple(torch.cat(parts, dim=0) for parts in zip(*outs, strict=True))  # type: ignore[return-value]
