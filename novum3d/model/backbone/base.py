"""What every feature backbone shares: ImageNet normalisation, map geometry, a frozen trunk, torch.compile."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...device import resolve_compile

STRIDE = 8  # the authors' (GenIntel/NOVUM config/defaults.yaml L58 down_sample_rate); 4: FPN or DPT
STRIDES = (8, 4)

# torch.compile's mode for the backbone: "default", what benchmarks/inference.py measured (full classification
# 1,018 -> 1,573 img/s on an H100). Not "reduce-overhead" (CUDA graphs): a batch of 64 at
# 640x800 is ~40 ms of convolutions, so launch overhead is little to win back, while every batch shape records
# and keeps its own graph and memory pool, and a graph's outputs are overwritten by its next replay (the
# trainer's backward and the pose estimator hold the feature maps past the call). Not
# "max-autotune-no-cudagraphs": it benchmarks kernel choices while compiling (minutes more warm-up), unmeasured.
COMPILE_MODE = "default"

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: Tensor) -> Tensor:
    """[B, 3, H, W] in [0, 1] -> ImageNet-normalised."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def map_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """Cells of a backbone's map of an HxW image at ``stride``: ceil(H / s) x ceil(W / s), what a torchvision
    ResNet gives (every stride-2 layer pads), so that every pixel has its cell. Every backbone matches it."""
    return math.ceil(height / stride), math.ceil(width / stride)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def pad_bottom_right(images: Tensor, height: int, width: int) -> Tensor:
    """Normalised images [B, 3, H, W] padded at the bottom and right with zeros (the mean colour) to ``height``
    x ``width`` (at least H x W); pixel coordinates stay as they were, so there is no shift to undo."""
    pad_h, pad_w = height - images.shape[-2], width - images.shape[-1]
    return F.pad(images, (0, pad_w, 0, pad_h)) if pad_h or pad_w else images


def resample_cells(maps: Tensor, from_stride: float, to_stride: int) -> Tensor:
    """Maps [B, C, m, n] whose cell j covers pixels [j t, (j + 1) t), t = ``from_stride``, resampled bilinearly
    to cells of ``to_stride`` s pixels, floor(m t / s) x floor(n t / s) of them: cell i's centre, pixel
    (i + 0.5) s, reads the input at (i + 0.5) s / t - 0.5 of its cells (align_corners=False), where that pixel
    lies. A scale factor, not a size, says so: a size would stretch the grid to fill it."""
    if from_stride == to_stride:
        return maps
    return F.interpolate(maps, scale_factor=from_stride / to_stride, mode="bilinear")


class FrozenTrunk:
    """Mixin of a backbone whose ``trunk_modules()`` may be frozen (``model.freeze_trunk``): no gradients, and
    kept in eval mode by :meth:`train`, so BatchNorm statistics do not move and dropout / drop-path stay off."""

    frozen_trunk: bool = False

    def trunk_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def freeze_trunk(self) -> None:
        """Freeze the trunk now (its parameters drop out of any optimiser built after this)."""
        self.frozen_trunk = True
        for module in self.trunk_modules():
            module.requires_grad_(False)
            module.eval()

    def train(self, mode: bool = True):
        super().train(mode)  # type: ignore[misc]
        if self.frozen_trunk:
            for module in self.trunk_modules():
                module.eval()
        return self


def compile_backbone(backbone: nn.Module, setting: str | bool, device: torch.device | str,
                     field: str = "model.compile") -> bool:  # fmt: skip
    """Compile ``backbone`` in place when ``setting`` (auto / on / off) resolves on for ``device``; True if it did.

    The one place a backbone gets compiled (the trainer, ``load_model``, the inference benchmark).
    ``nn.Module.compile`` keeps the module itself, so ``state_dict`` keys carry no ``_orig_mod.`` prefix and
    checkpoints of compiled and eager models load into each other. Compilation happens at the first call.
    Shapes are static (``dynamic=False``): full batches keep the specialised graph the benchmark measured, and
    each new input shape (a loader's smaller last batch, another image size) or mode (train / eval, grad / no
    grad, autocast) compiles once more; past ``torch._dynamo.config.recompile_limit`` (8) graphs, new ones run
    eagerly, with a warning.
    """
    if not resolve_compile(setting, device, field):
        return False
    backbone.compile(mode=COMPILE_MODE, dynamic=False)
    return True


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module.compile()`` has been called on ``module``."""
    return getattr(module, "_compiled_call_impl", None) is not None
