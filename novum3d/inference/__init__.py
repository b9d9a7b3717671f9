"""Classification and pose estimation with trained neural object volumes."""

from .classify import class_scores

__all__ = ["class_scores"]
