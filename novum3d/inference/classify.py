"""Geometry-free classification: one matrix product and two max reductions per pixel.

The scores live in :mod:`novum3d.model.matching` (the model uses them too, and the model layer
does not import inference); this module re-exports them under their historical import path.
"""

from __future__ import annotations

from ..model.matching import class_scores, class_scores_torch, class_scores_triton

__all__ = ["class_scores", "class_scores_torch", "class_scores_triton"]
