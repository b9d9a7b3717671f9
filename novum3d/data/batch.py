"""Batches: stacking samples, images onto the device, cameras and box cells at feature-map scale."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

from rendering import Pose, pascal3d_intrinsics

from ..errors import DataError


def images_to_device(images: Tensor, device: torch.device) -> Tensor:
    """uint8 (or float) [B, 3, H, W] -> float in [0, 1] on ``device``, channels_last on CUDA."""
    images = images.to(device, non_blocking=True)
    images = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
    return images.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else images


# The batch entries a training step reads on the device; the pose fields stay on the host, where the
# cameras are built (value checks there cost no GPU wait).
DEVICE_KEYS = ("image", "label", "mask", "bbox")


def batch_to_device(batch: dict[str, Any], device: torch.device, keys: tuple[str, ...] = DEVICE_KEYS) -> dict[str, Any]:
    """``batch`` with its ``keys`` tensors on ``device`` (already there: no copy; others as they are)."""
    return {k: v.to(device, non_blocking=True) if k in keys and torch.is_tensor(v) else v for k, v in batch.items()}


def host_to_device(t: Tensor, device: torch.device) -> Tensor:
    """A small tensor on ``device``; from the host to CUDA through pinned memory, so the copy does not
    wait for the GPU's queue as a copy from pageable memory does (a tensor on a GPU already just moves)."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def prefetch_to_device(
    batches: Iterable[dict[str, Any]], device: torch.device, keys: tuple[str, ...] = DEVICE_KEYS
) -> Iterator[dict[str, Any]]:
    """The same batches, with their ``keys`` tensors copied to a CUDA ``device`` one batch ahead on a
    side stream, so the copy of batch i + 1 overlaps the step on batch i; elsewhere the batches as they
    come. Copies from pinned memory (``pin_memory=True``) are the ones that overlap."""
    if device.type != "cuda":
        yield from batches
        return
    side = torch.cuda.Stream(device)

    def start(batch: dict[str, Any]) -> dict[str, Any]:
        with torch.cuda.stream(side):
            return batch_to_device(batch, device, keys)

    it = iter(batches)
    pending = next(it, None)
    pending = start(pending) if pending is not None else None
    while pending is not None:
        main = torch.cuda.current_stream(device)
        main.wait_stream(side)
        for k in keys:
            if torch.is_tensor(pending.get(k)):
                pending[k].record_stream(main)  # the allocator must not reuse it before main is done
        ready, upcoming = pending, next(it, None)
        pending = start(upcoming) if upcoming is not None else None
        yield ready


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


def batch_pose(batch: dict[str, Any]) -> Pose:
    """The annotated poses of a batch (on the CPU, as collated)."""
    return Pose.from_mapping(batch)


def batch_cameras(batch: dict[str, Any], stride: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Viewmats [B, 4, 4] and feature-map intrinsics [B, 3, 3] of a batch's annotated poses; a
    ``pixel_aspect`` [B] entry (a training augmentation's stretched rows) scales each camera's fy."""
    viewmats = batch_pose(batch).viewmat()
    Ks = pascal3d_intrinsics(batch["focal"], batch["viewport"], batch["principal"], downsample=stride)
    if "pixel_aspect" in batch:
        Ks = Ks.clone()
        Ks[:, 1, 1] = Ks[:, 1, 1] * batch["pixel_aspect"].to(Ks)
    return host_to_device(viewmats.float(), device), host_to_device(Ks.float(), device)


def box_cells(boxes: Tensor, image_size: tuple[int, int], map_size: tuple[int, int]) -> Tensor:
    """[B, h, w] bool: feature-map cells whose centre lies inside each image's box [B, 4] (x0, y0, x1, y1 pixels)."""
    (H, W), (h, w) = image_size, map_size
    ys = (torch.arange(h, device=boxes.device) + 0.5) * H / h
    xs = (torch.arange(w, device=boxes.device) + 0.5) * W / w
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))
    inside_x = (xs[None] >= x0) & (xs[None] <= x1)
    inside_y = (ys[None] >= y0) & (ys[None] <= y1)
    return inside_y[:, :, None] & inside_x[:, None, :]
