"""The meshes whose vertices carry a released checkpoint's features, rebuilt from PASCAL3D+'s CAD models.

GenIntel/NOVUM and NeMo learn one feature per vertex of a cuboid mesh per class, CAVE per vertex of an
ellipsoid. The meshes are not in the checkpoints, but each is a deterministic function of the PASCAL3D+ CAD
files: a box holding 99% of the CAD vertices along each axis, meshed into a grid. This module ports those
builders so a user's PASCAL3D+ copy gives the same vertices in the same order (the order is the memory's
row order), and reads the ``.off`` files the authors' scripts write, for users who have them.

Arithmetic follows NumPy 1.x promotion, the authors' environment: the box's edge lengths are float32
differences of float32 CAD coordinates, everything after that float64, and the vertices are written with 16
decimals and read back as float32 (their ``save_off`` / ``load_off``, GenIntel/NOVUM ``src/lib/MeshUtils.py``
L11-40). Under NumPy 2 a vertex may differ in its last float32 bit, never in count or order (barring a box whose
edge is an exact multiple of the grid step).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rendering import GaussianVolume

from ...errors import DataError

LINEAR_COVERAGE = 0.99  # GenIntel/NOVUM src/create_p3d.py L22-27; NeMo tools/CreateCuboidMesh.py L29
NUMBER_VERTICES = 1000
SHAPES = ("cuboid", "ellipsoid")


@dataclass(frozen=True)
class Mesh:
    """Vertices [N, 3] (float32, PASCAL3D+'s CAD frame: z up) and triangles [F, 3] (int64)."""

    vertices: np.ndarray
    faces: np.ndarray

    def __len__(self) -> int:
        return len(self.vertices)

    def digest(self) -> str:
        """sha256 of the vertices' float32 bytes (their order included)."""
        return hashlib.sha256(np.ascontiguousarray(self.vertices, dtype=np.float32).tobytes()).hexdigest()


def read_off(path: str | Path) -> Mesh:
    """An OFF file: ``OFF``, then ``n_vertices n_faces n_edges``, the vertices, then faces ``k i j l ...``
    (polygons are split into fans of triangles). Vertices are read as float32, as the authors' ``load_off``
    does; a malformed file is a DataError naming it."""
    path = Path(path)
    try:
        tokens = path.read_text().split()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable OFF mesh ({exc})", path=path) from exc
    if not tokens or not tokens[0].startswith("OFF"):
        raise DataError("not an OFF mesh (the first word is not OFF)", path=path)
    rest = tokens[1:] if tokens[0] == "OFF" else [tokens[0][3:], *tokens[1:]]
    try:
        n_vertices, n_faces = int(rest[0]), int(rest[1])
        values = np.asarray(rest[3 : 3 + 3 * n_vertices], dtype=np.float64)
        if values.size != 3 * n_vertices or n_vertices < 1:
            raise ValueError(f"{n_vertices} vertices announced, {values.size // 3} found")
        faces, at = [], 3 + 3 * n_vertices
        for _ in range(n_faces):
            k = int(rest[at])
            ids = [int(i) for i in rest[at + 1 : at + 1 + k]]
            if len(ids) != k or k < 3:
                raise ValueError(f"face {len(faces)}: {k} indices announced, {len(ids)} found")
            faces.extend((ids[0], ids[i], ids[i + 1]) for i in range(1, k - 1))
            at += 1 + k
    except (IndexError, ValueError) as exc:
        raise DataError(f"malformed OFF mesh ({exc})", path=path) from exc
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= n_vertices):
        raise DataError(f"malformed OFF mesh (a face index outside 0..{n_vertices - 1})", path=path)
    return Mesh(values.reshape(-1, 3).astype(np.float32), faces)


def cad_files(pascal3d: str | Path, category: str) -> list[Path]:
    """``<pascal3d>/CAD/<category>/*.off`` with names shorter than 7 characters (``01.off`` ... ``10.off``), the
    files the authors' builders read (GenIntel/NOVUM ``src/lib/createCuboidMesh.py`` L162-163), in name order."""
    folder = Path(pascal3d) / "CAD" / category
    if not folder.is_dir():
        raise DataError(
            f"no CAD folder for {category!r}; --pascal3d is the PASCAL3D+_release1.1 folder (holding CAD/)",
            path=folder,
        )
    files = sorted(p for p in folder.glob("*.off") if len(p.name) < 7)
    if not files:
        raise DataError("no CAD models (NN.off) in this folder", path=folder)
    return files


