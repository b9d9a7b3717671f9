"""Photographs through the model as the front end (scripts/estimate_pose.py) runs them: the images a
command line names, each letterboxed to the model's input size with its intrinsics changed to match, a
loader that decodes ahead, the JSON records and the picture."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from rendering import pascal3d_intrinsics

from ..data.batch import box_cells, images_to_device
from ..data.pascal3d import IMAGE_EXTENSIONS, load_rgb
from ..errors import DataError, Novum3DError
from ..model.backbone import IMAGENET_MEAN
from ..model.novum import NOVUM
from .figures import correspondence_map, pose_figure, volume_silhouette
from .pipeline import Prediction, predict
from .pose import PoseEstimator

MIN_SIDE = 64  # pixels a side: smaller images give feature maps of a few cells
SIZE_MULTIPLE = 32  # an input side: the trunk's coarsest stride, so the map is exactly size / stride
# Padding is the ImageNet mean colour: zero after the backbone's normalisation.
PAD_VALUE = tuple(round(255 * m) for m in IMAGENET_MEAN)

# PoseConfig fields of each --quality; "default" is PoseConfig's own.
QUALITY = {
    "default": {},
    "fast": {"steps": 15, "prune_after": 5, "top_k": 1},
}


@dataclass(frozen=True)
class Letterbox:
    """Where an image of ``original`` (h, w) pixels lies in the model's input of ``size`` (h, w): scaled
    by ``scale`` (sx, sy), the resized image's size over the original's along each axis, and placed
    ``offset`` (x, y) pixels from the top left, the rest padding.

    In continuous pixel coordinates (a pixel's centre at i + 0.5) a point at ``u`` in the original
    lies at ``sx * u + ox`` in the input, so the input's intrinsics are ``S @ K`` with
    ``S = [[sx, 0, ox], [0, sy, oy], [0, 0, 1]]`` (:meth:`intrinsics`); a camera-relative pose is the
    same under both.
    """

    original: tuple[int, int]
    size: tuple[int, int]
    scale: tuple[float, float]
    offset: tuple[int, int]

    @classmethod
    def fit(cls, original: tuple[int, int], size: tuple[int, int]) -> Letterbox:
        """The largest placement of ``original`` within ``size`` keeping its aspect ratio, centred."""
        (H, W), (h, w) = original, size
        s = min(h / H, w / W)
        rh, rw = min(h, max(1, round(H * s))), min(w, max(1, round(W * s)))
        return cls((H, W), (h, w), (rw / W, rh / H), ((w - rw) // 2, (h - rh) // 2))

    @property
    def resized(self) -> tuple[int, int]:
        """(h, w) of the image inside the input, without the padding."""
        return round(self.original[0] * self.scale[1]), round(self.original[1] * self.scale[0])

    def matrix(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """[3, 3] ``S``: original pixel coordinates to input pixel coordinates."""
        (sx, sy), (ox, oy) = self.scale, self.offset
        return torch.tensor([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]], dtype=dtype)

    def intrinsics(self, K: Tensor) -> Tensor:
        """``S @ K``: intrinsics [..., 3, 3] of the original image (at image scale) for the input."""
        return self.matrix(K.dtype).to(K.device) @ K

    def content_box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) pixels of the input that show the image."""
        (ox, oy), (rh, rw) = self.offset, self.resized
        return ox, oy, ox + rw, oy + rh

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "scale": list(self.scale), "offset": list(self.offset)}


def letterbox(image: Tensor, size: tuple[int, int], fill: Sequence[float] | float = 0.0) -> tuple[Tensor, Letterbox]:
    """``image`` [C, H, W] resized (bilinear, antialiased when shrinking) into ``size`` (h, w) keeping
    its aspect ratio, centred and padded with ``fill`` (one value, or one per channel); uint8 stays
    uint8 (rounded, resampled in float32), a float dtype stays itself.

    Returns:
        (the input [C, h, w], its :class:`Letterbox`).
    """
    box = Letterbox.fit(tuple(image.shape[-2:]), size)
    rh, rw = box.resized
    work = image.dtype if image.is_floating_point() else torch.float32
    x = image.to(work)[None]
    if (rh, rw) != tuple(image.shape[-2:]):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False, antialias=True)
    C = image.shape[0]
    fill_t = torch.as_tensor(fill, dtype=work).reshape(-1)
    out = fill_t.expand(C).reshape(1, C, 1, 1).expand(1, C, *size).clone()
    (ox, oy) = box.offset
    out[:, :, oy : oy + rh, ox : ox + rw] = x
    out = out[0]
    if image.dtype == torch.uint8:
        out = out.round_().clamp_(0, 255).to(torch.uint8)
    else:
        out = out.to(image.dtype)
    return out, box


def content_cells(boxes: Sequence[Letterbox], map_size: tuple[int, int]) -> Tensor | None:
    """[B, h, w] bool: feature-map cells whose centre shows the image (not the padding), or None when
    every cell of every input does."""
    if all(b.content_box() == (0, 0, b.size[1], b.size[0]) for b in boxes):
        return None
    xyxy = torch.tensor([b.content_box() for b in boxes], dtype=torch.float32)
    return box_cells(xyxy, boxes[0].size, map_size)


def check_input_size(size: Sequence[int], field: str = "--size") -> tuple[int, int]:
    """(h, w) of a model input size: two sides (or one, square), each a positive multiple of 32."""
    sides = tuple(int(v) for v in size)
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or any(v < SIZE_MULTIPLE or v % SIZE_MULTIPLE for v in sides):
        raise Novum3DError(
            f"{field}: expected HEIGHT WIDTH (or one side), each a multiple of {SIZE_MULTIPLE}, got {list(size)}",
            field=field,
        )
    return sides  # type: ignore[return-value]


