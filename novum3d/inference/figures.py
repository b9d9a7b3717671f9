"""Pictures of a pose estimate: outline of the volume at the pose, part-correspondence map."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy.ndimage import binary_erosion
from torch import Tensor

from rendering import GaussianVolume, Pose, rasterize_features

from ..model.matching import background_scores
from ..volume_sheet import position_colors


def volume_silhouette(volume: GaussianVolume, pose: Pose, K: Tensor, size: tuple[int, int]) -> np.ndarray:
    """[H, W] bool: where the volume renders opaque (alpha > 0.5) at ``pose`` (one) with image intrinsics K [3, 3]."""
    h, w = size
    vm = pose.viewmat().to(volume.means)
    ones = volume.means.new_ones(len(volume), 1)
    out = rasterize_features(volume, ones, vm, K[None].to(volume.means), w, h, with_depth=False)
    return (out.alpha[0] > 0.5).cpu().numpy()


def correspondence_map(feature_map: Tensor, volume: GaussianVolume, features: Tensor, bank: Tensor) -> np.ndarray:
    """[h, w, 3] uint8: each pixel coloured by the 3D position of its best-matching Gaussian; grey
    where the background bank matches better."""
    f = feature_map.flatten(1).T  # [P, D]
    best, idx = (f @ features.T.to(f.dtype)).max(1)
    bg = background_scores(feature_map[None], bank)[0].flatten()
    # Where the max of NOVUM's score (object_or_background) is the object's.
    colors = position_colors(volume.means.float())[idx.cpu()]
    rgb = torch.where((best > bg).cpu()[:, None], colors, torch.full_like(colors, 0.5))
    h, w = feature_map.shape[-2:]
    return (rgb.view(h, w, 3).numpy() * 255).astype(np.uint8)


def pose_figure(image: Tensor, silhouette: np.ndarray, corr: np.ndarray, caption: str) -> Image.Image:
    """Side by side: the image with the volume's outline, and the correspondence map (upsampled)."""
    rgb = (image.permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8).copy()
    edge = silhouette & ~binary_erosion(silhouette, iterations=2)
    rgb[edge] = (255, 40, 40)
    h, w = rgb.shape[:2]
    corr_big = np.asarray(Image.fromarray(corr).resize((w, h), Image.NEAREST))
    sheet = Image.new("RGB", (2 * w, h + 18), "white")
    sheet.paste(Image.fromarray(rgb), (0, 0))
    sheet.paste(Image.fromarray(corr_big), (w, 0))
    ImageDraw.Draw(sheet).text((4, h + 3), caption, fill="black")
    return sheet
