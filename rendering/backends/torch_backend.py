"""Pure-PyTorch rasterizer: front-to-back alpha compositing with gsplat's rules.

Each pixel composites, in depth order, the Gaussians whose tile rectangle covers its tile
(alpha capped at 0.999, contributions under 1/255 skipped, a pixel stops before the Gaussian
that would bring its transmittance to 1e-4 or below). Compositing is written with cumulative
sums of ``log(1 - alpha)`` so autograd gives exact gradients with respect to features,
means, covariances and cameras. Runs on any device, CPU included.

Two layouts compute the same function: ``dense`` evaluates every pixel against every
Gaussian (the obvious reference); ``tiled`` first bins Gaussians to 16x16 tiles, as gsplat
does, and evaluates each tile only against its own list, padded to the longest list.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..projection import (
    ALPHA_THRESHOLD,
    MAX_ALPHA,
    TRANSMITTANCE_STOP,
    Projected,
    tile_bounds,
)

# Elements of one [views, pixels, gaussians] slab, which sets how many views render at once.
# Measured on a 2-core CPU: 4M-element slabs stay cache-friendly (2x faster than 16M); a GPU
# wants large launches.
ELEMENT_BUDGET = {"cpu": 1 << 22, "cuda": 1 << 26}


def _blend_weights(alpha: Tensor, used: Tensor) -> Tensor:
    """Weights ``alpha_k T_k`` along the last (depth-sorted) axis, with gsplat's early stop.

    Once a pixel's transmittance reaches the stop it stays there, so the transmittance in front of
    every Gaussian before the stop is the same whether or not the ones after it count: one cumulative
    sum serves both (two cost 30% more of the compositing, measured on 32x32 views).
    """
    alpha = torch.where(used, alpha, torch.zeros_like(alpha))
    log_keep = torch.log1p(-alpha)
    log_t = torch.cumsum(log_keep, dim=-1)  # transmittance after each Gaussian
    weights = alpha * torch.exp(log_t - log_keep)
    return torch.where(log_t > math.log(TRANSMITTANCE_STOP), weights, torch.zeros_like(weights))


def _alpha_at(means2d: Tensor, conics: Tensor, opac: Tensor, px: Tensor, py: Tensor) -> tuple[Tensor, Tensor]:
    """Alpha of Gaussians at pixel centres (broadcast) and whether it counts (sigma >= 0, >= 1/255)."""
    dx = means2d[..., 0] - px
    dy = means2d[..., 1] - py
    sigma = 0.5 * (conics[..., 0] * dx * dx + conics[..., 2] * dy * dy) + conics[..., 1] * dx * dy
    alpha = torch.clamp(opac * torch.exp(-sigma), max=MAX_ALPHA)
    return alpha, (sigma >= 0) & (alpha >= ALPHA_THRESHOLD)


def _tile_alpha(means2d: Tensor, conics: Tensor, opac: Tensor, px: Tensor, py: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`_alpha_at` of each tile's Gaussians at its pixel centres, built from per-row and per-column terms.

    ``sigma = a dx^2 / 2 + c dy^2 / 2 + b dx dy`` separates into a column term, a row term and one
    product, so the full [B, T, S, K] tensor takes a few passes instead of one per operation (the
    compositing ran 1.6x faster on 32x32 views of 500 Gaussians).

    Args:
        means2d: [B, T, K, 2]; conics: [B, T, K, 3]; opac: [B, T, K]; px, py: [T, ts] pixel centres.

    Returns:
        (alpha, counts), each [B, T, ts * ts, K] with pixels row-major within a tile.
    """
    B, T, K, _ = means2d.shape
    ts = px.shape[-1]
    dx = means2d[:, :, None, :, 0] - px[None, :, :, None]  # [B, T, ts (columns), K]
    dy = means2d[:, :, None, :, 1] - py[None, :, :, None]  # [B, T, ts (rows), K]
    a, b, c = (conics[:, :, None, :, i] for i in range(3))
    neg_sigma = torch.addcmul((-0.5 * a * dx * dx)[:, :, None] + (-0.5 * c * dy * dy)[:, :, :, None],
                              (-b * dy)[:, :, :, None], dx[:, :, None])  # fmt: skip
    alpha = torch.clamp(opac[:, :, None, None] * torch.exp(neg_sigma), max=MAX_ALPHA)
    counts = (neg_sigma <= 0) & (alpha >= ALPHA_THRESHOLD)
    return alpha.reshape(B, T, ts * ts, K), counts.reshape(B, T, ts * ts, K)


