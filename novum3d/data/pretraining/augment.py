"""ImageNet-style training augmentations, batched on the device: random resized crops, horizontal flips,
colour jitter.

The parameters of a global batch come from one numpy stream seeded by (seed, step), one row per image
of the global batch, so N ranks holding B/N images each draw what one process with B images draws,
and a resumed run draws what the uninterrupted one did. The crop follows torchvision's
RandomResizedCrop sampling (``transforms/v2/_geometry.py``: up to 10 tries of an area share and a
log-uniform aspect ratio, then a centre crop clamped to the ratio range), done for all images at once
and applied with one ``grid_sample``; the jitter is torchvision's ColorJitter arithmetic
(``transforms/v2/functional/_color.py``: brightness and saturation as blends with black and the
grey image, contrast with the grey image's mean, hue as a rotation in HSV) in a fixed order
(torchvision permutes it per image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

TRIES = 10
GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


@dataclass
class AugmentParams:
    boxes: Tensor  # [B, 4] float64: top, left, height, width in pixels
    flips: Tensor  # [B] bool
    jitter: Tensor  # [B, 4] float64: brightness, contrast, saturation factors and the hue shift


def draw_params(
    seed: int,
    step: int,
    global_batch: int,
    first: int,
    count: int,
    size: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    flip: float,
    jitter: tuple[float, float, float, float],
) -> AugmentParams:
    """The parameters of images ``first .. first + count`` of the global batch of ``step``.

    Args:
        size: (H, W) of the source images.
        scale, ratio: RandomResizedCrop's area share and aspect ratio (width / height) ranges.
        flip: probability of a horizontal flip.
        jitter: brightness, contrast, saturation (factors drawn from [1 - x, 1 + x]) and hue (shift in
            [-x, x] turns); 0 leaves that one out.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, step]))
    u = rng.uniform(size=(global_batch, TRIES * 4 + 5))[first : first + count]
    H, W = size
    area = H * W
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0]) * u[:, 0:TRIES])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[:, TRIES : 2 * TRIES])
    w = np.round(np.sqrt(target * aspect))
    h = np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (w <= W) & (h > 0) & (h <= H)
    pick = ok.argmax(1)  # the first try that fits
    rows = np.arange(count)
    h, w = h[rows, pick], w[rows, pick]
    top = np.floor(u[rows, 2 * TRIES + pick] * (H - h + 1))
    left = np.floor(u[rows, 3 * TRIES + pick] * (W - w + 1))
    # No try fitted: torchvision's fallback, the centre crop clamped to the ratio range.
    in_ratio = W / H
    fh, fw = H, W
    if in_ratio < ratio[0]:
        fh = round(W / ratio[0])
    elif in_ratio > ratio[1]:
        fw = round(H * ratio[1])
    none = ~ok.any(1)
    h, w = np.where(none, fh, h), np.where(none, fw, w)
    top, left = np.where(none, (H - fh) // 2, top), np.where(none, (W - fw) // 2, left)
    tail = u[:, 4 * TRIES :]
    b, c, s, hue = jitter
    factors = np.column_stack([1 - b + 2 * b * tail[:, 1], 1 - c + 2 * c * tail[:, 2], 1 - s + 2 * s * tail[:, 3],
                               -hue + 2 * hue * tail[:, 4]])  # fmt: skip
    return AugmentParams(
        boxes=torch.from_numpy(np.column_stack([top, left, h, w])),
        flips=torch.from_numpy(tail[:, 0] < flip),
        jitter=torch.from_numpy(factors),
    )


def resized_crops(images: Tensor, boxes: Tensor, flips: Tensor, out_size: tuple[int, int]) -> Tensor:
    """Crop each image [B, C, H, W] to its box [B, 4] (top, left, height, width), mirror it where ``flips``,
    resize to ``out_size`` bilinearly: [B, C, h, w]. Output pixel centres sample the box evenly, as a
    bilinear resize of the crop does (edges clamp to the image, not to the box)."""
    B, _, H, W = images.shape
    top, left, h, w = (boxes[:, k].to(images.device, torch.float32) for k in range(4))
    sx = w / W * torch.where(flips.to(images.device), -1.0, 1.0)
    theta = torch.zeros(B, 2, 3, device=images.device)
    theta[:, 0, 0], theta[:, 0, 2] = sx, (2 * left + w) / W - 1
    theta[:, 1, 1], theta[:, 1, 2] = h / H, (2 * top + h) / H - 1
    grid = F.affine_grid(theta, [B, images.shape[1], *out_size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _grey(images: Tensor) -> Tensor:
    r, g, b = images.unbind(1)
    return (GREY[0] * r + GREY[1] * g + GREY[2] * b).unsqueeze(1)


def _rgb_to_hsv(images: Tensor) -> Tensor:
    r, g, b = images.unbind(1)
    maxc, _ = images.max(1)
    minc, _ = images.min(1)
    delta = maxc - minc
    s = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    return torch.stack([(h / 6.0) % 1.0, s, maxc], 1)


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    h, s, v = hsv.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sectors = ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))
    table = torch.stack([torch.stack(c, 1) for c in sectors], 0)  # [6, B, 3, H, W]
    return table.gather(0, i[None, :, None].expand(1, -1, 3, -1, -1)).squeeze(0)


def color_jitter(images: Tensor, factors: Tensor) -> Tensor:
    """Brightness, contrast, saturation and hue of images [B, 3, H, W] in [0, 1] by ``factors`` [B, 4]."""
    f = factors.to(images.device, images.dtype)
    b, c, s, hue = (f[:, k, None, None, None] for k in range(4))
    images = (images * b).clamp(0, 1)
    mean = _grey(images).mean(dim=(1, 2, 3), keepdim=True)
    images = (c * images + (1 - c) * mean).clamp(0, 1)
    images = (s * images + (1 - s) * _grey(images)).clamp(0, 1)
    if bool((factors[:, 3] != 0).any()):
        hsv = _rgb_to_hsv(images)
        hsv = torch.cat([(hsv[:, :1] + hue) % 1.0, hsv[:, 1:]], 1)
        images = _hsv_to_rgb(hsv)
    return images


def augment_batch(images: Tensor, params: AugmentParams, out_size: tuple[int, int]) -> Tensor:
    """Random resized crop and flip, then colour jitter: [B, 3, H, W] in [0, 1] -> [B, 3, h, w]."""
    return color_jitter(resized_crops(images, params.boxes, params.flips, out_size), params.jitter)
