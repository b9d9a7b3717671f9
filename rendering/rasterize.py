"""``rasterize_features``: the entry point for rendering a volume of feature-carrying Gaussians
(``rasterize_gaussians`` takes the Gaussians' parameters one by one, for gradients with respect to them)."""

from __future__ import annotations

import logging
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from .backends import gsplat_available, rasterize_gsplat, rasterize_torch
from .checks import checks_enabled
from .projection import project_gaussians, quat_scale_to_covar
from .visibility import gaussian_visibility
from .volumes import GaussianVolume

logger = logging.getLogger(__name__)

Backend = Literal["auto", "gsplat", "torch"]
MAX_GSPLAT_CHANNELS = 512
_announced: set[str] = set()


class RasterOutput(NamedTuple):
    """Rendered maps for B views and, per Gaussian, where it lands and whether it is seen."""

    features: Tensor  # [B, H, W, D] alpha-composited features
    alpha: Tensor  # [B, H, W] accumulated opacity
    depth: Tensor | None  # [B, H, W] expected camera-space depth (0 where alpha is 0), if asked
    means2d: Tensor  # [B, N, 2] projected centres, pixel coordinates (x, y)
    visible: Tensor | None  # [B, N] bool, when ``with_visibility`` was asked for


def resolve_backend(backend: Backend, device: torch.device, dtype: torch.dtype) -> str:
    """Pick the backend: gsplat for float32 CUDA tensors when it works, else torch.

    Example:
        >>> resolve_backend("auto", torch.device("cpu"), torch.float32)
        'torch'
        >>> resolve_backend("gsplat", torch.device("cpu"), torch.float32)
        Traceback (most recent call last):
        ...
        ValueError: backend='gsplat' needs CUDA tensors, got device cpu
    """
    if backend not in ("auto", "gsplat", "torch"):
        raise ValueError(f"backend: expected 'auto', 'gsplat' or 'torch', got {backend!r}")
    if backend == "gsplat":
        if device.type != "cuda":
            raise ValueError(f"backend='gsplat' needs CUDA tensors, got device {device}")
        if dtype != torch.float32:
            raise ValueError(f"backend='gsplat' renders float32 only, got {dtype}")
        if not gsplat_available():
            raise RuntimeError("backend='gsplat': gsplat's CUDA extension could not be loaded")
        return "gsplat"
    if backend == "torch":
        return "torch"
    chosen = "gsplat" if device.type == "cuda" and dtype == torch.float32 and gsplat_available() else "torch"
    key = f"{chosen}:{device.type}"
    if key not in _announced:
        _announced.add(key)
        logger.info("rasterize_features: using the %s backend on %s", chosen, device.type)
    return chosen


def _check_shape(name: str, t: Tensor, shape: tuple[int | None, ...], expected: str) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"{name}: expected a tensor of shape {expected}, got {type(t).__name__}")
    ok = t.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, t.shape, strict=True))
    if not ok:
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(t.shape)}")


def check_raster_inputs(
    volume: GaussianVolume, features: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int
) -> None:
    """Raise the ValueError, naming the argument, that :func:`rasterize_features` raises for these inputs.

    Shapes (as in :func:`rasterize_features`), sizes and devices are always checked. Values (finite
    means, scales, viewmats and Ks; scales > 0; opacities in [0, 1]) only while
    :func:`~rendering.checks.checks_enabled`: each is a host sync on the GPU. A loop that renders
    the same inputs many times can check them once with this and render under ``value_checks(False)``.

    Example:
        >>> from dataclasses import replace
        >>> from rendering import cuboid_volume, pose_to_viewmat, value_checks
        >>> vol = cuboid_volume((1.0, 1.0, 1.0), n=200)
        >>> vm, K = pose_to_viewmat(0.5, 0.3, 0.0, 4.0), torch.eye(3)[None]
        >>> check_raster_inputs(replace(vol, opacities=2 * vol.opacities), vol.means, vm, K, 32, 32)
        Traceback (most recent call last):
        ...
        ValueError: opacities: must lie in [0, 1]
        >>> with value_checks(False):  # shapes only
        ...     check_raster_inputs(replace(vol, opacities=2 * vol.opacities), vol.means, vm, K, 32, 32)
    """
    v = volume
    check_gaussian_inputs(v.means, v.quats, v.scales, v.opacities, features, viewmats, Ks, width, height)


