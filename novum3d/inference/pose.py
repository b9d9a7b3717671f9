"""Render-and-compare pose estimation, batched over images and hypotheses.

For an image's feature map F and a class volume with features C, a pose is scored by rendering
the volume (features R, alpha) and comparing per pixel the object score ``R_i . F_i`` with a
background score ``c_i``: ``score = mean_i max(R_i . F_i, c_i)`` and the loss ``1 - score``
(NOVUM's form). ``c_i`` is the bank's best vector ``max_b F_i . b`` (``PoseConfig.clutter="max"``),
the bank's normalised mean vector ``F_i . normalise(mean_b b)`` (``"mean"``, the authors' code with
``use_clutter: true``) or -1, no background at all (``"none"``, their default: the mean object score).

1. Initialisation: templates (azimuth x elevation x theta, at the initial distance times each
   distance factor) are rendered once per (class, focal, map size, distance, grid) with the
   principal point at the map centre and cached. Each image's feature map (and background scores)
   is shifted by the integer cell offset between its principal point and the map centre, so one
   product scores every image against every template. The best distance factor of each
   orientation is kept, then the ``top_k`` best orientations.
2. Flip hypotheses: each kept hypothesis also gets its azimuth + pi (front/back confusions).
3. Refinement: Adam (cosine-decayed) on (azimuth, elevation, theta, log distance) of every
   hypothesis of every image at once, one :func:`rendering.rasterize_features` call per step,
   with each image's own intrinsics; after ``prune_after`` steps only the ``keep`` best
   hypotheses of each image go on. The best final score wins (``PoseConfig.ranking="inliers"``:
   the pruning and the final choice, like the templates, go by correspondence inliers,
   :func:`count_inliers`, the score breaking ties). The inputs are checked once before
   the steps, which render under ``rendering.value_checks(False)``: a value check reads its answer
   on the host, and 11 per step kept the GPU waiting.
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rendering import GaussianVolume, Pose, check_raster_inputs, pose_to_viewmat, rasterize_features, value_checks

from ..config import apply_overrides, from_mapping
from ..model.matching import BACKGROUND_REDUCTIONS, background_scores, object_or_background
from ..model.priors import ClassPosePrior, PosePriors

RANKINGS = ("compare", "inliers")


@dataclass
class PoseConfig:
    """Settings of :class:`PoseEstimator`.

    Cost, in renders of one view of one volume (R = forward, RB = forward + backward, about 3 R
    with gsplat), per image once the templates are cached::

        hypotheses  H = (top_k + prior_top_k [with a prior]) * (2 if flip_hypotheses else 1)
        refinement  H * prune_after RB + keep * (steps - prune_after) RB   (0 < prune_after < steps, keep < H)
                    H * steps RB                                           (otherwise)
        final       keep R (H R without pruning)
        templates   orientations * len(distance_factors) R once per (class, focal, map size, initial
                    distance, grid); scoring them is one matrix product per image, no render.
                    orientations = azimuth_bins * (4 * 3 floor + the prior's block): 144 without a
                    prior, 228 with the synthetic clean prior (elevation -5..35, theta +-8 deg).

    Defaults: with a prior H = 3, 3 * 10 + 1 * 20 = 50 RB + 1 R per image; without one H = 2,
    40 RB + 1 R. The previous defaults (3 hypotheses x 30 steps, no pruning) cost 90 RB + 3 R.
    Template memory: 684 templates x 80 x 100 x 128 in bfloat16 = 1.4 GB per class on CUDA (4x at
    ``model.stride=4`` for the same image size; at 256x256, 64 x 64 cells, about 0.7 GB).

    Measured on oracle feature maps (H100, gsplat, 80x100 maps, 1100 Gaussians, D=128, 192 images
    per scenario, principal points jittered +-5%, distance +-10%; features random per Gaussian
    (narrow basin) or smooth in 3D (length 0.15), noise 0.1 / 40% hidden or 0.6 / 60% hidden;
    clean poses elevation -5..35, theta +-8 deg; OOD elevation 45..75 or -35..-15, theta 15..30).
    Acc@pi/6 of the old settings (grid -15..30 x +-10 deg, top 3, no pruning; with this module's
    principal-point shift and betas) -> these defaults (with the clean prior): clean random
    84.9 -> 90.1, clean smooth noisy 95.3 -> 92.2 (the floor's extra templates are distractors under
    heavy noise), clean front/back-ambiguous noisy 65.1 -> 62.0, OOD random 45.8 -> 83.9, OOD smooth
    noisy 64.6 -> 90.1; 84 -> 135 img/s at batch 96. Centred templates (no shift) instead of the
    shift: 88.5 against 95.8 on clean smooth noisy maps (old grid).
    """

    # The floor: the authors' grid (NOVUM helper.py), 12 azimuths x {-30, 0, 30, 60} x {-30, 0, 30}
    # degrees. Alone it is too coarse for narrow-basin features (clean random 63.5% against 84.9% for
    # the old -15..30 x +-10 grid); with a prior, its block (below) brings clean poses back.
    azimuth_bins: int = 12
    elevations_deg: list[float] = field(default_factory=lambda: [-30.0, 0.0, 30.0, 60.0])
    thetas_deg: list[float] = field(default_factory=lambda: [-30.0, 0.0, 30.0])
    # Initial distance when neither ``estimate(distance=...)`` nor a class prior gives one
    # (preprocessed PASCAL3D+ brings objects to 5).
    distance: float = 5.0
    # Templates at the initial distance x each factor; each orientation keeps its best factor. With
    # distances +-10% off, [1.0] alone lost 13.5 points on random features (71.9 vs 85.4) and 2.1 on
    # smooth noisy ones; with +-40% both reach 100% on smooth features (refinement fixes distance).
    distance_factors: list[float] = field(default_factory=lambda: [0.8, 1.0, 1.25])
    top_k: int = 2  # best template orientations kept per image
    # With a prior: this many more orientations, the best of the prior's block not kept already.
    # Reserving one slot there beat one more global slot on clean noisy maps (92.2 vs 91.1).
    prior_top_k: int = 1
    # Also refine azimuth + pi of every kept orientation (twins are paired, so a pair is never
    # refined twice). Off by default: in none of 9 oracle scenarios did it change Acc@pi/6 by more
    # than 1.5 points, front/back-ambiguous features (80% symmetric) included, where the refined
    # twins' scores tie (about 31% near-pi errors with or without flips); it costs 2x hypotheses.
    # Worth re-measuring on trained features, whose front/back confusions oracles may not mimic.
    flip_hypotheses: bool = False
    # 40 steps: +0.5 to +2.6 points on oracles for 20% more time; on the H100 models 60 steps moved
    # validation by at most 0.8 points at either stride (BENCHMARKS.md, eighth session).
    steps: int = 30
    lr: float = 0.05  # 0.1 diverged on narrow-basin features (26.6% against 85.4%)
    lr_final: float = 0.0025  # cosine decay from lr to lr_final; a constant lr gave higher median errors
    # Adam betas of the authors' code; against (0.9, 0.999): +2 to +4 points and median errors
    # 2.7 -> 0.5 deg (clean random), 10.9 -> 4.0 deg (OOD random).
    betas: tuple[float, float] = (0.4, 0.6)
    # After this many steps only the `keep` best hypotheses per image go on (0: never). Pruning at
    # 10 of 30 lost 1 to 2.6 points against none on oracles and ran 1.85x faster; at 5, 1 to 4.6
    # points. On the H100 models no pruning moved validation by at most 0.6 points (eighth session).
    prune_after: int = 10
    keep: int = 1
    # With a class prior: one more template block over the prior's elevation x theta range, at
    # multiples of these steps (see search_grid). prior_grid=False keeps only the floor.
    prior_grid: bool = True
    prior_elevation_step_deg: float = 15.0
    prior_theta_step_deg: float = 10.0
    template_dtype: str = "auto"  # "auto" (bfloat16 on CUDA, float32 elsewhere), "float32", "bfloat16"
    backend: str = "auto"
    # The background score a pixel's object score must beat (model.matching.background_scores): "max",
    # the bank's best vector (the classifier's rule); "mean", the bank's normalised mean vector (the
    # authors' objective with inference.use_clutter: true, GenIntel/NOVUM src/inference.py L80
    # mean_clutter_bank, src/lib/losses.py L32-37 loss_fun); "none", no background: the mean object
    # score, the authors' default (use_clutter: false, config/defaults.yaml L79). Under "max" the bank
    # can outscore every cell of an occluded object and the score is flat in the pose: 62.5% of L3
    # images never moved from the truth for the model trained without augmentation (H100, BENCHMARKS.md
    # sixth session). "mean" moves all but 3 of 2,400, but on validation it lost 0.8 and 4.0 points of
    # Acc@pi/6 (two methods, two seeds each) and through occluders it was within the seeds' spread;
    # "none" lost 6.6 points on the CPU model's clean validation. So "max" stays.
    clutter: str = "max"
    # 0: the hard max(object, background) per pixel (NOVUM's, and the authors' loss_fun); t > 0: its
    # soft form t log(exp(obj / t) + exp(bg / t)) (model.matching.object_or_background), so that object
    # scores just under the background still count (the training temperature is 0.07). At 0.07 on the
    # H100 models: validation Acc@pi/6 -0.2 and -1.5 points (the second lower on both seeds), through
    # occluders -0.6 and +1.2, within the seeds' spread (BENCHMARKS.md sixth session), so 0 stays.
    temperature: float = 0.0
    # 0: the distance is free, as in the authors' refinement. m >= 1: with a class prior (and no
    # distance given), the templates' distances and every refinement step stay within the prior's
    # [distance_low / m, distance_high * m] (a projection, see distance_bounds). Wrong L3 poses are
    # mostly nearer than right ones (median ratio 0.94; 69% outside the prior against 35%), but at
    # m = 1.05 validation moved by 0.2-0.5 points, clean and through occluders, at both strides (H100,
    # BENCHMARKS.md seventh session): the search finds other wrong poses that score as high. So 0.
    prior_distance_margin: float = 0.0
    # What ranks the hypotheses (the templates, the pruning, the final choice); refinement always
    # climbs the render-and-compare score. "compare": that score (NOVUM's). "inliers": the cells whose
    # best-matching Gaussian of the class beats the background and lies within ``inlier_radius``
    # Gaussian spacings of the surface point the pose renders there (ties broken by the score), a
    # correspondence count as in RANSAC: a cell that matches another part adds nothing, where under
    # "compare" it adds its similarity. A departure from the authors. On the H100 models (2 strides x
    # 2 seeds) validation moved by at most 1.2 points, clean and through occluders, and L3 not at all
    # (BENCHMARKS.md, eighth session): the cells' best matches mislead as the score does. So "compare".
    # On narrow-basin oracle maps it found 99.6% within pi/6 against 73.8% (32x32) and 91.0% (64x64),
    # at 0.96-0.98x the throughput (H100, benchmarks.inference --pose-variant ranking=inliers).
    ranking: str = "compare"
    inlier_radius: float = 3.0  # spacings; training keeps Gaussians within 2 from being negatives

    def validate(self) -> None:
        if self.azimuth_bins < 1 or not self.elevations_deg or not self.thetas_deg:
            raise ValueError("azimuth_bins, elevations_deg, thetas_deg: need at least one value each")
        if self.prior_top_k < 0:
            raise ValueError(f"prior_top_k: must be >= 0, got {self.prior_top_k}")
        if self.top_k < 1 or self.steps < 0 or not self.distance > 0:
            raise ValueError("top_k >= 1, steps >= 0 and distance > 0 are required")
        if not self.distance_factors or any(not f > 0 for f in self.distance_factors):
            raise ValueError(f"distance_factors: need at least one factor, all > 0, got {self.distance_factors}")
        if not (self.lr > 0 and 0 < self.lr_final <= self.lr):
            raise ValueError(f"need lr > 0 and 0 < lr_final <= lr, got {self.lr}, {self.lr_final}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: two values in [0, 1), got {self.betas}")
        if self.prune_after < 0 or self.keep < 1:
            raise ValueError(f"prune_after >= 0 and keep >= 1 are required, got {self.prune_after}, {self.keep}")
        if not (self.prior_elevation_step_deg > 0 and self.prior_theta_step_deg > 0):
            raise ValueError("prior_elevation_step_deg and prior_theta_step_deg must be > 0")
        if not self.temperature >= 0:
            raise ValueError(f"temperature: must be >= 0 (0: the hard max), got {self.temperature}")
        if self.clutter not in BACKGROUND_REDUCTIONS:
            raise ValueError(f"clutter: one of {BACKGROUND_REDUCTIONS}, got {self.clutter!r}")
        if not (self.prior_distance_margin == 0 or self.prior_distance_margin >= 1):
            raise ValueError(
                f"prior_distance_margin: 0 (free distance) or a factor >= 1, got {self.prior_distance_margin}"
            )
        if self.ranking not in RANKINGS:
            raise ValueError(f"ranking: one of {RANKINGS}, got {self.ranking!r}")
        if not self.inlier_radius > 0:
            raise ValueError(f"inlier_radius: must be > 0 (Gaussian spacings), got {self.inlier_radius}")
        if self.template_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"template_dtype: 'auto', 'float32' or 'bfloat16', got {self.template_dtype!r}")

    def hypotheses(self, with_prior: bool = True) -> int:
        """Hypotheses refined per image before pruning (``with_prior``: a prior adds its block's)."""
        extra = self.prior_top_k if with_prior and self.prior_grid else 0
        return (self.top_k + extra) * (2 if self.flip_hypotheses else 1)

    def renders_per_image(self, with_prior: bool = True) -> dict[str, int]:
        """Renders per image with cached templates: ``{"forward_backward": ..., "forward": ...}``."""
        H = self.hypotheses(with_prior)
        if 0 < self.prune_after < self.steps and self.keep < H:
            return {
                "forward_backward": H * self.prune_after + self.keep * (self.steps - self.prune_after),
                "forward": self.keep,
            }
        return {"forward_backward": H * self.steps, "forward": H}


@dataclass(frozen=True, eq=False)
class PoseResult(Pose):
    """Estimated poses (azimuth in [0, 2 pi), elevation in [-pi/2, pi/2], theta in (-pi, pi], radians;
    distance), each [B], with what the estimate says about itself."""

    score: Tensor  # [B] final render-and-compare score (higher is better)
    flipped: Tensor | None = None  # [B] bool: the winner started as a flip hypothesis


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


def compare(rendered: Tensor, features: Tensor, background: Tensor, temperature: float = 0.0) -> Tensor:
    """Render-and-compare scores: mean over pixels of max(object score R.F, background score)
    (softened at ``temperature`` > 0, :func:`~novum3d.model.matching.object_or_background`).

    Args:
        rendered: [..., h, w, D] composited features (zero where nothing is rendered).
        features: [..., h, w, D] unit image features (channels last; broadcast against ``rendered``).
        background: [..., h, w] background score per pixel.

    Returns:
        [...] scores.
    """
    return compare_cells(rendered, features, background, temperature).mean(dim=(-2, -1))


def compare_cells(rendered: Tensor, features: Tensor, background: Tensor, temperature: float = 0.0) -> Tensor:
    """[..., h, w] the per-pixel terms whose mean is :func:`compare`'s score (same arguments)."""
    obj = (rendered * features).sum(-1)
    return object_or_background(obj, background, temperature)


def best_matches(
    features: Tensor, volume_features: Tensor, means: Tensor, background: Tensor, budget: int = 1 << 24
) -> tuple[Tensor, Tensor]:
    """Each pixel's best-matching Gaussian of one class: where it sits, and whether it beats the background.

    Args:
        features: [B, h, w, D] unit image features (channels last).
        volume_features: [N, D] the class's Gaussian features; means: [N, 3] their centres (object frame).
        background: [B, h, w] background score per pixel.
        budget: similarities computed at once (pixels x N), bounding memory.

    Returns:
        ([B, h, w, 3] float32 centre of each pixel's best Gaussian, [B, h, w] bool: its score beats
        the background).
    """
    B, h, w, D = features.shape
    flat = features.reshape(B * h * w, D)
    vf = volume_features.to(flat.dtype)
    step = max(1, budget // max(vf.shape[0], 1))
    parts = [(flat[s : s + step] @ vf.t()).max(-1) for s in range(0, flat.shape[0], step)]
    best = torch.cat([p.values for p in parts]).view(B, h, w).float()
    idx = torch.cat([p.indices for p in parts])
    return means[idx].float().view(B, h, w, 3), best > background.float()


def count_inliers(rendered: Tensor, points: Tensor, matched: Tensor, radius: float) -> Tensor:
    """Share of pixels where a pose's rendered surface point lies within ``radius`` of the pixel's
    best-matching Gaussian (:func:`best_matches`), counted only where that match beats the background
    and the object covers the pixel (alpha > 0.5). The reference for the template path's product form.

    Args:
        rendered: [..., h, w, 4] composited (x, y, z, 1) of the Gaussian centres: channels 0-2 are
            alpha-weighted centres, channel 3 the alpha.
        points: [..., h, w, 3]; matched: [..., h, w] bool (both broadcast against ``rendered``).
        radius: in object units.

    Returns:
        [...] shares in [0, 1].
    """
    alpha = rendered[..., 3]
    surface = rendered[..., :3] / alpha.clamp_min(1e-6)[..., None]
    near = (surface - points).square().sum(-1) < radius**2
    return (near & matched & (alpha > 0.5)).float().mean(dim=(-2, -1))


def inliers_then_score(inliers: Tensor, score: Tensor, cells: int) -> Tensor:
    """One ranking value: the inlier share first, the score only breaking ties. A share moves in
    steps of 1 / cells; the score (within [-1, 1], or 1 + t log 2 at temperature t) is scaled so that
    any two scores differ by less than one step."""
    return inliers + score / (4 * cells)


def template_chunk(renders: Tensor, images: int) -> int:
    """Pixels of pixel-major templates [P, F*T, C] scored at once against ``images`` images: about 2^26
    (CUDA) or 2^22 (CPU) products of a template column and an image per chunk, bounding memory."""
    budget = (1 << 26) if renders.is_cuda else (1 << 22)
    return max(1, budget // max(renders.shape[1] * images, 1))


def principal_offsets(Ks: Tensor, size: tuple[int, int]) -> Tensor:
    """[B, 2] integer cell offsets (dx, dy) of each principal point from the map centre (w/2, h/2)."""
    h, w = size
    return torch.stack([Ks[:, 0, 2] - w / 2, Ks[:, 1, 2] - h / 2], dim=-1).round().long()


def shift_to_centre(features: Tensor, background: Tensor, offsets: Tensor, pad_background: float = 1.0):
    """Move each image so that its principal point sits at the map centre.

    ``out[b, i, j] = in[b, i + dy_b, j + dx_b]``: an object seen with the principal point ``dx``
    cells right of the centre appears ``dx`` cells right of where a centred camera sees it, and
    comes back. Cells from outside the map get feature 0 and background score ``pad_background``
    (1: certain background), which adds the same constant to every template's score of that image.

    Args:
        features: [B, h, w, D]; background: [B, h, w]; offsets: [B, 2] (dx, dy) integers.

    Returns:
        ([B, h, w, D], [B, h, w]).
    """
    B, h, w = background.shape
    if not bool(offsets.any()):
        return features, background
    dev = features.device
    ys = torch.arange(h, device=dev)[None] + offsets[:, 1:2].to(dev)  # [B, h]
    xs = torch.arange(w, device=dev)[None] + offsets[:, 0:1].to(dev)  # [B, w]
    inside = ((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :]  # [B, h, w]
    bi = torch.arange(B, device=dev)[:, None, None]
    yi, xi = ys.clamp(0, h - 1)[:, :, None], xs.clamp(0, w - 1)[:, None, :]
    f = torch.where(inside[..., None], features[bi, yi, xi], features.new_zeros(()))
    bg = torch.where(inside, background[bi, yi, xi], background.new_full((), pad_background))
    return f, bg


def canonical_pose(azimuth: Tensor, elevation: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The same rotation with azimuth in [0, 2 pi), elevation in [-pi/2, pi/2], theta in (-pi, pi]."""
    e = torch.remainder(elevation + math.pi, 2 * math.pi) - math.pi  # [-pi, pi)
    over = e.abs() > math.pi / 2  # (a, e, t) ~ (a + pi, +-pi - e, t + pi)
    a = torch.where(over, azimuth + math.pi, azimuth)
    t = torch.where(over, theta + math.pi, theta)
    e = torch.where(over, torch.sign(e) * math.pi - e, e)
    return torch.remainder(a, 2 * math.pi), e, math.pi - torch.remainder(math.pi - t, 2 * math.pi)


def pose_config(fields: dict, overrides: list[str], where: str = "--pose") -> PoseConfig:
    """A validated :class:`PoseConfig` of ``fields`` with ``key=value`` overrides on top (a command's
    ``--pose``); errors name ``where``. ``fields`` itself is not changed."""
    return from_mapping(PoseConfig, apply_overrides(dict(fields), overrides, where=where), where=where)


def tensor_identity(t: Tensor) -> tuple:
    """Which memory ``t`` reads, its layout and its in-place version: part of a template cache key, so
    that another volume or features under the same class key, or features changed in place, are
    rendered anew (a benchmark looping over volume sizes once reused a smaller volume's templates),
    while a fresh view of the same features (``features[c, :k]``) still hits. No device sync. It names
    memory, not contents: a new tensor of the same shape allocated where a freed one lay would hit."""
    return t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype, t._version


class PoseEstimator:
    """Estimate PASCAL3D+ poses of images of known (or predicted) classes.

    Args:
        cfg: settings (:class:`PoseConfig`).
        priors: optional :class:`~novum3d.model.priors.PosePriors`; when given, ``estimate``
            looks up ``priors.for_class(class_key)`` unless a ``prior`` is passed explicitly (so
            ``class_key`` should then be the class index or name).
        max_cached: template sets kept (least recently used dropped first); one set of the default
            grid with a prior is about 1.4 GB on CUDA at 80x100 x 128 channels.

    Attributes:
        rendered: views rendered so far, ``{"template", "forward_backward", "forward"}``.
    """

    def __init__(self, cfg: PoseConfig | None = None, priors: PosePriors | None = None, max_cached: int = 16):
        self.cfg = cfg or PoseConfig()
        self.cfg.validate()
        self.priors = priors
        self.max_cached = max_cached
        self._templates: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()
        self.rendered = {"template": 0, "forward_backward": 0, "forward": 0}

    def _render(self, volume: GaussianVolume, features: Tensor, viewmats: Tensor, Ks: Tensor, size):
        """[V, h, w, D] renders of ``volume`` seen by viewmats [V, 4, 4] and Ks [V, 3, 3]."""
        h, w = size
        out = rasterize_features(
            volume.means, volume.quats, volume.scales, volume.opacities, features, viewmats, Ks, w, h,
            backend=self.cfg.backend, with_depth=False,
        )  # fmt: skip
        return out.features

    def _template_dtype(self, device: torch.device) -> torch.dtype:
        name = self.cfg.template_dtype
        if name == "auto":
            return torch.bfloat16 if device.type == "cuda" else torch.float32
        return getattr(torch, name)

    def templates(
        self,
        key,
        volume: GaussianVolume,
        features: Tensor,
        K: Tensor,
        size,
        grid: SearchGrid,
        dtype: torch.dtype | None = None,
    ):
        """Pre-rendered grid, cached per ``key``: ([T, 3] poses, [h*w, F*T, D] renders, pixel-major,
        distance-major: column ``f * T + t`` is orientation t at ``grid.distances[f]``), in ``dtype``
        (default :attr:`PoseConfig.template_dtype`'s)."""
        if key in self._templates:
            self._templates.move_to_end(key)
            return self._templates[key]
        poses = template_poses(grid, features.device)
        T, h, w = len(poses), *size
        renders = []
        with torch.no_grad():
            for d in grid.distances:
                dist = torch.full((T,), d, device=features.device)
                viewmats = pose_to_viewmat(poses[:, 0], poses[:, 1], poses[:, 2], dist)
                r = self._render(volume, features, viewmats, K.expand(T, 3, 3), size)
                renders.append(r.reshape(T, h * w, -1).to(dtype or self._template_dtype(features.device)))
        self.rendered["template"] += T * len(grid.distances)
        stacked = torch.cat(renders, 0).transpose(0, 1).contiguous()  # [h*w, F*T, D]
        self._templates[key] = (poses, stacked)
        while len(self._templates) > self.max_cached:
            self._templates.popitem(last=False)
        return self._templates[key]

    @staticmethod
    def score_templates(renders: Tensor, features: Tensor, background: Tensor, temperature: float = 0.0) -> Tensor:
        """[B, F*T] scores of centred images against pixel-major templates (:func:`compare`'s rule).

        Args:
            renders: [P, F*T, D] (P = h*w); features: [B, h, w, D]; background: [B, h, w].
        """
        B = features.shape[0]
        P, TT, D = renders.shape
        f = features.reshape(B, P, D).permute(1, 2, 0).to(renders.dtype)  # [P, D, B]
        bg = background.reshape(B, P).t()[:, None, :].float()  # [P, 1, B]
        chunk = template_chunk(renders, B)
        total = torch.zeros(TT, B, device=renders.device)
        for s in range(0, P, chunk):
            obj = torch.bmm(renders[s : s + chunk], f[s : s + chunk]).float()  # [p, F*T, B]
            total += object_or_background(obj, bg[s : s + chunk], temperature).sum(0)
        return (total / P).t()

    @staticmethod
    def score_template_inliers(renders: Tensor, points: Tensor, matched: Tensor, radius: float) -> Tensor:
        """[B, F*T] :func:`count_inliers` of centred images against pixel-major point templates, as
        one product per chunk of pixels (``|q - x|^2 = |q|^2 - 2 q.x + |x|^2``).

        Args:
            renders: [P, F*T, 4] composited (x, y, z, 1) (P = h*w); points: [B, h, w, 3];
            matched: [B, h, w] bool; radius: object units.
        """
        B = points.shape[0]
        P, TT, _ = renders.shape
        x = points.reshape(B, P, 3).permute(1, 2, 0).float()  # [P, 3, B]
        x2 = x.square().sum(1, keepdim=True)  # [P, 1, B]
        ok = matched.reshape(B, P).t()[:, None, :]  # [P, 1, B]
        chunk = template_chunk(renders, B)
        total = torch.zeros(TT, B, device=renders.device)
        for s in range(0, P, chunk):
            r = renders[s : s + chunk].float()
            alpha = r[..., 3]
            q = r[..., :3] / alpha.clamp_min(1e-6)[..., None]  # [p, F*T, 3]
            d2 = q.square().sum(-1, keepdim=True) - 2 * torch.bmm(q, x[s : s + chunk]) + x2[s : s + chunk]
            total += ((d2 < radius**2) & ok[s : s + chunk] & (alpha > 0.5)[..., None]).sum(0)
        return (total / P).t()

    def _initial_hypotheses(
        self, scores: Tensor, poses: Tensor, flips: Tensor | None, distances: tuple[float, ...], reserved: Tensor | None
    ):
        """([B, H, 3] poses, [B, H] distances, [B, H] flipped) from [B, F*T] template scores.

        ``top_k`` orientations over the whole grid, then ``prior_top_k`` more among the ``reserved``
        templates ([T] bool: the prior's block) not picked yet; each also flipped when asked.
        """
        cfg = self.cfg
        B = scores.shape[0]
        T, nF = len(poses), len(distances)
        dists = torch.tensor(distances, device=scores.device, dtype=poses.dtype)
        best, f_idx = scores.view(B, nF, T).max(1)  # [B, T]: each orientation at its best distance
        lowest = torch.finfo(best.dtype).min
        if reserved is not None:
            reserved = reserved.to(scores.device)
        paired = cfg.flip_hypotheses and flips is not None
        if paired:
            # Orientations pair with their azimuth + pi twin: pick pairs, so that a pair is never
            # refined twice; each pair gives its better member and that one's flip.
            flips = flips.to(scores.device)
            twin = best[:, flips]
            canonical = torch.arange(T, device=scores.device) < flips
            value = torch.where(canonical, torch.maximum(best, twin), lowest)
            if reserved is not None:
                reserved = torch.where(canonical, reserved | reserved[flips], False)
        else:
            value = best
        picks = [value.topk(min(cfg.top_k, T), dim=1).indices]
        if reserved is not None and cfg.prior_top_k > 0 and bool(reserved.any()):
            rest = value.masked_fill(~reserved, lowest).scatter(1, picks[0], lowest)
            picks.append(rest.topk(min(cfg.prior_top_k, int(reserved.sum())), dim=1).indices)
        idx = torch.cat(picks, 1)  # [B, k]
        if paired:
            idx = torch.where(best.gather(1, idx) >= twin.gather(1, idx), idx, flips[idx])
        k = idx.shape[1]
        init = poses[idx]  # [B, k, 3]
        dist = dists[f_idx.gather(1, idx)]  # [B, k]
        flipped = torch.zeros(B, k, dtype=torch.bool, device=scores.device)
        if cfg.flip_hypotheses:
            flip = init.clone()
            flip[..., 0] = flip[..., 0] + math.pi
            init = torch.cat([init, flip], 1)
            dist = torch.cat([dist, dist], 1)
            flipped = torch.cat([flipped, ~flipped], 1)
        return init, dist, flipped

    def estimate(
        self,
        feature_maps: Tensor,
        volume: GaussianVolume,
        volume_features: Tensor,
        bank: Tensor,
        Ks: Tensor,
        class_key: object = None,
        prior: ClassPosePrior | None = None,
        distance: float | None = None,
        init: Pose | Tensor | None = None,
        steps: int | None = None,
    ) -> PoseResult:
        """Poses of B images showing the same class.

        Args:
            feature_maps: [B, D, h, w] unit features.
            volume: the class's geometry; volume_features: [N, D]; bank: [M, D].
            Ks: [B, 3, 3] intrinsics at feature-map scale (images may differ in principal point
                and focal length).
            class_key: identifies the class for the template cache (and for ``self.priors``).
            prior: the class's pose prior; default ``self.priors.for_class(class_key)`` if the
                estimator holds priors.
            distance: initial distance; default the prior's median distance, else ``cfg.distance``.
            init: B poses (a :class:`~rendering.Pose`, or [B, 4] rows of azimuth, elevation, theta, distance)
                to refine from instead of the templates'
                best hypotheses: the diagnosis's "refinement started at the ground truth" (the bound the
                features set).
            steps: refinement steps instead of ``cfg.steps`` (0: the best template, the diagnosis's
                "template stage alone").
        """
        cfg = self.cfg
        B, _, h, w = feature_maps.shape
        if Ks.shape != (B, 3, 3):
            raise ValueError(f"Ks: expected [{B}, 3, 3], got {tuple(Ks.shape)}")
        if prior is None and self.priors is not None and class_key is not None:
            prior = self.priors.for_class(class_key)
        d0 = float(distance) if distance is not None else prior.distance_median if prior is not None else cfg.distance
        if not d0 > 0:
            raise ValueError(f"distance: must be > 0, got {d0}")
        grid = search_grid(cfg, d0, prior, prior_distance=distance is None)
        bounds = distance_bounds(cfg, prior, prior_distance=distance is None)
        dev = feature_maps.device
        bg = background_scores(feature_maps, bank, cfg.clutter)  # [B, h, w]
        fmap = feature_maps.permute(0, 2, 3, 1)  # [B, h, w, D]

        if isinstance(init, Pose):
            init = init.as_tensor().to(dev)
        match = None  # (points, matched, radius) when hypotheses are ranked by inliers
        if init is not None:
            if init.shape != (B, 4):
                raise ValueError(
                    f"init: expected [{B}, 4] (azimuth, elevation, theta, distance), got {tuple(init.shape)}"
                )
            init, dist = init[:, None, :3].to(fmap.dtype), init[:, None, 3].to(fmap.dtype)
            flipped = torch.zeros(B, 1, dtype=torch.bool, device=dev)  # one hypothesis: nothing to rank
        else:
            if cfg.ranking == "inliers":
                points, matched = best_matches(fmap, volume_features, volume.means, bg)
                match = (points, matched, cfg.inlier_radius * volume.spacing)
            hypotheses = self._template_hypotheses(
                feature_maps, volume, volume_features, Ks, fmap, bg, class_key, grid, match
            )
            init, dist, flipped = hypotheses

        # 2. Refinement of all hypotheses of all images at once.
        H = init.shape[1]
        params = torch.cat([init, dist.log()[..., None]], -1).to(fmap.dtype)  # [B, H, 4]
        if bounds is not None:
            log_lo, log_hi = math.log(bounds[0]), math.log(bounds[1])
            params[..., 3].clamp_(log_lo, log_hi)
        m = torch.zeros_like(params)
        v = torch.zeros_like(params)
        b1, b2 = cfg.betas
        score = None
        n_steps = cfg.steps if steps is None else steps
        # What every step renders is checked here, once: the steps render without value checks,
        # each of which would wait for the GPU. Poses that turn non-finite on the way are still
        # refused, by the checked final render.
        self._check_render_inputs(volume, volume_features, params, Ks, (h, w))
        with value_checks(False):
            for step in range(n_steps):
                if 0 < cfg.prune_after == step and cfg.keep < H and score is not None:
                    rank = self._rank(volume, params, Ks, score, match, (h, w))
                    keep = rank.topk(cfg.keep, dim=1).indices  # [B, keep]
                    params, m, v = (t.gather(1, keep[..., None].expand(-1, -1, 4)) for t in (params, m, v))
                    flipped = flipped.gather(1, keep)
                    H = cfg.keep
                p = params.detach().requires_grad_(True)
                score = self._score(volume, volume_features, p, Ks, fmap, bg, (h, w))  # [B, H]
                (grad,) = torch.autograd.grad((1 - score).sum(), p)
                self.rendered["forward_backward"] += B * H
                score = score.detach()
                lr = cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * step / max(n_steps, 1)))
                m = b1 * m + (1 - b1) * grad
                v = b2 * v + (1 - b2) * grad * grad
                t = step + 1
                params = params - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + 1e-8)
                if bounds is not None:  # projected: the step may not leave the prior's distances
                    params[..., 3].clamp_(log_lo, log_hi)
        with torch.no_grad():
            final = self._score(volume, volume_features, params, Ks, fmap, bg, (h, w))
        self.rendered["forward"] += B * H
        best = self._rank(volume, params, Ks, final, match, (h, w)).argmax(1)
        rows = torch.arange(B, device=dev)
        chosen = params[rows, best]
        az, el, th = canonical_pose(chosen[:, 0], chosen[:, 1], chosen[:, 2])
        return PoseResult(
            azimuth=az,
            elevation=el,
            theta=th,
            distance=chosen[:, 3].exp(),
            score=final[rows, best],
            flipped=flipped[rows, best],
        )

    @torch.no_grad()
    def score_poses(
        self,
        feature_maps: Tensor,
        volume: GaussianVolume,
        volume_features: Tensor,
        bank: Tensor,
        Ks: Tensor,
        poses: Tensor,
        per_cell: bool = False,
    ) -> Tensor:
        """Render-and-compare scores of given poses, by the objective :meth:`estimate` climbs.

        Args:
            feature_maps: [B, D, h, w] unit features; volume, volume_features [N, D], bank [M, D]: one class.
            Ks: [B, 3, 3] intrinsics at feature-map scale.
            poses: [B, H, 4] rows of azimuth, elevation, theta (radians) and distance.
            per_cell: return each cell's term, max(object, background) [B, H, h, w], instead of their mean.

        Returns:
            [B, H] scores (an estimate's ``score`` for its own pose), or [B, H, h, w] with ``per_cell``.
        """
        B, _, h, w = feature_maps.shape
        if poses.dim() != 3 or poses.shape[0] != B or poses.shape[2] != 4:
            raise ValueError(f"poses: expected [{B}, H, 4], got {tuple(poses.shape)}")
        bg = background_scores(feature_maps, bank, self.cfg.clutter)
        fmap = feature_maps.permute(0, 2, 3, 1)
        params = torch.cat([poses[..., :3], poses[..., 3:].log()], -1).to(fmap.dtype)
        return self._score(volume, volume_features, params, Ks, fmap, bg, (h, w), per_cell=per_cell)

    def _template_hypotheses(self, feature_maps, volume, volume_features, Ks, fmap, bg, class_key, grid, match=None):
        """Templates, one set per focal length in the batch, principal point at the map centre: the
        kept hypotheses ([B, H, 3] angles, [B, H] distances, [B, H] flipped). ``match``: (points
        [B, h, w, 3], matched [B, h, w], radius) from :func:`best_matches` ranks by inliers."""
        B, _, h, w = feature_maps.shape
        dev = feature_maps.device
        scores = poses = None
        focals = torch.round(Ks[:, :2, :2].diagonal(dim1=-2, dim2=-1) * 1000).long()  # [B, 2]
        groups = torch.unique(focals, dim=0)
        offsets = principal_offsets(Ks, (h, w))
        shifted_f, shifted_bg = shift_to_centre(fmap, bg, offsets)
        if match is not None:
            points, matched = shift_to_centre(match[0], match[1].float(), offsets, pad_background=0.0)
            matched = matched > 0.5
        with torch.no_grad():
            for focal in groups:
                members = torch.nonzero((focals == focal).all(1))[:, 0]
                K0 = Ks[members[0]].detach().clone()
                K0[0, 2], K0[1, 2] = w / 2, h / 2
                key = (class_key, tensor_identity(volume.means), tensor_identity(volume_features), str(dev),
                       int(focal[0]), int(focal[1]), h, w, grid)  # fmt: skip
                poses, renders = self.templates(key, volume, volume_features, K0, (h, w), grid)
                s = self.score_templates(renders, shifted_f[members], shifted_bg[members], self.cfg.temperature)
                if match is not None:
                    _, point_renders = self.templates(
                        (*key, "points"), volume, self._point_features(volume), K0, (h, w), grid, torch.float32
                    )
                    inliers = self.score_template_inliers(point_renders, points[members], matched[members], match[2])
                    s = inliers_then_score(inliers, s, h * w)
                if scores is None:
                    scores = s.new_empty(B, s.shape[1])
                scores[members] = s
        reserved = prior_mask(grid) if len(grid.blocks) > 1 else None
        return self._initial_hypotheses(scores, poses, flip_index(grid), grid.distances, reserved)

    @staticmethod
    def _point_features(volume: GaussianVolume) -> Tensor:
        """[N, 4] (x, y, z, 1): rendered, the alpha-weighted surface point and the alpha."""
        means = volume.means.float()
        return torch.cat([means, torch.ones_like(means[:, :1])], 1)

    def _rank(self, volume, params: Tensor, Ks: Tensor, score: Tensor, match, size) -> Tensor:
        """[B, H] what ranks [B, H, 4] hypotheses: their ``score`` [B, H], or with ``match`` (see
        :meth:`_template_hypotheses`) their inlier share, the score breaking ties."""
        if match is None:
            return score
        points, matched, radius = match
        B, H, _ = params.shape
        with torch.no_grad():
            rendered = self._render(volume, self._point_features(volume), *self._cameras(params.detach(), Ks), size)
        self.rendered["forward"] += B * H
        inliers = count_inliers(rendered.view(B, H, *rendered.shape[1:]), points[:, None], matched[:, None], radius)
        return inliers_then_score(inliers, score, size[0] * size[1])

    @staticmethod
    def _cameras(params: Tensor, Ks: Tensor) -> tuple[Tensor, Tensor]:
        """Viewmats [B*H, 4, 4] and intrinsics [B*H, 3, 3] of [B, H, 4] hypotheses (azimuth, elevation,
        theta, log distance) of images with intrinsics Ks [B, 3, 3]."""
        B, H, _ = params.shape
        flat = params.reshape(B * H, 4)
        viewmats = pose_to_viewmat(flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3].exp())
        return viewmats, Ks.repeat_interleave(H, 0)

    def _check_render_inputs(self, volume, features, params: Tensor, Ks: Tensor, size) -> None:
        """Raise the error :meth:`_score` of [B, H, 4] hypotheses would raise, without rendering."""
        h, w = size
        viewmats, Ks = self._cameras(params, Ks)  # pose_to_viewmat checks the poses
        check_raster_inputs(volume.means, volume.quats, volume.scales, volume.opacities, features, viewmats, Ks, w, h)

    def _score(self, volume, features, params: Tensor, Ks: Tensor, fmap: Tensor, bg: Tensor, size, per_cell=False):
        """[B, H] scores of [B, H, 4] hypotheses (one render call for all); with ``per_cell`` the
        [B, H, h, w] terms they are the means of."""
        B, H, _ = params.shape
        rendered = self._render(volume, features, *self._cameras(params, Ks), size)
        rendered = rendered.view(B, H, *rendered.shape[1:])  # [B, H, h, w, D]
        terms = compare_cells if per_cell else compare
        return terms(rendered, fmap[:, None], bg[:, None], self.cfg.temperature)
