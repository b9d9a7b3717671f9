"""Synthetic PASCAL3D+-format data: procedural meshes, a CPU mesh renderer, nuisances, splits."""

from .generate import OOD_SPLITS, PRESETS, Job, Preset, generate, plan_jobs, render_job
from .splits import open_splits

__all__ = ["OOD_SPLITS", "PRESETS", "Job", "Preset", "generate", "open_splits", "plan_jobs", "render_job"]
