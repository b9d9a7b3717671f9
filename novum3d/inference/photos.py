"""One image's pose estimate as the front end (scripts/estimate_pose.py) reports it: the images a
command line names, their intrinsics, the JSON record and the picture."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from rendering import pascal3d_intrinsics

from ..data.pascal3d import IMAGE_EXTENSIONS, load_rgb
from ..errors import DataError, Novum3DError
from ..model.novum import NOVUM
from .figures import correspondence_map, pose_figure, volume_silhouette
from .pipeline import Prediction

MIN_SIDE = 64  # pixels a side: smaller images give feature maps of a few cells


def find_images(items: Sequence[str | Path]) -> list[Path]:
    """The images named, folders expanded to the images they hold (a folder without any is an error)."""
    paths = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.suffix in IMAGE_EXTENSIONS)
            if not found:
                raise Novum3DError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in this folder", path=p)
            paths += found
        else:
            paths.append(p)
    return paths


def load_image(path: Path, min_side: int = MIN_SIDE) -> Tensor:
    """[3, H, W] in [0, 1]; a missing, unreadable or too small image is a :class:`DataError` naming it."""
    image = load_rgb(path)
    h, w = image.shape[-2:]
    if min(h, w) < min_side:
        raise DataError(f"{path}: image is {w}x{h}; need at least {min_side} pixels a side")
    return image


def centred_intrinsics(focal: float, viewport: float, size: tuple[int, int], downsample: float = 1.0) -> Tensor:
    """[1, 3, 3] intrinsics of an image of ``size`` (h, w) with the principal point at its centre (the
    preprocessed PASCAL3D+ convention), at image scale or ``downsample`` (the model's stride)."""
    h, w = size
    return pascal3d_intrinsics(focal, viewport, (w / 2, h / 2), downsample=downsample)


def prediction_record(path: Path, classes: Sequence[str], pred: Prediction, seconds: float, index: int = 0) -> dict:
    """The JSON record of image ``index`` of a prediction: class, class scores and probabilities,
    pose in radians and degrees, distance, pose score, seconds."""
    y = int(pred.labels[index])
    pose = pred.pose.to_dict(index)
    return {
        "image": str(path),
        "class": classes[y],
        "class_scores": {c: round(float(s), 5) for c, s in zip(classes, pred.class_scores[index], strict=True)},
        "class_probabilities": {c: round(float(p), 5) for c, p in zip(classes, pred.probabilities[index], strict=True)},
        "pose_radians": pose,
        "pose_degrees": {k: math.degrees(v) for k, v in pose.items() if k != "distance"},
        "distance": pose["distance"],
        "pose_score": float(pred.pose.score[index]),
        "seconds": seconds,
    }


@torch.no_grad()
def prediction_figure(model: NOVUM, image: Tensor, pred: Prediction, K_image: Tensor, index: int = 0) -> Image.Image:
    """The image with the predicted class's volume outlined at the predicted pose, beside the
    part-correspondence map, captioned with class and angles.

    Args:
        image: [3, H, W] in [0, 1]; K_image: [3, 3] or [1, 3, 3] intrinsics at image scale.
    """
    y = int(pred.labels[index])
    volumes = model.volumes
    volume = volumes.volume(y)
    device = next(model.parameters()).device
    maps = model(image[None].to(device))
    silhouette = volume_silhouette(volume, pred.pose[index], K_image.reshape(3, 3), tuple(image.shape[-2:]))
    corr = correspondence_map(maps[0].float().cpu(), volume.to("cpu"), volumes.features[y, : volumes.count(y)].cpu(),
                              volumes.bank.cpu())  # fmt: skip
    deg = {k: math.degrees(v) for k, v in pred.pose.to_dict(index).items() if k != "distance"}
    caption = f"{model.classes[y]}  az {deg['azimuth']:.0f}  el {deg['elevation']:.0f}  th {deg['theta']:.0f}"
    return pose_figure(image, silhouette, corr, caption)


def summary_line(record: dict[str, Any]) -> str:
    """One line for a record: class (probability), angles in degrees, distance, score, seconds."""
    deg = record["pose_degrees"]
    return (
        f"{Path(record['image']).name}: {record['class']} (p={record['class_probabilities'][record['class']]:.2f}) "
        f"azimuth {deg['azimuth']:.1f} elevation {deg['elevation']:.1f} theta {deg['theta']:.1f} deg, "
        f"distance {record['distance']:.2f}, score {record['pose_score']:.3f}, {record['seconds']:.1f} s"
    )
