"""Data: PASCAL3D+ family readers and the synthetic PASCAL3D+-format generator."""

from .annotations import AnnotationError, ObjectAnnotation, load_annotation, save_annotation
from .pascal3d import OOD_NUISANCES, OODCV, Pascal3DPreprocessed, Pascal3DRaw, occluded_subset

__all__ = [
    "OODCV",
    "OOD_NUISANCES",
    "AnnotationError",
    "ObjectAnnotation",
    "Pascal3DPreprocessed",
    "Pascal3DRaw",
    "load_annotation",
    "occluded_subset",
    "save_annotation",
]
