"""Geometry-free class scores: every pixel's feature against every Gaussian of every class.

``S[b, y] = mean_i max(max_{k valid in y} f_i . C_yk, max_m f_i . bank_m)`` over the (masked)
pixels i of image b, and the per-pixel rule it shares with render-and-compare
(:func:`object_or_background`, :func:`background_scores`). Two implementations of one function:

- :func:`class_scores_torch`, the reference and the CPU path: products chunk by chunk, each
  chunk materialising [B, chunk, Y * K] scores (bf16 on CUDA, fp32 elsewhere).
- :func:`~novum3d.model.matching_triton.class_scores_triton`, CUDA: a fused kernel that never writes a
  score to global memory (:mod:`novum3d.model.matching_triton`).

:func:`class_scores` picks the kernel on CUDA when it applies, the reference otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .matching_triton import class_scores_triton, triton_applies

__all__ = [
    "BACKGROUND_REDUCTIONS",
    "background_scores",
    "class_scores",
    "class_scores_torch",
    "object_or_background",
]


def object_or_background(obj: Tensor, background: Tensor, temperature: float = 0.0) -> Tensor:
    """NOVUM's per-pixel score: ``max(object score, background score)`` (broadcast).

    A pixel counts for the object (a class's best Gaussian, or the rendered volume) only as far as
    it matches it better than the background bank's best vector; elsewhere it adds the background
    score, the same for every class or pose. Classification (:func:`class_scores_torch`; the Triton
    kernel applies the same rule in registers) and render-and-compare (templates and refinement)
    both score with it. ``temperature`` t > 0 (render-and-compare only) softens the max to
    ``t log(exp(obj / t) + exp(background / t))``, the log-likelihood of the two-component vMF
    mixture at that temperature: within about t of the background an object score still counts.
    """
    if temperature > 0:
        return temperature * torch.logaddexp(obj / temperature, background / temperature)
    return torch.maximum(obj, background)


BACKGROUND_REDUCTIONS = ("max", "mean", "none")


def background_scores(feature_maps: Tensor, bank: Tensor, reduce: str = "max") -> Tensor:
    """[B, h, w] background score of each pixel of feature maps [B, D, h, w] against a bank [M, D].

    ``reduce="max"``: the best bank vector, ``max_m f_i . b_m`` (the classifier's rule).
    ``reduce="mean"``: the bank's normalised mean vector, ``f_i . normalise(mean_m b_m)``: the authors'
    render-and-compare with ``inference.use_clutter: true`` (GenIntel/NOVUM src/inference.py L80
    ``mean_clutter_bank``, src/lib/losses.py L32-37 ``loss_fun``).
    ``reduce="none"``: no background, -1 everywhere (no unit-feature score is below it, so
    ``max(object, -1)`` is the object score): their default, ``use_clutter: false``
    (config/defaults.yaml L79; src/inference.py passes no clutter score), where ``loss_fun`` is
    ``1 - mean(object score)``.
    -1 everywhere also when the bank is empty: no background can beat an object score then.
    """
    if reduce not in BACKGROUND_REDUCTIONS:
        raise ValueError(f"reduce: one of {BACKGROUND_REDUCTIONS}, got {reduce!r}")
    if bank.shape[0] == 0 or reduce == "none":
        return feature_maps.new_full((feature_maps.shape[0], *feature_maps.shape[-2:]), -1.0)
    bank = bank.to(feature_maps.dtype)
    if reduce == "mean":
        return torch.einsum("bdhw,d->bhw", feature_maps, F.normalize(bank.mean(0), dim=0))
    return torch.einsum("bdhw,md->bmhw", feature_maps, bank).amax(1)


def class_scores(
    feature_maps: Tensor,
    volume_features: Tensor,
    valid: Tensor,
    bank: Tensor,
    pixel_mask: Tensor | None = None,
    backend: str = "auto",
    chunk_pixels: int = 2048,
) -> Tensor:
    """``S_y = mean_i max(max_{k in y} f_i . C_k, max_b f_i . b)`` over the (masked) pixels.

    The mean instead of NOVUM's sum keeps scores comparable across image sizes; the argmax is
    the same. On CUDA the products run in bf16 (fp32 accumulation in the Triton kernel).

    Args:
        feature_maps: [B, D, h, w] unit features (any memory format).
        volume_features: [Y, K, D]; valid: [Y, K] bool; bank: [M, D] (M may be 0).
        pixel_mask: [B, h, w] bool, pixels to use (e.g. inside an object box); default all.
            An image with no pixel selected scores 0 for every class.
        backend: ``"auto"`` (Triton on CUDA when it can run, else torch), ``"torch"`` or ``"triton"``.
        chunk_pixels: torch backend only: pixels per product, bounding memory to B * chunk * Y * K values.

    Returns:
        [B, Y] fp32 scores.
    """
    if backend == "auto":
        backend = "triton" if triton_applies(feature_maps) else "torch"
    if backend == "torch":
        return class_scores_torch(feature_maps, volume_features, valid, bank, pixel_mask, chunk_pixels)
    if backend == "triton":
        return class_scores_triton(feature_maps, volume_features, valid, bank, pixel_mask)
    raise ValueError(f"backend: expected 'auto', 'torch' or 'triton', got {backend!r}")


def class_scores_torch(
    feature_maps: Tensor,
    volume_features: Tensor,
    valid: Tensor,
    bank: Tensor,
    pixel_mask: Tensor | None = None,
    chunk_pixels: int = 2048,
) -> Tensor:
    """The reference: products chunk by chunk, bf16 on CUDA, fp32 elsewhere. Arguments as :func:`class_scores`."""
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
            obj = object_or_background(obj, bg[..., None])
        m = mask[:, start : start + chunk_pixels, None].float()
        total += (obj * m).sum(1)
    return total / mask.sum(1, keepdim=True).clamp(min=1).float()