def coverage_box(vertices: np.ndarray, coverage: float = LINEAR_COVERAGE) -> list[tuple[np.float32, np.float32]]:
    """Per axis, the shortest interval holding ``int(N * coverage) + 1`` of the N sorted coordinates (the first
    such interval): GenIntel/NOVUM ``src/lib/createCuboidMesh.py`` L169-176. Returns float32 (low, high) x 3.

    Example:
        >>> inliers = np.linspace(0, 1, 199)[:, None] * np.array([1.0, 2.0, 3.0])
        >>> v = np.concatenate([inliers, [[9.0, 9.0, 9.0]]])  # 99% of 200 points: 199 of them
        >>> [(float(lo), float(hi)) for lo, hi in coverage_box(v)]
        [(0.0, 1.0), (0.0, 2.0), (0.0, 3.0)]
    """
    vertices = np.asarray(vertices, dtype=np.float32)
    keep = int(vertices.shape[0] * coverage)
    if keep < 1:
        raise ValueError(f"coverage_box: {vertices.shape[0]} vertices at coverage {coverage} keep none")
    out = []
    for axis in range(3):
        v = np.sort(vertices[:, axis])
        i = int(np.argmin(v[keep:] - v[:-keep]))
        out.append((v[i], v[i + keep]))
    return out


def _as_written(vertices: np.ndarray) -> np.ndarray:
    """float64 vertices as ``save_off`` writes them (``%.16f``) and ``load_off`` reads them back (float32)."""
    text = " ".join(f"{x:.16f}" for x in np.asarray(vertices, dtype=np.float64).ravel())
    return np.asarray(text.split(), dtype=np.float64).astype(np.float32).reshape(-1, 3)


def _grid_face(rows: int, cols: int, base: int) -> list[tuple[int, int, int]]:
    """The two triangles of every cell of a rows x cols vertex grid numbered row-major from ``base``."""
    faces = []
    for m in range(rows - 1):
        for n in range(cols - 1):
            a = base + m * cols + n
            faces.append((a, a + 1, a + cols))
            faces.append((a + cols + 1, a + 1, a + cols))
    return faces


def authors_cuboid(box: list[tuple[float, float]], number_vertices: int = NUMBER_VERTICES) -> Mesh:
    """The authors' cuboid mesh of a box (GenIntel/NOVUM ``src/lib/createCuboidMesh.py`` ``meshelize`` L6-153;
    NeMo ``tools/CreateCuboidMesh.py`` L33-108, the same).

    The grid step is ``sqrt(2 * area / (2 * number_vertices))``; each axis gets ``int(length / step + 1)``
    evenly spaced samples from its low end to its high end. Six faces, each a full grid of its own (edges and
    corners repeat on the faces that share them), in this order: z low and z high (y-major, x inner), y low and
    y high (z-major, x inner), x low and x high (z-major, y inner).

    Example:
        >>> lo, hi = np.float32(-0.5), np.float32(0.5)
        >>> mesh = authors_cuboid([(np.float32(-1), np.float32(1)), (lo, hi), (lo, hi)], number_vertices=10)
        >>> len(mesh), mesh.vertices[:4].tolist()  # step 1: 3 x 2 x 2 samples, 2 * (6 + 6 + 4) vertices
        (32, [[-1.0, -0.5, -0.5], [0.0, -0.5, -0.5], [1.0, -0.5, -0.5], [-1.0, 0.5, -0.5]])
    """
    (x0, x1), (y0, y1), (z0, z1) = ((np.float32(a), np.float32(b)) for a, b in box)
    w, h, d = x1 - x0, y1 - y0, z1 - z0  # float32, as NumPy 1.x subtracts two float32 scalars
    area = float(np.float32(w * h + h * d + w * d)) * 2  # the sum of float32 products, then float64
    step = (area / (number_vertices * 2) * 2) ** 0.5
    xs, ys, zs = (
        float(lo) + np.linspace(0.0, float(n), int(float(n) / step + 1)) for lo, n in ((x0, w), (y0, h), (z0, d))
    )
    vertices, faces = [], []
    # (fixed axis, its value, the slow axis's samples, the fast axis's samples), the builder's order
    for fixed, value, slow, fast in (
        (2, zs[0], ys, xs), (2, zs[-1], ys, xs), (1, ys[0], zs, xs), (1, ys[-1], zs, xs), (0, xs[0], zs, ys),
        (0, xs[-1], zs, ys),
    ):  # fmt: skip
        faces += _grid_face(len(slow), len(fast), len(vertices))
        for s in slow:
            for f in fast:
                p = [0.0, 0.0, 0.0]
                p[fixed] = value
                p[{2: 1, 1: 2, 0: 2}[fixed]] = s
                p[{2: 0, 1: 0, 0: 1}[fixed]] = f
                vertices.append(p)
    return Mesh(_as_written(np.array(vertices)), np.asarray(faces, dtype=np.int64).reshape(-1, 3))


