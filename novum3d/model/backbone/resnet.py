"""torchvision ResNet trunk plus upsampling layers: unit-norm D-dim feature maps at stride 8 (or 4)."""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from .base import STRIDE, STRIDES, FrozenTrunk
from .decoders import TRUNK_DEPTHS, FPNDecoder, UNetDecoder
from .weights import load_weights_except_head


class FeatureBackbone(FrozenTrunk, nn.Module):
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
    (from the truth 48.5 -> 56.8%) with Acc@pi/6 unchanged (docs/experiments/pose-precision.md).

    ``trunk_depth`` (FPN only; a departure, 4 by default) is the deepest ResNet stage used: 3 drops
    ``layer4``, 2 drops ``layer3`` as well. Each stage widens what a cell may see: ResNet-50's
    theoretical receptive field is about 100 px after ``layer2``, 270 after ``layer3`` and 430 after
    ``layer4``, so at 256x256 a central cell can draw on the whole image, and at heavy occlusion the
    visible parts' features may change with what hides the rest (docs/experiments/heavy-occlusion.md).
    Only depth 2 bounds what a cell sees well inside the image.
    Measured at stride 4 on synthetic v2 (H100, 2 seeds): depth 2 lifted
    classification on unseen poses from 47.3 to 63.2% and their pose from 17.8 to 22.8%, left L3 where
    it was and cost 9.4 points of validation Acc@pi/18, so the default stays 4.

    Both end in a 1x1 projection to D (the authors' ``Linear(256, 128)``) and L2 normalisation.
    Weights are random unless ``weights`` names a local file holding a torchvision ResNet
    ``state_dict`` (torch or safetensors); nothing is ever downloaded. ``freeze_trunk`` trains the
    decoder and head only: the trunk gets no gradients and stays in eval mode (BatchNorm statistics fixed).
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
        freeze_trunk: bool = False,
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
        if freeze_trunk:
            self.freeze_trunk()

    def trunk_modules(self) -> list[nn.Module]:
        return [self.stem, self.layer2] + [getattr(self, n) for n in ("layer3", "layer4") if hasattr(self, n)]

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


def _fpn_keys_before_decoders(state_dict, prefix, *args) -> None:
    """Checkpoints written before the decoder had a module of its own keep loading."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix) :]
        if rest.split(".")[0] in ("lateral2", "lateral3", "lateral4", "fuse2", "fuse3"):
            state_dict[f"{prefix}decoder.{rest}"] = state_dict.pop(key)


def load_trunk_weights(net: nn.Module, path: str | Path) -> None:
    """Load a local torchvision ResNet state_dict (the classifier head may be absent or differ)."""
    load_weights_except_head(net, path, "fc.")
