"""Render-and-compare pose estimation, batched over images and hypotheses.

For an image's feature map F and a class volume with features C, a pose is scored by rendering
the volume (features R, alpha) and comparing per pixel the object score ``R_i . F_i`` with a
background score ``c_i``: ``score = mean_i max(R_i . F_i, c_i)`` and the loss ``1 - score``
(NOVUM's form). ``c_i`` is the bank's best vector ``max_b F_i . b`` (``PoseConfig.clutter="max"``),
the bank's normalised mean vector (``"mean"``, the authors' code with ``use_clutter: true``) or -1,
no background at all (``"none"``, their default: the mean object score).

- :mod:`.config`: :class:`PoseConfig` and ``--pose key=value`` (:func:`pose_config`).
- :mod:`.grid`: the template grid (the authors' grid as the floor, the class prior's block, distances).
- :mod:`.objective`: the score, the per-cell terms, correspondence inliers, the principal-point shift.
- :mod:`.templates`: pre-rendered templates, their caches (in memory, on disk), and scoring images against them
  by products.
- :mod:`.refinement`: the Adam step, the learning-rate schedules, canonical angles.
- :mod:`.estimator`: :class:`PoseEstimator` (templates, then Adam through the renderer) and :class:`PoseResult`.
"""

from .config import RANKINGS, PoseConfig, pose_config
from .estimator import PoseEstimator, PoseResult
from .grid import SearchGrid, distance_bounds, flip_index, prior_mask, search_grid, template_poses
from .objective import (
    best_matches,
    compare,
    compare_cells,
    count_inliers,
    inliers_then_score,
    principal_offsets,
    shift_to_centre,
)
from .refinement import adam_step, canonical_pose, cosine_lr
from .templates import (
    TemplateCache,
    TemplateStore,
    score_template_inliers,
    score_templates,
    template_chunk,
    template_key,
    tensor_identity,
)

__all__ = [
    "RANKINGS",
    "PoseConfig",
    "PoseEstimator",
    "PoseResult",
    "SearchGrid",
    "TemplateCache",
    "TemplateStore",
    "adam_step",
    "best_matches",
    "canonical_pose",
    "compare",
    "compare_cells",
    "cosine_lr",
    "count_inliers",
    "distance_bounds",
    "flip_index",
    "inliers_then_score",
    "pose_config",
    "principal_offsets",
    "prior_mask",
    "score_template_inliers",
    "score_templates",
    "search_grid",
    "shift_to_centre",
    "template_chunk",
    "template_key",
    "template_poses",
    "tensor_identity",
]
