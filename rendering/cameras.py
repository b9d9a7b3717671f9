"""PASCAL3D+ poses <-> OpenCV cameras, projection and rotation error.

PASCAL3D+ describes a view of an object by azimuth ``a``, elevation ``e``, in-plane
rotation ``theta`` (radians), camera distance ``d``, focal length, viewport and principal
point. The camera sits at ``d * (cos e sin a, -cos e cos a, sin e)`` in the object's CAD frame
(z up) and looks at the origin. The toolbox projects with a camera looking along -z, rotates
the image plane by ``theta``, flips y and adds the principal point.

Renderers here take world-to-camera matrices in the OpenCV frame (x right, y down, z forward)
with pinhole intrinsics ``K``. The two agree exactly: ``R_cv = F(theta) @ R_pascal`` with
``F(theta) = diag(1, -1, -1) @ Rz(theta)``, and ``t_cv = (0, 0, d)`` since the camera looks at
the origin. All functions are batched, differentiable and keep the input dtype. :class:`Pose`
carries a batch of poses as [B] tensors, for code that passes poses around. Shape errors are
always raised; value errors (not finite, distance <= 0, camera off axis) only while
:func:`~rendering.checks.checks_enabled`, since each waits for the GPU.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from .checks import checks_enabled

ScalarOrTensor = float | Tensor


def _floating_dtype(*values: ScalarOrTensor) -> torch.dtype:
    dtypes = [v.dtype for v in values if isinstance(v, Tensor) and v.is_floating_point()]
    if not dtypes:
        return torch.get_default_dtype()
    return torch.float64 if torch.float64 in dtypes else dtypes[0]


def _device(*values: ScalarOrTensor) -> torch.device:
    for v in values:
        if isinstance(v, Tensor):
            return v.device
    return torch.device("cpu")


def broadcast_pose(*values: ScalarOrTensor, names: tuple[str, ...], check_finite: bool = True) -> list[Tensor]:
    """Turn scalars / 0-d / [B] tensors into [B] tensors of one dtype and device.

    Raises ValueError naming the argument when a value is not a scalar or 1-D, when batch
    sizes disagree, or (``check_finite`` and :func:`~rendering.checks.checks_enabled`: a host
    sync on the GPU) when a value is not finite.
    """
    dtype, device = _floating_dtype(*values), _device(*values)
    out = []
    for name, v in zip(names, values, strict=True):
        t = torch.as_tensor(v, dtype=dtype, device=device)
        if t.dim() > 1:
            raise ValueError(f"{name}: expected a scalar or a 1-D tensor [B], got shape {tuple(t.shape)}")
        t = t.reshape(-1)
        if check_finite and checks_enabled() and not torch.isfinite(t).all():
            raise ValueError(f"{name}: must be finite, got {t.tolist()[:8]}")
        out.append(t)
    sizes = {t.shape[0] for t in out if t.shape[0] != 1}
    if len(sizes) > 1:
        detail = ", ".join(f"{n}={t.shape[0]}" for n, t in zip(names, out, strict=True))
        raise ValueError(f"pose batch sizes disagree: {detail}")
    batch = sizes.pop() if sizes else 1
    return [t.expand(batch) for t in out]


def _rot_z(angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    o, z = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([c, -s, z, s, c, z, z, z, o], dim=-1).reshape(*angle.shape, 3, 3)


def pascal3d_rotation(azimuth: Tensor, elevation: Tensor) -> Tensor:
    """Toolbox rotation ``Rx(e - pi/2) @ Rz(-a)``: object frame -> camera looking along -z.

    Args:
        azimuth: [B] radians.
        elevation: [B] radians.

    Returns:
        [B, 3, 3]; its last row is the unit vector from the origin to the camera.
    """
    ca, sa = torch.cos(azimuth), torch.sin(azimuth)
    ce, se = torch.cos(elevation), torch.sin(elevation)
    z = torch.zeros_like(ca)
    rows = [ca, sa, z, -se * sa, se * ca, ce, ce * sa, -ce * ca, se]
    return torch.stack(rows, dim=-1).reshape(*azimuth.shape, 3, 3)


def rotation_from_pose(azimuth: ScalarOrTensor, elevation: ScalarOrTensor, theta: ScalarOrTensor) -> Tensor:
    """Rotation used by PASCAL3D+/NeMo pose evaluation: ``Rz(theta) @ Rx(e - pi/2) @ Rz(-a)``.

    Args:
        azimuth, elevation, theta: scalars or [B] tensors, radians.

    Returns:
        [B, 3, 3].

    Example:
        >>> R = rotation_from_pose(torch.tensor([0.0, 1.0]), 0.2, 0.0)
        >>> R.shape
        torch.Size([2, 3, 3])
        >>> torch.allclose(R @ R.transpose(-1, -2), torch.eye(3), atol=1e-6)
        True
    """
    a, e, t = broadcast_pose(azimuth, elevation, theta, names=("azimuth", "elevation", "theta"))
    return _rot_z(t) @ pascal3d_rotation(a, e)


def _opencv_from_pascal(dtype: torch.dtype, device: torch.device) -> Tensor:
    # diag(1, -1, -1) made on the device: torch.tensor([...], device="cuda") copies from the host
    # and waits for the GPU, once per pose_to_viewmat (every pose refinement step).
    one = torch.ones((), dtype=dtype, device=device)
    return torch.diag(torch.stack([one, -one, -one]))


def pose_to_viewmat(
    azimuth: ScalarOrTensor,
    elevation: ScalarOrTensor,
    theta: ScalarOrTensor,
    distance: ScalarOrTensor,
) -> Tensor:
    """World(object)-to-camera matrices in the OpenCV frame for PASCAL3D+ poses.

    Args:
        azimuth, elevation, theta: scalars or [B] tensors, radians.
        distance: scalar or [B] tensor, > 0, in object units.

    Returns:
        [B, 4, 4] viewmats, as gsplat takes them.

    Example:
        >>> vm = pose_to_viewmat(0.0, 0.0, 0.0, 5.0)  # camera at (0, -5, 0), looking along +y
        >>> vm
        tensor([[[ 1.,  0.,  0.,  0.],
                 [ 0.,  0., -1.,  0.],
                 [ 0.,  1.,  0.,  5.],
                 [ 0.,  0.,  0.,  1.]]])
        >>> pose_to_viewmat(torch.tensor([0.0, 1.0, 2.0]), 0.3, 0.0, 5.0).shape
        torch.Size([3, 4, 4])
    """
    a, e, t, d = broadcast_pose(
        azimuth, elevation, theta, distance, names=("azimuth", "elevation", "theta", "distance")
    )
    if checks_enabled() and (d <= 0).any():
        raise ValueError(f"distance: must be > 0, got {d.tolist()[:8]}")
    rot = _opencv_from_pascal(a.dtype, a.device) @ rotation_from_pose(a, e, t)
    top = torch.cat([rot, torch.zeros_like(rot[..., :1])], dim=-1)
    top = top.clone()
    top[..., 2, 3] = d
    bottom = torch.zeros_like(top[..., :1, :])
    bottom[..., 0, 3] = 1.0
    return torch.cat([top, bottom], dim=-2)


def pascal3d_intrinsics(
    focal: ScalarOrTensor,
    viewport: ScalarOrTensor,
    principal: Tensor | tuple[float, float] | list[float],
    downsample: float = 1.0,
) -> Tensor:
    """Pinhole intrinsics ``[[f*v, 0, px], [0, f*v, py], [0, 0, 1]] / downsample`` (last row kept).

    Args:
        focal: scalar or [B].
        viewport: scalar or [B] (PASCAL3D+ uses 3000).
        principal: [2] or [B, 2] pixel coordinates (x, y) in the full-resolution image.
        downsample: stride of the target map (8 for a stride-8 feature map).

    Returns:
        [B, 3, 3].

    Example:
        >>> pascal3d_intrinsics(1.0, 3000.0, (320.0, 240.0), downsample=8)
        tensor([[[375.,   0.,  40.],
                 [  0., 375.,  30.],
                 [  0.,   0.,   1.]]])
    """
    if downsample <= 0:
        raise ValueError(f"downsample: must be > 0, got {downsample}")
    dtype = _floating_dtype(focal, viewport, principal if isinstance(principal, Tensor) else 0.0)
    device = _device(focal, viewport, principal if isinstance(principal, Tensor) else 0.0)
    pp = torch.as_tensor(principal, dtype=dtype, device=device)
    if pp.dim() == 1:
        pp = pp[None]
    if pp.dim() != 2 or pp.shape[-1] != 2:
        raise ValueError(f"principal: expected shape [2] or [B, 2], got {tuple(pp.shape)}")
    if checks_enabled() and not torch.isfinite(pp).all():
        raise ValueError("principal: must be finite")
    f, v, px, py = broadcast_pose(
        focal, viewport, pp[:, 0], pp[:, 1], names=("focal", "viewport", "principal[x]", "principal[y]")
    )
    if checks_enabled() and ((f <= 0).any() or (v <= 0).any()):
        raise ValueError("focal and viewport: must be > 0")
    fx = f * v / downsample
    z, o = torch.zeros_like(fx), torch.ones_like(fx)
    rows = [fx, z, px / downsample, z, fx, py / downsample, z, z, o]
    return torch.stack(rows, dim=-1).reshape(-1, 3, 3)


def project_points(points: Tensor, viewmats: Tensor, Ks: Tensor) -> Tensor:
    """Pinhole projection of object-frame points.

    Args:
        points: [N, 3] (shared by all views) or [B, N, 3].
        viewmats: [B, 4, 4] world-to-camera, OpenCV frame.
        Ks: [B, 3, 3].

    Returns:
        [B, N, 2] pixel coordinates (x, y).

    Example:
        >>> vm = pose_to_viewmat(0.0, 0.0, 0.0, 10.0)
        >>> K = pascal3d_intrinsics(1.0, 3000.0, (320.0, 240.0))
        >>> points = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.5]])  # origin, +x, up
        >>> project_points(points, vm, K)
        tensor([[[320., 240.],
                 [470., 240.],
                 [320.,  90.]]])
    """
    dtype = torch.promote_types(torch.promote_types(points.dtype, viewmats.dtype), Ks.dtype)
    points, viewmats, Ks = points.to(dtype), viewmats.to(dtype), Ks.to(dtype)
    if points.dim() == 2:
        points = points.expand(viewmats.shape[0], -1, -1)
    cam = points @ viewmats[:, :3, :3].transpose(-1, -2) + viewmats[:, None, :3, 3]
    uvw = cam @ Ks.transpose(-1, -2)
    return uvw[..., :2] / uvw[..., 2:3]


def project_pascal3d(
    points: Tensor,
    azimuth: ScalarOrTensor,
    elevation: ScalarOrTensor,
    theta: ScalarOrTensor,
    distance: ScalarOrTensor,
    focal: ScalarOrTensor,
    principal: Tensor | tuple[float, float] | list[float],
    viewport: ScalarOrTensor = 3000.0,
) -> Tensor:
    """Project object-frame points to pixels as the PASCAL3D+ toolbox does.

    Args:
        points: [N, 3] or [B, N, 3] in the CAD frame.
        azimuth, elevation, theta: scalars or [B], radians.
        distance, focal, viewport: scalars or [B].
        principal: [2] or [B, 2].

    Returns:
        [N, 2] when ``points`` is [N, 3] and the pose is a single one, else [B, N, 2].

    Example:
        >>> points = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.5]])
        >>> project_pascal3d(points, 0.0, 0.0, 0.0, distance=10.0, focal=1.0, principal=(320.0, 240.0))
        tensor([[320., 240.],
                [470., 240.],
                [320.,  90.]])
        >>> project_pascal3d(points, torch.tensor([0.0, math.pi / 2]), 0.0, 0.0, 10.0, 1.0, (320.0, 240.0)).shape
        torch.Size([2, 3, 2])
    """
    if points.dim() not in (2, 3) or points.shape[-1] != 3:
        raise ValueError(f"points: expected shape [N, 3] or [B, N, 3], got {tuple(points.shape)}")
    viewmats = pose_to_viewmat(azimuth, elevation, theta, distance)
    Ks = pascal3d_intrinsics(focal, viewport, principal)
    batch = max(viewmats.shape[0], Ks.shape[0], points.shape[0] if points.dim() == 3 else 1)
    viewmats, Ks = viewmats.expand(batch, 4, 4), Ks.expand(batch, 3, 3)
    uv = project_points(points, viewmats, Ks)
    if points.dim() == 2 and batch == 1:
        return uv[0]
    return uv


def rotation_error(R_pred: Tensor, R_gt: Tensor) -> Tensor:
    """Geodesic angle ``||logm(R_pred^T R_gt)||_F / sqrt(2)`` in radians, in [0, pi].

    Computed as ``atan2(|sin|, cos)`` of the relative rotation, which stays accurate near 0
    and near pi where ``arccos`` of the trace loses precision.

    Args:
        R_pred, R_gt: [..., 3, 3] rotations (broadcastable).

    Returns:
        [...] radians.

    Example:
        >>> R_gt = rotation_from_pose(0.3, 0.2, 0.0)
        >>> R_pred = rotation_from_pose(0.3 + math.pi / 6, 0.2, 0.0)  # azimuth 30 degrees off
        >>> rotation_error(R_pred, R_gt)
        tensor([0.5236])
        >>> rotation_error(R_gt, R_gt)
        tensor([0.])
    """
    if R_pred.shape[-2:] != (3, 3) or R_gt.shape[-2:] != (3, 3):
        raise ValueError(f"R_pred, R_gt: expected [..., 3, 3], got {tuple(R_pred.shape)} and {tuple(R_gt.shape)}")
    rel = R_pred.transpose(-1, -2) @ R_gt
    cos = (rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    skew = torch.stack(
        [rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0], rel[..., 1, 0] - rel[..., 0, 1]],
        dim=-1,
    )
    sin = skew.norm(dim=-1) / 2.0
    return torch.atan2(sin, cos)


def viewmat_to_pose(viewmats: Tensor, atol: float = 1e-4) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Inverse of :func:`pose_to_viewmat`.

    Args:
        viewmats: [B, 4, 4] world-to-camera (OpenCV) of cameras looking at the origin.
        atol: tolerance, relative to the distance, on the camera looking at the origin.

    Returns:
        (azimuth, elevation, theta, distance), each [B]; angles in radians, azimuth in
        [0, 2 pi), elevation in [-pi/2, pi/2], theta in (-pi, pi].

    Example:
        >>> vm = pose_to_viewmat(torch.tensor([0.5, 4.0]), 0.2, -0.1, 5.0)
        >>> azimuth, elevation, theta, distance = viewmat_to_pose(vm)
        >>> azimuth, elevation, theta, distance
        (tensor([0.5000, 4.0000]), tensor([0.2000, 0.2000]), tensor([-0.1000, -0.1000]), tensor([5., 5.]))
    """
    if viewmats.dim() != 3 or viewmats.shape[-2:] != (4, 4):
        raise ValueError(f"viewmats: expected shape [B, 4, 4], got {tuple(viewmats.shape)}")
    t = viewmats[:, :3, 3]
    distance = t[:, 2]
    if checks_enabled() and (distance <= 0).any():
        raise ValueError("viewmats: the object origin must lie in front of the camera (t_z > 0)")
    if checks_enabled() and (t[:, :2].norm(dim=-1) / distance > atol).any():
        raise ValueError(
            "viewmats: camera does not look at the object origin (translation not along +z); "
            "PASCAL3D+ poses cannot represent it"
        )
    rot = viewmats[:, :3, :3]
    center = -(rot.transpose(-1, -2) @ t[..., None])[..., 0]
    azimuth = torch.remainder(torch.atan2(center[:, 0], -center[:, 1]), 2 * math.pi)
    elevation = torch.asin((center[:, 2] / distance).clamp(-1.0, 1.0))
    flip_theta = rot @ pascal3d_rotation(azimuth, elevation).transpose(-1, -2)
    theta = torch.atan2(-flip_theta[:, 0, 1], flip_theta[:, 0, 0])
    return azimuth, elevation, theta, distance


