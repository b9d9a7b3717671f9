"""Neural object volume geometry for each category (the features are learned elsewhere)."""

from __future__ import annotations

from rendering import GaussianVolume, cuboid_volume, single_gaussian_volume, sphere_volume

from .categories import Category, load_categories
from .config import VolumeConfig


def build_volume(category: Category, cfg: VolumeConfig) -> GaussianVolume:
    """The fixed Gaussian geometry of one category: cuboid (paper), sphere or single (ablations)."""
    if cfg.kind == "cuboid":
        return cuboid_volume(category.size, cfg.num_gaussians, cfg.scale_factor, cfg.opacity)
    if cfg.kind == "sphere":
        return sphere_volume(max(category.size) / 2, cfg.num_gaussians, cfg.scale_factor, cfg.opacity)
    return single_gaussian_volume(category.size, cfg.opacity)


def build_category_volumes(cfg: VolumeConfig) -> dict[str, GaussianVolume]:
    """One volume per category, in the categories file's order."""
    return {c.name: build_volume(c, cfg) for c in load_categories(cfg.categories)}
