"""Released checkpoints of GenIntel/NOVUM, CAVE and NeMo as novum3d checkpoints (``scripts/convert_checkpoint.py``).

- :mod:`.source`: reading a released file and telling its format (``read_source``).
- :mod:`.layout`: the authors' ``NetE2E`` state onto novum3d's ResNet-50 + U-Net backbone (``map_backbone``).
- :mod:`.meshes`: the authors' cuboid (and CAVE's ellipsoid) meshes rebuilt from PASCAL3D+'s CAD models, OFF files,
  and one Gaussian per vertex (``mesh_from_cad``, ``read_off``, ``mesh_gaussians``).
- :mod:`.convert`: the converted checkpoint (``convert_release``, ``convert``, ``save_converted``).
"""

from .convert import AUTHORS_CLASSES, BANK_SIZE, IMAGE_SIZE, convert, convert_release, memory_rows, save_converted
from .layout import map_backbone
from .meshes import Mesh, authors_cuboid, authors_ellipsoid, coverage_box, mesh_from_cad, mesh_gaussians, read_off
from .source import FORMATS, RELEASES, SourceCheckpoint, read_source

__all__ = [
    "AUTHORS_CLASSES",
    "BANK_SIZE",
    "FORMATS",
    "IMAGE_SIZE",
    "RELEASES",
    "Mesh",
    "SourceCheckpoint",
    "authors_cuboid",
    "authors_ellipsoid",
    "convert",
    "convert_release",
    "coverage_box",
    "map_backbone",
    "memory_rows",
    "mesh_from_cad",
    "mesh_gaussians",
    "read_off",
    "read_source",
    "save_converted",
]
