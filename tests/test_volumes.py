import math

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from rendering import GaussianVolume, cuboid_volume, single_gaussian_volume, sphere_volume, volume_from_mesh
from rendering.volumes import cuboid_lattice


@pytest.mark.parametrize("size", [(0.8, 1.8, 0.6), (1.0, 1.0, 1.0), (0.45, 0.45, 1.3), (1.9, 0.9, 0.85)])
def test_cuboid_lattice_on_surface_even_and_near_target(size):
    points, spacing = cuboid_lattice(size, 1100)
    half = np.asarray(size) / 2
    # A cube can only hold 6k^2 + 2 points (1016 or 1178 near 1100): the worst case, 7% off.
    assert abs(len(points) - 1100) / 1100 < 0.08
    assert np.all(np.abs(points) <= half + 1e-9)
    on_face = np.isclose(np.abs(points), half).any(axis=1)
    assert on_face.all()
    assert len(np.unique(points.round(9), axis=0)) == len(points)  # shared edges not duplicated
    nearest = cKDTree(points).query(points, k=2)[0][:, 1]
    assert nearest.max() <= spacing + 1e-9 and nearest.min() > 0.5 * spacing
    # Every face is covered: each of the 6 face centres has a Gaussian within one spacing.
    for axis in range(3):
        for sign in (-1, 1):
            centre = np.zeros(3)
            centre[axis] = sign * half[axis]
            assert cKDTree(points).query(centre)[0] <= spacing


def test_cuboid_volume_fields():
    vol = cuboid_volume((0.8, 1.8, 0.6), 1100, scale_factor=0.5)
    assert isinstance(vol, GaussianVolume) and len(vol) == vol.means.shape[0]
    assert vol.means.dtype == torch.float32
    torch.testing.assert_close(vol.scales, torch.full_like(vol.scales, 0.5 * vol.spacing))
    torch.testing.assert_close(vol.quats[:, 0], torch.ones(len(vol)))
    assert (vol.opacities == 1).all()


def test_sphere_volume_on_sphere_and_even():
    vol = sphere_volume(0.7, 1100)
    r = vol.means.norm(dim=-1)
    torch.testing.assert_close(r, torch.full_like(r, 0.7))
    nearest = cKDTree(vol.means.numpy()).query(vol.means.numpy(), k=2)[0][:, 1]
    assert nearest.max() / nearest.min() < 1.6


def test_single_gaussian_volume():
    vol = single_gaussian_volume((0.8, 1.8, 0.6))
    assert len(vol) == 1
    torch.testing.assert_close(vol.scales[0], torch.tensor([0.4, 0.9, 0.3]))


def test_volume_from_mesh_samples_the_surface():
    mesh = trimesh.creation.box(extents=(1.0, 2.0, 0.5))
    vol = volume_from_mesh(mesh, 600, seed=1)
    assert 300 <= len(vol) <= 600
    # On the box's surface: the largest coordinate, relative to the half extent, is exactly 1.
    rel = np.abs(vol.means.numpy()) / np.array([0.5, 1.0, 0.25])
    np.testing.assert_allclose(rel.max(axis=1), 1.0, atol=1e-5)
    assert math.isclose(vol.spacing, math.sqrt(mesh.area / len(vol)))


def test_volume_to_dtype_and_validation():
    vol = cuboid_volume((1.0, 1.0, 1.0), 100).to(dtype=torch.float64)
    assert vol.means.dtype == torch.float64
    with pytest.raises(ValueError, match="size_xyz"):
        cuboid_volume((1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="n: expected a positive int"):
        cuboid_volume((1.0, 1.0, 1.0), 0)
    with pytest.raises(ValueError, match="radius"):
        sphere_volume(0.0)
    with pytest.raises(ValueError, match=r"GaussianVolume.quats: expected shape \(3, 4\)"):
        GaussianVolume(torch.zeros(3, 3), torch.ones(3, 3), torch.ones(2, 4), torch.ones(3), 1.0)
    with pytest.raises(ValueError, match=r"mesh: expected a trimesh\.Trimesh"):
        volume_from_mesh("car.off")
