"""EWA projection of 3D Gaussians to screen-space 2D Gaussians, in pure PyTorch.

Mirrors gsplat 1.5.3's ``fully_fused_projection`` (pinhole, classic mode) so that the
pure-PyTorch backend and the gsplat backend see the same 2D Gaussians: Jacobian evaluated at
the mean clamped to 1.3x the field of view, ``eps2d`` blur added to the 2D covariance, and an
opacity-aware screen-space radius (``min(3.33, sqrt(2 ln(255 * opacity)))`` sigmas).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
TRANSMITTANCE_STOP = 1e-4


class Projected(NamedTuple):
    """Screen-space Gaussians for B views of N Gaussians."""

    means2d: Tensor  # [B, N, 2] pixel coordinates (x, y)
    conics: Tensor  # [B, N, 3] inverse 2D covariance (a, b, c): sigma = 0.5(a dx^2 + c dy^2) + b dx dy
    depths: Tensor  # [B, N] camera-space z
    radii: Tensor  # [B, N, 2] int32 screen-space half extent; 0 where culled


def quat_scale_to_covar(quats: Tensor, scales: Tensor) -> Tensor:
    """Covariances ``R diag(s^2) R^T`` from wxyz quaternions [N, 4] and scales [N, 3] -> [N, 3, 3]."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*quats.shape[:-1], 3, 3)  # fmt: skip
    m = rot * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    covars: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    eps2d: float = 0.3,
) -> Projected:
    """Project 3D Gaussians into B pinhole cameras.

    Args:
        means: [N, 3] world positions, or [B, N, 3] for Gaussians that differ per view.
        covars: [N, 3, 3] or [B, N, 3, 3] world covariances.
        opacities: [N] or [B, N] in [0, 1]; used only for the radius and culling.
        viewmats: [B, 4, 4] world-to-camera, OpenCV frame.
        Ks: [B, 3, 3].
        width, height: image size in pixels.

    Returns:
        :class:`Projected`.
    """
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]
    B = viewmats.shape[0]
    means = means.expand(B, *means.shape[-2:])
    covars = covars.expand(B, *covars.shape[-3:])
    means_c = torch.einsum("bij,bnj->bni", rot, means) + trans[:, None, :]
    covars_c = torch.einsum("bij,bnjk,blk->bnil", rot, covars, rot)

    tx, ty, tz = means_c.unbind(-1)
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    # Clamping the Jacobian's evaluation point keeps off-screen Gaussians from exploding.
    lim_x_pos, lim_x_neg = (width - cx) / fx + 0.3 * tan_fovx, cx / fx + 0.3 * tan_fovx
    lim_y_pos, lim_y_neg = (height - cy) / fy + 0.3 * tan_fovy, cy / fy + 0.3 * tan_fovy
    jx = tz * torch.clamp(tx / tz, min=-lim_x_neg, max=lim_x_pos)
    jy = tz * torch.clamp(ty / tz, min=-lim_y_neg, max=lim_y_pos)
    zero = torch.zeros_like(tz)
    jac = torch.stack([fx / tz, zero, -fx * jx / tz**2, zero, fy / tz, -fy * jy / tz**2], dim=-1).reshape(
        *tz.shape, 2, 3
    )
    cov2d = jac @ covars_c @ jac.transpose(-1, -2)
    means2d = torch.stack([fx * tx / tz + cx, fy * ty / tz + cy], dim=-1)

    c00 = cov2d[..., 0, 0] + eps2d
    c11 = cov2d[..., 1, 1] + eps2d
    c01 = 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0])
    det = c00 * c11 - c01 * c01
    det_safe = det.clamp(min=1e-10)
    conics = torch.stack([c11 / det_safe, -c01 / det_safe, c00 / det_safe], dim=-1)

    with torch.no_grad():
        opac = opacities.detach().expand_as(tz)
        extend = torch.sqrt(2.0 * torch.log(opac.clamp(min=ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extend = extend.clamp(max=3.33)
        radius = torch.stack(
            [torch.ceil(extend * c00.clamp(min=0).sqrt()), torch.ceil(extend * c11.clamp(min=0).sqrt())],
            dim=-1,
        )
        valid = (det > 0) & (tz > near_plane) & (opac >= ALPHA_THRESHOLD)
        mx, my = means2d[..., 0], means2d[..., 1]
        inside = (
            (mx + radius[..., 0] > 0)
            & (mx - radius[..., 0] < width)
            & (my + radius[..., 1] > 0)
            & (my - radius[..., 1] < height)
        )
        keep = valid & inside & (radius > 0).any(-1)
        radii = torch.where(keep[..., None], radius, torch.zeros_like(radius)).to(torch.int32)
    return Projected(means2d, conics, tz, radii)


def tile_bounds(means2d: Tensor, radii: Tensor, tile_size: int, width: int, height: int) -> Tensor:
    """Tile rectangle [x0, y0, x1, y1) each Gaussian is binned to, as gsplat's intersection does.

    Args:
        means2d: [B, N, 2]; radii: [B, N, 2].

    Returns:
        [B, N, 4] int64; empty rectangles for culled Gaussians.
    """
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    m = means2d.detach() / tile_size
    r = radii.to(m.dtype) / tile_size
    lo = torch.floor(m - r).long()
    hi = torch.ceil(m + r).long()
    limit = torch.tensor([tiles_x, tiles_y], device=m.device)
    lo = torch.minimum(lo.clamp(min=0), limit)
    hi = torch.minimum(hi.clamp(min=0), limit)
    culled = (radii <= 0).any(-1, keepdim=True)
    hi = torch.where(culled, lo, hi)
    return torch.cat([lo, hi], dim=-1)
