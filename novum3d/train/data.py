"""Training data: readers for the configured layout, batching, cameras at feature-map scale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from rendering import pascal3d_intrinsics, pose_to_viewmat

from ..config import DataConfig
from ..data.pascal3d import Pascal3DPreprocessed
from ..errors import DataError, MissingDataError


def default_classes(cfg: DataConfig, categories_source: str) -> list[str]:
    """``data.classes``, else a synthetic data set's own categories, else the categories file's."""
    if cfg.classes is not None:
        return list(cfg.classes)
    manifest = Path(cfg.root) / "dataset.json"
    if cfg.layout == "synthetic" and manifest.is_file():
        return list(json.loads(manifest.read_text())["categories"])
    from ..categories import load_categories

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


def images_to_device(images: Tensor, device: torch.device) -> Tensor:
    """uint8 (or float) [B, 3, H, W] -> float in [0, 1] on ``device``, channels_last on CUDA."""
    images = images.to(device, non_blocking=True)
    images = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
    return images.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else images


def collate(samples: list[dict[str, Any]], image_size: tuple[int, int]) -> dict[str, Any]:
    """Stack samples; every image must have the configured size (the error names the sample)."""
    for s in samples:
        if tuple(s["image"].shape[-2:]) != tuple(image_size):
            raise DataError(
                f"{s['category']}/{s['name']}: image is {tuple(s['image'].shape[-2:])}, config data.image_size "
                f"is {tuple(image_size)}; regenerate or re-prepare the data at that size, or change the config",
                field="data.image_size",
            )
    batch = {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.tensor([s["label"] for s in samples]),
        "bbox": torch.stack([s["bbox"] for s in samples]),
        "principal": torch.stack([s["principal"] for s in samples]),
    }
    for key in ("azimuth", "elevation", "theta", "distance", "focal", "viewport"):
        batch[key] = torch.tensor([float(s[key]) for s in samples])
    batch["mask"] = torch.stack([s["mask"] for s in samples]) if all("mask" in s for s in samples) else None
    return batch


def batch_cameras(batch: dict[str, Any], stride: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Viewmats [B, 4, 4] and feature-map intrinsics [B, 3, 3] of a batch's annotated poses."""
    viewmats = pose_to_viewmat(batch["azimuth"], batch["elevation"], batch["theta"], batch["distance"])
    Ks = pascal3d_intrinsics(batch["focal"], batch["viewport"], batch["principal"], downsample=stride)
    return viewmats.float().to(device), Ks.float().to(device)
