"""Training data: the class list and the train / val readers of the configured layout (batches: novum3d.data.batch)."""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from ..categories import load_categories
from ..config import DataConfig
from ..data.pascal3d import Pascal3DPreprocessed
from ..data.synthetic.splits import read_manifest
from ..errors import MissingDataError


def default_classes(cfg: DataConfig, categories_source: str) -> list[str]:
    """``data.classes``, else a synthetic data set's own categories, else the categories file's."""
    if cfg.classes is not None:
        return list(cfg.classes)
    manifest = Path(cfg.root) / "dataset.json"
    if cfg.layout == "synthetic" and manifest.is_file():
        return list(read_manifest(manifest)["categories"])
    return [c.name for c in load_categories(categories_source)]


def open_split(cfg: DataConfig, split: str, classes: list[str]) -> Dataset:
    """The ``train`` or ``val`` reader for the configured layout; an empty one is an error."""
    reader = _open_split(cfg, split, classes)
    if len(reader) == 0:
        raise MissingDataError(
            f"the {split} split has no images of classes {classes}; check data.root and data.classes",
            path=reader.root,
        )
    return reader


def _open_split(cfg: DataConfig, split: str, classes: list[str]) -> Pascal3DPreprocessed:
    root = Path(cfg.root)
    if cfg.layout == "synthetic":
        folder = root / split
        if not (root / "dataset.json").is_file() or not folder.is_dir():
            raise MissingDataError(
                f"no synthetic data set here (data.root); generate one with "
                f"`python scripts/make_synthetic.py --preset small --out {root} --workers 2`, or point data.root "
                "at preprocessed PASCAL3D+ (data.layout=pascal3d, see scripts/prepare_pascal3d.py)",
                path=root,
                field="data.root",
            )
        return Pascal3DPreprocessed(folder, classes, uint8_images=True)
    folder = root if split == "train" else Path(cfg.val_root or "")
    if not (folder / "annotations").is_dir():
        raise MissingDataError(
            "no preprocessed PASCAL3D+ here (annotations/<cls>/*.npz); convert the raw release with "
            f"`python scripts/prepare_pascal3d.py --raw <PASCAL3D+_release1.1> --out {folder}`, "
            "set data.val_root for validation, or train on synthetic data (data.layout=synthetic)",
            path=folder,
            field="data.root" if split == "train" else "data.val_root",
        )
    return Pascal3DPreprocessed(folder, classes, uint8_images=True)
