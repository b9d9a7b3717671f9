"""Tiny data sets in the exact on-disk formats, written by the tests themselves."""

import math
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from novum3d.data.annotations import ObjectAnnotation, save_annotation


def write_image(path: Path, seed: int, size=(40, 48), fmt="JPEG") -> np.ndarray:
    rgb = np.random.default_rng(seed).integers(0, 255, size=(*size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format=fmt)
    return rgb


def annotation(seed: int) -> ObjectAnnotation:
    g = np.random.default_rng(seed)
    return ObjectAnnotation(
        azimuth=float(g.uniform(0, 2 * math.pi)),
        elevation=float(g.uniform(-0.5, 0.8)),
        theta=float(g.uniform(-0.3, 0.3)),
        distance=5.0,
        focal=1.0,
        principal=(24.0, 20.0),
        viewport=3000.0,
        bbox=(3.0, 4.0, 40.0, 30.0),
        cad_index=int(g.integers(1, 5)),
    )


def make_nemo_layout(root: Path, classes=("car", "bus"), per_class=3, subset_suffix="", masks=True):
    """images/<cls>/<name>.JPEG, annotations/<cls>/<name>.npz, lists/<cls>/mesh01.txt, masks/."""
    truth = {}
    for c, cls in enumerate(classes):
        subset = cls + subset_suffix
        names = []
        for i in range(per_class):
            name = f"n{c}{i:03d}"
            seed = 100 * c + i
            write_image(root / "images" / subset / f"{name}.JPEG", seed)
            ann = annotation(seed)
            save_annotation(root / "annotations" / subset / f"{name}.npz", ann)
            if masks and i == 0:
                mask = np.zeros((40, 48), np.uint8)
                mask[5:20, 10:30] = 255
                (root / "masks" / subset).mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(root / "masks" / subset / f"{name}.png")
            names.append(name)
            truth[(cls, name)] = ann
        (root / "lists" / subset).mkdir(parents=True, exist_ok=True)
        (root / "lists" / subset / "mesh01.txt").write_text("\n".join(names) + "\n")
    return truth


def mat_object(cls: str, bbox, viewpoint: dict | None, cad_index=1):
    return cls, np.asarray(bbox, float), viewpoint if viewpoint is not None else np.zeros((0, 0)), cad_index


def write_pascal3d_record(path: Path, filename: str, objects) -> None:
    """A PASCAL3D+ ``record`` struct (objects as a 1xK struct array) via scipy.io.savemat."""
    dtype = [("class", "O"), ("bbox", "O"), ("viewpoint", "O"), ("cad_index", "O")]
    arr = np.zeros((1, len(objects)), dtype=dtype)
    for k, (cls, bbox, vp, cad) in enumerate(objects):
        arr[0, k] = (cls, bbox, vp, cad)
    record = {"filename": filename, "size": {"width": 48, "height": 40, "depth": 3}, "objects": arr}
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"record": record})


def viewpoint(az_deg, el_deg, th_deg, distance=5.0, px=24.0, py=20.0):
    return {
        "azimuth": float(az_deg), "elevation": float(el_deg), "theta": float(th_deg),
        "distance": float(distance), "focal": 1.0, "px": px, "py": py, "viewport": 3000.0,
        "azimuth_coarse": float(az_deg), "elevation_coarse": float(el_deg),
    }  # fmt: skip


def write_off(path: Path, vertices, faces) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["OFF", f"{len(vertices)} {len(faces)} 0"]
    lines += [" ".join(f"{v:.6f}" for v in vert) for vert in vertices]
    lines += [f"3 {a} {b} {c}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")
