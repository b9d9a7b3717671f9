"""Scenes shared by the rendering tests."""

import math

import torch

from rendering import cuboid_volume, pascal3d_intrinsics, pose_to_viewmat


def random_scene(n=6, batch=2, d=4, dtype=torch.float64, seed=0, width=12, height=10):
    """A few anisotropic Gaussians near the origin, seen by ``batch`` cameras at distance ~4."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 1.2
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=dtype), dim=-1)
    scales = 0.08 + 0.15 * torch.rand(n, 3, generator=g, dtype=dtype)
    opacities = 0.3 + 0.6 * torch.rand(n, generator=g, dtype=dtype)
    feats = torch.randn(batch, n, d, generator=g, dtype=dtype)
    az = torch.rand(batch, generator=g, dtype=dtype) * 2 * math.pi
    el = (torch.rand(batch, generator=g, dtype=dtype) - 0.5) * 1.0
    th = (torch.rand(batch, generator=g, dtype=dtype) - 0.5) * 0.5
    viewmats = pose_to_viewmat(az, el, th, torch.full((batch,), 4.0, dtype=dtype))
    Ks = pascal3d_intrinsics(
        torch.full((batch,), 1.0, dtype=dtype), 3000.0 / 300.0, torch.tensor([width / 2, height / 2])
    ).to(dtype)
    return means, quats, scales, opacities, feats, viewmats, Ks, width, height


def cuboid_scene(batch=4, d=128, seed=0, dtype=torch.float32, width=100, height=80, device="cpu"):
    """1100-ish cuboid Gaussians with unit features, random poses framing the object in 80x100."""
    g = torch.Generator().manual_seed(seed)
    vol = cuboid_volume((0.8, 1.8, 0.6), 1100).to(device, dtype)
    feats = torch.nn.functional.normalize(torch.randn(len(vol), d, generator=g), dim=-1).to(device, dtype)
    az = torch.rand(batch, generator=g) * 2 * math.pi
    el = (torch.rand(batch, generator=g) - 0.3) * 1.2
    th = (torch.rand(batch, generator=g) - 0.5) * 0.6
    dist = 9.0 + 3.0 * torch.rand(batch, generator=g)
    viewmats = pose_to_viewmat(az, el, th, dist).to(device, dtype)
    Ks = pascal3d_intrinsics(1.0, 3000.0, (400.0, 320.0), downsample=8).expand(batch, 3, 3)
    return vol, feats, viewmats, Ks.to(device, dtype).contiguous(), width, height
