"""The corpus's part shapes: small numpy triangle meshes with vertex normals, each filling the unit box.

Every primitive spans [-0.5, 0.5] on each axis, so scaling it by a part's extents gives the part.
Curved surfaces carry smooth normals (shading interpolates them); flat faces get their own
vertices, so edges stay sharp. None is taken from the benchmark's mesh builders.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

PRIMITIVES = ("box", "cylinder", "frustum", "sphere", "dome", "torus", "prism")


@dataclass(frozen=True)
class Primitive:
    vertices: np.ndarray  # [V, 3] in [-0.5, 0.5]^3
    faces: np.ndarray  # [F, 3] int64
    normals: np.ndarray  # [V, 3] unit

    def __post_init__(self):
        for a in (self.vertices, self.faces, self.normals):
            a.setflags(write=False)  # cached and shared: no caller may change one


def _fit_unit_box(v: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices scaled into [-0.5, 0.5]^3 and the normals transformed with them (inverse transpose)."""
    lo, hi = v.min(0), v.max(0)
    extent = np.maximum(hi - lo, 1e-9)
    v = (v - (lo + hi) / 2) / extent
    n = n * extent
    return v, n / np.linalg.norm(n, axis=1, keepdims=True)


def _grid_faces(rows: int, cols: int, offset: int = 0, wrap: bool = True) -> np.ndarray:
    """Two triangles per quad of a rows x cols vertex grid (columns wrap around when ``wrap``)."""
    r, c = np.meshgrid(np.arange(rows - 1), np.arange(cols if wrap else cols - 1), indexing="ij")
    c1 = (c + 1) % cols
    v00, v01, v10, v11 = r * cols + c, r * cols + c1, (r + 1) * cols + c, (r + 1) * cols + c1
    quads = np.stack([np.stack([v00, v10, v11], -1), np.stack([v00, v11, v01], -1)], -2)
    return quads.reshape(-1, 3) + offset


def _cap(ring: np.ndarray, z: float, up: bool, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A flat disc closing ``ring`` [n, 2] at height z: fan from the centre."""
    n = len(ring)
    v = np.concatenate([[[0.0, 0.0, z]], np.column_stack([ring, np.full(n, z)])])
    i = np.arange(n)
    f = np.column_stack([np.zeros(n, int), 1 + i, 1 + (i + 1) % n]) + offset
    normal = np.tile([0.0, 0.0, 1.0 if up else -1.0], (n + 1, 1))
    return v, f, normal


def _merge(*parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    vs, fs, ns = zip(*parts, strict=True)
    return np.concatenate(vs), np.concatenate(fs).astype(np.int64), np.concatenate(ns)


def _box() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            u, w = [k for k in range(3) if k != axis]
            corners = np.zeros((4, 3))
            corners[:, axis] = 0.5 * sign
            corners[:, u] = [-0.5, 0.5, 0.5, -0.5]
            corners[:, w] = [-0.5, -0.5, 0.5, 0.5]
            normal = np.zeros((4, 3))
            normal[:, axis] = sign
            off = 4 * len(parts)
            parts.append((corners, np.array([[0, 1, 2], [0, 2, 3]]) + off, normal))
    return _merge(*parts)


def _frustum(top: float, sections: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A truncated cone about z, radius 1 at the bottom and ``top`` at the top (0: a cone)."""
    t = np.linspace(0, 2 * np.pi, sections, endpoint=False)
    ring = np.column_stack([np.cos(t), np.sin(t)])
    radii = np.array([1.0, top])
    rings = zip(radii, (-1.0, 1.0), strict=True)
    side = np.concatenate([np.column_stack([ring * r, np.full(sections, h)]) for r, h in rings])
    slope = (1.0 - top) / 2.0  # outward normal of a cone side: radial plus slope along z
    side_n = np.tile(np.column_stack([ring, np.full(sections, slope)]), (2, 1))
    side_n /= np.linalg.norm(side_n, axis=1, keepdims=True)
    parts = [(side, _grid_faces(2, sections), side_n)]
    parts.append(_cap(ring, -1.0, False, 2 * sections))
    if top > 0:
        parts.append(_cap(ring * top, 1.0, True, 3 * sections + 1))
    return _merge(*parts)


def _sphere(rings: int, sections: int, dome: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A UV sphere (poles as rings of coincident vertices); ``dome``: its upper half on a flat disc."""
    lat = np.linspace(0.0 if dome else -np.pi / 2, np.pi / 2, rings + 1)
    t = np.linspace(0, 2 * np.pi, sections, endpoint=False)
    la, lo = np.meshgrid(lat, t, indexing="ij")
    v = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1).reshape(-1, 3)
    parts = [(v, _grid_faces(rings + 1, sections), v.copy())]
    if dome:
        parts.append(_cap(np.column_stack([np.cos(t), np.sin(t)]), 0.0, False, len(v)))
    return _merge(*parts)


def _torus(thickness: float, sections: int, tube: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ring about z: tube radius ``thickness`` times the centre radius."""
    u = np.linspace(0, 2 * np.pi, sections, endpoint=False)
    w = np.linspace(0, 2 * np.pi, tube, endpoint=False)
    uu, ww = np.meshgrid(u, w, indexing="ij")
    centre = np.stack([np.cos(uu), np.sin(uu), np.zeros_like(uu)], -1)
    normal = np.stack([np.cos(ww) * np.cos(uu), np.cos(ww) * np.sin(uu), np.sin(ww)], -1)
    v = (centre + thickness * normal).reshape(-1, 3)
    r, c = np.meshgrid(np.arange(sections), np.arange(tube), indexing="ij")
    r1, c1 = (r + 1) % sections, (c + 1) % tube
    a, b, d, e = r * tube + c, r1 * tube + c, r1 * tube + c1, r * tube + c1
    f = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, e], -1).reshape(-1, 3)])
    return v, f.astype(np.int64), normal.reshape(-1, 3)


