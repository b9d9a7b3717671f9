"""Pictures: volumes coloured by 3D position, image grids written as PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor

from rendering import GaussianVolume, pascal3d_intrinsics, pose_to_viewmat, rasterize_features


def position_colors(means: Tensor) -> Tensor:
    """RGB in [0, 1] from each Gaussian's position in its bounding box: [N, 3] -> [N, 3]."""
    lo, hi = means.amin(0), means.amax(0)
    return (means - lo) / (hi - lo).clamp(min=1e-6)


def render_position_image(
    volume: GaussianVolume,
    azimuth: float,
    elevation: float,
    theta: float,
    distance: float,
    size: int = 256,
    backend: str = "auto",
) -> np.ndarray:
    """Render a volume coloured by 3D position over white: [size, size, 3] uint8."""
    radius = float(volume.means.norm(dim=-1).max() + 2 * volume.scales.max())
    if distance <= radius:
        raise ValueError(f"distance: {distance} puts the camera inside the volume (radius {radius:.2f})")
    focal = 1.0
    # Fit the bounding sphere, seen from ``distance``, into 90% of the frame.
    viewport = 0.45 * size * math.sqrt(distance**2 - radius**2) / radius
    viewmat = pose_to_viewmat(azimuth, elevation, theta, distance).to(volume.means)
    K = pascal3d_intrinsics(focal, viewport, (size / 2, size / 2)).to(volume.means)
    out = rasterize_features(volume, position_colors(volume.means), viewmat, K, size, size, backend=backend)
    rgb = out.features[0] + (1 - out.alpha[0, ..., None])
    return (rgb.clamp(0, 1) * 255).round().byte().cpu().numpy()


def save_grid(images: list[np.ndarray], labels: list[str], path: str | Path, columns: int = 4) -> Path:
    """Tile equally sized RGB images with a caption under each into one PNG."""
    h, w = images[0].shape[:2]
    rows = math.ceil(len(images) / columns)
    caption = 16
    sheet = Image.new("RGB", (columns * w, rows * (h + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        x, y = (i % columns) * w, (i // columns) * (h + caption)
        sheet.paste(Image.fromarray(img), (x, y))
        draw.text((x + 4, y + h + 2), label, fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def volume_sheet(volumes: dict[str, GaussianVolume], path: str | Path, **pose: float) -> Path:
    """One position-coloured render per category at one pose, tiled into a PNG."""
    images = [render_position_image(v, **pose) for v in volumes.values()]
    return save_grid(images, list(volumes), path)
