"""The refinement's update: one Adam step on every hypothesis, its learning-rate schedules, and the
angles brought back to their canonical ranges."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .config import PoseConfig


def canonical_pose(azimuth: Tensor, elevation: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The same rotation with azimuth in [0, 2 pi), elevation in [-pi/2, pi/2], theta in (-pi, pi]."""
    e = torch.remainder(elevation + math.pi, 2 * math.pi) - math.pi  # [-pi, pi)
    over = e.abs() > math.pi / 2  # (a, e, t) ~ (a + pi, +-pi - e, t + pi)
    a = torch.where(over, azimuth + math.pi, azimuth)
    t = torch.where(over, theta + math.pi, theta)
    e = torch.where(over, torch.sign(e) * math.pi - e, e)
    return torch.remainder(a, 2 * math.pi), e, math.pi - torch.remainder(math.pi - t, 2 * math.pi)


def cosine_lr(cfg: PoseConfig, step: int, steps: int) -> float:
    """The learning rate of refinement step ``step`` of ``steps``: cosine from ``cfg.lr`` towards ``cfg.lr_final``."""
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * step / max(steps, 1)))


def refinement_lr(cfg: PoseConfig, step: int, steps: int) -> float:
    """The learning rate of refinement step ``step`` (from 0) of ``steps`` under ``cfg.lr_schedule``: :func:`cosine_lr`,
    or ``"step"``: ``cfg.lr`` times ``cfg.lr_step_gamma`` after every ``cfg.lr_step_every`` steps."""
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_step_gamma ** (step // cfg.lr_step_every)
    return cosine_lr(cfg, step, steps)


def adam_step(
    params: Tensor, grad: Tensor, m: Tensor, v: Tensor, t: int, lr: float, betas: tuple[float, float]
) -> tuple[Tensor, Tensor, Tensor]:
    """One Adam update (eps 1e-8) of ``params`` [B, H, 4] with its moments; step ``t`` counts from 1.

    Written out rather than through ``torch.optim.Adam`` because pruning keeps only some hypotheses of each
    image, and their moments must be gathered with them.
    """
    b1, b2 = betas
    m = b1 * m + (1 - b1) * grad
    v = b2 * v + (1 - b2) * grad * grad
    return params - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + 1e-8), m, v
