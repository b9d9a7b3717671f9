"""Settings of the render-and-compare pose estimator, and the command line's ``--pose key=value``.

Each default was chosen on oracle feature maps and validation data; docs/experiments/pose-estimator-defaults.md
holds those measurements, docs/experiments/pose-objective.md the objectives and rankings tried.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...config import apply_overrides, from_mapping
from ...errors import ConfigError
from ...model.matching import BACKGROUND_REDUCTIONS

RANKINGS = ("compare", "inliers")
LR_SCHEDULES = ("cosine", "step")

# The authors' grid (GenIntel/NOVUM src/lib/helper.py L37-39; NeMo code/MeshPoseSolveAll.py L193-195).
_THEIR_GRID = {"azimuth_bins": 12, "elevations_deg": [-30.0, 0.0, 30.0, 60.0], "thetas_deg": [-30.0, 0.0, 30.0]}
# One hypothesis, the best template at the initial distance: no prior block, no other distances, no pruning.
_ONE_START = {"top_k": 1, "prior_top_k": 0, "prior_grid": False, "flip_hypotheses": False,
              "distance_factors": [1.0], "prune_after": 0, "keep": 1, "prior_distance_margin": 0.0,
              "ranking": "compare", "temperature": 0.0}  # fmt: skip

# What each preset sets; the other fields keep their defaults. "authors": GenIntel/NOVUM src/inference.py L208-267
# with config/defaults.yaml L78-87: the best of the 144 templates (get_init_pos, src/lib/losses.py L60-82), then 30
# Adam steps at a constant lr 0.05 (the ExponentialLR of L230 is never stepped), betas (0.4, 0.6), the loss 1 - the
# mean object score (use_clutter: false). "nemo": Angtian/NeMo code/MeshPoseSolveAll.py L23-26, L225-250: the same
# grid and start, 300 steps from lr 0.05 falling 5x every 100, the loss against the clutter bank's mean vector
# (turn_off_clutter False). Neither runs under a class prior; both refine the camera position and theta where
# PoseEstimator refines azimuth, elevation, theta and log distance.
PRESETS: dict[str, dict] = {
    "novum3d": {},
    "authors": {**_THEIR_GRID, **_ONE_START, "steps": 30, "lr": 0.05, "lr_final": 0.05, "lr_schedule": "cosine",
                "betas": [0.4, 0.6], "clutter": "none"},
    "nemo": {**_THEIR_GRID, **_ONE_START, "steps": 300, "lr": 0.05, "lr_final": 0.05, "lr_schedule": "step",
             "lr_step_every": 100, "lr_step_gamma": 0.2, "betas": [0.4, 0.6], "clutter": "mean"},
}  # fmt: skip


@dataclass
class PoseConfig:
    """Settings of :class:`~novum3d.inference.pose.PoseEstimator`.

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
    40 RB + 1 R. Template memory: 684 templates x 80 x 100 x 128 in bfloat16 = 1.4 GB per class on
    CUDA (4x at ``model.stride=4`` for the same image size; at 256x256, 64 x 64 cells, about 0.7 GB).
    """

    # The floor: the authors' grid (GenIntel/NOVUM src/lib/helper.py L37-40), 12 azimuths x
    # {-30, 0, 30, 60} x {-30, 0, 30} degrees; with a prior, its own block (below) is added.
    azimuth_bins: int = 12
    elevations_deg: list[float] = field(default_factory=lambda: [-30.0, 0.0, 30.0, 60.0])
    thetas_deg: list[float] = field(default_factory=lambda: [-30.0, 0.0, 30.0])
    # Initial distance when neither ``estimate(distance=...)`` nor a class prior gives one
    # (preprocessed PASCAL3D+ brings objects to 5).
    distance: float = 5.0
    # Templates at the initial distance x each factor: [1.0] alone lost 13.5 points on oracle maps with
    # distances +-10% off.
    distance_factors: list[float] = field(default_factory=lambda: [0.8, 1.0, 1.25])
    top_k: int = 2  # best template orientations kept per image
    # With a prior: this many more orientations, the best of the prior's block not kept already
    # (one reserved slot beat one more global slot on noisy oracle maps, 92.2 vs 91.1%).
    prior_top_k: int = 1
    # Also refine azimuth + pi of every kept orientation; within 1.5 points on 9 oracle scenarios, for 2x the cost.
    flip_hypotheses: bool = False
    steps: int = 30  # the authors' (src/inference.py); 60 moved validation by at most 0.8 points
    lr: float = 0.05  # the authors'; 0.1 diverged on narrow-basin oracle maps (26.6% against 85.4%)
    lr_final: float = 0.0025  # cosine decay from lr to lr_final; a constant lr gave higher median errors
    # The authors' Adam betas: against (0.9, 0.999), +2 to +4 points on oracle maps (median 2.7 -> 0.5 deg, clean).
    betas: tuple[float, float] = (0.4, 0.6)
    # After this many steps only the ``keep`` best hypotheses per image go on (0: never): 1.85x faster,
    # validation within 0.6 points of no pruning.
    prune_after: int = 10
    keep: int = 1
    # With a class prior: one more template block over the prior's elevation x theta range, at
    # multiples of these steps (see grid.search_grid). prior_grid=False keeps only the floor.
    prior_grid: bool = True
    prior_elevation_step_deg: float = 15.0
    prior_theta_step_deg: float = 10.0
    template_dtype: str = "auto"  # "auto" (bfloat16 on CUDA, float32 elsewhere), "float32", "bfloat16"
    backend: str = "auto"
    # The background score a pixel's object score must beat (model.matching.background_scores): "max",
    # the bank's best vector (the classifier's rule); "mean", its normalised mean vector (the authors'
    # use_clutter: true, src/inference.py L80); "none", no background (their default, config/defaults.yaml
    # L79). Validation chose "max": "mean" lost up to 4 points of Acc@pi/6, "none" 6.4 of Acc@pi/18.
    clutter: str = "max"
    # 0: the hard max(object, background) per pixel; t > 0 its soft form t log(exp(obj / t) + exp(bg / t))
    # (model.matching.object_or_background). At 0.07 validation stayed within the seeds' spread.
    temperature: float = 0.0
    # 0: the distance is free, as in the authors' refinement. m >= 1: with a class prior (and no distance
    # given) templates and steps stay within [distance_low / m, distance_high * m]; 1.05 moved validation
    # by under half a point.
    prior_distance_margin: float = 0.0
    # What ranks the hypotheses (templates, pruning, final choice); refinement always climbs the score.
    # "compare": the render-and-compare score (NOVUM's). "inliers": cells whose best-matching Gaussian
    # beats the background and lies within ``inlier_radius`` spacings of the surface point the pose
    # renders there, the score breaking ties; validation moved by at most 1.2 points.
    ranking: str = "compare"
    inlier_radius: float = 3.0  # spacings; training keeps Gaussians within 2 from being negatives
    # The named settings the others start from (:data:`PRESETS`; :func:`pose_config` lays the caller's fields
    # and ``--pose`` overrides over them): "novum3d" (these defaults), "authors" (GenIntel/NOVUM's inference),
    # "nemo" (Angtian/NeMo's pose solver).
    preset: str = "novum3d"
    # How lr falls over the steps: "cosine" (from lr to lr_final), or "step" (times lr_step_gamma after every
    # lr_step_every steps: NeMo's ExponentialLR(gamma=0.2) stepped every 100, code/MeshPoseSolveAll.py L231, L249).
    lr_schedule: str = "cosine"
    lr_step_every: int = 100
    lr_step_gamma: float = 0.2

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
        if self.preset not in PRESETS:
            raise ValueError(f"preset: one of {list(PRESETS)}, got {self.preset!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule: one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.lr_step_every < 1 or not 0 < self.lr_step_gamma <= 1:
            raise ValueError(
                f"lr_step_every >= 1 and 0 < lr_step_gamma <= 1 are required, got {self.lr_step_every}, "
                f"{self.lr_step_gamma}"
            )

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


def pose_config(fields: dict, overrides: list[str], where: str = "--pose") -> PoseConfig:
    """A validated :class:`PoseConfig`: the defaults, then the preset's fields (``preset`` named in ``fields`` or
    the overrides; :data:`PRESETS`), then ``fields``, then the ``key=value`` overrides (a command's ``--pose``);
    errors name ``where``. ``fields`` itself is not changed.

    Example:
        >>> cfg = pose_config({"distance": 5.0}, ["preset=authors", "clutter=mean"])
        >>> cfg.preset, cfg.top_k, cfg.lr_final, cfg.clutter, cfg.distance
        ('authors', 1, 0.05, 'mean', 5.0)
    """
    given = apply_overrides(dict(fields), overrides, where=where)
    preset = given.get("preset", "novum3d")
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ConfigError(f"{where}: preset: one of {list(PRESETS)}, got {preset!r}", field=f"{where} preset")
    return from_mapping(PoseConfig, {**PRESETS[preset], **given}, where=where)