def check_gaussian_inputs(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
) -> None:
    """:func:`check_raster_inputs` of the Gaussians' parameters, as :func:`rasterize_gaussians` takes them.

    Example:
        >>> from rendering import cuboid_volume, pose_to_viewmat
        >>> vol = cuboid_volume((1.0, 1.0, 1.0), n=200)
        >>> vm, K = pose_to_viewmat(0.5, 0.3, 0.0, 4.0), torch.eye(3)[None]
        >>> check_gaussian_inputs(vol.means, vol.quats[:-1], vol.scales, vol.opacities, vol.means, vm, K, 32, 32)
        Traceback (most recent call last):
        ...
        ValueError: quats: expected shape [N, 4] with N=218, got (217, 4)
    """
    _check_shape("means", means, (None, 3), "[N, 3]")
    N = means.shape[0]
    if N == 0:
        raise ValueError("means: need at least one Gaussian, got N=0")
    _check_shape("quats", quats, (N, 4), f"[N, 4] with N={N}")
    _check_shape("scales", scales, (N, 3), f"[N, 3] with N={N}")
    _check_shape("opacities", opacities, (N,), f"[N] with N={N}")
    _check_shape("viewmats", viewmats, (None, 4, 4), "[B, 4, 4]")
    B = viewmats.shape[0]
    _check_shape("Ks", Ks, (B, 3, 3), f"[B, 3, 3] with B={B}")
    if features.dim() == 2:
        _check_shape("features", features, (N, None), f"[N, D] or [B, N, D] with N={N}")
    else:
        _check_shape("features", features, (B, N, None), f"[N, D] or [B, N, D] with B={B}, N={N}")
    if features.shape[-1] == 0:
        raise ValueError("features: D must be at least 1")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"width, height: expected positive ints, got {width!r}, {height!r}")
    if checks_enabled():
        for name, t in (("means", means), ("viewmats", viewmats), ("Ks", Ks), ("scales", scales)):
            if not torch.isfinite(t).all():
                raise ValueError(f"{name}: contains non-finite values")
        if (scales <= 0).any():
            raise ValueError("scales: must be > 0")
        if ((opacities < 0) | (opacities > 1)).any():
            raise ValueError("opacities: must lie in [0, 1]")
    devices = {t.device for t in (means, quats, scales, opacities, features, viewmats, Ks)}
    if len(devices) > 1:
        raise ValueError(f"all tensors must be on one device, got {sorted(map(str, devices))}")


def _project_torch(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, eps2d, dtype):
    covars = quat_scale_to_covar(quats.to(dtype), scales.to(dtype))
    return project_gaussians(
        means.to(dtype), covars, opacities.to(dtype), viewmats.to(dtype), Ks.to(dtype),
        width, height, near_plane=near_plane, eps2d=eps2d,
    )  # fmt: skip


def _visible(proj, scales: Tensor, opacities: Tensor, width: int, height: int, threshold: float) -> Tensor:
    # Occluders must lie two of the Gaussian's own standard deviations nearer (see visibility.py).
    margin = 2.0 * scales.detach().to(proj.depths.dtype).amax(-1)
    return gaussian_visibility(proj, opacities.to(proj.depths.dtype), margin, width, height, threshold)


