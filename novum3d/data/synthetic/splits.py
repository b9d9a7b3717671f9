"""Open every split of a generated synthetic data set as readers."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..pascal3d import DataError, Pascal3DPreprocessed


def open_splits(
    root: str | Path, classes: Sequence[str] | None = None, **kwargs: Any
) -> dict[str, Pascal3DPreprocessed]:
    """Readers of every split of a synthetic data set.

    Keys: ``train``, ``val``, ``clean``, ``occluded-L1..3``, ``corrupted-<name>``, ``ood-<nuisance>``.

    Args:
        root: the folder ``scripts/make_synthetic.py`` wrote (holding dataset.json).
        classes: label order (default: the data set's own categories).
        kwargs: passed to every :class:`Pascal3DPreprocessed` (``on_error``, ``transform``, ...).
    """
    root = Path(root)
    manifest_path = root / "dataset.json"
    if not manifest_path.is_file():
        raise DataError(
            f"{root}: no dataset.json; generate data with "
            f"`python scripts/make_synthetic.py --preset small --out {root}`"
        )
    manifest = read_manifest(manifest_path)
    classes = list(classes or manifest["categories"])
    splits: dict[str, Pascal3DPreprocessed] = {}
    for name in ("train", "val"):
        splits[name] = Pascal3DPreprocessed(root / name, classes, **kwargs)
    splits["clean"] = Pascal3DPreprocessed(root / "test-clean", classes, nuisance="clean", **kwargs)
    for level in (1, 2, 3):
        splits[f"occluded-L{level}"] = Pascal3DPreprocessed(
            root / "test-occluded", classes, occlusion_level=level, **kwargs
        )
    for folder in sorted((root / "test-corrupted").iterdir()) if (root / "test-corrupted").is_dir() else []:
        splits[f"corrupted-{folder.name}"] = Pascal3DPreprocessed(folder, classes, nuisance=folder.name, **kwargs)
    for folder in sorted((root / "test-ood").iterdir()) if (root / "test-ood").is_dir() else []:
        splits[f"ood-{folder.name}"] = Pascal3DPreprocessed(folder, classes, nuisance=folder.name, **kwargs)
    return splits


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A data set's ``dataset.json``; unreadable JSON, or no ``categories`` list, is a DataError naming it."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"not a readable dataset.json ({exc}); generate the data set again", path=path) from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("categories"), list):
        raise DataError("no 'categories' list in this dataset.json; generate the data set again", path=path)
    return manifest
