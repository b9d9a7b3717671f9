"""novum3d: NOVUM (Neural Object Volumes) as a toolkit.

Robust image classification and category-level 3D pose estimation from per-category volumes
of feature-carrying 3D Gaussians, rendered differentiably by :mod:`rendering`.
"""

__version__ = "0.1.0"
