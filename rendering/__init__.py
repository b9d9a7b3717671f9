"""Differentiable rendering of volumes of feature-carrying 3D Gaussians.

Knows nothing of NOVUM: cameras (PASCAL3D+ poses <-> OpenCV extrinsics/intrinsics),
Gaussian volumes and their constructors, and ``rasterize_features`` with a gsplat (CUDA)
backend beside a pure-PyTorch reference backend. Value checks (finite, positive, in range) can be
switched off where a hot loop has checked its inputs once: ``value_checks``, ``RENDERING_CHECKS=0``.
"""

from .cameras import (
    Pose,
    pascal3d_intrinsics,
    pose_to_viewmat,
    project_pascal3d,
    project_points,
    rotation_error,
    rotation_from_pose,
    viewmat_to_pose,
)
from .checks import checks_enabled, value_checks
from .rasterize import (
    RasterOutput,
    check_gaussian_inputs,
    check_raster_inputs,
    project_visible,
    rasterize_features,
    rasterize_gaussians,
    resolve_backend,
)
from .volumes import (
    GaussianVolume,
    cuboid_volume,
    single_gaussian_volume,
    sphere_volume,
    volume_from_mesh,
)

__all__ = [
    "GaussianVolume",
    "Pose",
    "RasterOutput",
    "check_gaussian_inputs",
    "check_raster_inputs",
    "checks_enabled",
    "cuboid_volume",
    "pascal3d_intrinsics",
    "pose_to_viewmat",
    "project_pascal3d",
    "project_points",
    "project_visible",
    "rasterize_features",
    "rasterize_gaussians",
    "resolve_backend",
    "rotation_error",
    "rotation_from_pose",
    "single_gaussian_volume",
    "sphere_volume",
    "value_checks",
    "viewmat_to_pose",
    "volume_from_mesh",
]