@dataclass(frozen=True, eq=False)
class Pose:
    """A batch of PASCAL3D+ poses: azimuth, elevation, theta (radians) and distance, each [B].

    Scalars and 0-d or [B] tensors are accepted and broadcast to [B] tensors of one floating dtype
    and device (shape errors name the field; values are not checked, so building a Pose never
    waits for the GPU). Subclasses add per-pose fields (``novum3d``'s ``PoseResult``: score);
    indexing, ``to`` and ``cat`` carry every tensor field along.

    Example:
        >>> pose = Pose(torch.tensor([0.0, 1.0]), 0.25, 0.0, 5.0)
        >>> len(pose), pose.elevation
        (2, tensor([0.2500, 0.2500]))
        >>> pose.viewmat().shape, pose.rotation().shape
        (torch.Size([2, 4, 4]), torch.Size([2, 3, 3]))
        >>> pose[1].to_dict(0)
        {'azimuth': 1.0, 'elevation': 0.25, 'theta': 0.0, 'distance': 5.0}
        >>> Pose.from_tensor(pose.as_tensor()[[1, 0]]).azimuth, Pose.cat([pose, pose[:1]]).azimuth
        (tensor([1., 0.]), tensor([0., 1., 0.]))
    """

    azimuth: Tensor
    elevation: Tensor
    theta: Tensor
    distance: Tensor

    FIELDS: ClassVar[tuple[str, ...]] = ("azimuth", "elevation", "theta", "distance")

    def __post_init__(self) -> None:
        values = broadcast_pose(*(getattr(self, k) for k in self.FIELDS), names=self.FIELDS, check_finite=False)
        for name, value in zip(self.FIELDS, values, strict=True):
            object.__setattr__(self, name, value)

    @classmethod
    def from_tensor(cls, values: Tensor) -> Pose:
        """From [B, 4] rows (azimuth, elevation, theta, distance), the estimator's layout."""
        if values.dim() != 2 or values.shape[-1] != 4:
            raise ValueError(f"values: expected [B, 4] (azimuth, elevation, theta, distance), got {list(values.shape)}")
        return cls(*values.unbind(-1))

    @classmethod
    def from_mapping(cls, values: Any) -> Pose:
        """From anything with the four fields as keys (a batch dict, a record) or attributes."""
        get = values.__getitem__ if hasattr(values, "keys") else lambda k: getattr(values, k)
        return cls(*(get(k) for k in cls.FIELDS))

    @classmethod
    def cat(cls, poses: Sequence[Pose]) -> Pose:
        """Concatenate poses of the same class along the batch; optional fields stay None unless all have them."""
        if not poses:
            raise ValueError("poses: need at least one Pose to concatenate")
        out = {}
        for f in dataclasses.fields(poses[0]):
            parts = [getattr(p, f.name) for p in poses]
            out[f.name] = None if any(v is None for v in parts) else torch.cat(parts)
        return type(poses[0])(**out)

    def __len__(self) -> int:
        return self.azimuth.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> Pose:
        """The poses at ``index`` (a slice, an index or bool tensor; an int keeps a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return self._map(lambda t: t[index])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Pose:
        """Every tensor field on ``device``; floating fields also as ``dtype`` when given."""
        return self._map(lambda t: t.to(device, dtype if dtype is not None and t.is_floating_point() else None))

    def _map(self, fn) -> Pose:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return dataclasses.replace(self, **{k: None if v is None else fn(v) for k, v in values.items()})

    def as_tensor(self) -> Tensor:
        """[B, 4] rows (azimuth, elevation, theta, distance)."""
        return torch.stack([getattr(self, k) for k in self.FIELDS], dim=-1)

    def to_dict(self, index: int) -> dict[str, float]:
        """Pose ``index`` as plain floats ``{"azimuth", "elevation", "theta", "distance"}``."""
        return {k: float(getattr(self, k)[index]) for k in self.FIELDS}

    def rotation(self) -> Tensor:
        """[B, 3, 3] rotations PASCAL3D+ evaluation compares (:func:`rotation_from_pose`)."""
        return rotation_from_pose(self.azimuth, self.elevation, self.theta)

    def viewmat(self) -> Tensor:
        """[B, 4, 4] world-to-camera matrices in the OpenCV frame (:func:`pose_to_viewmat`)."""
        return pose_to_viewmat(self.azimuth, self.elevation, self.theta, self.distance)
