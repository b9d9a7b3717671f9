"""Version 2 corruptions: ImageNet-C's recipes, transcribed, with the package as an option.

ImageNet-C (Hendrycks & Dietterich, ICLR 2019) is distributed for arbitrary image sizes as the
``imagecorruptions`` package (1.1.2, the last release). That release no longer runs entirely on
today's libraries (``fog`` uses ``np.float_``, gone in NumPy 2; ``gaussian_blur`` and
``glass_blur`` pass ``multichannel`` to scikit-image, gone in 0.19) and draws from NumPy's global
random state (``impulse_noise`` from scikit-image's own, unseeded). So the generator uses its own
transcription of the same recipes by default: the same constants per severity, a disk kernel
for defocus, brightness added to V in HSV, a uint8 image in and out as the package takes and
returns. ``tests/test_synthetic_v2.py`` measures it against the package, where installed
(``pip install -e ".[corruptions]"``): the deterministic corruptions agree to a pixel value or
two, the noises exactly (same seed, same legacy random stream) or in distribution.

``backend="imagecorruptions"`` runs the package itself, seeded per image (the global state is
saved and restored), for every corruption that runs and is reproducible there; the others use
the transcription, and :func:`backends` says which is which (dataset.json records it).

``rain`` is not in ImageNet-C (OOD-CV has rain, ImageNet-C has none): it is built from the
recipe of ImageNet-C's snow with long thin streaks and an overcast grade, and is named
ImageNet-C-like.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from scipy.ndimage import correlate, gaussian_filter
from scipy.ndimage import zoom as scizoom

from ...errors import ConfigError

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "gaussian_blur",
    "contrast",
    "brightness",
    "pixelate",
    "jpeg_compression",
)
WEATHER = ("fog", "snow", "rain")
IMAGENET_C = set(CORRUPTIONS) | {"fog", "snow"}  # rain is ImageNet-C-like


def _f(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64) / 255.0


def gaussian_noise(x, s, rs):
    c = [0.08, 0.12, 0.18, 0.26, 0.38][s - 1]
    x = _f(x)
    return np.clip(x + rs.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x, s, rs):
    c = [60, 25, 12, 5, 3][s - 1]
    x = _f(x)
    return np.clip(rs.poisson(x * c) / float(c), 0, 1) * 255


def impulse_noise(x, s, rs):
    # skimage.util.random_noise(mode="s&p", amount=c): each value flipped with probability c,
    # to 1 or 0 with equal odds.
    c = [0.03, 0.06, 0.09, 0.17, 0.27][s - 1]
    out = _f(x)
    flipped = rs.uniform(size=out.shape) < c
    salted = rs.uniform(size=out.shape) < 0.5
    out[flipped & salted] = 1.0
    out[flipped & ~salted] = 0.0
    return np.clip(out, 0, 1) * 255


def _cv2_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    i = np.arange(ksize) - (ksize - 1) / 2
    k = np.exp(-(i**2) / (2 * sigma**2))
    return k / k.sum()


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """ImageNet-C's defocus kernel: a disk, normalised, anti-aliased by a small Gaussian."""
    if radius <= 8:
        L, ksize = np.arange(-8, 8 + 1), 3
    else:
        L, ksize = np.arange(-radius, radius + 1), 5
    X, Y = np.meshgrid(L, L)
    d = ((X**2 + Y**2) <= radius**2).astype(np.float32)
    d /= d.sum()
    g = _cv2_gaussian_kernel(ksize, alias_blur).astype(np.float32)
    # cv2.GaussianBlur with reflect-101 borders = separable correlation with mode "mirror".
    d = correlate(d, g[None, :], mode="mirror")
    return correlate(d, g[:, None], mode="mirror")


def defocus_blur(x, s, rs):
    radius, alias = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][s - 1]
    x = _f(x)
    k = disk(radius, alias).astype(np.float64)
    out = np.stack([correlate(x[..., d], k, mode="mirror") for d in range(3)], -1)
    return np.clip(out, 0, 1) * 255


def gaussian_blur(x, s, rs):
    c = [1, 2, 3, 4, 6][s - 1]
    # skimage.filters.gaussian: mode "nearest", truncate 4, channels not mixed.
    return np.clip(gaussian_filter(_f(x), sigma=(c, c, 0), mode="nearest", truncate=4.0), 0, 1) * 255


