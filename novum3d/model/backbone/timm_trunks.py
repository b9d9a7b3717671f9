"""timm trunks (the optional ``timm`` extra): CNNs through their stride 4-32 stages, ViTs through four blocks.

Both give the map a torchvision ResNet gives at the same stride, ceil(H / s) x ceil(W / s) cells
(``base.map_size``): the image is padded at the bottom and right with normalised zeros (the mean colour)
to what the trunk needs, and the map cropped back, so pixel coordinates never shift and every pixel of the
image keeps its cell. timm builds every network with ``pretrained=False``; weights come only from a local
file, loaded before the parts the backbone does not use (classifier, final norm) are dropped.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ...checkpoint import read_state_dict
from ...config import TIMM_PREFIX
from ...errors import ConfigError
from .base import STRIDE, STRIDES, FrozenTrunk, map_size, pad_bottom_right, resample_cells, round_up
from .decoders import DPTDecoder, FPNDecoder, Reassemble, UNetDecoder
from .weights import load_state

# timm modules whose models are plain ViTs (patch embedding, a stack of blocks, forward_intermediates):
# DINOv2 (with and without registers), DeiT, EVA.
VIT_MODULES = ("vision_transformer", "deit", "eva")
CNN_REDUCTIONS = (4, 8, 16, 32)  # the stages a CNN feeds the decoder, as a ResNet's layer1-4
DPT_WIDTH = 512  # the authors' hidden_dim (GenIntel/NOVUM src/models/dpt.py L172)
# Keys of DINOv2's own checkpoints (dinov2_vit{s,b,l}14_pretrain.pth) that a timm ViT has no place for: the
# masked-image-modelling token. Their other keys are timm's (timm 1.0.31 vision_transformer.py L1781-1801
# renames only the registers and ViT-g's SwiGLU keys).
DINOV2_TRAINING_KEYS = ("mask_token",)


def import_timm(name: str, field: str = "model.backbone"):
    """The timm package, or a one-line ConfigError saying which extra installs it."""
    try:
        import timm
    except ImportError as exc:
        raise ConfigError(
            f'{field} {name}: timm is not installed; pip install -e ".[timm]" (the optional timm extra)', field=field
        ) from exc
    return timm


def timm_arch(backbone: str, field: str = "model.backbone") -> tuple[Any, str, bool]:
    """(timm, model name, whether it is a ViT) of ``timm:<model name>``; an unknown name is a ConfigError."""
    timm = import_timm(backbone, field)
    name = backbone[len(TIMM_PREFIX) :].strip()
    if not timm.models.is_model(name):
        raise ConfigError(
            f"{field}: timm {timm.__version__} has no model {name!r}; timm.list_models('*{name.split('_')[0]}*') "
            "lists the names",
            field=field,
        )
    arch = timm.models.get_arch_name(name)
    return timm, name, arch in set(timm.list_models(module=list(VIT_MODULES)))


def create_model(timm, name: str, field: str, **kwargs) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)``; bad keyword arguments are a ConfigError."""
    try:
        return timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError, AssertionError) as exc:  # unknown or ill-fitting kwargs
        raise ConfigError(f"{field}: timm.create_model({name!r}, ...) failed: {exc}", field=field) from exc


def classifier_keys(net: nn.Module) -> tuple[str, ...]:
    """Prefixes of the classifier's keys in the model's timm state_dict (``pretrained_cfg['classifier']``)."""
    names = (getattr(net, "pretrained_cfg", None) or {}).get("classifier") or ()
    return tuple(f"{n}." for n in ((names,) if isinstance(names, str) else names))


