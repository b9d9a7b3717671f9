"""Raw PASCAL3D+ (and OccludedPASCAL3D+) -> the NeMo-style preprocessed layout.

Each annotated object becomes one image of a fixed size (640x800 by default), cropped around
the projection of the object's origin and rescaled so that every object appears at the same
distance scale. Two ways to do the rescaling:

- ``nemo`` (default, as NeMo/NOVUM prepare their data): scale the image by
  ``s = distance / target_distance`` and record ``distance = target_distance``. This is exact
  for the object's centre and off by the weak-perspective error elsewhere (a few percent of
  the object's size for PASCAL3D+ distances).
- ``exact``: scale the image by the same ``s`` but keep the distance and multiply the focal
  length by ``s``; every projected point lands exactly where the toolbox puts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from PIL import Image

from .annotations import ObjectAnnotation, save_annotation
from .pascal3d import DataError, Pascal3DRaw, load_cad_models, occluded_subset

Mode = Literal["nemo", "exact"]


@dataclass(frozen=True)
class PrepareOptions:
    height: int = 640
    width: int = 800
    target_distance: float = 5.0
    mode: Mode = "nemo"
    quality: int = 95


def crop_object(
    image: Image.Image, ann: ObjectAnnotation, opts: PrepareOptions
) -> tuple[Image.Image, ObjectAnnotation]:
    """Rescale and crop one object; returns the new image and its annotation."""
    if opts.mode not in ("nemo", "exact"):
        raise ValueError(f"mode: expected 'nemo' or 'exact', got {opts.mode!r}")
    s = ann.distance / opts.target_distance
    w, h = image.size
    new_w, new_h = max(1, round(w * s)), max(1, round(h * s))
    sx, sy = new_w / w, new_h / h  # the exact factors after rounding the size
    scaled = image.convert("RGB").resize((new_w, new_h), Image.BILINEAR)
    px, py = ann.principal[0] * sx, ann.principal[1] * sy
    x0, y0 = round(px - opts.width / 2), round(py - opts.height / 2)
    canvas = Image.new("RGB", (opts.width, opts.height), (0, 0, 0))
    canvas.paste(scaled, (-x0, -y0))
    b = ann.bbox
    bbox = (
        min(max(b[0] * sx - x0, 0.0), opts.width),
        min(max(b[1] * sy - y0, 0.0), opts.height),
        min(max(b[2] * sx - x0, 0.0), opts.width),
        min(max(b[3] * sy - y0, 0.0), opts.height),
    )
    new = replace(ann, principal=(px - x0, py - y0), bbox=bbox)
    if opts.mode == "nemo":
        new = replace(new, distance=opts.target_distance)
    else:
        new = replace(new, focal=ann.focal * math.sqrt(sx * sy))
    return canvas, new


def prepare_pascal3d(
    raw_root: str | Path,
    out: str | Path,
    classes: list[str] | None = None,
    opts: PrepareOptions | None = None,
    occluded_root: str | Path | None = None,
    split: str | None = None,
    progress=None,
) -> dict[str, int | list]:
    """Convert raw PASCAL3D+ into the preprocessed layout; resumable, broken records listed.

    Args:
        raw_root: ``PASCAL3D+_release1.1``.
        out: output root (``images/``, ``annotations/``, ``lists/``).
        occluded_root: OccludedPASCAL3D+ images (``images/<cls>FGL{k}_BGL{k}/<name>.JPEG`` named
            after the PASCAL3D+ ImageNet image they occlude); converted with the same crop.
        split: "train" / "val" (ImageNet part's Image_sets), or None for all.
        progress: ``callable(iterable, total) -> iterable`` for a progress bar.

    Returns:
        counts: written, resumed (already there), broken (list of (path, reason)), written to
        ``out/broken.txt`` as well.
    """
    opts = opts or PrepareOptions()
    out = Path(out)
    ds = Pascal3DRaw(raw_root, classes, split=split, on_error="skip")
    broken: list[tuple[str, str]] = list(ds.skipped)
    written = resumed = 0
    lists: dict[tuple[str, int], list[str]] = {}
    items = ds.items if progress is None else progress(ds.items, len(ds.items))
    for item in items:
        jobs = [(item.category, item.image)]
        if occluded_root is not None:
            stem = item.image.stem
            for level in (1, 2, 3):
                sub = occluded_subset(item.category, level)
                for ext in (".JPEG", ".jpg", ".png"):
                    cand = Path(occluded_root) / "images" / sub / f"{stem}{ext}"
                    if cand.is_file():
                        jobs.append((sub, cand))
                        break
        for subset, src in jobs:
            ann_path = out / "annotations" / subset / f"{item.name}.npz"
            lists.setdefault((subset, item.annotation.cad_index), []).append(item.name)
            if ann_path.is_file():
                resumed += 1
                continue
            try:
                with Image.open(src) as img:
                    img.load()
                    crop, ann = crop_object(img, item.annotation, opts)
            except (OSError, SyntaxError) as exc:
                broken.append((str(src), f"unreadable image ({exc})"))
                continue
            img_path = out / "images" / subset / f"{item.name}.JPEG"
            img_path.parent.mkdir(parents=True, exist_ok=True)
            crop.save(img_path, format="JPEG", quality=opts.quality)
            # The annotation is written last (atomically), so its presence marks a finished item.
            save_annotation(ann_path, ann, source=np.array(str(src.name)))
            written += 1
    for (subset, cad), names in lists.items():
        path = out / "lists" / subset / f"mesh{cad:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(sorted(set(names))) + "\n")
    out.mkdir(parents=True, exist_ok=True)
    (out / "broken.txt").write_text("".join(f"{p}\t{r}\n" for p, r in broken))
    return {"written": written, "resumed": resumed, "broken": broken}


def cad_category_sizes(raw_root: str | Path, classes: list[str]) -> dict[str, list[float]]:
    """Per category, the largest extent along x, y, z over its CAD models (a cuboid holding all)."""
    sizes = {}
    for cls in classes:
        meshes = load_cad_models(raw_root, cls)
        ext = np.max([np.abs(m.vertices).max(axis=0) * 2 for m in meshes], axis=0)
        sizes[cls] = [round(float(v), 4) for v in ext]
    return sizes


def write_categories_yaml(sizes: dict[str, list[float]], path: str | Path) -> Path:
    """A categories file ``load_categories`` reads (``categories: {name: {size: [x, y, z]}}``)."""
    path = Path(path)
    if not sizes:
        raise DataError("no category sizes to write")
    body = {"categories": {k: {"size": v} for k, v in sizes.items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Cuboids from the PASCAL3D+ CAD models (max extent per axis)\n" + yaml.safe_dump(body))
    return path
