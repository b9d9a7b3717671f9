"""Version 2 occlusion: object-like occluders over the object and the background, as in
OccludedPASCAL3D+. Its ``FGL{k}_BGL{k}`` folders pair foreground level k (20-40, 40-60, 60-80% of
the object hidden) with background level k (0-20, 20-40, 40-60% of the background hidden, by the
data set's README); its occluders are objects cropped from MS-COCO.

Occluders are shapes of real things (smooth blobs, limbs, man-made polygons), each filled from
a family that no background uses (appearance_v2.OCCLUDER_FAMILIES) and shaded as if lit from
one side, so that "occluder" never looks like "background".
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .appearance_v2 import OCCLUDER_FAMILIES, occluder_fill

OCCLUSION_LEVELS = {1: (0.2, 0.4), 2: (0.4, 0.6), 3: (0.6, 0.8)}  # share of the object (FGL)
BACKGROUND_LEVELS = {1: (0.0, 0.2), 2: (0.2, 0.4), 3: (0.4, 0.6)}  # share of the background (BGL)


def occluder_shape(height: int, width: int, center, size: float, rng: np.random.Generator) -> np.ndarray:
    """A [H, W] bool mask of one occluder around ``center`` (x, y), about ``size`` in radius."""
    img = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(img)
    cx, cy = center
    kind = rng.uniform()
    if kind < 0.45:  # smooth blob: a star-shaped outline with a few low harmonics
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        r = np.ones_like(t)
        for k in range(2, 6):
            r += rng.uniform(0, 0.25) / k * 2 * np.cos(k * t + rng.uniform(0, 2 * np.pi))
        r *= size * rng.uniform(0.6, 1.0)
        aspect = rng.uniform(0.5, 1.0)
        draw.polygon(list(zip(cx + r * np.cos(t), cy + aspect * r * np.sin(t), strict=True)), fill=255)
    elif kind < 0.7:  # limb or pole: a thick segment with round ends
        a = rng.uniform(0, np.pi)
        half = size * rng.uniform(0.8, 1.6)
        thick = size * rng.uniform(0.3, 0.6)
        p0 = (cx - half * np.cos(a), cy - half * np.sin(a))
        p1 = (cx + half * np.cos(a), cy + half * np.sin(a))
        draw.line([p0, p1], fill=255, width=max(int(thick), 1))
        for x, y in (p0, p1):
            draw.ellipse([x - thick / 2, y - thick / 2, x + thick / 2, y + thick / 2], fill=255)
    else:  # man-made: a polygon, often a rectangle
        if rng.uniform() < 0.5:
            a = rng.uniform(0, np.pi)
            hw, hh = size * rng.uniform(0.5, 1.0, size=2)
            corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            pts = corners @ rot.T + [cx, cy]
        else:
            k = rng.integers(3, 8)
            angles = np.sort(rng.uniform(0, 2 * np.pi, size=k))
            radii = size * rng.uniform(0.5, 1.0, size=k)
            pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], -1)
        draw.polygon([tuple(p) for p in pts], fill=255)
    return np.asarray(img) > 0


def occlude(
    image: np.ndarray,
    object_mask: np.ndarray,
    level: int,
    rng: np.random.Generator,
    max_tries: int = 100,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Hide a level's share of the object and, with further occluders, of the background.

    Args:
        image: [H, W, 3] in [0, 1]; object_mask: [H, W] bool (non-empty).
        level: 1, 2 or 3: 20-40, 40-60, 60-80% of the object hidden; 0-20, 20-40, 40-60% of the
            background.

    Returns:
        (occluded image, occluder mask, object share hidden, background share hidden).
    """
    lo, hi = OCCLUSION_LEVELS[level]
    blo, bhi = BACKGROUND_LEVELS[level]
    area = object_mask.sum()
    if area == 0:
        raise ValueError("object_mask: empty, nothing to occlude")
    h, w = object_mask.shape
    bg_mask = ~object_mask
    bg_area = max(int(bg_mask.sum()), 1)
    ys, xs = np.nonzero(object_mask)
    bys, bxs = np.nonzero(bg_mask)
    extent = max(np.ptp(xs), np.ptp(ys), 4)
    for _ in range(max_tries):
        shapes: list[np.ndarray] = []
        occ = np.zeros_like(object_mask)
        target = rng.uniform(lo, hi)
        fg = 0.0
        for _ in range(6):  # occluders over the object
            i = rng.integers(len(xs))
            shape = occluder_shape(h, w, (xs[i], ys[i]), extent * rng.uniform(0.2, 0.5) * np.sqrt(target), rng)
            shapes.append(shape)
            occ |= shape
            fg = (occ & object_mask).sum() / area
            if fg >= lo:
                break
        if not lo <= fg <= hi:
            continue
        bg_target = rng.uniform(blo, bhi)
        bg = (occ & bg_mask).sum() / bg_area
        for _ in range(60):  # occluders over the background, not pushing the object past the level
            if bg >= bg_target or len(bxs) == 0:
                break
            i = rng.integers(len(bxs))
            shape = occluder_shape(h, w, (bxs[i], bys[i]), max(h, w) * rng.uniform(0.12, 0.3), rng)
            if ((occ | shape) & object_mask).sum() / area > hi:
                continue
            shapes.append(shape)
            occ |= shape
            bg = (occ & bg_mask).sum() / bg_area
        fg = (occ & object_mask).sum() / area
        if not (lo <= fg <= hi and (blo <= bg <= bhi or len(bxs) == 0)):
            continue
        out = image.copy()
        for shape in shapes:
            yy, xx = np.nonzero(shape)
            if len(yy) == 0:  # entirely outside the image
                continue
            y0, y1, x0, x1 = yy.min(), yy.max() + 1, xx.min(), xx.max() + 1
            fill = occluder_fill(str(rng.choice(OCCLUDER_FAMILIES)), y1 - y0, x1 - x0, rng)
            region = out[y0:y1, x0:x1]
            m = shape[y0:y1, x0:x1]
            region[m] = fill[m]
        return out, occ, float(fg), float(bg)
    raise RuntimeError(f"could not reach occlusion level {level} in {max_tries} tries")
