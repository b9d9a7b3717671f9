"""ResNet trunk plus upsampling layers: unit-norm D-dim feature maps at stride 8 (or 4)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from ..device import resolve_compile
from ..errors import WeightsError

STRIDE = 8  # the authors' (GenIntel/NOVUM config/defaults.yaml L58 down_sample_rate); 4: FPN only
STRIDES = (8, 4)
TRUNK_DEPTHS = (4, 3, 2)  # the deepest ResNet stage used; 4 (layer4) is the authors'

# torch.compile's mode for the backbone: "default", what benchmarks/inference.py measured (full classification
# 1,018 -> 1,573 img/s on an H100, BENCHMARKS.md). Not "reduce-overhead" (CUDA graphs): a batch of 64 at
# 640x800 is ~40 ms of convolutions, so launch overhead is little to win back, while every batch shape records
# and keeps its own graph and memory pool, and a graph's outputs are overwritten by its next replay (the
# trainer's backward and the pose estimator hold the feature maps past the call). Not
# "max-autotune-no-cudagraphs": it benchmarks kernel choices while compiling (minutes more warm-up), unmeasured.
COMPILE_MODE = "default"


class FeatureBackbone(nn.Module):
    """torchvision ResNet-50/18 trunk whose stride 16 and 32 outputs are upsampled and fused
    into the stride-8 stage (as NeMo/NOVUM do), then projected to D unit-norm channels.

    Two decoders (``decoder``):

    - ``"fpn"``: 1x1 lateral convolutions to ``width`` channels, then 3x3 fusions at that width.
      Fusing at the trunk's own widths cost more than the whole ResNet-50 trunk at 640x800
      (measured on an H100: 130 ms per 32 images).
    - ``"unet"``: the authors' decoder (GenIntel/NOVUM ``src/models/KeypointRepresentationNet.py``
      L44-55, ``UpsamplingLayer.py``): DoubleConv(c4 -> c4/2) at stride 32, then two Up blocks
      (bilinear x2 with aligned corners, concatenation with the skip, DoubleConv) to c2/2 channels
      at stride 8; for ResNet-50 2048 -> 1024, (1024+1024) -> 1024 -> 512, (512+512) -> 512 -> 256.

    ``stride=4`` (FPN only; a departure, off by default) fuses the stride-4 stage too, for maps twice
    as fine in each direction: the authors' stride 8 at 640x800 gives 80x100 cells, at our 256x256
    only 32x32. On synthetic v2 (H100, 2 seeds) stride 4 raised clean Acc@pi/18 from 41.8 to 50.5%
    (from the truth 48.5 -> 56.8%) with Acc@pi/6 unchanged (BENCHMARKS.md, sixth session).

    ``trunk_depth`` (FPN only; a departure, 4 by default) is the deepest ResNet stage used: 3 drops
    ``layer4``, 2 drops ``layer3`` as well. Each stage widens what a cell may see: ResNet-50's
    theoretical receptive field is about 100 px after ``layer2``, 270 after ``layer3`` and 430 after
    ``layer4``, so at 256x256 a central cell can draw on the whole image, and at heavy occlusion the
    visible parts' features may change with what hides the rest (BENCHMARKS.md, "Why occlusion
    defeats NOVUM here"). Only depth 2 bounds what a cell sees well inside the image.
    Measured at stride 4 on synthetic v2 (H100, 2 seeds; BENCHMARKS.md, eleventh session): depth 2 lifted
    classification on unseen poses from 47.3 to 63.2% and their pose from 17.8 to 22.8%, left L3 where
    it was and cost 9.4 points of validation Acc@pi/18, so the default stays 4.

    Both end in a 1x1 projection to D (the authors' ``Linear(256, 128)``) and L2 normalisation.
    Weights are random unless ``weights`` names a local file holding a torchvision ResNet
    ``state_dict``; nothing is ever downloaded.
    """

    def __init__(
        self,
        arch: str = "resnet50",
        feature_dim: int = 128,
        weights: str | Path | None = None,
        width: int = 256,
        decoder: str = "fpn",
        stride: int = STRIDE,
        trunk_depth: int = 4,
    ):
        super().__init__()
        if arch not in ("resnet50", "resnet18"):
            raise ValueError(f"arch: expected 'resnet50' or 'resnet18', got {arch!r}")
        if decoder not in ("fpn", "unet"):
            raise ValueError(f"decoder: expected 'fpn' or 'unet', got {decoder!r}")
        if stride not in STRIDES or (stride != STRIDE and decoder != "fpn"):
            raise ValueError(f"stride: expected 8, or 4 with the fpn decoder; got {stride} with {decoder!r}")
        if trunk_depth not in TRUNK_DEPTHS or (trunk_depth != 4 and decoder != "fpn"):
            raise ValueError(
                f"trunk_depth: expected 4, or 2 or 3 with the fpn decoder; got {trunk_depth} with {decoder!r}"
            )
        net = getattr(torchvision.models, arch)(weights=None)
        if weights is not None:
            load_trunk_weights(net, weights)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        # The whole trunk is built either way, so a seed gives depth 4 the same weights as before the option.
        self.layer2 = net.layer2
        if trunk_depth >= 3:
            self.layer3 = net.layer3
        if trunk_depth == 4:
            self.layer4 = net.layer4
        self.trunk_depth = trunk_depth
        c1, c2, c3, c4 = (64, 128, 256, 512) if arch == "resnet18" else (256, 512, 1024, 2048)
        if decoder == "fpn":
            self.decoder = FPNDecoder(c2, c3, c4, width, c1=c1 if stride == 4 else None, depth=trunk_depth)
        else:
            self.decoder = UNetDecoder(c2, c3, c4)
        self.stride = stride
        self.head = nn.Conv2d(self.decoder.out_channels, feature_dim, kernel_size=1)
        self.feature_dim = feature_dim
        self._register_load_state_dict_pre_hook(_fpn_keys_before_decoders)

    def forward(self, images: Tensor) -> Tensor:
        """Images [B, 3, H, W] (ImageNet-normalised) -> unit features [B, D, H/s, W/s], s = ``stride``."""
        x1, x2, x3, x4 = self.trunk(images)
        return F.normalize(self.head(self.decoder(x2, x3, x4, x1)).float(), dim=1)

    def trunk(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Images [B, 3, H, W] -> the trunk's stages at strides 4, 8, 16, 32; None past ``trunk_depth``."""
        x1 = self.stem(images)
        x2 = self.layer2(x1)
        x3 = self.layer3(x2) if self.trunk_depth >= 3 else None
        x4 = self.layer4(x3) if self.trunk_depth == 4 else None
        return x1, x2, x3, x4


class FPNDecoder(nn.Module):
    """Lateral 1x1 convolutions to ``width``, upsample and fuse with 3x3 convolutions: stride 8 out,
    or stride 4 when ``c1`` (the stride-4 stage's channels) is given. ``depth`` (4, 3 or 2) is the
    deepest trunk stage fused; the top one used enters through its lateral alone."""

    def __init__(self, c2: int, c3: int, c4: int, width: int = 256, c1: int | None = None, depth: int = 4):
        super().__init__()
        if depth not in TRUNK_DEPTHS:
            raise ValueError(f"depth: expected one of {TRUNK_DEPTHS}, got {depth}")
        # Creation order as before ``depth`` existed, so a seed gives depth 4 the same initial weights.
        self.lateral2 = nn.Conv2d(c2, width, 1)
        if depth >= 3:
            self.lateral3 = nn.Conv2d(c3, width, 1)
        if depth == 4:
            self.lateral4 = nn.Conv2d(c4, width, 1)
            self.fuse3 = _conv_block(2 * width, width)
        if depth >= 3:
            self.fuse2 = _conv_block(2 * width, width)
        if c1 is not None:  # stride 4; absent at stride 8, so older checkpoints keep their keys
            self.lateral1, self.fuse1 = nn.Conv2d(c1, width, 1), _conv_block(2 * width, width)
        self.out_channels = width

    def forward(self, x2: Tensor, x3: Tensor | None, x4: Tensor | None, x1: Tensor | None = None) -> Tensor:
        """Trunk stages at strides 8, 16, 32 (None past ``depth``) and 4 (``x1``, used at stride 4)
        -> [B, width, h, w]."""
        y = None
        for level, x in ((4, x4), (3, x3), (2, x2), (1, x1)):
            if not hasattr(self, f"lateral{level}"):
                continue
            lateral = getattr(self, f"lateral{level}")(x)
            if y is None:  # the deepest stage used
                y = lateral
            else:
                up = F.interpolate(y, size=x.shape[-2:], mode="bilinear")
                y = getattr(self, f"fuse{level}")(torch.cat([up, lateral], 1))
        return y


class UNetDecoder(nn.Module):
    """The authors' upsampling layers at the trunk's widths (see :class:`FeatureBackbone`)."""

    def __init__(self, c2: int, c3: int, c4: int):
        super().__init__()
        self.up0 = _double_conv(c4, c4 // 2)
        self.up1 = _double_conv(c4 // 2 + c3, c2, mid=c3)
        self.up2 = _double_conv(2 * c2, c2 // 2, mid=c2)
        self.out_channels = c2 // 2

    def forward(self, x2: Tensor, x3: Tensor, x4: Tensor, x1: Tensor | None = None) -> Tensor:
        """Trunk stages at strides 8, 16, 32 (``x1``, stride 4, unused) -> [B, c2/2, h, w] at stride 8."""
        y = self.up0(x4)
        y = self.up1(torch.cat([x3, _double_like(y, x3)], 1))
        return self.up2(torch.cat([x2, _double_like(y, x2)], 1))


def _double_like(y: Tensor, skip: Tensor) -> Tensor:
    """``y`` upsampled x2 (bilinear, aligned corners), then padded or cropped to ``skip``'s size, as the authors'
    ``Up`` does (GenIntel/NOVUM ``src/models/UpsamplingLayer.py`` L33-38): where a side is odd (an image side not
    a multiple of 32), the extra row or column goes from the top or left, which interpolating straight to the
    skip's size would not reproduce."""
    y = F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=True)
    dy, dx = skip.shape[-2] - y.shape[-2], skip.shape[-1] - y.shape[-1]
    return F.pad(y, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])


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


def _fpn_keys_before_decoders(state_dict, prefix, *args) -> None:
    """Checkpoints written before the decoder had a module of its own keep loading."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        if rest.split(".")[0] in ("lateral2", "lateral3", "lateral4", "fuse2", "fuse3"):
            state_dict[f"{prefix}decoder.{rest}"] = state_dict.pop(key)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _double_conv(cin: int, cout: int, mid: int | None = None) -> nn.Sequential:
    return nn.Sequential(_conv_block(cin, mid or cout), _conv_block(mid or cout, cout))


def load_trunk_weights(net: nn.Module, path: str | Path) -> None:
    """Load a local torchvision ResNet state_dict (the classifier head may be absent or differ)."""
    load_weights_except_head(net, path, "fc.")


def load_weights_except_head(net: nn.Module, path: str | Path, head: str) -> None:
    """Load a local torchvision state_dict into ``net``, skipping the keys under ``head``."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError("weights file not found (weights are never downloaded)", path=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated archives, pickles that are not plain tensors, ...
        raise WeightsError(f"unreadable weights file ({type(exc).__name__})", path=path) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"expected a state_dict, got {type(state).__name__}", path=path)
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches: weights of another architecture or size
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise WeightsError(f"not a matching {type(net).__name__} state_dict ({first})", path=path) from exc
    missing = [k for k in missing if not k.startswith(head)]
    if missing or unexpected:
        raise WeightsError(
            f"{path}: not a matching {type(net).__name__} state_dict "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images: Tensor) -> Tensor:
    """[B, 3, H, W] in [0, 1] -> ImageNet-normalised."""
    mean = images.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (images - mean) / std
