"""One object's annotation in the NeMo-style preprocessed layout (``annotations/<cls>/<name>.npz``).

Angles are radians, as NeMo's preprocessed files store them (the raw PASCAL3D+ ``.mat`` files
use degrees; :mod:`novum3d.data.pascal3d` converts). ``bbox`` is ``[x0, y0, x1, y1]`` in
pixels of the stored image; NeMo calls it ``box_obj`` and both names are read.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rendering import Pose

from ..errors import AnnotationError


@dataclass
class ObjectAnnotation:
    azimuth: float
    elevation: float
    theta: float
    distance: float
    focal: float
    principal: tuple[float, float]  # (x, y) pixels
    viewport: float
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 pixels
    cad_index: int = 1

    def pose(self) -> Pose:
        """The annotated pose, a batch of one."""
        return Pose.from_mapping(self)


_SCALARS = ("azimuth", "elevation", "theta", "distance", "focal", "viewport")


def _scalar(data, key: str, where: str) -> float:
    try:
        value = float(np.asarray(data[key]).reshape(-1)[0])
    except (ValueError, TypeError, IndexError) as exc:
        raise AnnotationError(f"field '{key}' is not a number ({exc})", path=where, field=key) from exc
    if not math.isfinite(value):
        raise AnnotationError(f"field '{key}' is not finite ({value})", path=where, field=key)
    return value


def _vector(data, key: str, size: int, where: str) -> tuple[float, ...]:
    arr = np.asarray(data[key], dtype=np.float64).reshape(-1)
    if arr.shape != (size,) or not np.all(np.isfinite(arr)):
        raise AnnotationError(f"field '{key}' must be {size} finite numbers, got {arr.tolist()}", path=where, field=key)
    return tuple(float(v) for v in arr)


def load_annotation(path: str | Path) -> ObjectAnnotation:
    """Read and validate one ``.npz`` annotation; errors name the file and the field."""
    path = Path(path)
    where = str(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            missing = [k for k in (*_SCALARS, "principal") if k not in keys]
            if "bbox" not in keys and "box_obj" not in keys:
                missing.append("bbox (or box_obj)")
            if missing:
                raise AnnotationError(
                    f"missing field(s) {missing}; re-create it (scripts/prepare_pascal3d.py or make_synthetic.py)",
                    path=where,
                    field=missing[0],
                )
            values = {k: _scalar(data, k, where) for k in _SCALARS}
            principal = _vector(data, "principal", 2, where)
            bbox = _vector(data, "bbox" if "bbox" in keys else "box_obj", 4, where)
            cad_index = int(_scalar(data, "cad_index", where)) if "cad_index" in keys else 1
    except FileNotFoundError as exc:
        raise AnnotationError("no such annotation file", path=where) from exc
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        if isinstance(exc, AnnotationError):
            raise
        raise AnnotationError(f"not a readable .npz file ({exc})", path=where) from exc
    if values["distance"] <= 0:
        raise AnnotationError(f"field 'distance' must be > 0, got {values['distance']}", path=where, field="distance")
    if values["focal"] <= 0 or values["viewport"] <= 0:
        raise AnnotationError("fields 'focal' and 'viewport' must be > 0", path=where, field="focal")
    return ObjectAnnotation(principal=principal, bbox=bbox, cad_index=cad_index, **values)  # type: ignore[arg-type]


def save_annotation(path: str | Path, ann: ObjectAnnotation, **extra: np.ndarray) -> None:
    """Write an annotation in the NeMo layout (``bbox`` also stored as ``box_obj``).

    The file is an ordinary ``.npz`` that ``np.load`` reads, written with fixed zip timestamps
    so that the same annotation always gives the same bytes (``np.savez`` stamps the clock).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.float64(getattr(ann, k)) for k in _SCALARS}
    arrays |= {
        "principal": np.asarray(ann.principal, dtype=np.float64),
        "bbox": np.asarray(ann.bbox, dtype=np.float64),
        "box_obj": np.asarray(ann.bbox, dtype=np.float64),
        "cad_index": np.int64(ann.cad_index),
    }
    arrays |= {k: np.asarray(v) for k, v in extra.items()}
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, value in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w") as fh:
                np.lib.format.write_array(fh, np.asanyarray(value), allow_pickle=False)
    tmp.replace(path)