class TimmCNNBackbone(FrozenTrunk, nn.Module):
    """A timm CNN (``features_only``: ConvNeXt, ResNets, RegNets, EfficientNets, ...) whose stages at strides 4,
    8, 16 and 32 feed the same decoders as the ResNet's (``fpn`` or ``unet``; see ``FeatureBackbone``), then the
    1x1 head to D and L2 normalisation. Images are padded to a multiple of 32 and the map cropped back.

    ``weights``: the model's timm ``state_dict`` (from ``timm.create_model(name).state_dict()``, the classifier
    and later layers may be there) or one of its ``features_only`` network.
    """

    def __init__(
        self,
        backbone: str,
        feature_dim: int = 128,
        weights: str | Path | None = None,
        decoder: str = "fpn",
        stride: int = STRIDE,
        width: int = 256,
        kwargs: dict[str, Any] | None = None,
        freeze_trunk: bool = False,
    ):
        super().__init__()
        if decoder not in ("fpn", "unet") or stride not in STRIDES or (stride != STRIDE and decoder != "fpn"):
            raise ConfigError(
                f"model.decoder {decoder!r} with stride {stride}: a timm CNN takes fpn (stride 8 or 4) or unet "
                "(stride 8)",
                field="model.decoder",
            )
        timm, name, _ = timm_arch(backbone)
        self.net = create_model(timm, name, "model.backbone_kwargs", features_only=True, **(kwargs or {}))
        reductions = list(self.net.feature_info.reduction())
        channels = list(self.net.feature_info.channels())
        found = {r: len(reductions) - 1 - reductions[::-1].index(r) for r in CNN_REDUCTIONS if r in reductions}
        if len(found) < len(CNN_REDUCTIONS):
            raise ConfigError(
                f"model.backbone {backbone}: its stages have strides {reductions}; the decoders need "
                f"{list(CNN_REDUCTIONS)}",
                field="model.backbone",
            )
        self.stage_index = tuple(found[r] for r in CNN_REDUCTIONS)
        if weights is not None:
            load_state(self.net, read_state_dict(weights), weights, rename=_features_key(self.net))
        c1, c2, c3, c4 = (channels[i] for i in self.stage_index)
        if decoder == "fpn":
            self.decoder = FPNDecoder(c2, c3, c4, width, c1=c1 if stride == 4 else None)
        else:
            self.decoder = UNetDecoder(c2, c3, c4)
        self.stride = stride
        self.head = nn.Conv2d(self.decoder.out_channels, feature_dim, kernel_size=1)
        self.feature_dim = feature_dim
        if freeze_trunk:
            self.freeze_trunk()

    def trunk_modules(self) -> list[nn.Module]:
        return [self.net]

    def trunk(self, images: Tensor) -> list[Tensor]:
        """Normalised images [B, 3, H, W] -> the stages at strides 4, 8, 16, 32 of the image padded to 32."""
        H, W, m = *images.shape[-2:], CNN_REDUCTIONS[-1]
        stages = self.net(pad_bottom_right(images, round_up(H, m), round_up(W, m)))
        return [stages[i] for i in self.stage_index]

    def forward(self, images: Tensor) -> Tensor:
        """Normalised images [B, 3, H, W] -> unit features [B, D, ceil(H/s), ceil(W/s)], s = ``stride``."""
        h, w = map_size(*images.shape[-2:], self.stride)
        x1, x2, x3, x4 = self.trunk(images)
        y = self.decoder(x2, x3, x4, x1)[..., :h, :w]
        return F.normalize(self.head(y).float(), dim=1)


def _features_key(net: nn.Module):
    """A timm model's key -> its ``features_only`` network's: timm flattens the first level of Sequential
    children into the wrapper (``stem.0.weight`` -> ``stem_0.weight``). None for keys of the layers the
    wrapper leaves out (the classifier, a final norm)."""
    own = set(net.state_dict())

    def rename(key: str) -> str | None:
        if key in own:
            return key
        flat = key.replace(".", "_", 1)
        if flat in own:
            return flat
        top = key.split(".")[0]  # a key under a module the wrapper has is the file's, not a later layer's
        return key if any(k.startswith((top + ".", top + "_")) for k in own) else None

    return rename


