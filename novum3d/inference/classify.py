"""Geometry-free classification: one matrix product and two max reductions per pixel."""

from __future__ import annotations

import torch
from torch import Tensor


def class_scores(
    feature_maps: Tensor,
    volume_features: Tensor,
    valid: Tensor,
    bank: Tensor,
    pixel_mask: Tensor | None = None,
    chunk_pixels: int = 2048,
) -> Tensor:
    """``S_y = mean_i max(max_{k in y} f_i . C_k, max_b f_i . b)`` over the (masked) pixels.

    The mean instead of NOVUM's sum keeps scores comparable across image sizes; the argmax is
    the same. On CUDA the products run in bf16.

    Args:
        feature_maps: [B, D, h, w] unit features.
        volume_features: [Y, K, D]; valid: [Y, K] bool; bank: [M, D] (M may be 0).
        pixel_mask: [B, h, w] bool, pixels to use (e.g. inside an object box); default all.
        chunk_pixels: pixels per product, which bounds memory to B * chunk * Y * K values.

    Returns:
        [B, Y] scores.
    """
    B, D, h, w = feature_maps.shape
    Y, K, _ = volume_features.shape
    dtype = torch.bfloat16 if feature_maps.is_cuda else torch.float32
    feats = feature_maps.flatten(2).transpose(1, 2).to(dtype)  # [B, P, D]
    vols = volume_features.reshape(Y * K, D).to(dtype).T
    pad = ~valid.reshape(1, 1, Y, K)
    mask = (
        pixel_mask.reshape(B, -1)
        if pixel_mask is not None
        else torch.ones(B, h * w, dtype=torch.bool, device=feats.device)
    )
    total = torch.zeros(B, Y, device=feats.device, dtype=torch.float32)
    for start in range(0, h * w, chunk_pixels):
        f = feats[:, start : start + chunk_pixels]
        obj = (f @ vols).view(B, -1, Y, K).masked_fill(pad, float("-inf")).amax(-1).float()  # [B, p, Y]
        if bank.shape[0] > 0:
            bg = (f @ bank.to(dtype).T).amax(-1).float()  # [B, p]
            obj = torch.maximum(obj, bg[..., None])
        m = mask[:, start : start + chunk_pixels, None].float()
        total += (obj * m).sum(1)
    return total / mask.sum(1, keepdim=True).clamp(min=1).float()
