"""Render-and-compare pose estimation, batched over images and hypotheses.

For an image's feature map F and a class volume with features C, a pose is scored by rendering
the volume (features R, alpha) and comparing per pixel the object score ``R_i . F_i`` with the
background score ``max_b F_i . b``: ``score = mean_i max(R_i . F_i, max_b F_i . b)`` and the loss
``1 - score`` (NOVUM's form). Initialisation picks the best poses of a grid of pre-rendered
templates (azimuth x elevation x theta at the initial distance); refinement runs Adam on
(azimuth, elevation, theta, log distance) of every kept hypothesis of every image at once,
through :func:`rendering.rasterize_features`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rendering import GaussianVolume, pose_to_viewmat, rasterize_features


@dataclass
class PoseConfig:
    azimuth_bins: int = 12
    elevations_deg: list[float] = field(default_factory=lambda: [-15.0, 0.0, 15.0, 30.0])
    thetas_deg: list[float] = field(default_factory=lambda: [-10.0, 0.0, 10.0])
    distance: float = 5.0  # initial distance (preprocessed PASCAL3D+ brings objects to 5)
    top_k: int = 3  # hypotheses per image kept for refinement
    steps: int = 30
    lr: float = 0.05
    backend: str = "auto"

    def validate(self) -> None:
        if self.azimuth_bins < 1 or not self.elevations_deg or not self.thetas_deg:
            raise ValueError("azimuth_bins, elevations_deg, thetas_deg: need at least one value each")
        if self.top_k < 1 or self.steps < 0 or not self.distance > 0:
            raise ValueError("top_k >= 1, steps >= 0 and distance > 0 are required")


@dataclass
class PoseResult:
    azimuth: Tensor  # [B] radians
    elevation: Tensor  # [B]
    theta: Tensor  # [B]
    distance: Tensor  # [B]
    score: Tensor  # [B] final render-and-compare score (higher is better)


def template_poses(cfg: PoseConfig, device: torch.device | str = "cpu") -> Tensor:
    """[T, 3] (azimuth, elevation, theta) of the initialisation grid, radians."""
    az = torch.arange(cfg.azimuth_bins, dtype=torch.float32) * (2 * math.pi / cfg.azimuth_bins)
    el = torch.tensor(cfg.elevations_deg).deg2rad()
    th = torch.tensor(cfg.thetas_deg).deg2rad()
    grid = torch.cartesian_prod(az, el, th)
    return grid.to(device)


def compare(rendered: Tensor, feature_maps: Tensor, background: Tensor) -> Tensor:
    """Scores of renders against feature maps.

    Args:
        rendered: [B, h, w, D] composited features (zero where nothing is rendered).
        feature_maps: [B, D, h, w] unit image features.
        background: [B, h, w] best background-bank similarity per pixel.

    Returns:
        [B]: mean over pixels of max(object score, background score).
    """
    f = feature_maps.permute(0, 2, 3, 1)  # [B, h, w, D]
    obj = (rendered * f).sum(-1)
    return torch.maximum(obj, background).mean(dim=(-2, -1))


def background_scores(feature_maps: Tensor, bank: Tensor) -> Tensor:
    """[B, h, w] max over the bank of f_i . b (zeros-like -1 when the bank is empty)."""
    if bank.shape[0] == 0:
        return feature_maps.new_full((feature_maps.shape[0], *feature_maps.shape[-2:]), -1.0)
    return torch.einsum("bdhw,md->bmhw", feature_maps, bank.to(feature_maps.dtype)).amax(1)


class PoseEstimator:
    """Estimate PASCAL3D+ poses of images of known (or predicted) classes."""

    def __init__(self, cfg: PoseConfig | None = None):
        self.cfg = cfg or PoseConfig()
        self.cfg.validate()
        self._templates: dict[tuple, tuple[Tensor, Tensor]] = {}

    def _render(self, volume: GaussianVolume, features: Tensor, poses: Tensor, distance: Tensor, Ks: Tensor, size):
        h, w = size
        viewmats = pose_to_viewmat(poses[:, 0], poses[:, 1], poses[:, 2], distance)
        out = rasterize_features(
            volume.means, volume.quats, volume.scales, volume.opacities, features, viewmats, Ks, w, h,
            backend=self.cfg.backend, with_depth=False,
        )  # fmt: skip
        return out.features

    def templates(self, key, volume: GaussianVolume, features: Tensor, K: Tensor, size) -> tuple[Tensor, Tensor]:
        """Pre-rendered grid for (class, camera, map size), cached: ([T, 3] poses, [T, h, w, D] renders)."""
        if key not in self._templates:
            poses = template_poses(self.cfg, features.device)
            dist = torch.full((len(poses),), self.cfg.distance, device=features.device)
            with torch.no_grad():
                renders = self._render(volume, features, poses, dist, K.expand(len(poses), 3, 3), size)
            self._templates[key] = (poses, renders)
        return self._templates[key]

    def estimate(
        self,
        feature_maps: Tensor,
        volume: GaussianVolume,
        volume_features: Tensor,
        bank: Tensor,
        Ks: Tensor,
        class_key: object = None,
    ) -> PoseResult:
        """Poses of B images showing the same class.

        Args:
            feature_maps: [B, D, h, w] unit features.
            volume: the class's geometry; volume_features: [N, D]; bank: [M, D].
            Ks: [B, 3, 3] intrinsics at feature-map scale (images may differ in principal point).
            class_key: identifies the class for the template cache.
        """
        cfg = self.cfg
        B, _, h, w = feature_maps.shape
        bg = background_scores(feature_maps, bank)
        # Templates are rendered once per (class, focal, map size) with the principal point at the
        # map centre; the refinement then uses each image's own camera.
        K0 = Ks[0].clone()
        K0[0, 2], K0[1, 2] = w / 2, h / 2
        key = (class_key, round(float(K0[0, 0]), 3), round(float(K0[1, 1]), 3), h, w)
        poses, renders = self.templates(key, volume, volume_features, K0, (h, w))
        with torch.no_grad():
            obj = torch.einsum("thwd,bdhw->bthw", renders, feature_maps)
            scores = torch.maximum(obj, bg[:, None]).mean(dim=(-2, -1))  # [B, T]
        k = min(cfg.top_k, poses.shape[0])
        top = scores.topk(k, dim=1).indices  # [B, k]
        init = poses[top]  # [B, k, 3]
        params = torch.cat([init, torch.full((B, k, 1), math.log(cfg.distance), device=init.device)], dim=-1).reshape(
            B * k, 4
        )
        params = params.clone().requires_grad_(True)
        Kh = Ks.repeat_interleave(k, dim=0)
        fmap = feature_maps.repeat_interleave(k, dim=0)
        bgh = bg.repeat_interleave(k, dim=0)
        opt = torch.optim.Adam([params], lr=cfg.lr)
        # Decaying steps: large ones leave the grid's basin quickly, small ones settle within a degree.
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.steps, 1), eta_min=cfg.lr * 0.05)
        for _ in range(cfg.steps):
            rendered = self._render(volume, volume_features, params[:, :3], params[:, 3].exp(), Kh, (h, w))
            loss = (1 - compare(rendered, fmap, bgh)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        with torch.no_grad():
            rendered = self._render(volume, volume_features, params[:, :3], params[:, 3].exp(), Kh, (h, w))
            final = compare(rendered, fmap, bgh).view(B, k)
        best = final.argmax(1)
        chosen = params.detach().view(B, k, 4)[torch.arange(B), best]
        return PoseResult(
            azimuth=torch.remainder(chosen[:, 0], 2 * math.pi),
            elevation=chosen[:, 1],
            theta=chosen[:, 2],
            distance=chosen[:, 3].exp(),
            score=final[torch.arange(B), best],
        )
