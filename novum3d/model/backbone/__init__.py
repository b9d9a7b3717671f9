"""Feature backbones: a trunk, a decoder and a 1x1 head giving unit-norm D-dim maps at stride 8 (or 4).

- ``resnet``: torchvision ResNet-50/18 (``FeatureBackbone``), the paper's.
- ``timm_trunks``: any timm CNN (ConvNeXt, ...) or ViT (DINOv2 /14, registers variants, DeiT, EVA) as
  ``timm:<model name>``, with the optional timm extra.
- ``decoders``: FPN and U-Net for CNN stages, Reassemble + DPT (or FPN) for ViT blocks.
- ``weights``: local weights files (torch or safetensors) into a trunk; nothing is ever downloaded.

Every backbone maps normalised images [B, 3, H, W] to [B, D, ceil(H/s), ceil(W/s)] unit features, has
``stride``, ``feature_dim`` and ``trunk(images)``, and may have its trunk frozen (``model.freeze_trunk``).
"""

from __future__ import annotations

from torch import nn

from ...config import ModelConfig
from .base import (
    COMPILE_MODE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    STRIDE,
    STRIDES,
    FrozenTrunk,
    compile_backbone,
    is_compiled,
    map_size,
    normalize_images,
)
from .decoders import TRUNK_DEPTHS, DPTDecoder, FPNDecoder, Reassemble, UNetDecoder
from .resnet import FeatureBackbone, load_trunk_weights
from .weights import load_state, load_weights_except_head


def build_backbone(cfg: ModelConfig) -> nn.Module:
    """The backbone ``model.backbone`` names, with its decoder (``auto``: fpn, or dpt for a ViT), stride, local
    weights (``backbone_weights``), timm keyword arguments and frozen trunk. A ResNet is built exactly as
    before timm backbones existed, so a seed gives it the same weights."""
    if not cfg.is_timm:
        return FeatureBackbone(
            cfg.backbone,
            cfg.feature_dim,
            cfg.backbone_weights,
            decoder="fpn" if cfg.decoder == "auto" else cfg.decoder,
            stride=cfg.stride,
            trunk_depth=cfg.trunk_depth,
            freeze_trunk=cfg.freeze_trunk,
        )
    from .timm_trunks import TimmCNNBackbone, TimmViTBackbone, timm_arch

    vit = timm_arch(cfg.backbone)[2]
    cls, auto = (TimmViTBackbone, "dpt") if vit else (TimmCNNBackbone, "fpn")
    return cls(
        cfg.backbone,
        cfg.feature_dim,
        cfg.backbone_weights,
        decoder=auto if cfg.decoder == "auto" else cfg.decoder,
        stride=cfg.stride,
        kwargs=cfg.backbone_kwargs,
        freeze_trunk=cfg.freeze_trunk,
    )


__all__ = [
    "COMPILE_MODE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "STRIDE",
    "STRIDES",
    "TRUNK_DEPTHS",
    "DPTDecoder",
    "FPNDecoder",
    "FeatureBackbone",
    "FrozenTrunk",
    "Reassemble",
    "UNetDecoder",
    "build_backbone",
    "compile_backbone",
    "is_compiled",
    "load_state",
    "load_trunk_weights",
    "load_weights_except_head",
    "map_size",
    "normalize_images",
]
