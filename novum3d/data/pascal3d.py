"""Readers for PASCAL3D+ (raw release 1.1), its NeMo-style preprocessed layout, OccludedPASCAL3D+
and OOD-CV. Every reader yields the same sample dict, so models never see which one made it.

Preprocessed layout (NeMo; also written by ``scripts/prepare_pascal3d.py`` and the synthetic
generator)::

    root/images/<subset>/<name>.JPEG       subset = <cls>, or <cls>FGL{1,2,3}_BGL{1,2,3} (occluded)
    root/annotations/<subset>/<name>.npz   see novum3d.data.annotations
    root/lists/<subset>/*.txt              optional; image names, one per line
    root/masks/<subset>/<name>.png         optional; object mask (non-zero = object)

OOD-CV, preprocessed, is one such root per nuisance: ``root/<nuisance>/images/<cls>/...``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..categories import load_categories
from ..errors import DataError
from .annotations import AnnotationError, ObjectAnnotation, load_annotation

IMAGE_EXTENSIONS = (".JPEG", ".jpg", ".jpeg", ".png", ".PNG", ".JPG")
OOD_NUISANCES = ("shape", "pose", "texture", "context", "weather", "occlusion")
OnError = Literal["raise", "skip"]


def occluded_subset(category: str, level: int) -> str:
    """Folder name of a category at an OccludedPASCAL3D+ level (0 = unoccluded)."""
    if level not in (0, 1, 2, 3):
        raise ValueError(f"occlusion level: expected 0, 1, 2 or 3, got {level}")
    return category if level == 0 else f"{category}FGL{level}_BGL{level}"


def load_rgb(path: Path, uint8: bool = False) -> torch.Tensor:
    """An image as float32 [3, H, W] in [0, 1] (or uint8 in [0, 255]); grayscale, palette and RGBA become RGB."""
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError("image file not found", path=path) from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"unreadable image ({exc})", path=path) from exc
    if uint8:
        return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
    return torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def _find_image(folder: Path, name: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS:
        path = folder / f"{name}{ext}"
        if path.is_file():
            return path
    return None


@dataclass
class _Item:
    category: str
    name: str
    image: Path
    annotation: ObjectAnnotation
    mask: Path | None = None


def _sample(item: _Item, label: int, image: torch.Tensor, **tags: Any) -> dict[str, Any]:
    ann = item.annotation
    sample = {
        "image": image,
        "label": label,
        "category": item.category,
        "name": item.name,
        "azimuth": ann.azimuth,
        "elevation": ann.elevation,
        "theta": ann.theta,
        "distance": ann.distance,
        "focal": ann.focal,
        "principal": torch.tensor(ann.principal, dtype=torch.float32),
        "viewport": ann.viewport,
        "bbox": torch.tensor(ann.bbox, dtype=torch.float32),
        "cad_index": ann.cad_index,
        **tags,
    }
    if item.mask is not None:
        with Image.open(item.mask) as m:
            sample["mask"] = torch.from_numpy(np.asarray(m.convert("L")) > 0)
    return sample


class _Reader(Dataset):
    """Shared bookkeeping: items, class labels, error policy, skipped files."""

    def __init__(self, classes: Sequence[str] | None, on_error: OnError, transform: Callable | None):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error: expected 'raise' or 'skip', got {on_error!r}")
        self.classes = list(classes) if classes is not None else [c.name for c in load_categories()]
        self.on_error = on_error
        self.transform = transform
        self.items: list[_Item] = []
        self.skipped: list[tuple[str, str]] = []  # (path, reason)

    def _fail(self, path: Path | str, reason: str) -> None:
        if self.on_error == "raise":
            raise DataError(reason, path=path)
        self.skipped.append((str(path), reason))

    def _verify_images(self) -> None:
        kept = []
        for item in self.items:
            try:
                load_rgb(item.image)
            except DataError as exc:
                self._fail(item.image, str(exc).split(": ", 1)[-1])
                continue
            kept.append(item)
        self.items = kept

    def __len__(self) -> int:
        return len(self.items)

    def _finish(self, sample: dict[str, Any]) -> dict[str, Any]:
        return self.transform(sample) if self.transform is not None else sample


class Pascal3DPreprocessed(_Reader):
    """The NeMo-style preprocessed layout: PASCAL3D+, OccludedPASCAL3D+, synthetic data.

    Args:
        root: folder holding ``images/``, ``annotations/`` (and optionally ``lists/``, ``masks/``).
        classes: categories to read, in label order (default: the 12 PASCAL3D+ classes).
        occlusion_level: 0 (clean) or 1-3 (OccludedPASCAL3D+ ``FGL{k}_BGL{k}`` folders).
        on_error: "raise" on the first malformed file, or "skip" it and list it in ``skipped``.
        verify_images: decode every image once at construction (finds truncated files early).
        transform: applied to each sample dict.
        nuisance: tag copied into samples (OOD-CV nuisance, synthetic split name, ...).
        uint8_images: yield uint8 [3, H, W] images (a quarter of the bytes through loader workers).
    """

    def __init__(
        self,
        root: str | Path,
        classes: Sequence[str] | None = None,
        occlusion_level: int = 0,
        on_error: OnError = "raise",
        verify_images: bool = False,
        transform: Callable | None = None,
        nuisance: str | None = None,
        uint8_images: bool = False,
    ):
        super().__init__(classes, on_error, transform)
        self.root = Path(root)
        self.uint8_images = uint8_images
        self.occlusion_level = occlusion_level
        self.nuisance = nuisance
        if not (self.root / "annotations").is_dir():
            raise DataError(
                f"{self.root}: no annotations/ folder; expected the preprocessed layout "
                "(images/<cls>/, annotations/<cls>/*.npz). Make one with scripts/prepare_pascal3d.py "
                "or scripts/make_synthetic.py"
            )
        for category in self.classes:
            self._index_category(category)
        if verify_images:
            self._verify_images()

    def _index_category(self, category: str) -> None:
        subset = occluded_subset(category, self.occlusion_level)
        ann_dir, img_dir = self.root / "annotations" / subset, self.root / "images" / subset
        list_dir, mask_dir = self.root / "lists" / subset, self.root / "masks" / subset
        if not ann_dir.is_dir():
            self._fail(ann_dir, "annotation folder missing")
            return
        if list_dir.is_dir():
            names = sorted({ln.strip() for f in sorted(list_dir.glob("*.txt")) for ln in f.read_text().split()})
            names = [Path(n).stem if Path(n).suffix in IMAGE_EXTENSIONS else n for n in names if n]
        else:
            names = sorted(p.stem for p in ann_dir.glob("*.npz"))
        for name in names:
            try:
                ann = load_annotation(ann_dir / f"{name}.npz")
            except AnnotationError as exc:
                if self.on_error == "raise":
                    raise
                self.skipped.append((str(ann_dir / f"{name}.npz"), str(exc).split(": ", 1)[-1]))
                continue
            image = _find_image(img_dir, name)
            if image is None:
                self._fail(img_dir / f"{name}.JPEG", "image file not found")
                continue
            mask = mask_dir / f"{name}.png"
            self.items.append(_Item(category, name, image, ann, mask if mask.is_file() else None))

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        sample = _sample(
            item,
            self.classes.index(item.category),
            load_rgb(item.image, self.uint8_images),
            occlusion_level=self.occlusion_level,
            nuisance=self.nuisance or ("occlusion" if self.occlusion_level else "clean"),
        )
        return self._finish(sample)


class OODCV(Pascal3DPreprocessed):
    """OOD-CV, preprocessed into the NeMo layout, one root per nuisance (``root/<nuisance>/``)."""

    def __init__(self, root: str | Path, nuisance: str, **kwargs: Any):
        if nuisance not in OOD_NUISANCES:
            raise ValueError(f"nuisance: expected one of {list(OOD_NUISANCES)}, got {nuisance!r}")
        super().__init__(Path(root) / nuisance, nuisance=nuisance, **kwargs)


def _field(struct: Any, name: str, where: str) -> Any:
    if not hasattr(struct, name):
        raise AnnotationError(f"{where}: missing field '{name}'")
    return getattr(struct, name)


def read_pascal3d_record(path: str | Path) -> tuple[str, list[dict[str, Any]]]:
    """Parse a raw PASCAL3D+ ``Annotations/<cls>_<source>/<name>.mat`` record.

    Returns:
        (image file name, objects), each object a dict with ``class``, ``bbox`` [4],
        ``cad_index`` and, when annotated, ``viewpoint`` (angles converted to radians).
    """
    from scipy.io import loadmat

    where = str(path)
    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except FileNotFoundError as exc:
        raise AnnotationError(f"{where}: no such annotation file") from exc
    except Exception as exc:  # scipy raises several types for corrupt files
        raise AnnotationError(f"{where}: not a readable .mat file ({exc})") from exc
    if "record" not in mat:
        raise AnnotationError(f"{where}: missing field 'record'")
    record = mat["record"]
    filename = str(_field(record, "filename", where))
    objects = []
    for i, obj in enumerate(np.atleast_1d(_field(record, "objects", where))):
        at = f"{where}: objects({i + 1})"
        entry: dict[str, Any] = {
            "class": str(_field(obj, "class", at)),
            "bbox": np.asarray(_field(obj, "bbox", at), dtype=np.float64).reshape(-1),
            "cad_index": int(getattr(obj, "cad_index", 1) or 1),
        }
        vp = getattr(obj, "viewpoint", None)
        if vp is not None and not (isinstance(vp, np.ndarray) and vp.size == 0):
            values = {}
            for key in ("azimuth", "elevation", "theta", "distance", "focal", "px", "py", "viewport"):
                value = float(np.asarray(_field(vp, key, f"{at}.viewpoint")).reshape(-1)[0])
                if not math.isfinite(value):
                    raise AnnotationError(f"{at}.viewpoint: field '{key}' is not finite ({value})")
                values[key] = value
            entry["viewpoint"] = values
        objects.append(entry)
    return filename, objects


class Pascal3DRaw(_Reader):
    """Raw PASCAL3D+ release 1.1: one sample per annotated object of the asked classes.

    Args:
        root: the ``PASCAL3D+_release1.1`` folder (``Images/``, ``Annotations/``, ``Image_sets/``).
        sources: "imagenet" and/or "pascal".
        split: "train" or "val" to use ``Image_sets/<cls>_imagenet_<split>.txt`` for the ImageNet
            part; None reads every annotation file.
        on_error, verify_images, transform, classes: as in :class:`Pascal3DPreprocessed`.
    """

    def __init__(
        self,
        root: str | Path,
        classes: Sequence[str] | None = None,
        sources: Sequence[str] = ("imagenet", "pascal"),
        split: str | None = None,
        on_error: OnError = "raise",
        verify_images: bool = False,
        transform: Callable | None = None,
    ):
        super().__init__(classes, on_error, transform)
        self.root = Path(root)
        if not (self.root / "Annotations").is_dir():
            raise DataError(f"{self.root}: no Annotations/ folder; expected PASCAL3D+_release1.1")
        for category in self.classes:
            present = [src for src in sources if (self.root / "Annotations" / f"{category}_{src}").is_dir()]
            if not present:  # one source missing is normal (ImageNet part only); none is not
                folders = ", ".join(f"{category}_{src}" for src in sources)
                self._fail(self.root / "Annotations", f"no annotation folder for {category} ({folders})")
            for source in present:
                self._index(category, source, split)
        if verify_images:
            self._verify_images()

    def _index(self, category: str, source: str, split: str | None) -> None:
        ann_dir = self.root / "Annotations" / f"{category}_{source}"
        img_dir = self.root / "Images" / f"{category}_{source}"
        names = sorted(p.stem for p in ann_dir.glob("*.mat"))
        list_file = self.root / "Image_sets" / f"{category}_{source}_{split}.txt"
        if split is not None and list_file.is_file():
            wanted = set(list_file.read_text().split())
            names = [n for n in names if n in wanted]
        for name in names:
            try:
                filename, objects = read_pascal3d_record(ann_dir / f"{name}.mat")
            except AnnotationError as exc:
                if self.on_error == "raise":
                    raise
                self.skipped.append((str(ann_dir / f"{name}.mat"), str(exc).split(": ", 1)[-1]))
                continue
            image = img_dir / filename
            if not image.is_file():
                self._fail(image, "image file not found")
                continue
            for k, obj in enumerate(objects):
                vp = obj.get("viewpoint")
                if obj["class"] != category or vp is None or vp["distance"] <= 0:
                    continue
                ann = ObjectAnnotation(
                    azimuth=math.radians(vp["azimuth"]),
                    elevation=math.radians(vp["elevation"]),
                    theta=math.radians(vp["theta"]),
                    distance=vp["distance"],
                    focal=vp["focal"],
                    principal=(vp["px"], vp["py"]),
                    viewport=vp["viewport"],
                    bbox=tuple(obj["bbox"].tolist()),
                    cad_index=obj["cad_index"],
                )
                self.items.append(_Item(category, f"{name}_{k:02d}", image, ann))

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        sample = _sample(
            item, self.classes.index(item.category), load_rgb(item.image), occlusion_level=0, nuisance="clean"
        )
        return self._finish(sample)


def load_cad_models(root: str | Path, category: str) -> list[Any]:
    """The CAD models ``CAD/<cls>/NN.off`` of a category as ``trimesh.Trimesh``, in index order."""
    import trimesh

    folder = Path(root) / "CAD" / category
    paths = sorted(folder.glob("*.off"))
    if not paths:
        raise DataError(f"{folder}: no .off CAD models")
    meshes = []
    for path in paths:
        try:
            mesh = trimesh.load(path, file_type="off", process=False, force="mesh")
        except Exception as exc:
            raise DataError(f"{path}: unreadable OFF mesh ({exc})") from exc
        if len(mesh.vertices) == 0:
            raise DataError(f"{path}: OFF mesh has no vertices")
        meshes.append(mesh)
    return meshes
