"""Decoders: from a trunk's maps at several strides to one map at the backbone's stride.

``FPNDecoder`` (light lateral fusion) and ``UNetDecoder`` (the authors', for CNNs); ``Reassemble`` (a ViT's
block tokens as maps at four scales) and ``DPTDecoder`` (the authors' DINOv2 head) for ViTs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TRUNK_DEPTHS = (4, 3, 2)  # the deepest ResNet stage used; 4 (layer4) is the authors'


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


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _double_conv(cin: int, cout: int, mid: int | None = None) -> nn.Sequential:
    return nn.Sequential(_conv_block(cin, mid or cout), _conv_block(mid or cout, cout))


class Reassemble(nn.Module):
    """A ViT's four block outputs (maps [B, E, g_h, g_w] on the patch grid) as maps at four scales: a 1x1
    projection to ``width`` each (the authors' ``conv_0..3``, GenIntel/NOVUM src/models/dpt.py L219-222), then
    resampled by ``factors`` (finest first, powers of two): a transposed convolution of kernel and stride f
    for f > 1 (each patch splits into f x f cells that cover it exactly), none for 1, 3x3 stride-2
    convolutions for 1/2, 1/4, ... (Ranftl et al., DPT, ICCV 2021, "Reassemble").

    A departure from the authors, whose four maps all stay on one grid, upsampled x2 by nearest neighbour
    (dpt.py L225): here the earliest block gives the finest map and the last the coarsest, as in DPT.
    """

    def __init__(self, embed_dim: int, width: int, factors: tuple[float, float, float, float]):
        super().__init__()
        self.factors = tuple(factors)
        self.levels = nn.ModuleList(
            nn.Sequential(nn.Conv2d(embed_dim, width, 1), *_resample_layers(width, f)) for f in self.factors
        )
        self.out_channels = width

    def forward(self, tokens: list[Tensor]) -> list[Tensor]:
        """Four maps [B, E, g_h, g_w] (earliest block first) -> four [B, width, ~f g_h, ~f g_w], finest first."""
        return [level(x) for level, x in zip(self.levels, tokens, strict=True)]


def _resample_layers(width: int, factor: float) -> list[nn.Module]:
    if factor >= 1:
        f = int(factor)
        return [nn.ConvTranspose2d(width, width, f, stride=f)] if f > 1 else []
    return [nn.Conv2d(width, width, 3, stride=2, padding=1) for _ in range(round(math.log2(1 / factor)))]


class ResidualConvUnit(nn.Module):
    """x + (conv-ReLU-conv-ReLU)(x), 3x3 at one width (GenIntel/NOVUM src/models/dpt.py L196-208, without BatchNorm
    as there)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
        )  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) + x


class FusionBlock(nn.Module):
    """The authors' FeatureFusionBlock (dpt.py L181-193): ``out = rcu2(rcu1(x) + coarser)``, or ``rcu2(x)`` for
    the coarsest level; the coarser result is first upsampled (bilinear) to ``x``'s size."""

    def __init__(self, width: int, with_skip: bool = True):
        super().__init__()
        if with_skip:
            self.rcu1 = ResidualConvUnit(width)
        self.rcu2 = ResidualConvUnit(width)

    def forward(self, x: Tensor, coarser: Tensor | None = None) -> Tensor:
        if coarser is not None:
            x = self.rcu1(x) + F.interpolate(coarser, size=x.shape[-2:], mode="bilinear")
        return self.rcu2(x)


class DPTDecoder(nn.Module):
    """The authors' DPT head on a frozen DINOv2 (GenIntel/NOVUM src/models/dpt.py L211-246: ``DPT(feat_dims,
    output_dim=256, hidden_dim=512, kernel_size=3)``): fusion blocks from the coarsest level to the finest, then
    a 3x3 convolution, ReLU and a 3x3 convolution to ``out_channels`` (256).

    Departures: the levels come at four scales (:class:`Reassemble`), and the output stays at the finest
    level's stride, which the backbone resamples to its own (8 or 4). The authors upsample the fused map x4
    (x8 with ``last_upscaling``) by nearest neighbour before their output convolutions, then crop and resize
    it bilinearly to stride 8 (dpt.py L62-68, L240-246): at 640x800 their two output convolutions run on a
    368x464 grid, about 1.2 TFLOP per image, and the fusion blocks at 92x116 (0.7 TFLOP).
    """

    def __init__(self, width: int = 512, out_channels: int = 256):
        super().__init__()
        self.fuse = nn.ModuleList([FusionBlock(width), FusionBlock(width), FusionBlock(width),
                                   FusionBlock(width, with_skip=False)])  # fmt: skip
        self.out = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(width, out_channels, 3, padding=1)
        )
        self.out_channels = out_channels

    def forward(self, levels: list[Tensor]) -> Tensor:
        """Four maps [B, width, *, *], finest first -> [B, out_channels, *finest size]."""
        y = None
        for fuse, x in zip(reversed(self.fuse), reversed(levels), strict=True):
            y = fuse(x, y)
        return self.out(y)
