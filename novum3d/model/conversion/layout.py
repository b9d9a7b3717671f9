"""The authors' network, key by key, onto novum3d's ResNet-50 + U-Net backbone.

GenIntel/NOVUM (and NeMo, and CAVE, which share the module) save the state of ``DataParallel(NetE2E)``
(``src/models/KeypointRepresentationNet.py``): ``net`` is ``ResNetExt`` (L16-44) and ``out_layer`` a
``Linear(256, 128)`` (L138-141) that ``forward_test`` applies as a 1x1 convolution of its weight alone, then
L2-normalises (L146-174). Their ``DoubleConv`` convolutions carry a bias before each BatchNorm
(``src/models/UpsamplingLayer.py`` L13-20); novum3d's have none, so each bias is folded into the BatchNorm's
running mean, which in evaluation gives exactly ``BN(conv(x) + b)`` (and in training the batch mean absorbs it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ...errors import CheckpointError
from ..backbone import FeatureBackbone

# Old revisions' heads: ResNetExt.classifier / pose_estimator over layer4 (GenIntel/NOVUM commit e5951fc,
# src/models/KeypointRepresentationNet.py L29-42), which the released state may still carry; no forward used them
# for features.
DROPPED_HEADS = ("net.classifier.", "net.pose_estimator.")

_TRUNK = [  # (theirs, ours): ResNetExt L20-28 against FeatureBackbone.stem / layer2-4
    ("net.extractor.0.", "stem.0."),  # conv1
    ("net.extractor.1.", "stem.1."),  # bn1
    ("net.extractor.4.", "stem.4."),  # layer1
    ("net.extractor.5.", "layer2."),
    ("net.extractor1.", "layer3."),
    ("net.extractor2.", "layer4."),
]
# DoubleConv's Sequential (0 conv, 1 BN, 2 ReLU, 3 conv, 4 BN, 5 ReLU) -> our (block, layer)
_DOUBLE_CONV = {"0": ("0", "0"), "1": ("0", "1"), "3": ("1", "0"), "4": ("1", "1")}
_DECODER = re.compile(r"^net\.upsample(?P<n>[012])\.(?:doubleconv\.)?doubleconv\.(?P<i>\d+)\.(?P<rest>.+)$")


@dataclass
class MappedState:
    """A backbone state dict in novum3d's names, and what became of the source's tensors."""

    state: dict[str, Tensor]
    dropped: list[str] = field(default_factory=list)  # source keys not used, with why in ``reasons``
    folded: list[str] = field(default_factory=list)  # conv biases folded into the next BatchNorm's running mean
    filled: dict[str, str] = field(default_factory=dict)  # target keys the source has no tensor for, and with what


def strip_data_parallel(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keys without DataParallel's ``module.`` prefix (a state saved without the wrapper is taken as it is)."""
    if any(k.startswith("module.") for k in state):
        return {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def target_name(key: str) -> str | None:
    """novum3d's name for one of the authors' keys (``module.`` stripped), or None where there is none."""
    for theirs, ours in _TRUNK:
        if key.startswith(theirs):
            return ours + key[len(theirs) :]
    if (m := _DECODER.match(key)) and m["i"] in _DOUBLE_CONV:
        block, layer = _DOUBLE_CONV[m["i"]]
        return f"decoder.up{m['n']}.{block}.{layer}.{m['rest']}"
    if key == "out_layer.weight":
        return "head.weight"
    return None


def backbone_spec(feature_dim: int) -> dict[str, torch.Size]:
    """Every tensor of novum3d's ResNet-50 + U-Net backbone and its shape (built on the meta device: no memory)."""
    with torch.device("meta"):
        net = FeatureBackbone("resnet50", feature_dim, decoder="unet")
    return {k: v.shape for k, v in net.state_dict().items()}


def map_backbone(state: dict[str, Tensor], where: str) -> MappedState:
    """The authors' ``NetE2E`` state (``module.`` stripped) as a state dict of novum3d's
    ``FeatureBackbone("resnet50", D, decoder="unet")``.

    Strict: every source tensor is mapped, folded or dropped as an old head or as ``out_layer.bias`` (which
    ``forward_test`` never adds), and every target tensor is filled; anything else, and any shape that differs, is
    a CheckpointError naming the key (``where`` names the file).
    """
    if "out_layer.weight" not in state:
        raise CheckpointError(
            "state has no out_layer.weight: not the authors' NetE2E (GenIntel/NOVUM src/models/"
            "KeypointRepresentationNet.py L138)",
            path=where,
            field="state",
        )
    feature_dim = state["out_layer.weight"].shape[0]
    spec = backbone_spec(feature_dim)
    out = MappedState({})
    biases: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(DROPPED_HEADS) or key == "out_layer.bias":
            out.dropped.append(key)
            continue
        name = target_name(key)
        if name is not None and name.endswith(".0.bias") and name.startswith("decoder."):
            biases[name.removesuffix(".0.bias") + ".1.running_mean"] = value  # conv bias -> its BatchNorm
            out.folded.append(key)
            continue
        if name is None or name not in spec:
            raise CheckpointError(
                f"state key {key!r} has no place in novum3d's ResNet-50 + U-Net backbone; this is not a checkpoint "
                "of the authors' NetE2E(resnetext), or of a revision this converter does not know",
                path=where,
                field=key,
            )
        if name == "head.weight":
            value = value[:, :, None, None]
        _check_shape(key, value, spec[name], where)
        out.state[name] = value.detach()
    out.state["head.bias"] = torch.zeros(feature_dim, dtype=out.state["head.weight"].dtype)
    out.filled["head.bias"] = (
        "zeros: forward_test applies out_layer's weight alone (KeypointRepresentationNet.py L152-155)"
    )
    missing = [k for k in spec if k not in out.state]
    if missing:
        raise CheckpointError(
            f"state has nothing for novum3d's {missing[0]!r} ({_source_hint(missing[0])}); "
            f"{len(missing)} tensor(s) missing: a truncated or foreign state dict",
            path=where,
            field=missing[0],
        )
    for name, bias in biases.items():  # BN(conv(x) + b) = BN'(conv(x)) with running mean - b, in eval and training
        mean = out.state[name]
        if mean.shape != bias.shape:
            raise CheckpointError(f"the bias before {name} has shape {tuple(bias.shape)}, the BatchNorm "
                                  f"{tuple(mean.shape)}", path=where, field=name)  # fmt: skip
        out.state[name] = mean - bias.to(mean.dtype)
    return out


def _check_shape(key: str, value: Tensor, expected: torch.Size, where: str) -> None:
    if tuple(value.shape) != tuple(expected):
        raise CheckpointError(
            f"state key {key!r} has shape {tuple(value.shape)}, novum3d's ResNet-50 + U-Net expects "
            f"{tuple(expected)}: not the authors' resnetext backbone (ResNet-50, 128-d features)",
            path=where,
            field=key,
        )


def _source_hint(target: str) -> str:
    """The authors' key a target tensor comes from, for error messages."""
    for theirs, ours in _TRUNK:
        if target.startswith(ours):
            return "expected module." + theirs + target[len(ours) :]
    if m := re.match(r"^decoder\.up(\d)\.(\d)\.(\d)\.(.+)$", target):
        index = {v: k for k, v in _DOUBLE_CONV.items()}[(m[2], m[3])]
        inner = "doubleconv." if m[1] == "0" else "doubleconv.doubleconv."
        return f"expected module.net.upsample{m[1]}.{inner}{index}.{m[4]}"
    return "expected module.out_layer.weight"