def rasterize_features(
    volume: GaussianVolume,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backend: Backend = "auto",
    *,
    near_plane: float = 0.01,
    eps2d: float = 0.3,
    tile_size: int = 16,
    with_depth: bool = True,
    with_visibility: bool = False,
    visibility_threshold: float = 0.5,
    torch_layout: Literal["tiled", "dense"] = "tiled",
) -> RasterOutput:
    """Render B views of a volume's Gaussians carrying D-dim features: :func:`rasterize_gaussians` of
    ``volume``'s means, quats, scales and opacities (its keyword options are documented there).

    Args:
        volume: N Gaussians (:class:`~rendering.volumes.GaussianVolume`).
        features: [N, D] shared by all views, or [B, N, D] per view.
        viewmats: [B, 4, 4] world-to-camera matrices, OpenCV frame; Ks: [B, 3, 3] pinhole intrinsics.
        width, height: output size in pixels.
        backend: "gsplat" (CUDA, float32), "torch" (any device, any float dtype) or "auto".

    Example:
        >>> from rendering import cuboid_volume, pose_to_viewmat
        >>> vol = cuboid_volume((1.0, 1.0, 1.0), n=200)
        >>> vm = pose_to_viewmat(0.5, 0.3, 0.0, 4.0)
        >>> K = torch.tensor([[[64.0, 0.0, 16.0], [0.0, 64.0, 16.0], [0.0, 0.0, 1.0]]])  # a 32x32 image
        >>> out = rasterize_features(vol, vol.means, vm, K, 32, 32, backend="torch")  # features: positions
        >>> out.features.shape, out.alpha.shape, out.depth.shape, out.means2d.shape
        (torch.Size([1, 32, 32, 3]), torch.Size([1, 32, 32]), torch.Size([1, 32, 32]), torch.Size([1, 218, 2]))
        >>> round(out.alpha[0, 16, 16].item(), 3), out.alpha[0, 0, 0].item()  # opaque centre, empty corner
        (1.0, 0.0)
        >>> round(out.depth[0, 16, 16].item(), 2)  # the nearest face, in front of the origin at distance 4
        3.34
    """
    v = volume
    return rasterize_gaussians(
        v.means, v.quats, v.scales, v.opacities, features, viewmats, Ks, width, height, backend,
        near_plane=near_plane, eps2d=eps2d, tile_size=tile_size, with_depth=with_depth,
        with_visibility=with_visibility, visibility_threshold=visibility_threshold, torch_layout=torch_layout,
    )  # fmt: skip


def rasterize_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    features: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    backend: Backend = "auto",
    *,
    near_plane: float = 0.01,
    eps2d: float = 0.3,
    tile_size: int = 16,
    with_depth: bool = True,
    with_visibility: bool = False,
    visibility_threshold: float = 0.5,
    torch_layout: Literal["tiled", "dense"] = "tiled",
) -> RasterOutput:
    """Front-to-back alpha compositing of 3D Gaussians carrying D-dim features (EWA splatting).

    Differentiable with respect to ``features``, ``means``, ``scales``, ``quats`` and
    ``viewmats`` on both backends. Inputs are checked by :func:`check_raster_inputs` (values only
    while :func:`~rendering.checks.checks_enabled`).

    Args:
        means: [N, 3] Gaussian centres in the world (object) frame.
        quats: [N, 4] rotations, wxyz.
        scales: [N, 3] standard deviations along the rotated axes, > 0.
        opacities: [N] in [0, 1].
        features: [N, D] shared by all views, or [B, N, D] per view.
        viewmats: [B, 4, 4] world-to-camera matrices, OpenCV frame.
        Ks: [B, 3, 3] pinhole intrinsics.
        width, height: output size in pixels.
        backend: "gsplat" (CUDA, float32), "torch" (any device, any float dtype) or "auto".
        with_depth: also render expected depth (on gsplat, skipping it saves ~25% forward).
        with_visibility: also compute per-Gaussian visibility (O(B N^2), no gradient).
        visibility_threshold: transmittance at a Gaussian's centre needed to count as seen.
        torch_layout: the torch backend's layout, "tiled" (fast) or "dense" (reference).

    Returns:
        :class:`RasterOutput`.

    Example:
        >>> from rendering import cuboid_volume, pose_to_viewmat
        >>> vol = cuboid_volume((1.0, 1.0, 1.0), n=200)
        >>> means = vol.means.clone().requires_grad_(True)  # gradients reach the geometry too
        >>> K = torch.tensor([[[64.0, 0.0, 16.0], [0.0, 64.0, 16.0], [0.0, 0.0, 1.0]]])
        >>> out = rasterize_gaussians(
        ...     means, vol.quats, vol.scales, vol.opacities, vol.means, pose_to_viewmat(0.5, 0.3, 0.0, 4.0), K, 32, 32
        ... )
        >>> out.features.sum().backward()
        >>> means.grad.shape
        torch.Size([218, 3])
    """
    check_gaussian_inputs(means, quats, scales, opacities, features, viewmats, Ks, width, height)
    B = viewmats.shape[0]
    dtype = torch.promote_types(features.dtype, viewmats.dtype)
    name = resolve_backend(backend, features.device, dtype)
    if name == "gsplat" and features.shape[-1] > MAX_GSPLAT_CHANNELS:
        raise ValueError(f"features: gsplat renders at most D={MAX_GSPLAT_CHANNELS}, got D={features.shape[-1]}")

    if name == "gsplat":
        feats, alpha, acc_depth, proj = rasterize_gsplat(
            means, quats, scales, opacities, features, viewmats, Ks, width, height,
            near_plane=near_plane, eps2d=eps2d, tile_size=tile_size, with_depth=with_depth,
        )  # fmt: skip
    else:
        proj = _project_torch(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, eps2d, dtype)
        feats, alpha, acc_depth = rasterize_torch(
            proj,
            opacities.to(dtype),
            features.to(dtype).expand(B, -1, -1),
            width,
            height,
            tile_size,
            torch_layout,
        )
    depth = acc_depth / alpha.clamp(min=1e-10) if with_depth else None
    visible = None
    if with_visibility:
        visible = _visible(proj, scales, opacities, width, height, visibility_threshold)
    return RasterOutput(feats, alpha, depth, proj.means2d, visible)