class TimmViTBackbone(FrozenTrunk, nn.Module):
    """A timm ViT (DINOv2 /14 with or without registers, DeiT, EVA, ...) whose blocks at 1/4, 1/2, 3/4 and the
    end of its depth (the authors' ``multilayers``, GenIntel/NOVUM src/models/dpt.py L101-106) become maps at
    four scales (``Reassemble``) for a decoder: ``dpt``, the authors' DINOv2 head (``DPTDecoder``, 512
    channels, 256 out), or ``fpn``, the lighter lateral fusion at 256 channels. The decoder's map, at the finest
    level's stride (7 for patch 14 at stride 8), is resampled bilinearly to the backbone's stride, with each
    cell centre at the pixel it stands for, then the 1x1 head projects it to D and L2-normalises it.

    Images are padded so the ViT sees whole patches covering every cell of the map (the authors pad at the
    centre, dpt.py L33-60, and crop by an approximate factor, L62-68; padding at the bottom and right leaves
    nothing to undo), with ``dynamic_img_size`` interpolating the position embeddings to the grid. The block
    outputs are taken as they are (no final norm), as the authors take them (dpt.py L146-152).

    ``weights``: the model's timm ``state_dict`` (e.g. ``model.safetensors`` of ``vit_small_patch14_dinov2``)
    or DINOv2's own ViT-S/B/L file, loaded before the classifier and final norm are dropped.
    """

    def __init__(
        self,
        backbone: str,
        feature_dim: int = 128,
        weights: str | Path | None = None,
        decoder: str = "dpt",
        stride: int = STRIDE,
        width: int | None = None,
        kwargs: dict[str, Any] | None = None,
        freeze_trunk: bool = False,
    ):
        super().__init__()
        if decoder not in ("dpt", "fpn") or stride not in STRIDES:
            raise ConfigError(
                f"model.decoder {decoder!r} with stride {stride}: a timm ViT takes dpt or fpn, at stride 8 or 4",
                field="model.decoder",
            )
        timm, name, _ = timm_arch(backbone)
        self.vit = create_model(timm, name, "model.backbone_kwargs", num_classes=0, dynamic_img_size=True,
                                **(kwargs or {}))  # fmt: skip
        patch = tuple(self.vit.patch_embed.patch_size)
        depth = len(self.vit.blocks)
        if patch[0] != patch[1] or depth < 4:
            raise ConfigError(
                f"model.backbone {backbone}: needs square patches and at least 4 blocks, got patch {patch} and "
                f"{depth} blocks",
                field="model.backbone",
            )
        self.patch = patch[0]
        self.blocks = [depth // 4 - 1, depth // 2 - 1, depth // 4 * 3 - 1, depth - 1]
        if weights is not None:
            skip = (*classifier_keys(self.vit), *DINOV2_TRAINING_KEYS)
            load_state(self.vit, read_state_dict(weights), weights, skip=skip)
        self.vit.prune_intermediate_layers(self.blocks, prune_norm=True, prune_head=True)
        # The finest level: the patch grid split 2^k ways, k the least with patch / 2^k <= stride.
        finest = 2 ** max(0, math.ceil(math.log2(self.patch / stride)))
        self.level_stride = self.patch / finest  # pixels per cell of the decoder's map
        width = width or (DPT_WIDTH if decoder == "dpt" else 256)
        embed_dim = getattr(self.vit, "embed_dim", None) or self.vit.num_features
        self.reassemble = Reassemble(embed_dim, width, tuple(finest / 2**i for i in range(4)))
        if decoder == "dpt":
            self.decoder = DPTDecoder(width)
        else:
            self.decoder = FPNDecoder(width, width, width, width, c1=width)
        self.stride = stride
        self.head = nn.Conv2d(self.decoder.out_channels, feature_dim, kernel_size=1)
        self.feature_dim = feature_dim
        if freeze_trunk:
            self.freeze_trunk()

    def trunk_modules(self) -> list[nn.Module]:
        return [self.vit]

    def trunk(self, images: Tensor) -> list[Tensor]:
        """Normalised images [B, 3, H, W] -> the four blocks' tokens [B, E, g_h, g_w] on the patch grid of the
        image padded to whole patches over the map's ceil(H/s) x ceil(W/s) cells."""
        h, w = map_size(*images.shape[-2:], self.stride)
        padded = pad_bottom_right(images, round_up(h * self.stride, self.patch), round_up(w * self.stride, self.patch))
        return self.vit.forward_intermediates(padded, indices=self.blocks, norm=False, output_fmt="NCHW",
                                              intermediates_only=True)  # fmt: skip

    def forward(self, images: Tensor) -> Tensor:
        """Normalised images [B, 3, H, W] -> unit features [B, D, ceil(H/s), ceil(W/s)], s = ``stride``."""
        h, w = map_size(*images.shape[-2:], self.stride)
        levels = self.reassemble(self.trunk(images))
        if isinstance(self.decoder, FPNDecoder):  # its arguments: strides 8, 16, 32 and 4 of a ResNet
            y = self.decoder(levels[1], levels[2], levels[3], levels[0])
        else:
            y = self.decoder(levels)
        y = resample_cells(y, self.level_stride, self.stride)[..., :h, :w]
        return F.normalize(self.head(y).float(), dim=1)