def _depth_sorted(proj: Projected, opacities: Tensor, features: Tensor, tile_size: int, width: int, height: int):
    """Per-view Gaussian attributes sorted front to back (culled Gaussians last)."""
    B, N = proj.depths.shape
    culled = (proj.radii <= 0).any(-1)
    order = torch.argsort(torch.where(culled, torch.inf, proj.depths.detach()), dim=-1)

    def take(x: Tensor) -> Tensor:
        return torch.gather(x, 1, order.view(B, N, *([1] * (x.dim() - 2))).expand_as(x))

    rects = tile_bounds(proj.means2d, proj.radii, tile_size, width, height)
    opac = torch.gather(opacities.expand(B, N), 1, order)
    return take(proj.means2d), take(proj.conics), take(proj.depths), take(features), opac, take(rects)


def composite_dense(
    proj: Projected, opacities: Tensor, features: Tensor, width: int, height: int, tile_size: int = 16
) -> tuple[Tensor, Tensor, Tensor]:
    """Every pixel against every Gaussian (masked to its tiles): the reference layout.

    Args:
        proj: :class:`Projected` with B views of N Gaussians.
        opacities: [N]; features: [B, N, D].

    Returns:
        features [B, H, W, D], alpha [B, H, W], accumulated depth [B, H, W] (not normalised).
    """
    B = proj.depths.shape[0]
    means2d, conics, depths, feats, opac, rects = _depth_sorted(proj, opacities, features, tile_size, width, height)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=feats.device), torch.arange(width, device=feats.device), indexing="ij"
    )
    xs, ys = xs.reshape(-1, 1), ys.reshape(-1, 1)  # [P, 1]
    tx, ty = xs // tile_size, ys // tile_size
    in_rect = (
        (tx >= rects[:, None, :, 0])
        & (ty >= rects[:, None, :, 1])
        & (tx < rects[:, None, :, 2])
        & (ty < rects[:, None, :, 3])
    )  # [B, P, N]
    alpha, counts = _alpha_at(
        means2d[:, None], conics[:, None], opac[:, None], xs.to(feats.dtype) + 0.5, ys.to(feats.dtype) + 0.5
    )
    weights = _blend_weights(alpha, counts & in_rect)  # [B, P, N]
    out_feats = torch.bmm(weights, feats).reshape(B, height, width, -1)
    out_alpha = weights.sum(-1).reshape(B, height, width)
    out_depth = (weights * depths[:, None, :]).sum(-1).reshape(B, height, width)
    return out_feats, out_alpha, out_depth


def composite_tiled(
    proj: Projected, opacities: Tensor, features: Tensor, width: int, height: int, tile_size: int = 16
) -> tuple[Tensor, Tensor, Tensor]:
    """Each tile against the depth-sorted list of Gaussians binned to it (gsplat's layout).

    Same arguments and returns as :func:`composite_dense`.
    """
    B = proj.depths.shape[0]
    device, dtype = features.device, features.dtype
    means2d, conics, depths, feats, opac, rects = _depth_sorted(proj, opacities, features, tile_size, width, height)
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    tile_ix = torch.arange(tiles_x, device=device).repeat(tiles_y)[:, None]  # [T, 1]
    tile_iy = torch.arange(tiles_y, device=device).repeat_interleave(tiles_x)[:, None]
    member = (
        (tile_ix >= rects[:, None, :, 0])
        & (tile_iy >= rects[:, None, :, 1])
        & (tile_ix < rects[:, None, :, 2])
        & (tile_iy < rects[:, None, :, 3])
    )  # [B, T, N], columns in depth order
    count = member.sum(-1)  # [B, T]
    K = max(int(count.max()), 1)
    # A stable sort of "not a member" brings each tile's members to the front, depth order kept.
    lists = torch.sort((~member).to(torch.uint8), dim=-1, stable=True).indices[..., :K]  # [B, T, K]
    valid = torch.arange(K, device=device) < count[..., None]

    def gather(x: Tensor) -> Tensor:  # [B, N, C] -> [B, T, K, C]
        flat = lists.reshape(B, -1, 1).expand(-1, -1, x.shape[-1])
        return torch.gather(x, 1, flat).reshape(B, *lists.shape[1:], x.shape[-1])

    # Pixel centres of each tile's columns and rows; pixels past the image border are dropped at the end.
    offsets = torch.arange(tile_size, device=device)
    px = (tile_ix * tile_size + offsets).to(dtype) + 0.5  # [T, ts]
    py = (tile_iy * tile_size + offsets).to(dtype) + 0.5
    alpha, counts = _tile_alpha(gather(means2d), gather(conics), gather(opac[..., None])[..., 0], px, py)
    weights = _blend_weights(alpha, counts & valid[:, :, None, :])  # [B, T, S, K]
    # Depth and alpha ride along as two more channels of the one product (each a pass over the
    # weights otherwise).
    extra = torch.stack([depths, torch.ones_like(depths)], -1)  # [B, N, 2]
    tile_out = weights @ gather(torch.cat([feats, extra], -1))  # [B, T, S, D + 2]
    tile_feats, tile_depth, tile_alpha = tile_out[..., :-2], tile_out[..., -2], tile_out[..., -1]

    def untile(x: Tensor) -> Tensor:  # [B, T, S, C] -> [B, H, W, C]
        x = x.reshape(B, tiles_y, tiles_x, tile_size, tile_size, -1).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(B, tiles_y * tile_size, tiles_x * tile_size, -1)[:, :height, :width]

    return untile(tile_feats), untile(tile_alpha[..., None])[..., 0], untile(tile_depth[..., None])[..., 0]