def project_visible(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    eps2d: float = 0.3,
    visibility_threshold: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """Per-Gaussian projected centres and visibility, without rasterizing any image.

    Same visibility rule as :func:`rasterize_features` with ``with_visibility=True``; this is
    what training needs to find correspondences, at a fraction of the cost. The Gaussians may
    differ per view (a batch of images of different objects in one call); Gaussians with
    opacity 0 are culled, which lets callers pad volumes of different sizes.

    Args:
        means [N, 3] or [B, N, 3]; quats [.., N, 4]; scales [.., N, 3]; opacities [N] or [B, N];
        viewmats [B, 4, 4]; Ks [B, 3, 3].

    Returns:
        means2d [B, N, 2] (pixel coordinates, differentiable w.r.t. cameras), visible [B, N] bool.

    Example:
        >>> from rendering import cuboid_volume, pose_to_viewmat
        >>> vol = cuboid_volume((1.0, 1.0, 1.0), n=200)
        >>> vm = pose_to_viewmat(torch.tensor([0.5, 2.0]), 0.3, 0.0, 4.0)  # two views
        >>> K = torch.tensor([[64.0, 0.0, 16.0], [0.0, 64.0, 16.0], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
        >>> means2d, visible = project_visible(vol.means, vol.quats, vol.scales, vol.opacities, vm, K, 32, 32)
        >>> means2d.shape, visible.shape, visible.dtype
        (torch.Size([2, 218, 2]), torch.Size([2, 218]), torch.bool)
        >>> [0 < int(v.sum()) < len(vol) for v in visible]  # the far side is hidden in each view
        [True, True]
    """
    _check_shape("viewmats", viewmats, (None, 4, 4), "[B, 4, 4]")
    B = viewmats.shape[0]
    _check_shape("Ks", Ks, (B, 3, 3), f"[B, 3, 3] with B={B}")
    lead = () if means.dim() == 2 else (B,)
    N = means.shape[-2]
    for name, t, last in (("means", means, 3), ("quats", quats, 4), ("scales", scales, 3)):
        _check_shape(name, t, (*lead, N, last), f"[{'B, ' if lead else ''}N, {last}] with N={N}")
    _check_shape("opacities", opacities, (*lead, N), f"[{'B, ' if lead else ''}N] with N={N}")
    dtype = torch.promote_types(means.dtype, viewmats.dtype)
    proj = _project_torch(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, eps2d, dtype)
    return proj.means2d, _visible(proj, scales, opacities, width, height, visibility_threshold)
