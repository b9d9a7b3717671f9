"""Nuisances for the robustness splits: occluders, ImageNet-C style corruptions, weather.

Corruptions follow the ImageNet-C recipes (Hendrycks & Dietterich, 2019) in spirit, written
with numpy/scipy/PIL so the package needs nothing more: noise, blur, digital and weather
families at severities 1-5.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter, uniform_filter

OCCLUSION_LEVELS = {1: (0.2, 0.4), 2: (0.4, 0.6), 3: (0.6, 0.8)}


def _occluder_shape(height: int, width: int, center, size: float, rng: np.random.Generator) -> np.ndarray:
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    cx, cy = center
    if rng.uniform() < 0.5:
        k = rng.integers(3, 8)
        angles = np.sort(rng.uniform(0, 2 * np.pi, size=k))
        radii = size * rng.uniform(0.5, 1.0, size=k)
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a, r in zip(angles, radii, strict=True)]
        draw.polygon(pts, fill=255)
    else:
        rx, ry = size * rng.uniform(0.5, 1.0, size=2)
        draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    return np.asarray(img) > 0


def occlude(
    image: np.ndarray,
    object_mask: np.ndarray,
    level: int,
    rng: np.random.Generator,
    occluder_texture: np.ndarray,
    max_tries: int = 200,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Paste occluders until the hidden share of the object lies in the level's range.

    Args:
        image: [H, W, 3] in [0, 1]; object_mask: [H, W] bool (non-empty).
        level: 1, 2 or 3 (20-40, 40-60, 60-80% of the object hidden).
        occluder_texture: [H, W, 3] filling the occluders.

    Returns:
        (occluded image, occluder mask, measured ratio |object & occluder| / |object|).
    """
    lo, hi = OCCLUSION_LEVELS[level]
    area = object_mask.sum()
    if area == 0:
        raise ValueError("object_mask: empty, nothing to occlude")
    h, w = object_mask.shape
    ys, xs = np.nonzero(object_mask)
    extent = max(np.ptp(xs), np.ptp(ys), 4)
    for _ in range(max_tries):
        occ = np.zeros_like(object_mask)
        target = rng.uniform(lo, hi)
        for _ in range(6):
            i = rng.integers(len(xs))
            size = extent * rng.uniform(0.2, 0.5) * np.sqrt(target)
            occ |= _occluder_shape(h, w, (xs[i], ys[i]), size, rng)
            ratio = (occ & object_mask).sum() / area
            if ratio >= lo:
                break
        if lo <= ratio <= hi:
            out = np.where(occ[..., None], occluder_texture, image)
            return out, occ, float(ratio)
    raise RuntimeError(f"could not reach occlusion level {level} in {max_tries} tries")


def _gaussian_noise(x, s, rng):
    return x + rng.normal(scale=[0.08, 0.12, 0.18, 0.26, 0.38][s - 1], size=x.shape)


def _shot_noise(x, s, rng):
    lam = [60, 25, 12, 5, 3][s - 1]
    return rng.poisson(np.clip(x, 0, 1) * lam) / lam


def _impulse_noise(x, s, rng):
    amount = [0.03, 0.06, 0.09, 0.17, 0.27][s - 1]
    out = x.copy()
    m = rng.uniform(size=x.shape[:2]) < amount
    out[m] = rng.integers(0, 2, size=(m.sum(), 1)).astype(float)
    return out


def _scale(x) -> float:
    # ImageNet-C radii are for 224 px images; small images keep at least those radii.
    return max(1.0, max(x.shape[:2]) / 224)


def _defocus_blur(x, s, rng):
    r = [1, 2, 3, 4, 6][s - 1] * _scale(x)
    return uniform_filter(x, size=(int(2 * r + 1), int(2 * r + 1), 1))


def _gaussian_blur(x, s, rng):
    sigma = [1, 2, 3, 4, 6][s - 1] * _scale(x)
    return gaussian_filter(x, sigma=(sigma, sigma, 0))


def _contrast(x, s, rng):
    c = [0.4, 0.3, 0.2, 0.1, 0.05][s - 1]
    mean = x.mean(axis=(0, 1), keepdims=True)
    return (x - mean) * c + mean


def _brightness(x, s, rng):
    return x + [0.1, 0.2, 0.3, 0.4, 0.5][s - 1]


def _pixelate(x, s, rng):
    h, w = x.shape[:2]
    f = [0.6, 0.5, 0.4, 0.3, 0.25][s - 1]
    img = Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8))
    small = img.resize((max(1, int(w * f)), max(1, int(h * f))), Image.BOX)
    return np.asarray(small.resize((w, h), Image.NEAREST), dtype=np.float64) / 255


def _jpeg(x, s, rng):
    quality = [25, 18, 15, 10, 7][s - 1]
    buf = io.BytesIO()
    Image.fromarray((np.clip(x, 0, 1) * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float64) / 255


def _fog(x, s, rng):
    h, w = x.shape[:2]
    density = [0.3, 0.4, 0.5, 0.6, 0.75][s - 1]
    haze = gaussian_filter(rng.uniform(size=(h, w)), sigma=max(h, w) / 10)
    haze = (haze - haze.min()) / (np.ptp(haze) + 1e-9)
    t = (density * (0.6 + 0.4 * haze))[..., None]
    return x * (1 - t) + 0.85 * t


def _snow(x, s, rng):
    h, w = x.shape[:2]
    amount = [0.02, 0.04, 0.06, 0.08, 0.1][s - 1]
    flakes = (rng.uniform(size=(h, w)) < amount).astype(float)
    flakes = np.clip(gaussian_filter(flakes, sigma=max(h, w) / 300 + 0.5) * 6, 0, 1)[..., None]
    return 0.85 * x + 0.15 * 0.9 + flakes * (1 - x)


def _rain(x, s, rng):
    h, w = x.shape[:2]
    amount = [0.01, 0.02, 0.03, 0.04, 0.05][s - 1]
    drops = (rng.uniform(size=(h, w)) < amount).astype(float)
    length = max(3, int(h / 25))
    streaks = uniform_filter(drops, size=(length, 1)) * length
    streaks = np.clip(np.roll(streaks, 1, axis=1) * 0.5 + streaks * 0.5, 0, 1)[..., None]
    return 0.8 * x + streaks * 0.6


CORRUPTIONS = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg,
}
WEATHER = {"fog": _fog, "snow": _snow, "rain": _rain}


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Apply one corruption or weather effect: [H, W, 3] in [0, 1] -> same, clipped."""
    table = CORRUPTIONS | WEATHER
    if name not in table:
        raise ValueError(f"corruption: expected one of {sorted(table)}, got {name!r}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity: expected 1-5, got {severity}")
    return np.clip(table[name](image.astype(np.float64), severity, rng), 0, 1)