def _prism(radii: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A star-shaped polygon (vertex k at angle 2 pi k / n, radius radii[k]) extruded along z, flat sides."""
    n = len(radii)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False) + np.pi / n
    ring = np.column_stack([np.cos(t), np.sin(t)]) * np.asarray(radii)[:, None]
    parts = []
    for k in range(n):
        p, q = ring[k], ring[(k + 1) % n]
        quad = np.array([[*p, -1.0], [*q, -1.0], [*q, 1.0], [*p, 1.0]])
        edge = q - p
        normal = np.array([edge[1], -edge[0], 0.0]) / max(np.linalg.norm(edge), 1e-12)
        parts.append((quad, np.array([[0, 1, 2], [0, 2, 3]]) + 4 * k, np.tile(normal, (4, 1))))
    parts.append(_cap(ring, -1.0, False, 4 * n))
    parts.append(_cap(ring, 1.0, True, 5 * n + 1))
    return _merge(*parts)


@cache
def primitive(kind: str, params: tuple[float, ...] = (), sections: int = 12) -> Primitive:
    """A unit-box primitive of ``kind`` (one of :data:`PRIMITIVES`).

    Args:
        params: frustum: (top radius ratio,); torus: (tube thickness ratio,); prism: the polygon's radii.
        sections: vertices around curved outlines (a sphere has ``sections // 2`` rings).
    """
    if kind == "box":
        v, f, n = _box()
    elif kind == "cylinder":
        v, f, n = _frustum(1.0, sections)
    elif kind == "frustum":
        v, f, n = _frustum(float(params[0]), sections)
    elif kind == "sphere":
        v, f, n = _sphere(max(sections // 2, 3), sections)
    elif kind == "dome":
        v, f, n = _sphere(max(sections // 4, 2), sections, dome=True)
    elif kind == "torus":
        v, f, n = _torus(float(params[0]), sections, max(sections // 2, 4))
    elif kind == "prism":
        v, f, n = _prism(tuple(params))
    else:
        raise ValueError(f"primitive: expected one of {PRIMITIVES}, got {kind!r}")
    v, n = _fit_unit_box(v, n)
    return Primitive(v, f, n)
