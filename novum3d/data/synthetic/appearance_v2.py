"""Version 2 appearance: natural backgrounds and occluders (materials and light: :mod:`.materials_v2`).

Taken from what real photographs have (docs/synthetic-benchmark.md says why):

- Backgrounds are built from the two standard models of natural-image statistics, the
  dead-leaves model (occluding shapes with power-law sizes) and 1/f ("fractal") noise, arranged
  into scenes: sky, water, road, terrain, rail track and room (the contexts PASCAL3D+ objects
  are seen in), two context-free families, and three held-out families (forest, brick wall,
  desert) used only by the OOD-context split. Occluders are filled from families no background
  uses (textile, fur, plastic, print).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import map_coordinates

from .appearance import TEXTURES_ID, TEXTURES_OOD

__all__ = [
    "BACKGROUNDS_ID",
    "BACKGROUNDS_OOD",
    "CONTEXT_GROUPS",
    "OCCLUDER_FAMILIES",
    "PREFERRED_BACKGROUNDS",
    "TEXTURES_ID",
    "TEXTURES_OOD",
    "background",
    "occluder_fill",
]

# --- backgrounds and context -------------------------------------------------------------------

CONTEXT_GROUPS = {
    "sky": ("sky",),
    "water": ("water",),
    "road or ground": ("road", "terrain", "rails"),
    "indoor": ("room",),
    "none": ("dead_leaves", "fractal"),
}
BACKGROUNDS_ID = ("sky", "water", "road", "terrain", "rails", "room", "dead_leaves", "fractal")
BACKGROUNDS_OOD = ("forest", "brick", "desert")
# Where PASCAL3D+'s objects are photographed (docs/synthetic-benchmark.md): aeroplanes against
# the sky, boats on water, road vehicles on roads (bikes also off road), trains on their tracks,
# furniture, monitors and bottles indoors.
PREFERRED_BACKGROUNDS = {
    "aeroplane": ("sky",),
    "bicycle": ("road", "terrain"),
    "boat": ("water",),
    "bottle": ("room",),
    "bus": ("road",),
    "car": ("road",),
    "chair": ("room",),
    "diningtable": ("room",),
    "motorbike": ("road", "terrain"),
    "sofa": ("room",),
    "train": ("rails",),
    "tvmonitor": ("room",),
}
OCCLUDER_FAMILIES = ("textile", "fur", "plastic", "print")


def context_distribution(categories: list[str], bias: float) -> np.ndarray:
    """P(background family | class) [C, len(BACKGROUNDS_ID)] for in-distribution splits."""
    table = np.full((len(categories), len(BACKGROUNDS_ID)), (1 - bias) / len(BACKGROUNDS_ID))
    for i, cat in enumerate(categories):
        prefs = PREFERRED_BACKGROUNDS[cat]
        for fam in prefs:
            table[i, BACKGROUNDS_ID.index(fam)] += bias / len(prefs)
    return table


def _hsv(h, s, v) -> np.ndarray:
    """Vectorised HSV -> RGB, all in [0, 1]; broadcasting arrays -> [..., 3]."""
    h, s, v = np.broadcast_arrays(np.asarray(h, float) % 1.0, np.asarray(s, float), np.asarray(v, float))
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], axis=-1)


def _colors(rng, n, h, s, v) -> np.ndarray:
    """n colours with hue, saturation, value drawn uniformly from the given (lo, hi) ranges."""
    return _hsv(rng.uniform(*h, size=n), rng.uniform(*s, size=n), rng.uniform(*v, size=n))


def fractal_noise(h: int, w: int, rng: np.random.Generator, beta: float = 2.0, stretch=(1.0, 1.0)) -> np.ndarray:
    """Gaussian noise [h, w] with a 1/f^beta power spectrum, zero mean and unit std.

    beta = 2 is the spectrum of natural images; ``stretch`` (y, x) > 1 makes features longer
    along the other axis (water ripples are stretched horizontally with stretch=(1, 6)).
    """
    fy = np.fft.fftfreq(h)[:, None] * stretch[0]
    fx = np.fft.rfftfreq(w)[None, :] * stretch[1]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2)
    amp[0, 0] = 0.0
    spec = amp * (rng.normal(size=f.shape) + 1j * rng.normal(size=f.shape))
    n = np.fft.irfft2(spec, s=(h, w))
    return (n - n.mean()) / (n.std() + 1e-12)


def _power_law_radii(rng, n: int, rmin: float, rmax: float, alpha: float = 3.0) -> np.ndarray:
    """Radii with density r^-alpha on [rmin, rmax] (alpha = 3: the scale-invariant dead leaves)."""
    a = 1 - alpha
    u = rng.uniform(size=n)
    return (rmin**a + u * (rmax**a - rmin**a)) ** (1 / a)


def dead_leaves(
    h: int,
    w: int,
    rng: np.random.Generator,
    colors: np.ndarray,
    rmin: float,
    rmax: float,
    base=(0.5, 0.5, 0.5),
    shapes: str = "disc",
    box=None,
    aspect: float = 1.0,
) -> np.ndarray:
    """Dead-leaves image [h, w, 3]: len(colors) shapes with power-law radii, later ones on top.

    Args:
        colors: [n, 3] in [0, 1], one per leaf.
        shapes: "disc", "rect" or "mixed"; ``aspect`` stretches leaves horizontally.
        box: (x0, y0, x1, y1) where centres fall (default: the whole image, with a margin).
    """
    img = Image.new("RGB", (w, h), tuple(int(255 * c) for c in base))
    draw = ImageDraw.Draw(img)
    n = len(colors)
    radii = _power_law_radii(rng, n, rmin, rmax)
    x0, y0, x1, y1 = box or (-0.05 * w, -0.05 * h, 1.05 * w, 1.05 * h)
    cx, cy = rng.uniform(x0, x1, size=n), rng.uniform(y0, y1, size=n)
    kinds = rng.uniform(size=n)
    cols = (np.clip(colors, 0, 1) * 255).astype(np.uint8)
    for i in range(n):
        rx, ry = radii[i] * aspect, radii[i]
        bbox = [cx[i] - rx, cy[i] - ry, cx[i] + rx, cy[i] + ry]
        col = tuple(int(c) for c in cols[i])
        if shapes == "rect" or (shapes == "mixed" and kinds[i] < 0.4):
            draw.rectangle(bbox, fill=col)
        else:
            draw.ellipse(bbox, fill=col)
    return np.asarray(img, dtype=np.float64) / 255


def _smoothstep(a, b, x):
    t = np.clip((x - a) / (b - a), 0, 1)
    return t * t * (3 - 2 * t)


def _sky(h, w, rng) -> np.ndarray:
    t = (np.arange(h)[:, None, None] + 0.5) / h
    if rng.uniform() < 0.25:  # overcast
        top = _colors(rng, 1, (0.55, 0.65), (0.0, 0.1), (0.55, 0.8))[0]
        low = np.clip(top * 1.1 + 0.05, 0, 1)
    else:
        top = _colors(rng, 1, (0.55, 0.63), (0.35, 0.75), (0.5, 0.9))[0]
        low = _hsv(0.58, rng.uniform(0.1, 0.3), rng.uniform(0.85, 1.0))
    img = top * (1 - t**0.8) + low * t**0.8
    cover = rng.uniform(0.05, 0.75)
    n = fractal_noise(h, w, rng, beta=rng.uniform(2.2, 3.0), stretch=(1.0, rng.uniform(0.5, 1.0)))
    thr = np.quantile(n, 1 - cover)
    a = (_smoothstep(thr, thr + 1.0, n) * rng.uniform(0.6, 1.0))[..., None]
    cloud = rng.uniform(0.85, 1.0) * (1 - 0.3 * _smoothstep(-1, 2, fractal_noise(h, w, rng, beta=2.5)))[..., None]
    return img * (1 - a) + cloud * a


def _horizon_row(h: int, rng, elevation: float, lo: float, hi: float) -> int:
    """Looking down from higher up shows more ground: the horizon rises with the elevation."""
    frac = np.clip(0.5 - 0.6 * np.sin(elevation) + rng.uniform(-0.12, 0.12), lo, hi)
    return round(float(frac * h))


def _ground_coords(h, w, hy, rng):
    """Perspective coordinates of a ground plane under horizon row hy: (u across, v along) [h-hy, w]."""
    rows = np.arange(hy, h)[:, None] + 0.5
    depth = h / np.maximum(rows - hy, 0.5)  # distance along the ground, 1 at the bottom row
    cx = w * rng.uniform(0.3, 0.7)
    u = (np.arange(w)[None, :] + 0.5 - cx) / h * depth
    return u, np.broadcast_to(depth, u.shape)


def _tile_sample(tile: np.ndarray, u, v, scale_u: float, scale_v: float) -> np.ndarray:
    """Sample a texture tile on the ground plane; scales are tile pixels per ground unit over
    the image height, so the nearest rows show about one tile pixel per image pixel."""
    th, tw = tile.shape[:2]
    h = u.shape[0] * 2
    coords = [np.mod(v * scale_v * h / 100, th), np.mod(u * scale_u * h / 100, tw)]
    return np.stack([map_coordinates(tile[..., c], coords, order=1, mode="wrap") for c in range(3)], -1)


def _treeline(h, w, rng, img, hy, color_v=(0.12, 0.35)):
    profile = fractal_noise(1, w, rng, beta=2.0)[0]
    top = hy - (rng.uniform(0.02, 0.12) + 0.03 * profile) * h
    rows = np.arange(h)[:, None]
    m = (rows >= top[None, :]) & (rows < hy)
    col = _colors(rng, 1, (0.22, 0.4), (0.2, 0.6), color_v)[0]
    tex = 1 + 0.15 * fractal_noise(h, w, rng, beta=1.6)[..., None]
    return np.where(m[..., None], np.clip(col * tex, 0, 1), img)


def _buildings(h, w, rng, img, hy):
    n = rng.integers(3, 12)
    out = img.copy()
    pal = np.concatenate([_colors(rng, n, (0.0, 0.12), (0.05, 0.45), (0.35, 0.85)),
                          _colors(rng, n, (0.5, 0.65), (0.0, 0.15), (0.3, 0.8))])  # fmt: skip
    for _ in range(n):
        bw = rng.uniform(0.08, 0.35) * w
        x0 = rng.uniform(-0.1, 1.0) * w
        top = hy - rng.uniform(0.05, 0.45) * h
        ys, xs = slice(max(int(top), 0), hy), slice(max(int(x0), 0), min(int(x0 + bw), w))
        col = pal[rng.integers(len(pal))]
        if xs.stop <= xs.start or ys.stop <= ys.start:  # off the image
            continue
        out[ys, xs] = col
        if rng.uniform() < 0.7:  # rows of windows
            win = _colors(rng, 1, (0.55, 0.65), (0.1, 0.4), (0.15, 0.5))[0]
            sy, sx = rng.uniform(0.025, 0.06) * h, rng.uniform(0.025, 0.06) * w
            yy, xx = np.mgrid[ys, xs]
            m = (np.mod(yy - top, sy) > 0.45 * sy) & (np.mod(xx - x0, sx) > 0.4 * sx)
            out[ys, xs][m] = win
    return out


def _road(h, w, rng, elevation) -> np.ndarray:
    hy = _horizon_row(h, rng, elevation, 0.15, 0.6)
    img = _sky(h, w, rng)
    img = _buildings(h, w, rng, img, hy) if rng.uniform() < 0.7 else _treeline(h, w, rng, img, hy)
    u, v = _ground_coords(h, w, hy, rng)
    grey = rng.uniform(0.22, 0.42)
    tile_n = 128
    tile = grey * (1 + 0.12 * fractal_noise(tile_n, tile_n, rng, beta=1.4))[..., None] * np.ones(3)
    tile = tile * (1 + 0.1 * (dead_leaves(tile_n, tile_n, rng, _colors(rng, 60, (0, 1), (0, 0.1), (0.3, 0.7)),
                                          2, 20, base=(0.5, 0.5, 0.5)) - 0.5))  # fmt: skip
    ground = _tile_sample(tile, u, v, 60, 15)
    half = rng.uniform(0.5, 1.2)  # road half width, in ground units
    kerb = np.abs(u) > half
    pave = _colors(rng, 1, (0.05, 0.12), (0.0, 0.2), (0.5, 0.75))[0]
    ground = np.where(kerb[..., None], pave * (0.9 + 0.2 * ground / max(grey, 1e-3) - 0.1), ground)
    line = _colors(rng, 1, (0.12, 0.16), (0.0, 0.8), (0.85, 0.95))[0]
    lw = 0.03
    dashed = np.mod(v * 0.6, 1.0) < 0.5
    marks = (np.abs(u) < lw) & dashed | (np.abs(np.abs(u) - half + 0.06) < lw)
    ground = np.where(marks[..., None], line, ground)
    img[hy:] = ground
    return np.clip(img, 0, 1)


def _terrain(h, w, rng, elevation) -> np.ndarray:
    hy = _horizon_row(h, rng, elevation, 0.15, 0.6)
    img = _treeline(h, w, rng, _sky(h, w, rng), hy)
    grass = rng.uniform() < 0.6
    hue = (0.18, 0.32) if grass else (0.05, 0.11)
    n = 400
    tile = dead_leaves(128, 128, rng, _colors(rng, n, hue, (0.3, 0.7), (0.25, 0.7)), 1.5, 24, shapes="mixed")
    tile = np.clip(tile * (1 + 0.15 * fractal_noise(128, 128, rng, beta=2.0))[..., None], 0, 1)
    u, v = _ground_coords(h, w, hy, rng)
    img[hy:] = _tile_sample(tile, u, v, 60, 15)
    return np.clip(img, 0, 1)


def _rails(h, w, rng, elevation) -> np.ndarray:
    hy = _horizon_row(h, rng, elevation, 0.15, 0.6)
    img = _sky(h, w, rng)
    img = _treeline(h, w, rng, img, hy) if rng.uniform() < 0.6 else _buildings(h, w, rng, img, hy)
    tile = dead_leaves(96, 96, rng, _colors(rng, 500, (0.0, 0.12), (0.0, 0.3), (0.2, 0.65)), 1.0, 6, shapes="mixed")
    u, v = _ground_coords(h, w, hy, rng)
    ground = _tile_sample(tile, u, v, 60, 15)
    g = rng.uniform(0.25, 0.35)  # half gauge
    sleeper_col = _colors(rng, 1, (0.05, 0.1), (0.1, 0.5), (0.2, 0.45))[0]
    sleepers = (np.abs(u) < 1.5 * g) & (np.mod(v * 2.5, 1.0) < 0.35)
    ground = np.where(sleepers[..., None], sleeper_col, ground)
    rail = (np.abs(np.abs(u) - g) < 0.025)[..., None]
    ground = np.where(rail, np.array([0.55, 0.52, 0.5]), ground)
    img[hy:] = ground
    return np.clip(img, 0, 1)


def _water(h, w, rng, elevation) -> np.ndarray:
    hy = _horizon_row(h, rng, elevation, 0.05, 0.45)
    img = _sky(h, w, rng)
    if rng.uniform() < 0.5:
        img = _treeline(h, w, rng, img, hy, color_v=(0.15, 0.45))
    base = _colors(rng, 1, (0.45, 0.6), (0.3, 0.7), (0.25, 0.55))[0]
    rows = h - hy
    t = ((np.arange(rows)[:, None] + 0.5) / max(rows, 1))[..., None]
    near_horizon = _hsv(0.57, 0.2, rng.uniform(0.6, 0.85))
    water = base * t**0.5 + near_horizon * (1 - t**0.5)
    ripples = fractal_noise(rows, w, rng, beta=rng.uniform(1.6, 2.2), stretch=(1.0, rng.uniform(4, 8)))
    water = water * (1 + 0.12 * ripples)[..., None]
    glint = _smoothstep(1.8, 2.8, ripples)[..., None] * rng.uniform(0.3, 0.8)
    img[hy:] = water * (1 - glint) + glint
    return np.clip(img, 0, 1)


def _room(h, w, rng, elevation) -> np.ndarray:
    fy = _horizon_row(h, rng, elevation, 0.5, 0.9) if rng.uniform() < 0.8 else h
    wall = _colors(rng, 1, (0.0, 1.0), (0.03, 0.3), (0.55, 0.92))[0]
    img = wall * (1 + 0.04 * fractal_noise(h, w, rng, beta=2.2))[..., None] * np.ones((1, 1, 3))
    draw_img = Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(draw_img)
    for _ in range(rng.integers(2, 8)):  # windows, pictures, doors, shelves
        kind = rng.integers(4)
        rw, rh = rng.uniform(0.08, 0.35) * w, rng.uniform(0.1, 0.45) * h
        x0 = rng.uniform(-0.1, 0.95) * w
        y0 = rng.uniform(0.0, max(fy - rh, 1) / h) * h if kind != 2 else fy - rh * 1.6
        box = [x0, y0, x0 + rw, y0 + (rh * 1.6 if kind == 2 else rh)]
        frame = tuple(int(c) for c in (_colors(rng, 1, (0, 1), (0, 0.4), (0.15, 0.95))[0] * 255))
        draw.rectangle(box, fill=frame)
        inset = [box[0] + 0.08 * rw, box[1] + 0.08 * rh, box[2] - 0.08 * rw, box[3] - 0.08 * rh]
        if kind == 0:  # window: bright sky with glazing bars
            draw.rectangle(inset, fill=tuple(int(c) for c in (_hsv(0.58, rng.uniform(0.1, 0.4), 0.95) * 255)))
            draw.line([(inset[0] + inset[2]) / 2, inset[1], (inset[0] + inset[2]) / 2, inset[3]], fill=frame, width=2)
        elif kind == 1:  # picture: a small dead-leaves painting
            pw, ph = max(int(inset[2] - inset[0]), 1), max(int(inset[3] - inset[1]), 1)
            pic = dead_leaves(ph, pw, rng, _colors(rng, 40, (0, 1), (0.2, 0.8), (0.2, 0.9)), 1, max(pw, ph) / 3)
            draw_img.paste(Image.fromarray((pic * 255).astype(np.uint8)), (int(inset[0]), int(inset[1])))
        elif kind == 3:  # shelves
            for k in range(1, 4):
                y = box[1] + k * (box[3] - box[1]) / 4
                draw.line([box[0], y, box[2], y], fill=(40, 30, 20), width=max(1, h // 100))
    img = np.asarray(draw_img, dtype=np.float64) / 255
    if fy < h:
        u, v = _ground_coords(h, w, fy, rng)
        style = rng.integers(3)
        if style == 0:  # wooden planks along the view
            wood = _colors(rng, 1, (0.06, 0.1), (0.4, 0.7), (0.3, 0.7))[0]
            plank = np.floor(u / 0.15)
            shade = 1 + 0.15 * np.sin(plank * 12.9898) + 0.08 * np.sin(v * 40 + plank)
            floor = wood * shade[..., None]
            floor[np.mod(u / 0.15, 1.0) < 0.04] *= 0.6
        elif style == 1:  # carpet
            col = _colors(rng, 1, (0, 1), (0.1, 0.5), (0.2, 0.7))[0]
            tile = col * (1 + 0.12 * fractal_noise(128, 128, rng, beta=1.2))[..., None]
            floor = _tile_sample(tile, u, v, 60, 15)
        else:  # tiles
            col = _colors(rng, 1, (0, 1), (0.0, 0.3), (0.4, 0.9))[0]
            floor = np.ones_like(u)[..., None] * col
            grout = (np.mod(u / 0.3, 1.0) < 0.05) | (np.mod(v * 1.5, 1.0) < 0.05)
            floor[grout] *= 0.7
        img[fy:] = floor
        img[max(fy - max(h // 40, 1), 0) : fy] *= 0.8  # skirting board
    return np.clip(img, 0, 1)


def _dead_leaves_bg(h, w, rng, elevation) -> np.ndarray:
    # Enough leaves to cover the plane, as the model does (the first colour fills what is left).
    n = int(rng.integers(800, 1600))
    s = max(h, w)
    cols = _colors(rng, n + 1, (0, 1), (0.05, 0.9), (0.1, 0.95))
    return dead_leaves(h, w, rng, cols[1:], 0.01 * s, 0.35 * s, base=tuple(cols[0]), shapes="mixed")


def _fractal_bg(h, w, rng, elevation) -> np.ndarray:
    # Luminance carries most of the variation, as in photographs; colour varies less.
    beta = rng.uniform(1.6, 2.8)
    lum = fractal_noise(h, w, rng, beta=beta)[..., None] * rng.uniform(0.1, 0.2)
    chroma = np.stack([fractal_noise(h, w, rng, beta=beta) for _ in range(2)], -1) @ (rng.normal(size=(2, 3)) * 0.04)
    base = _colors(rng, 1, (0, 1), (0.1, 0.6), (0.3, 0.8))[0]
    return np.clip(base + lum + chroma, 0, 1)


def _forest(h, w, rng, elevation) -> np.ndarray:
    s = max(h, w)
    img = dead_leaves(h, w, rng, _colors(rng, 500, (0.18, 0.4), (0.3, 0.9), (0.08, 0.55)), 0.004 * s, 0.08 * s,
                      base=(0.1, 0.2, 0.08))  # fmt: skip
    for _ in range(rng.integers(4, 14)):  # trunks
        tw = rng.uniform(0.02, 0.1) * w
        x0 = rng.uniform(-0.05, 1.0) * w
        col = _colors(rng, 1, (0.04, 0.1), (0.2, 0.6), (0.1, 0.4))[0]
        xs = slice(max(int(x0), 0), min(int(x0 + tw), w))
        bark = 1 + 0.2 * fractal_noise(h, max(xs.stop - xs.start, 1), rng, beta=1.5, stretch=(0.2, 1.0))
        img[:, xs] = col * bark[..., None]
    leaves = dead_leaves(h, w, rng, _colors(rng, 250, (0.15, 0.35), (0.4, 0.9), (0.2, 0.7)), 0.004 * s, 0.04 * s,
                         base=(0, 0, 0), box=(0, 0, w, 0.6 * h))  # fmt: skip
    m = leaves.sum(-1, keepdims=True) > 0
    return np.clip(np.where(m, leaves, img), 0, 1)


def _brick(h, w, rng, elevation) -> np.ndarray:
    s = max(h, w)
    bh = rng.uniform(0.03, 0.07) * s
    bw = bh * rng.uniform(2.0, 3.0)
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    row = np.floor(ys / bh)
    col = np.floor((xs + (row % 2) * bw / 2) / bw)
    hue = rng.choice([0.02, 0.06, 0.1])
    ids = (row * 1000 + col).astype(np.int64)
    jitter = np.sin(ids * 12.9898) * 43758.5453 % 1.0
    colors = _hsv(hue + 0.03 * jitter, 0.35 + 0.3 * jitter, 0.35 + 0.35 * np.abs(np.sin(ids * 78.233)))
    mortar = (np.mod(ys, bh) < 0.12 * bh) | (np.mod(xs + (row % 2) * bw / 2, bw) < 0.12 * bh)
    img = np.where(mortar[..., None], rng.uniform(0.55, 0.8), colors)
    return np.clip(img * (1 + 0.1 * fractal_noise(h, w, rng, beta=1.8))[..., None], 0, 1)


def _desert(h, w, rng, elevation) -> np.ndarray:
    hy = _horizon_row(h, rng, elevation, 0.1, 0.45)
    img = _sky(h, w, rng)
    sand = _colors(rng, 1, (0.07, 0.12), (0.35, 0.6), (0.6, 0.9))[0]
    rows = np.arange(h)[:, None]
    for k, y in enumerate(np.linspace(hy, h, 5)[:-1]):
        profile = y + fractal_noise(1, w, rng, beta=3.0)[0] * 0.04 * h
        slope = np.gradient(profile)
        lit = np.clip(1 + 0.1 * np.tanh(slope * 4) - 0.04 * (3 - k), 0.6, 1.2)
        m = rows >= profile[None, :]
        img = np.where(m[..., None], sand * lit[None, :, None], img)
    ripples = fractal_noise(h, w, rng, beta=1.8, stretch=(1.0, 5.0))
    img[hy:] *= (1 + 0.06 * ripples[hy:])[..., None]
    return np.clip(img, 0, 1)


_BACKGROUNDS = {
    "sky": lambda h, w, rng, e: _sky(h, w, rng),
    "water": _water,
    "road": _road,
    "terrain": _terrain,
    "rails": _rails,
    "room": _room,
    "dead_leaves": _dead_leaves_bg,
    "fractal": _fractal_bg,
    "forest": _forest,
    "brick": _brick,
    "desert": _desert,
}


def background(family: str, height: int, width: int, rng: np.random.Generator, elevation: float = 0.2) -> np.ndarray:
    """A [H, W, 3] float image in [0, 1]; ``elevation`` (radians) places the horizon."""
    if family not in _BACKGROUNDS:
        raise ValueError(f"background family: expected one of {sorted(_BACKGROUNDS)}, got {family!r}")
    return np.clip(_BACKGROUNDS[family](height, width, rng, elevation), 0, 1)


# --- occluder fills ----------------------------------------------------------------------------


def occluder_fill(family: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Texture [h, w, 3] for one occluder object, shaded as if lit from one side."""
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    s = max(h, w)
    if family == "textile":  # plaid or stripes, a fine weave
        c0, c1, c2 = _colors(rng, 3, (0, 1), (0.2, 0.9), (0.15, 0.9))
        p1, p2 = rng.uniform(0.05, 0.25, size=2) * s
        a = np.mod(xs, p1) < p1 * rng.uniform(0.2, 0.5)
        b = (np.mod(ys, p2) < p2 * rng.uniform(0.2, 0.5)) & (rng.uniform() < 0.7)
        img = np.where(a[..., None], c1, c0)
        img = np.where(b[..., None], 0.5 * img + 0.5 * c2, img)
        img = img * (1 + 0.06 * np.sin(xs * 2.1) * np.sin(ys * 2.1))[..., None]
    elif family == "fur":  # strands along one direction
        base = _colors(rng, 1, (0.03, 0.11), (0.1, 0.6), (0.05, 0.85))[0]
        n = fractal_noise(h, w, rng, beta=1.2, stretch=(1.0, 8.0) if rng.uniform() < 0.5 else (8.0, 1.0))
        img = base * (1 + 0.3 * n)[..., None]
    elif family == "plastic":  # one saturated colour with a highlight
        base = _colors(rng, 1, (0, 1), (0.5, 1.0), (0.45, 1.0))[0]
        hx, hy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        spot = np.exp(-((xs - hx) ** 2 + (ys - hy) ** 2) / (2 * (0.12 * s) ** 2))[..., None]
        img = base * (1 - 0.6 * spot) + 0.6 * spot
    elif family == "print":  # paper with lines of text and a coloured block
        img = np.ones((h, w, 3)) * _colors(rng, 1, (0.1, 0.15), (0.0, 0.15), (0.85, 0.98))[0]
        lh = max(rng.uniform(0.02, 0.04) * s, 3.0)
        words = np.sin(np.floor(xs / (0.06 * s)) * 12.9898 + np.floor(ys / lh) * 78.233) > -0.3
        letters = np.sin(np.floor(xs / max(0.008 * s, 1.0)) * 4.1414 + np.floor(ys / lh) * 9.7) > -0.6
        text = (np.mod(ys, lh) < 0.4 * lh) & words & letters
        img[text] = rng.uniform(0.05, 0.25)
        bx, by = rng.uniform(0, 0.6) * w, rng.uniform(0, 0.6) * h
        block = (xs > bx) & (xs < bx + 0.35 * w) & (ys > by) & (ys < by + 0.35 * h)
        img[block] = _colors(rng, 1, (0, 1), (0.4, 0.9), (0.3, 0.9))[0]
    else:
        raise ValueError(f"occluder family: expected one of {OCCLUDER_FAMILIES}, got {family!r}")
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((np.cos(angle) * xs + np.sin(angle) * ys) / s)[..., None]
    ramp = ramp - ramp.min()
    return np.clip(img * (0.7 + 0.45 * ramp / (ramp.max() + 1e-9)), 0, 1)
