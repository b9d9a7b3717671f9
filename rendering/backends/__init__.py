"""Rasterizer backends: ``torch`` (reference, any device) and ``gsplat`` (CUDA)."""

from .gsplat_backend import gsplat_available, rasterize_gsplat
from .torch_backend import rasterize_torch

__all__ = ["gsplat_available", "rasterize_gsplat", "rasterize_torch"]
