"""Object categories, the cuboid sizes kept for them in YAML, and the Gaussian geometry of each one's volume."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from rendering import GaussianVolume, cuboid_volume, single_gaussian_volume, sphere_volume

from .config import ConfigError, VolumeConfig

BUILTIN = {"pascal3d": "pascal3d_categories.yaml"}


@dataclass(frozen=True)
class Category:
    name: str
    size: tuple[float, float, float]  # cuboid edge lengths (x, y, z)


def load_categories(source: str | Path = "pascal3d") -> list[Category]:
    """Categories in file order, from a built-in name (``pascal3d``) or a YAML path.

    The YAML holds ``categories: {name: {size: [x, y, z]}, ...}``.
    """
    if str(source) in BUILTIN:
        path = Path(__file__).parent / "resources" / BUILTIN[str(source)]
        where, text = f"novum3d/resources/{path.name}", path.read_text()
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"{path}: no such categories file (built-in names: {sorted(BUILTIN)})")
        where, text = str(path), path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("categories"), dict) or not data["categories"]:
        raise ConfigError(f"{where}: expected a non-empty mapping under 'categories'")
    out = []
    for name, entry in data["categories"].items():
        size = entry.get("size") if isinstance(entry, dict) else None
        ok = (
            isinstance(size, list)
            and len(size) == 3
            and all(isinstance(s, int | float) and not isinstance(s, bool) for s in size)
            and all(math.isfinite(s) and s > 0 for s in size)
        )
        if not ok:
            raise ConfigError(
                f"{where}: categories.{name}.size: expected three positive numbers [x, y, z], got {size!r}"
            )
        out.append(Category(str(name), tuple(float(s) for s in size)))
    return out


def build_volume(category: Category, cfg: VolumeConfig) -> GaussianVolume:
    """The fixed Gaussian geometry of one category: cuboid (paper), sphere or single (ablations)."""
    if cfg.kind == "points":
        raise ConfigError(
            "volume.kind: 'points' volumes hold their Gaussians in a checkpoint (a converted model's mesh "
            "vertices) and cannot be built from the categories file; load that checkpoint instead",
            field="volume.kind",
        )
    if cfg.kind == "cuboid":
        return cuboid_volume(category.size, cfg.num_gaussians, cfg.scale_factor, cfg.opacity)
    if cfg.kind == "sphere":
        return sphere_volume(max(category.size) / 2, cfg.num_gaussians, cfg.scale_factor, cfg.opacity)
    return single_gaussian_volume(category.size, cfg.opacity)


def build_category_volumes(cfg: VolumeConfig) -> dict[str, GaussianVolume]:
    """One volume per category, in the categories file's order."""
    return {c.name: build_volume(c, cfg) for c in load_categories(cfg.categories)}
