"""gsplat 1.5.3 CUDA backend: tile-based rasterization of all views in one call."""

from __future__ import annotations

import functools

import torch
from torch import Tensor


@functools.cache
def gsplat_available() -> bool:
    """True when CUDA is usable and gsplat imports with its CUDA extension built."""
    if not torch.cuda.is_available():
        return False
    try:
        from gsplat.cuda._backend import _C
    except Exception:
        return False
    return _C is not None


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    eps2d: float = 0.3,
    tile_size: int = 16,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render with ``gsplat.rasterization`` (classic mode, features + expected depth in one pass).

    Args:
        means: [N, 3]; quats: [N, 4] wxyz; scales: [N, 3]; opacities: [N].
        features: [B, N, D], float32, on CUDA.
        viewmats: [B, 4, 4]; Ks: [B, 3, 3].

    Returns:
        features [B, H, W, D], alpha [B, H, W], accumulated depth [B, H, W] (not normalised).
    """
    from gsplat import rasterization

    D = features.shape[-1]
    # Depth rides along as one more channel; a single chunk keeps it to one raster pass.
    colors, alphas, _ = rasterization(
        means,
        quats,
        scales,
        opacities,
        features,
        viewmats,
        Ks,
        width,
        height,
        near_plane=near_plane,
        eps2d=eps2d,
        tile_size=tile_size,
        packed=False,
        render_mode="RGB+D",
        channel_chunk=D + 1,
    )
    return colors[..., :D], alphas[..., 0], colors[..., D]
