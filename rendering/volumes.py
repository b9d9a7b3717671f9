"""Volumes of 3D Gaussians with fixed geometry, and their constructors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .checks import checks_enabled


@dataclass
class GaussianVolume:
    """N isotropic-or-not 3D Gaussians with fixed geometry.

    Attributes:
        means: [N, 3] centres.
        scales: [N, 3] standard deviations, > 0 (checked while :func:`~rendering.checks.checks_enabled`).
        quats: [N, 4] rotations, wxyz.
        opacities: [N] in [0, 1].
        spacing: typical distance between neighbouring centres (object units).

    Example:
        >>> vol = GaussianVolume(
        ...     means=torch.zeros(2, 3), scales=torch.full((2, 3), 0.1), quats=torch.tensor([[1.0, 0, 0, 0]] * 2),
        ...     opacities=torch.ones(2), spacing=0.2,
        ... )
        >>> len(vol), vol.to(dtype=torch.float64).means.dtype
        (2, torch.float64)
        >>> GaussianVolume(torch.zeros(2, 3), torch.ones(2, 3), torch.ones(2, 3), torch.ones(2), 1.0)
        Traceback (most recent call last):
        ...
        ValueError: GaussianVolume.quats: expected shape (2, 4), got (2, 3)
    """

    means: Tensor
    scales: Tensor
    quats: Tensor
    opacities: Tensor
    spacing: float

    def __post_init__(self) -> None:
        n = self.means.shape[0] if self.means.dim() == 2 else -1
        expected = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,)}
        for name, shape in expected.items():
            t = getattr(self, name)
            if n <= 0 or tuple(t.shape) != shape:
                raise ValueError(f"GaussianVolume.{name}: expected shape {shape}, got {tuple(t.shape)}")
        if checks_enabled() and (self.scales <= 0).any():
            raise ValueError("GaussianVolume.scales: must be > 0")
        if not (self.spacing > 0):
            raise ValueError(f"GaussianVolume.spacing: must be > 0, got {self.spacing}")

    def __len__(self) -> int:
        return self.means.shape[0]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> GaussianVolume:
        return GaussianVolume(
            self.means.to(device, dtype),
            self.scales.to(device, dtype),
            self.quats.to(device, dtype),
            self.opacities.to(device, dtype),
            self.spacing,
        )


def _isotropic(points: np.ndarray, spacing: float, sigma: float, opacity: float) -> GaussianVolume:
    n = points.shape[0]
    means = torch.as_tensor(points, dtype=torch.float32)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    return GaussianVolume(
        means=means,
        scales=torch.full((n, 3), float(sigma)),
        quats=quats,
        opacities=torch.full((n,), float(opacity)),
        spacing=float(spacing),
    )


def _check_count(n: int) -> None:
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")


def _check_size(size_xyz: tuple[float, float, float] | list[float]) -> np.ndarray:
    size = np.asarray(size_xyz, dtype=np.float64)
    if size.shape != (3,) or not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise ValueError(f"size_xyz: expected three positive finite lengths, got {size_xyz!r}")
    return size


def _surface_lattice_count(cells: np.ndarray) -> int:
    nx, ny, nz = cells
    return int((nx + 1) * (ny + 1) * (nz + 1) - max(nx - 1, 0) * max(ny - 1, 0) * max(nz - 1, 0))


def cuboid_lattice(size_xyz: tuple[float, float, float] | list[float], n: int) -> tuple[np.ndarray, float]:
    """Points of a regular lattice on a cuboid's surface, count as close to ``n`` as the lattice allows.

    Args:
        size_xyz: edge lengths (x, y, z); the cuboid is centred at the origin.
        n: target number of points.

    Returns:
        ([M, 3] points, lattice spacing). Edges and corners are shared, never duplicated.
    """
    size = _check_size(size_xyz)
    _check_count(n)
    area = 2 * (size[0] * size[1] + size[1] * size[2] + size[0] * size[2])
    base = math.sqrt(area / n)
    best = None
    for spacing in base * np.geomspace(0.5, 2.0, 400):
        cells = np.maximum(1, np.round(size / spacing)).astype(int)
        count = _surface_lattice_count(cells)
        if best is None or abs(count - n) < abs(best[0] - n):
            best = (count, cells)
    assert best is not None
    cells = best[1]
    axes = [np.linspace(-s / 2, s / 2, c + 1) for s, c in zip(size, cells, strict=True)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    idx = np.stack(np.meshgrid(*[np.arange(c + 1) for c in cells], indexing="ij"), axis=-1).reshape(-1, 3)
    on_surface = ((idx == 0) | (idx == cells)).any(axis=1)
    return grid[on_surface], float(np.max(size / cells))


def cuboid_volume(
    size_xyz: tuple[float, float, float] | list[float],
    n: int = 1100,
    scale_factor: float = 0.6,
    opacity: float = 1.0,
) -> GaussianVolume:
    """Gaussians spread evenly over the surface of a cuboid centred at the origin (NOVUM's default).

    ``sigma = scale_factor * spacing``: at 0.6 the four Gaussians around the middle of a lattice
    cell already block about 95% of the light, so the surface renders closed.

    Example:
        >>> vol = cuboid_volume((1.0, 1.0, 1.0), n=1100)  # a cube holds 6k^2 + 2 lattice points
        >>> len(vol), round(vol.spacing, 4)
        (1178, 0.0714)
        >>> vol.scales[0]  # 0.6 * spacing
        tensor([0.0429, 0.0429, 0.0429])
    """
    points, spacing = cuboid_lattice(size_xyz, n)
    return _isotropic(points, spacing, scale_factor * spacing, opacity)


def sphere_volume(radius: float, n: int = 1100, scale_factor: float = 0.6, opacity: float = 1.0) -> GaussianVolume:
    """Gaussians on a sphere (Fibonacci lattice), the paper's sphere ablation.

    Example:
        >>> vol = sphere_volume(2.0, n=500)
        >>> len(vol), round(vol.spacing, 4)
        (500, 0.3171)
        >>> torch.allclose(vol.means.norm(dim=1), torch.tensor(2.0))  # every centre on the sphere
        True
    """
    if not (radius > 0 and math.isfinite(radius)):
        raise ValueError(f"radius: must be a positive finite number, got {radius!r}")
    _check_count(n)
    i = np.arange(n) + 0.5
    z = 1.0 - 2.0 * i / n
    r = np.sqrt(1.0 - z * z)
    phi = math.pi * (3.0 - math.sqrt(5.0)) * i
    points = radius * np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)
    spacing = math.sqrt(4 * math.pi * radius**2 / n)
    return _isotropic(points, spacing, scale_factor * spacing, opacity)


def single_gaussian_volume(size_xyz: tuple[float, float, float] | list[float], opacity: float = 1.0) -> GaussianVolume:
    """One Gaussian per category at the origin, half-extents as standard deviations (ablation).

    Example:
        >>> vol = single_gaussian_volume((4.0, 1.6, 1.5))
        >>> vol.means, vol.scales
        (tensor([[0., 0., 0.]]), tensor([[2.0000, 0.8000, 0.7500]]))
    """
    size = _check_size(size_xyz)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    return GaussianVolume(
        means=torch.zeros(1, 3),
        scales=torch.as_tensor(size / 2, dtype=torch.float32)[None],
        quats=quats,
        opacities=torch.tensor([float(opacity)]),
        spacing=float(size.max()),
    )


def volume_from_mesh(
    mesh, n: int = 1100, scale_factor: float = 0.6, opacity: float = 1.0, seed: int = 0
) -> GaussianVolume:
    """Gaussians spread evenly over a mesh surface (Poisson-disk-like sampling from trimesh).

    Args:
        mesh: ``trimesh.Trimesh`` with positive surface area.
        n: target count; trimesh's even sampler may return somewhat fewer.

    Example:
        >>> import trimesh
        >>> vol = volume_from_mesh(trimesh.creation.box(extents=(1.0, 1.0, 1.0)), n=500)
        >>> len(vol) <= 500, vol.means.abs().amax().item()  # on the surface of the unit cube
        (True, 0.5)
    """
    import trimesh

    if not isinstance(mesh, trimesh.Trimesh):
        raise ValueError(f"mesh: expected a trimesh.Trimesh, got {type(mesh).__name__}")
    _check_count(n)
    if mesh.area <= 0:
        raise ValueError("mesh: has zero surface area")
    points, _ = trimesh.sample.sample_surface_even(mesh, n, seed=seed)
    spacing = math.sqrt(mesh.area / max(len(points), 1))
    return _isotropic(np.asarray(points), spacing, scale_factor * spacing, opacity)