class PhotoSet(Dataset):
    """Images decoded and letterboxed to ``size`` (h, w), for a DataLoader whose workers do it ahead.

    Item i: ``{"index": i, "image": uint8 [3, h, w], "letterbox": Letterbox}``, or ``{"index": i,
    "error": "one line"}`` for a missing, unreadable or too small image (so one bad file does not
    stop the loader).
    """

    def __init__(self, paths: Sequence[Path], size: tuple[int, int], min_side: int = MIN_SIDE):
        self.paths, self.size, self.min_side = list(paths), tuple(size), min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        try:
            image = load_image(self.paths[i], self.min_side, uint8=True)
        except DataError as exc:
            return {"index": i, "error": str(exc)}
        canvas, box = letterbox(image, self.size, PAD_VALUE)
        return {"index": i, "image": canvas, "letterbox": box}


def collate_photos(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of :class:`PhotoSet` items: ``images`` uint8 [B, 3, h, w] (None if all failed), their
    ``indices`` and ``letterboxes``, and ``errors`` [(index, line)] of the failed ones."""
    ok = [it for it in items if "error" not in it]
    return {
        "images": torch.stack([it["image"] for it in ok]) if ok else None,
        "indices": [it["index"] for it in ok],
        "letterboxes": [it["letterbox"] for it in ok],
        "errors": [(it["index"], it["error"]) for it in items if "error" in it],
    }


def photo_intrinsics(box: Letterbox, focal: float, viewport: float, downsample: float = 1.0) -> Tensor:
    """[1, 3, 3] intrinsics of a letterboxed input, at image scale or ``downsample`` (the model's stride),
    of an original image with the principal point at its centre (:func:`centred_intrinsics`)."""
    K = box.intrinsics(centred_intrinsics(focal, viewport, box.original))
    if downsample != 1.0:
        K = K.clone()
        K[:, :2] /= downsample
    return K


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


def load_image(path: Path, min_side: int = MIN_SIDE, uint8: bool = False) -> Tensor:
    """[3, H, W] in [0, 1] (or uint8); a missing, unreadable or too small image is a :class:`DataError` naming it."""
    image = load_rgb(path, uint8=uint8)
    h, w = image.shape[-2:]
    if min(h, w) < min_side:
        raise DataError(f"{path}: image is {w}x{h}; need at least {min_side} pixels a side")
    return image


def centred_intrinsics(focal: float, viewport: float, size: tuple[int, int], downsample: float = 1.0) -> Tensor:
    """[1, 3, 3] intrinsics of an image of ``size`` (h, w) with the principal point at its centre (the
    preprocessed PASCAL3D+ convention), at image scale or ``downsample`` (the model's stride)."""
    h, w = size
    return pascal3d_intrinsics(focal, viewport, (w / 2, h / 2), downsample=downsample)


def prediction_record(
    path: Path,
    classes: Sequence[str],
    pred: Prediction,
    seconds: float,
    index: int = 0,
    camera: dict[str, Any] | None = None,
    box: Letterbox | None = None,
) -> dict:
    """The JSON record of image ``index`` of a prediction: class, class scores and probabilities,
    pose in radians and degrees, distance, pose score, seconds; with ``camera`` the original image's
    camera the pose is relative to (focal, viewport, principal point, size), with ``box`` where the
    image lay in the model's input."""
    y = int(pred.labels[index])
    pose = pred.pose.to_dict(index)
    record = {
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
    if camera is not None:
        record["camera"] = camera
    if box is not None:
        record["input"] = box.to_dict()
    return record


def original_camera(box: Letterbox, focal: float, viewport: float) -> dict[str, Any]:
    """The camera of an original image as :func:`prediction_record` reports it (principal point at its centre)."""
    h, w = box.original
    return {"focal": focal, "viewport": viewport, "principal": [w / 2, h / 2], "image_size": [w, h]}


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


def warm_up(
    model: NOVUM,
    estimator: PoseEstimator,
    size: tuple[int, int],
    batch: int,
    focal: float,
    viewport: float,
    label: int | None = None,
) -> None:
    """A blank batch of ``batch`` inputs of ``size`` through the whole path (backbone, classes, templates
    of the blank's class, refinement), once filling the input and once letterboxed (a pixel mask), and
    the class scorer on one input alone, so that kernels load, compile and tune before the first
    photograph's time is taken."""
    device = next(model.parameters()).device
    blank = images_to_device(torch.zeros(batch, 3, *size, dtype=torch.uint8), device)
    K = centred_intrinsics(focal, viewport, size, downsample=model.stride).to(device)
    labels = None if label is None else torch.full((batch,), label, device=device)
    map_size = (size[0] // model.stride, size[1] // model.stride)
    # The cells a photograph half as tall as the input covers, as the command masks it.
    letterboxed = content_cells([Letterbox.fit((size[0] // 2, size[1]), size)] * batch, map_size).to(device)
    with torch.no_grad():
        alone = model(blank[:1]) if batch > 1 else None
    # The fused class scorer is tuned per mask/no-mask variant, and compiled apart for batches so small
    # that each program holds one class. Unprepared on an H100, the first letterboxed photograph paid
    # 1.2 s of tuning (6.1 s with nothing compiled yet) and a lone unmasked one 0.55 s; prepared, 0.002 s.
    for pixel_mask in (None, letterboxed):
        predict(model, blank, K.expand(batch, 3, 3), estimator, labels, pixel_mask=pixel_mask)
        if alone is not None:
            with torch.no_grad():
                model.score_maps(alone, None if pixel_mask is None else pixel_mask[:1])
