"""Object categories and the cuboid sizes their volumes are built on (kept in YAML)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from .config import ConfigError

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
