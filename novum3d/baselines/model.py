"""Classifiers with a class head, random or local weights: torchvision ResNet, ConvNeXt-T and ViT-B/16, or any
timm model (``timm:<model name>``, the optional timm extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from ..checkpoint import load_weights, read_trained
from ..config import TIMM_PREFIX, BaselineConfig, BaselineModelConfig
from ..model.backbone import load_weights_except_head, normalize_images

# The classifier head of each architecture: left out when loading weights of another task.
HEADS = {"resnet50": "fc.", "resnet18": "fc.", "convnext_tiny": "classifier.2.", "vit_b_16": "heads."}


def build_classifier(
    arch: str,
    num_classes: int,
    image_size: tuple[int, int],
    weights: str | Path | None = None,
    kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A torchvision classifier, or ``timm:<model name>`` (with timm ``kwargs``), with a ``num_classes`` head;
    weights random unless a local file is given (its classifier is left out)."""
    if arch.startswith(TIMM_PREFIX):
        return build_timm_classifier(arch, num_classes, weights, kwargs)
    if arch not in HEADS:
        raise ValueError(f"arch: expected one of {sorted(HEADS)}, got {arch!r}")
    kwargs = {"num_classes": num_classes}
    if arch == "vit_b_16":
        if image_size[0] != image_size[1] or image_size[0] % 16:
            raise ValueError(f"vit_b_16 needs square images with a side divisible by 16, got {tuple(image_size)}")
        kwargs["image_size"] = image_size[0]
    net = getattr(torchvision.models, arch)(weights=None, **kwargs)
    if weights is not None:
        load_weights_except_head(net, weights, HEADS[arch])
    return net


def build_timm_classifier(
    arch: str, num_classes: int, weights: str | Path | None = None, kwargs: dict[str, Any] | None = None
) -> nn.Module:
    """``timm.create_model(name, pretrained=False, num_classes=...)``: the same network NOVUM's ``timm:`` backbone
    uses, whole. A ViT takes any image size (``dynamic_img_size``, and ``dynamic_img_pad`` for sides that are
    not a multiple of its patch), so the baseline sees the images NOVUM sees."""
    from ..model.backbone.timm_trunks import classifier_keys, create_model, timm_arch

    timm, name, vit = timm_arch(arch, field="model.arch")
    extra = {"dynamic_img_size": True, "dynamic_img_pad": True} if vit else {}
    net = create_model(timm, name, "model.arch_kwargs", num_classes=num_classes, **extra, **(kwargs or {}))
    if weights is not None:
        load_weights_except_head(net, weights, classifier_keys(net))
    return net


class BaselineClassifier(nn.Module):
    """Images [B, 3, H, W] in [0, 1] -> logits [B, Y]; the same interface as NOVUM's ``classify``."""

    def __init__(self, cfg: BaselineModelConfig, classes: list[str], image_size: tuple[int, int]):
        super().__init__()
        self.backbone = build_classifier(cfg.arch, len(classes), image_size, cfg.weights, cfg.arch_kwargs)
        self._classes = list(classes)

    @property
    def classes(self) -> list[str]:
        return self._classes

    def forward(self, images: Tensor) -> Tensor:
        return self.backbone(normalize_images(images))

    @torch.no_grad()
    def classify(self, images: Tensor) -> Tensor:
        """Logits [B, Y]."""
        return self(images).float()


def load_baseline(path: str | Path, device: torch.device | str = "cpu") -> tuple[BaselineClassifier, BaselineConfig]:
    """Rebuild a baseline classifier from its training checkpoint (errors name the file)."""
    ckpt, cfg = read_trained(path, "baseline", BaselineConfig)
    cfg.model.weights = None  # the checkpoint holds the weights
    model = BaselineClassifier(cfg.model, ckpt["classes"], tuple(cfg.data.image_size))
    load_weights(model, ckpt, path)
    return model.to(device).eval(), cfg
