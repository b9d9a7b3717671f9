"""The template grid: which orientations and distances the pose search starts from."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ...model.priors import ClassPosePrior
from .config import PoseConfig


@dataclass(frozen=True)
class SearchGrid:
    """The template grid of one call: cartesian blocks of (elevations, thetas) in degrees, each
    with every azimuth, at every one of ``distances`` (absolute)."""

    azimuth_bins: int
    blocks: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]
    distances: tuple[float, ...]

    @classmethod
    def single(cls, azimuth_bins: int, elevations_deg, thetas_deg, distances=(1.0,)) -> SearchGrid:
        return cls(azimuth_bins, ((tuple(elevations_deg), tuple(thetas_deg)),), tuple(distances))

    def orientations(self) -> list[tuple[int, float, float]]:
        """(azimuth bin, elevation deg, theta deg) of every template, azimuth-major per block,
        duplicates (across blocks) dropped."""
        seen, out = set(), []
        for els, ths in self.blocks:
            for key in itertools.product(range(self.azimuth_bins), els, ths):
                rounded = (key[0], round(key[1], 6), round(key[2], 6))
                if rounded not in seen:
                    seen.add(rounded)
                    out.append(key)
        return out


def _multiples(step: float, low: float, high: float, limit: float) -> tuple[float, ...]:
    """Multiples of ``step`` within ``[low - step/2, high + step/2]`` and ``[-limit, limit]``."""
    first, last = math.ceil((low - step / 2) / step - 1e-9), math.floor((high + step / 2) / step + 1e-9)
    return tuple(float(k * step) for k in range(first, last + 1) if abs(k * step) <= limit + 1e-9)


def _extend(values: list[float], low: float, high: float, default_step: float) -> list[float]:
    """``values`` plus rows beyond its ends, at its own spacing, until ``[low, high]`` lies within
    half a spacing of them; never removes a value."""
    v = sorted(set(values))
    step = min((b - a for a, b in itertools.pairwise(v)), default=default_step)
    while high > v[-1] + step / 2:
        v.append(v[-1] + step)
    while low < v[0] - step / 2:
        v.insert(0, v[0] - step)
    return v


def distance_bounds(
    cfg: PoseConfig, prior: ClassPosePrior | None, prior_distance: bool = True
) -> tuple[float, float] | None:
    """(low, high) distances the estimate keeps to under ``cfg.prior_distance_margin``, or None
    where the distance is free: margin 0, no prior, or a distance the caller gave
    (``prior_distance`` False)."""
    m = cfg.prior_distance_margin
    if not m or prior is None or not prior_distance:
        return None
    return prior.distance_low / m, prior.distance_high * m


def search_grid(
    cfg: PoseConfig, distance: float, prior: ClassPosePrior | None = None, prior_distance: bool = True
) -> SearchGrid:
    """The config's grid (the floor) at ``distance`` x each factor. With a prior (and
    ``cfg.prior_grid``), one more block covers the prior's elevation and theta ranges at
    ``prior_elevation_step_deg`` x ``prior_theta_step_deg`` (denser where the class's poses
    usually are, and beyond the floor where they lie outside it), and, with ``prior_distance``
    (the distance is the prior's median), the distance factors extend, at their own spacing, to
    cover the prior's distance range."""
    blocks = [(tuple(sorted(set(cfg.elevations_deg))), tuple(sorted(set(cfg.thetas_deg))))]
    logf = [math.log(f) for f in cfg.distance_factors]
    if prior is not None and cfg.prior_grid:
        els = _multiples(
            cfg.prior_elevation_step_deg,
            math.degrees(prior.elevation_low),
            math.degrees(prior.elevation_high),
            90.0,
        )
        ths = _multiples(cfg.prior_theta_step_deg, math.degrees(prior.theta_low), math.degrees(prior.theta_high), 180.0)
        if els and ths and (els, ths) != blocks[0]:
            blocks.append((els, ths))
        if prior_distance:
            lo, hi = math.log(prior.distance_low / distance), math.log(prior.distance_high / distance)
            logf = _extend(logf, lo, hi, math.log(1.25))
    distances = [distance * math.exp(f) for f in logf]
    bounds = distance_bounds(cfg, prior, prior_distance)
    if bounds is not None:
        distances = [min(max(d, bounds[0]), bounds[1]) for d in distances]
    distances = tuple(sorted({round(d, 6) for d in distances}))
    return SearchGrid(cfg.azimuth_bins, tuple(blocks), distances)


def template_poses(cfg: PoseConfig | SearchGrid, device: torch.device | str = "cpu") -> Tensor:
    """[T, 3] (azimuth, elevation, theta) of the initialisation grid, radians."""
    if isinstance(cfg, PoseConfig):
        cfg = SearchGrid.single(cfg.azimuth_bins, cfg.elevations_deg, cfg.thetas_deg)
    rows = [(i * 2 * math.pi / cfg.azimuth_bins, math.radians(e), math.radians(t)) for i, e, t in cfg.orientations()]
    return torch.tensor(rows, dtype=torch.float32, device=device).reshape(-1, 3)


def prior_mask(grid: SearchGrid) -> Tensor:
    """[T] bool: templates whose (elevation, theta) belong to the grid's second block (the prior's)."""
    if len(grid.blocks) < 2:
        return torch.zeros(len(grid.orientations()), dtype=torch.bool)
    els, ths = ({round(x, 6) for x in v} for v in grid.blocks[1])
    return torch.tensor([round(e, 6) in els and round(t, 6) in ths for _, e, t in grid.orientations()])


def flip_index(grid: SearchGrid) -> Tensor | None:
    """[T] index of each template's azimuth + pi twin, or None when the azimuth bins are odd."""
    if grid.azimuth_bins % 2:
        return None
    keys = grid.orientations()
    where = {(i, round(e, 6), round(t, 6)): n for n, (i, e, t) in enumerate(keys)}
    half = grid.azimuth_bins // 2
    return torch.tensor([where[((i + half) % grid.azimuth_bins, round(e, 6), round(t, 6))] for i, e, t in keys])