def contrast(x, s, rs):
    c = [0.4, 0.3, 0.2, 0.1, 0.05][s - 1]
    x = _f(x)
    means = x.mean(axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """skimage.color.rgb2hsv for [..., 3] floats in [0, 1]."""
    v = rgb.max(-1)
    delta = np.ptp(rgb, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(delta == 0, 0.0, delta / v)
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        h = np.where(r == v, (g - b) / delta, np.where(g == v, 2.0 + (b - r) / delta, 4.0 + (r - g) / delta))
    h = np.where(delta == 0, 0.0, (h / 6.0) % 1.0)
    return np.stack([h, s, v], -1)


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """skimage.color.hsv2rgb."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    hi = np.floor(h * 6)
    f = h * 6 - hi
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    hi = np.stack([hi, hi, hi], -1).astype(np.uint8) % 6
    options = [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    return np.choose(hi, options)


def brightness(x, s, rs):
    c = [0.1, 0.2, 0.3, 0.4, 0.5][s - 1]
    hsv = rgb2hsv(_f(x))
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return np.clip(hsv2rgb(hsv), 0, 1) * 255


def pixelate(x, s, rs):
    c = [0.6, 0.5, 0.4, 0.3, 0.25][s - 1]
    h, w = x.shape[:2]
    img = Image.fromarray(x).resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(img.resize((w, h), Image.NEAREST), dtype=np.float64)


def jpeg_compression(x, s, rs):
    c = [25, 18, 15, 10, 7][s - 1]
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=c)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float64)


def plasma_fractal(rs, mapsize: int = 256, wibbledecay: float = 3) -> np.ndarray:
    """ImageNet-C's diamond-square height map in [0, 1] (mapsize a power of two)."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array):
        return array / 4 + wibble * rs.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        cornerref = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squareaccum = cornerref + np.roll(cornerref, shift=-1, axis=0)
        squareaccum += np.roll(squareaccum, shift=-1, axis=1)
        maparray[stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize] = wibbledmean(squareaccum)
        drgrid = maparray[stepsize // 2 : mapsize : stepsize, stepsize // 2 : mapsize : stepsize]
        ulgrid = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        ltsum = drgrid + np.roll(drgrid, 1, axis=0) + ulgrid + np.roll(ulgrid, -1, axis=1)
        maparray[0:mapsize:stepsize, stepsize // 2 : mapsize : stepsize] = wibbledmean(ltsum)
        ttsum = drgrid + np.roll(drgrid, 1, axis=1) + ulgrid + np.roll(ulgrid, -1, axis=0)
        maparray[stepsize // 2 : mapsize : stepsize, 0:mapsize:stepsize] = wibbledmean(ttsum)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def fog(x, s, rs):
    c = [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][s - 1]
    h, w = x.shape[:2]
    map_size = 1 << (int(max(h, w, 3)) - 1).bit_length()
    x = _f(x)
    max_val = x.max()
    x = x + c[0] * plasma_fractal(rs, map_size, c[1])[:h, :w][..., None]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def _clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    ch0 = int(np.ceil(img.shape[0] / float(zoom_factor)))
    top0 = (img.shape[0] - ch0) // 2
    ch1 = int(np.ceil(img.shape[1] / float(zoom_factor)))
    top1 = (img.shape[1] - ch1) // 2
    return scizoom(img[top0 : top0 + ch0, top1 : top1 + ch1], (zoom_factor, zoom_factor, 1), order=1)


def _shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    if dx < 0:
        shifted = np.roll(image, shift=image.shape[1] + dx, axis=1)
        shifted[:, dx:] = shifted[:, dx - 1 : dx]
    elif dx > 0:
        shifted = np.roll(image, shift=dx, axis=1)
        shifted[:, :dx] = shifted[:, dx : dx + 1]
    else:
        shifted = image
    if dy < 0:
        shifted = np.roll(shifted, shift=image.shape[0] + dy, axis=0)
        shifted[dy:, :] = shifted[dy - 1 : dy, :]
    elif dy > 0:
        shifted = np.roll(shifted, shift=dy, axis=0)
        shifted[:dy, :] = shifted[dy : dy + 1, :]
    return shifted


def _motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    width = radius * 2 + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    kernel = k / k.sum()
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    blurred = np.zeros_like(x, dtype=np.float32)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if np.abs(dy) >= x.shape[0] or np.abs(dx) >= x.shape[1]:
            break
        blurred = blurred + kernel[i] * _shift(x, dx, dy)
    return blurred


def _streaks(x, rs, loc, scale, zoom, threshold, radius, sigma, angle_range):
    layer = rs.normal(size=x.shape[:2], loc=loc, scale=scale)
    layer = _clipped_zoom(layer[..., None], zoom)
    layer[layer < threshold] = 0
    layer = np.clip(layer.squeeze(), 0, 1)
    layer = _motion_blur(layer, radius=radius, sigma=sigma, angle=rs.uniform(*angle_range))
    layer = np.round(layer * 255).astype(np.uint8) / 255.0
    return layer[..., None][: x.shape[0], : x.shape[1], :]


def _gray(x: np.ndarray) -> np.ndarray:
    return (x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114)[..., None]  # cv2 RGB2GRAY


def snow(x, s, rs):
    c = [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
         (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)][s - 1]  # fmt: skip
    x = x.astype(np.float32) / 255.0
    layer = _streaks(x, rs, c[0], c[1], c[2], c[3], c[4], c[5], (-135, -45))
    x = c[6] * x + (1 - c[6]) * np.maximum(x, _gray(x) * 1.5 + 0.5)
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def rain(x, s, rs):
    """ImageNet-C-like rain: snow's streak recipe, longer, thinner and fainter, on an overcast grade."""
    c = [(0.1, 0.3, 1.5, 0.55, 14, 6, 0.85, 0.35), (0.15, 0.3, 1.5, 0.5, 16, 8, 0.8, 0.4),
         (0.2, 0.3, 1.2, 0.5, 18, 10, 0.75, 0.45), (0.25, 0.3, 1.2, 0.45, 20, 12, 0.7, 0.5),
         (0.3, 0.3, 1.0, 0.45, 22, 14, 0.65, 0.55)][s - 1]  # fmt: skip
    x = x.astype(np.float32) / 255.0
    layer = _streaks(x, rs, c[0], c[1], c[2], c[3], c[4], c[5], (-100, -80)) * c[7]
    grey = _gray(x)
    x = c[6] * (0.7 * x + 0.3 * grey) + (1 - c[6]) * 0.55  # overcast: duller, lower contrast
    return np.clip(x + layer, 0, 1) * 255


OWN = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "fog": fog,
    "snow": snow,
    "rain": rain,
}


def _package():
    try:
        import imagecorruptions
    except Exception:  # not installed, or its imports fail on this machine
        return None
    return imagecorruptions


def _run_package(pkg, x: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    # The package draws from NumPy's global legacy state: seed it for this image, then put back
    # whatever state the caller had.
    state = np.random.get_state()  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    try:
        return np.asarray(pkg.corrupt(x, severity=severity, corruption_name=name), dtype=np.uint8)
    finally:
        np.random.set_state(state)  # noqa: NPY002


def backends(names, backend: str = "own") -> dict[str, str]:
    """Which implementation each corruption uses: "own", or "imagecorruptions <version>" where the
    package is asked for, installed, and runs reproducibly (same seed, same output) here."""
    if backend not in ("own", "imagecorruptions"):
        raise ConfigError(f"corruption backend: expected 'own' or 'imagecorruptions', got {backend!r}")
    out = dict.fromkeys(names, "own")
    pkg = _package() if backend == "imagecorruptions" else None
    if backend == "imagecorruptions" and pkg is None:
        raise ConfigError("corruption backend 'imagecorruptions': the package is not installed "
                         "(pip install -e '.[corruptions]')")  # fmt: skip
    if pkg is None:
        return out
    from importlib.metadata import version

    probe = (np.random.default_rng(0).uniform(size=(48, 48, 3)) * 255).astype(np.uint8)
    for name in names:
        if name not in pkg.get_corruption_names("all"):
            continue
        try:
            a, b = (_run_package(pkg, probe, name, 3, 7) for _ in range(2))
        except Exception:  # the 1.1.2 release fails on some corruptions with today's libraries
            continue
        if np.array_equal(a, b):
            out[name] = f"imagecorruptions {version('imagecorruptions')}"
    return out


def corrupt_uint8(x: np.ndarray, name: str, severity: int, seed: int, backend: str = "own") -> np.ndarray:
    """Corrupt a uint8 [H, W, 3] image (H, W >= 32 for the package) with a per-image seed.

    ``backend`` is "own" or a value of :func:`backends` ("imagecorruptions ...").
    """
    if name not in OWN:
        raise ValueError(f"corruption: expected one of {sorted(OWN)}, got {name!r}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity: expected 1-5, got {severity}")
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[2] != 3:
        raise ValueError(f"image: expected uint8 [H, W, 3], got {x.dtype} {x.shape}")
    if backend.startswith("imagecorruptions"):
        return _run_package(_package(), x, name, severity, seed)
    out = OWN[name](x, severity, np.random.RandomState(seed))
    return np.uint8(out)  # truncation, as the package's corrupt() does


def corrupt(image: np.ndarray, name: str, severity: int, seed: int, backend: str = "own") -> np.ndarray:
    """Float [H, W, 3] in [0, 1] -> the same, through uint8 as ImageNet-C works."""
    x = (np.clip(image, 0, 1) * 255).round().astype(np.uint8)
    return corrupt_uint8(x, name, severity, seed, backend).astype(np.float64) / 255