def authors_ellipsoid(box: list[tuple[float, float]], number_vertices: int = NUMBER_VERTICES) -> Mesh:
    """CAVE's ellipsoid mesh of a box (phamleyennhi/CAVE ``src/lib/createMesh.py`` ``meshelize_ellipsoid``
    L203-272): semi-axes half the box's edges, a (polar angle x azimuth) grid with ``n_theta`` rows (odd, from pole
    to pole) and ``n_phi`` columns, vertices row-major, two triangles per cell with the azimuth wrapping around.

    As published, the ellipsoid is centred at the origin, not at the box's centre (the centre is computed, L220-224,
    and never added, L250-252); this port does the same.

    Example:
        >>> one = (np.float32(-1), np.float32(1))
        >>> mesh = authors_ellipsoid([one, one, one], number_vertices=50)  # n_theta 5, n_phi 11
        >>> len(mesh), mesh.vertices[0].tolist(), mesh.faces.shape
        (55, [0.0, 0.0, 1.0], (88, 3))
    """
    (x0, x1), (y0, y1), (z0, z1) = ((np.float32(a), np.float32(b)) for a, b in box)
    a, b, c = float(x1 - x0) / 2, float(y1 - y0) / 2, float(z1 - z0) / 2
    radius = (a * b * c) ** (1 / 3)
    edge = (2 * (4 * math.pi * radius**2 / number_vertices) / math.sqrt(3)) ** 0.5
    n_theta = max(3, int(math.pi * radius / edge))
    n_theta += 1 - n_theta % 2  # odd: a row on the equator
    n_phi = max(3, int(2 * math.pi * radius / edge))
    phi, theta = np.meshgrid(np.linspace(0, 2 * np.pi, n_phi, endpoint=False), np.linspace(0, np.pi, n_theta))
    vertices = np.stack([a * np.sin(theta) * np.cos(phi), b * np.sin(theta) * np.sin(phi), c * np.cos(theta)], -1)
    faces = []
    for i in range(n_theta - 1):
        for j in range(n_phi):
            k = (j + 1) % n_phi
            faces += [(i * n_phi + j, (i + 1) * n_phi + j, (i + 1) * n_phi + k),
                      (i * n_phi + j, (i + 1) * n_phi + k, i * n_phi + k)]  # fmt: skip
    return Mesh(_as_written(vertices.reshape(-1, 3)), np.asarray(faces, dtype=np.int64))


def mesh_from_cad(
    pascal3d: str | Path,
    category: str,
    shape: str = "cuboid",
    number_vertices: int = NUMBER_VERTICES,
    cad_index: int | None = None,
) -> Mesh:
    """The authors' mesh of one category from ``<pascal3d>/CAD``: over all its CAD models (``cad_index`` None;
    NOVUM, CAVE and NeMo's ``single`` meshes) or over one (``cad_index`` n reads ``NN.off``; NeMo's ``multi``)."""
    if shape not in SHAPES:
        raise ValueError(f"shape: one of {SHAPES}, got {shape!r}")
    files = cad_files(pascal3d, category)
    if cad_index is not None:
        wanted = [p for p in files if p.name == f"{cad_index:02d}.off"]
        if not wanted:
            raise DataError(f"no CAD model {cad_index:02d}.off (found {[p.name for p in files]})", path=files[0].parent)
        files = wanted
    vertices = np.concatenate([read_off(p).vertices for p in files])
    build = authors_cuboid if shape == "cuboid" else authors_ellipsoid
    return build(coverage_box(vertices), number_vertices)


def mesh_gaussians(mesh: Mesh, scale_factor: float = 0.6, opacity: float = 1.0) -> GaussianVolume:
    """One isotropic Gaussian at every vertex, in the mesh's order (repeated vertices included: each carries its own
    feature), ``sigma = scale_factor * spacing`` with ``spacing = sqrt(surface area / distinct vertices)``.

    That spacing is the side of the square each vertex would own on an even grid: the lattice step on the
    authors' cuboids, whose steps differ slightly per axis, the same rule as ``rendering.volume_from_mesh``; and at
    0.6 of it neighbouring Gaussians render a closed surface, as novum3d's cuboid volumes do.
    """
    v = np.asarray(mesh.vertices, dtype=np.float64)
    tri = v[mesh.faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1).sum()
    distinct = len(np.unique(v, axis=0))
    if not area > 0:
        raise ValueError("mesh_gaussians: the mesh has no surface area")
    spacing = math.sqrt(area / distinct)
    n = len(v)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    return GaussianVolume(
        torch.as_tensor(mesh.vertices, dtype=torch.float32),
        torch.full((n, 3), scale_factor * spacing),
        quats,
        torch.full((n,), float(opacity)),
        spacing,
    )
