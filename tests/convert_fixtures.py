"""The authors' network re-implemented from their code (not from novum3d's), and fixture files in the released
layouts: checkpoints with the exact key names and shapes (random values) and a small fake PASCAL3D+ CAD folder.

``AuthorsNet`` follows GenIntel/NOVUM ``src/models/KeypointRepresentationNet.py`` (``ResNetExt`` L16-44, ``NetE2E``
L114-174) and ``src/models/UpsamplingLayer.py`` (``DoubleConv``, ``Up``) module by module, so that its
``state_dict`` keys are theirs; NeMo's ``code/models`` hold the same modules under the same names.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from novum3d.categories import load_categories

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # their Normalize (src/dataset/Pascal3DPlus.py L178-183)


class DoubleConv(nn.Module):
    """(conv 3x3 with bias -> BatchNorm -> ReLU) x 2, under the attribute name ``doubleconv``."""

    def __init__(self, cin: int, cout: int, mid: int | None = None):
        super().__init__()
        mid = mid or cout
        self.doubleconv = nn.Sequential(
            nn.Conv2d(cin, mid, 3, padding=1), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x):
        return self.doubleconv(x)


class Up(nn.Module):
    """x2 bilinear upsampling with aligned corners, padded (or cropped) to the skip, [skip, upsampled], DoubleConv."""

    def __init__(self, cin: int, mid: int, cout: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.doubleconv = DoubleConv(cin, cout, mid)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        dy, dx = x2.shape[2] - x1.shape[2], x2.shape[3] - x1.shape[3]
        x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        return self.doubleconv(torch.cat([x2, x1], 1))


class ResNetExt(nn.Module):
    def __init__(self, heads: bool = False):
        super().__init__()
        net = torchvision.models.resnet50(weights=None)
        self.extractor = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2)
        self.extractor1, self.extractor2 = net.layer3, net.layer4
        if heads:  # an older revision's classifier and pose heads (commit e5951fc, L29-42)
            self.classifier = nn.Sequential(net.avgpool, nn.Flatten(), nn.Linear(2048, 512), nn.ReLU(),
                                            nn.Linear(512, 12))  # fmt: skip
            self.pose_estimator = nn.Sequential(net.avgpool, nn.Flatten(), nn.Linear(2048, 512), nn.ReLU(),
                                                nn.Linear(512, 126))  # fmt: skip
        self.upsample0 = DoubleConv(2048, 1024)
        self.upsample1 = Up(2048, 1024, 512)
        self.upsample2 = Up(1024, 512, 256)

    def forward(self, x):
        x1 = self.extractor(x)
        x2 = self.extractor1(x1)
        x3 = self.extractor2(x2)
        return self.upsample2(self.upsample1(self.upsample0(x3), x2), x1)


class AuthorsNet(nn.Module):
    """``NetE2E(resnetext, local_size 1, 128)``; :meth:`forward_test` is theirs: images [B, 3, H, W] in [0, 1],
    normalised as their dataset does, -> unit features [B, 128, H/8, W/8]."""

    def __init__(self, heads: bool = False):
        super().__init__()
        self.net = ResNetExt(heads)
        self.out_layer = nn.Linear(256, 128)

    def forward_test(self, images):
        x = (images - images.new_tensor(MEAN)[:, None, None]) / images.new_tensor(STD)[:, None, None]
        x = self.net(x)
        return F.normalize(F.conv2d(x, self.out_layer.weight[:, :, None, None]), p=2, dim=1)


def authors_state(seed: int = 0, heads: bool = False, prefix: str = "module.", meta: bool = False):
    """A state dict of ``DataParallel(AuthorsNet)``: their keys and shapes, random values that keep activations
    finite and varied (He-scaled weights, BatchNorm statistics around 1). ``meta``: shapes only (no memory)."""
    with torch.device("meta"):
        spec = {k: (v.shape, v.dtype) for k, v in AuthorsNet(heads).state_dict().items()}
    if meta:
        return {prefix + k: torch.empty(s, dtype=d, device="meta") for k, (s, d) in spec.items()}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, (shape, dtype) in spec.items():
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(1000, dtype=dtype)
        elif key.endswith("running_var") or (key.endswith(".weight") and len(shape) == 1):
            value = 0.5 + torch.rand(shape, generator=g)
        elif len(shape) == 1:  # biases, running means
            value = 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = int(np.prod(shape[1:]))
            value = torch.randn(shape, generator=g) * (2.0 / fan_in) ** 0.5
        out[prefix + key] = value
    return out


def reference_model(state: dict, dtype=torch.float64) -> AuthorsNet:
    """:class:`AuthorsNet` holding ``state`` (``module.`` keys) in ``dtype``, in eval mode (built without init)."""
    with torch.device("meta"):
        net = AuthorsNet(heads=any(".classifier." in k for k in state))
    net.load_state_dict({k.removeprefix("module."): v.to(dtype) for k, v in state.items()}, assign=True)
    return net.eval()


def unit_rows(rows: int, dim: int = 128, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=g), dim=1)


def write_off(path: Path, vertices, faces=((0, 1, 2),)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["OFF", f"{len(vertices)} {len(faces)} 0"]
    lines += [" ".join(f"{x:.6f}" for x in v) for v in vertices]
    lines += ["3 " + " ".join(str(i) for i in f) for f in faces]
    path.write_text("\n".join(lines) + "\n")
    return path


def box_corners(size, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    half = np.asarray(size) / 2
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
    return np.asarray(centre) + signs * half


def fake_cad(root: Path, classes: list[str], models: int = 2) -> Path:
    """``root/CAD/<class>/NN.off``: ``models`` boxes per class of the class's built-in cuboid size (the second a
    little smaller and shifted), plus a file with a long name that the authors' builder ignores (a huge box that
    would change every mesh if it were read)."""
    sizes = {c.name: c.size for c in load_categories()}
    for c in classes:
        for i in range(models):
            scale = 1.0 - 0.1 * i
            write_off(root / "CAD" / c / f"{i + 1:02d}.off", box_corners(np.array(sizes[c]) * scale, (0.05 * i, 0, 0)))
        write_off(root / "CAD" / c / "01_old.off", box_corners((50.0, 50.0, 50.0)))
    return root


class Opaque:
    """An object outside the tensors and the authors' argparse.Namespace: unpickling it could run code."""


def save_release(path: Path, state: dict, memory, seed: int = 0) -> Path:
    """A file as the authors' ``save_checkpoint`` writes it: state, memory, timestamp and argparse args."""
    args = argparse.Namespace(config="config/defaults.yaml", seed=seed)
    torch.save({"state": state, "memory": memory, "timestamp": 1700000000, "args": args}, path)
    return path
