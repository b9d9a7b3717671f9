"""Textures, backgrounds and shading for synthetic images, in families.

Families split into in-distribution ones (train/val/test) and held-out ones used only by the
OOD texture and context splits, so those splits show the model something new.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

TEXTURES_ID = ("solid", "stripes", "checker", "noise")
TEXTURES_OOD = ("dots", "marble")
BACKGROUNDS_ID = ("gradient", "blobs", "noise", "stripes")
BACKGROUNDS_OOD = ("grid", "rings")


def _palette(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0.1, 0.95, size=(n, 3))


def texture_colors(family: str, points: np.ndarray, part_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Albedo [P, 3] for surface points [P, 3] (object frame) of parts [P]."""
    colors = _palette(rng, 3)[part_ids % 3]
    second = _palette(rng, 1)[0]
    freq = rng.uniform(6, 14)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    t = points @ axis
    if family == "solid":
        return colors
    if family == "stripes":
        w = (np.sin(freq * t * np.pi) > 0)[:, None]
        return np.where(w, colors, 0.6 * colors + 0.4 * second)
    if family == "checker":
        c = np.floor(points * freq / 2).astype(int).sum(axis=1) % 2 == 0
        return np.where(c[:, None], colors, 0.5 * colors + 0.5 * second)
    if family == "noise":
        phase = rng.uniform(0, 2 * np.pi, size=3)
        n = np.sin(points @ rng.normal(size=(3, 3)) * freq + phase).mean(axis=1, keepdims=True)
        return np.clip(colors * (1 + 0.35 * n), 0, 1)
    if family == "dots":
        cell = np.mod(points * freq, 1.0) - 0.5
        dot = (np.linalg.norm(cell, axis=1) < 0.3)[:, None]
        return np.where(dot, second, colors)
    if family == "marble":
        v = np.sin(freq * t * np.pi + 3 * np.sin(points @ rng.normal(size=3) * 5))
        return np.clip(colors * (0.55 + 0.45 * v[:, None]) + 0.2 * second * (1 - v[:, None]) / 2, 0, 1)
    raise ValueError(f"texture family: unknown {family!r}")


def background(family: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A [H, W, 3] float image in [0, 1]."""
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    c0, c1 = _palette(rng, 2)
    if family == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = np.clip((np.cos(angle) * xs + np.sin(angle) * ys + 0.5) / 1.5, 0, 1)[..., None]
        return c0 * (1 - t) + c1 * t
    if family == "blobs":
        img = np.tile(c0, (height, width, 1))
        for _ in range(rng.integers(4, 9)):
            cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25)
            m = ((xs - cx) ** 2 + (ys - cy) ** 2 < r * r)[..., None]
            img = np.where(m, _palette(rng, 1)[0], img)
        return gaussian_filter(img, sigma=(max(height, width) / 128, max(height, width) / 128, 0))
    if family == "noise":
        base = rng.normal(size=(height, width, 3))
        smooth = gaussian_filter(base, sigma=(max(height, width) / 24, max(height, width) / 24, 0))
        smooth = (smooth - smooth.min()) / (np.ptp(smooth) + 1e-9)
        return 0.5 * smooth + 0.5 * (c0 * 0.6 + 0.2)
    if family == "stripes":
        freq = rng.uniform(4, 12)
        angle = rng.uniform(0, np.pi)
        s = (np.sin((np.cos(angle) * xs + np.sin(angle) * ys) * freq * 2 * np.pi) > 0)[..., None]
        return np.where(s, c0, c1)
    if family == "grid":
        freq = rng.uniform(6, 14)
        g = ((np.mod(xs * freq, 1) < 0.12) | (np.mod(ys * freq, 1) < 0.12))[..., None]
        return np.where(g, c1, c0)
    if family == "rings":
        cx, cy, freq = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(5, 12)
        r = np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2)
        return np.where((np.sin(r * freq * 2 * np.pi) > 0)[..., None], c0, c1)
    raise ValueError(f"background family: unknown {family!r}")


def lambert(normals: np.ndarray, light_dir: np.ndarray, ambient: float) -> np.ndarray:
    """Two-sided Lambertian shading factor [P] for unit normals [P, 3]."""
    return ambient + (1 - ambient) * np.abs(normals @ light_dir)