def rasterize_torch(
    proj: Projected,
    opacities: Tensor,
    features: Tensor,
    width: int,
    height: int,
    tile_size: int = 16,
    layout: Literal["tiled", "dense"] = "tiled",
    element_budget: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render B views, a few at a time so each [views, pixels, gaussians] slab stays under budget.

    Args:
        proj: :class:`Projected` with B views of N Gaussians.
        opacities: [N]; features: [B, N, D].
        layout: "tiled" (fast) or "dense" (reference); both compute the same function.
        element_budget: slab size per chunk; default by device type (``ELEMENT_BUDGET``).

    Returns:
        features [B, H, W, D], alpha [B, H, W], accumulated depth [B, H, W] (not normalised).
    """
    composite = {"tiled": composite_tiled, "dense": composite_dense}[layout]
    if element_budget is None:
        element_budget = ELEMENT_BUDGET.get(features.device.type, ELEMENT_BUDGET["cuda"])
    chunks = _view_chunks(proj, width, height, tile_size, layout, element_budget)
    # With several chunks, keeping every chunk's intermediates for backward would undo the
    # budget; recomputing each chunk in backward keeps memory at one chunk's worth.
    recompute = torch.is_grad_enabled() and len(chunks) > 1
    outs = []
    for sl in chunks:
        args = (*(t[sl] for t in proj), opacities, features[sl], width, height, tile_size)
        if recompute:
            outs.append(checkpoint(_composite_unpacked, composite, *args, use_reentrant=False))
        else:
            outs.append(_composite_unpacked(composite, *args))
    return tuple(torch.cat(parts, dim=0) for parts in zip(*outs, strict=True))  # type: ignore[return-value]


def _composite_unpacked(composite, means2d, conics, depths, radii, opacities, features, width, height, tile_size):
    return composite(Projected(means2d, conics, depths, radii), opacities, features, width, height, tile_size)


def tile_list_lengths(proj: Projected, width: int, height: int, tile_size: int) -> Tensor:
    """How many Gaussians each tile composites: [B, tiles_y, tiles_x] int64.

    Each Gaussian adds 1 over its tile rectangle; a 2D difference array and two cumulative sums
    count all rectangles at once without materialising tile-Gaussian pairs.
    """
    B = proj.depths.shape[0]
    rects = tile_bounds(proj.means2d, proj.radii, tile_size, width, height)
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    x0, y0, x1, y1 = rects.unbind(-1)
    diff = torch.zeros(B, (tiles_y + 1) * (tiles_x + 1), dtype=torch.int64, device=rects.device)
    for ys, xs, sign in ((y0, x0, 1), (y0, x1, -1), (y1, x0, -1), (y1, x1, 1)):
        nonempty = (x1 > x0) & (y1 > y0)
        diff.scatter_add_(1, ys * (tiles_x + 1) + xs, sign * nonempty.long())
    grid = diff.reshape(B, tiles_y + 1, tiles_x + 1).cumsum(1).cumsum(2)
    return grid[:, :tiles_y, :tiles_x]


def _view_chunks(
    proj: Projected, width: int, height: int, tile_size: int, layout: str, element_budget: int
) -> list[slice]:
    """Consecutive groups of views whose largest slab ([views, pixels, list length]) fits the budget."""
    B, N = proj.depths.shape
    if layout == "dense":
        per_view = torch.full((B,), width * height * N)
    else:
        longest = tile_list_lengths(proj, width, height, tile_size).amax(dim=(1, 2)).clamp(min=1)
        tiles = math.ceil(width / tile_size) * math.ceil(height / tile_size)
        per_view = longest.cpu() * tiles * tile_size * tile_size
    chunks, start, widest = [], 0, 0
    for b, cost in enumerate(per_view.tolist()):
        widest = max(widest, cost)
        if b > start and widest * (b - start + 1) > element_budget:
            chunks.append(slice(start, b))
            start, widest = b, cost
    chunks.append(slice(start, B))
    return chunks
