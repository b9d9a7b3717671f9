"""Procedural, randomly varied meshes of the 12 PASCAL3D+ categories.

The builders in this file are version 1 of the synthetic benchmark, kept unchanged so that
``--version 1`` reproduces its files byte for byte; version 2 (the default) lives in
``meshes_v2`` and is reached through :func:`build_mesh`.

Each mesh is built from primitives in PASCAL3D+'s CAD frame: z up, the object's front facing
-y (azimuth 0 looks at the front), centred at the origin and scaled to roughly the category
cuboid. Every face carries a part id, so textures can colour parts differently.

Shape variation comes from ``proportions``: per-axis stretch factors and part-level factors
drawn by the caller. In-distribution samples draw them near 1; the OOD-shape split draws
them from ranges the training split never uses.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import trimesh

Part = tuple[trimesh.Trimesh, int]


def _box(extents, center) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=extents, transform=trimesh.transformations.translation_matrix(center))


def _cylinder(radius: float, height: float, center, axis: str = "z", sections: int = 16) -> trimesh.Trimesh:
    mesh = trimesh.creation.cylinder(radius=radius, height=height, sections=sections)
    if axis == "x":
        mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
    elif axis == "y":
        mesh.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    mesh.apply_translation(center)
    return mesh


def _wheel(radius: float, width: float, center) -> trimesh.Trimesh:
    return _cylinder(radius, width, center, axis="x", sections=16)


def _cone(radius: float, height: float, center) -> trimesh.Trimesh:
    mesh = trimesh.creation.cone(radius=radius, height=height, sections=16)
    mesh.apply_translation(center)
    return mesh


def _aeroplane(p: np.ndarray) -> list[Part]:
    L, span, h = 1.4 * p[1], 1.6 * p[0], 0.16 * p[2]
    return [
        (_cylinder(h, L, (0, 0, 0), axis="y"), 0),
        (_cone(h, 0.25, (0, 0, 0)).apply_transform(_rot_x(np.pi / 2)).apply_translation((0, -L / 2, 0)), 0),
        (_box((span, 0.28 * p[3], 0.04), (0, -0.05, 0)), 1),
        (_box((0.5 * span * p[4], 0.15, 0.03), (0, L / 2 - 0.08, 0.02)), 1),
        (_box((0.03, 0.18, 0.3 * p[5]), (0, L / 2 - 0.08, 0.15 * p[5] + h * 0.5)), 2),
    ]


def _bicycle(p: np.ndarray) -> list[Part]:
    r, base = 0.3 * p[2], 0.55 * p[1]
    return [
        (_wheel(r, 0.05, (0, -base, r)), 0),
        (_wheel(r, 0.05, (0, base, r)), 0),
        (_box((0.04, 2 * base * 0.8, 0.04), (0, 0, r + 0.25 * p[3])), 1),
        (_box((0.04, 0.04, 0.35 * p[3]), (0, base * 0.3, r + 0.1)), 1),
        (_box((0.04, 0.04, 0.4 * p[3]), (0, -base * 0.7, r + 0.15)), 1),
        (_box((0.35 * p[0], 0.04, 0.04), (0, -base * 0.75, r + 0.38 * p[3])), 2),
        (_box((0.1, 0.18, 0.04), (0, base * 0.35, r + 0.3 * p[3])), 2),
    ]


def _boat(p: np.ndarray) -> list[Part]:
    w, L, h = 0.7 * p[0], 1.9 * p[1], 0.35 * p[2]
    deck = [
        [-w / 2, -L / 2 + 0.3, h],
        [w / 2, -L / 2 + 0.3, h],
        [0, -L / 2, h],
        [-w / 2, L / 2, h],
        [w / 2, L / 2, h],
    ]
    keel = [[-w / 3, -L / 2 + 0.35, 0], [w / 3, -L / 2 + 0.35, 0], [-w / 3, L / 2, 0], [w / 3, L / 2, 0]]
    hull = np.array(deck + keel)
    return [
        (trimesh.convex.convex_hull(hull - [0, 0, h / 2]), 0),
        (_box((w * 0.6, L * 0.3 * p[3], 0.25 * p[4]), (0, L * 0.1, h / 2 + 0.125 * p[4])), 1),
        (_cylinder(0.02, 0.5 * p[5], (0, -L * 0.05, h / 2 + 0.25 * p[5])), 2),
    ]


def _bottle(p: np.ndarray) -> list[Part]:
    r, h = 0.2 * p[0], 0.75 * p[2]
    neck = 0.3 * p[3]
    return [
        (_cylinder(r, h, (0, 0, -0.25)), 0),
        (_cone(r, 0.25, (0, 0, h / 2 - 0.25)), 1),
        (_cylinder(0.06 * p[4], neck, (0, 0, h / 2 - 0.1 + neck / 2)), 2),
    ]


def _bus(p: np.ndarray) -> list[Part]:
    w, L, h = 0.55 * p[0], 1.9 * p[1], 0.6 * p[2]
    r = 0.1 * p[3]
    parts = [
        (_box((w, L, h), (0, 0, r)), 0),
        (_box((w * 1.01, L * 0.8, h * 0.3), (0, 0.02, r + h * 0.18)), 1),
        (_box((w * 0.8, 0.02, h * 0.35), (0, -L / 2 - 0.005, r + h * 0.15)), 1),
    ]
    for y in (-L * 0.32, L * 0.32):
        for x in (-w / 2, w / 2):
            parts.append((_wheel(r, 0.08, (x, y, r - h / 2)), 2))
    return parts


def _car(p: np.ndarray) -> list[Part]:
    w, L, h = 0.8 * p[0], 1.85 * p[1], 0.28 * p[2]
    r = 0.14 * p[3]
    parts = [
        (_box((w, L, h), (0, 0, r - 0.05)), 0),
        (_box((w * 0.85, L * 0.5 * p[4], 0.22 * p[5]), (0, L * 0.05, r - 0.05 + h / 2 + 0.11 * p[5])), 1),
    ]
    for y in (-L * 0.33, L * 0.33):
        for x in (-w / 2, w / 2):
            parts.append((_wheel(r, 0.1, (x, y, r - 0.05 - h / 2)), 2))
    return parts


def _chair(p: np.ndarray) -> list[Part]:
    w, d, seat = 0.55 * p[0], 0.55 * p[1], 0.45 * p[2]
    leg = 0.04
    parts = [(_box((w, d, 0.06), (0, 0, seat - 0.55)), 0)]
    for x in (-w / 2 + leg, w / 2 - leg):
        for y in (-d / 2 + leg, d / 2 - leg):
            parts.append((_box((leg, leg, seat), (x, y, seat / 2 - 0.55)), 1))
    back = 0.55 * p[3]
    parts.append((_box((w, 0.05, back), (0, d / 2 - 0.025, seat - 0.55 + back / 2)), 2))
    return parts


def _diningtable(p: np.ndarray) -> list[Part]:
    w, L, h = 1.1 * p[0], 1.7 * p[1], 0.7 * p[2]
    leg = 0.06 * p[3]
    parts = [(_box((w, L, 0.06), (0, 0, h / 2 - 0.03)), 0)]
    for x in (-w / 2 + leg, w / 2 - leg):
        for y in (-L / 2 + leg, L / 2 - leg):
            parts.append((_box((leg, leg, h - 0.06), (x, y, -0.03)), 1))
    return parts


def _motorbike(p: np.ndarray) -> list[Part]:
    r, base = 0.28 * p[2], 0.55 * p[1]
    return [
        (_wheel(r, 0.1, (0, -base, r - 0.5)), 0),
        (_wheel(r, 0.1, (0, base, r - 0.5)), 0),
        (_box((0.25 * p[0], 0.7 * p[3], 0.3), (0, 0, r - 0.5 + 0.3)), 1),
        (_box((0.2, 0.35, 0.08), (0, 0.2, r - 0.5 + 0.48)), 2),
        (_box((0.45 * p[0], 0.04, 0.04), (0, -base * 0.75, r - 0.5 + 0.6 * p[4])), 2),
    ]


def _sofa(p: np.ndarray) -> list[Part]:
    w, d, h = 1.8 * p[0], 0.85 * p[1], 0.4 * p[2]
    arm = 0.18 * p[3]
    return [
        (_box((w, d, h), (0, 0, -0.2)), 0),
        (_box((w, 0.2, 0.45 * p[4]), (0, d / 2 - 0.1, -0.2 + h / 2 + 0.225 * p[4])), 1),
        (_box((arm, d, 0.25), (-w / 2 + arm / 2, 0, -0.2 + h / 2 + 0.125)), 2),
        (_box((arm, d, 0.25), (w / 2 - arm / 2, 0, -0.2 + h / 2 + 0.125)), 2),
    ]


def _train(p: np.ndarray) -> list[Part]:
    w, L, h = 0.45 * p[0], 1.9 * p[1], 0.5 * p[2]
    parts = [
        (_box((w, L, h), (0, 0, 0.05)), 0),
        (_box((w * 1.01, L * 0.85, h * 0.25), (0, 0.05, 0.05 + h * 0.15)), 1),
        (_box((w * 0.9, 0.3 * p[3], h * 0.6), (0, -L / 2 - 0.1 * p[3], 0.05 - h * 0.2)), 0),
    ]
    for y in np.linspace(-L * 0.4, L * 0.4, 4):
        for x in (-w / 2, w / 2):
            parts.append((_wheel(0.08, 0.05, (x, y, 0.05 - h / 2 - 0.03)), 2))
    return parts


def _tvmonitor(p: np.ndarray) -> list[Part]:
    w, h = 1.1 * p[0], 0.7 * p[2]
    depth = 0.1 * p[1]
    return [
        (_box((w, depth, h), (0, 0, 0.1)), 0),
        (_box((w * 0.92, 0.01, h * 0.88), (0, -depth / 2 - 0.005, 0.1)), 1),
        (_box((0.1, 0.08, 0.2 * p[3]), (0, 0.02, 0.1 - h / 2 - 0.1 * p[3])), 2),
        (_box((0.4 * p[4], 0.3, 0.03), (0, 0.02, 0.1 - h / 2 - 0.2 * p[3])), 2),
    ]


def _rot_x(angle: float) -> np.ndarray:
    return trimesh.transformations.rotation_matrix(angle, [1, 0, 0])


BUILDERS: dict[str, Callable[[np.ndarray], list[Part]]] = {
    "aeroplane": _aeroplane,
    "bicycle": _bicycle,
    "boat": _boat,
    "bottle": _bottle,
    "bus": _bus,
    "car": _car,
    "chair": _chair,
    "diningtable": _diningtable,
    "motorbike": _motorbike,
    "sofa": _sofa,
    "train": _train,
    "tvmonitor": _tvmonitor,
}
NUM_PROPORTIONS = 6  # x, y, z stretch, then three part-level factors


def build_mesh(category: str, proportions: np.ndarray, version: int = 2) -> tuple[trimesh.Trimesh, np.ndarray]:
    """One category instance: (mesh in the CAD frame, centred; [F] part id of each face).

    Version 1 returns anonymous part ids (0-2); version 2 (the default, ``meshes_v2``) returns
    material ids, indices into :data:`~novum3d.data.synthetic.meshes_v2.MATERIALS`.
    """
    if category not in BUILDERS:
        raise ValueError(f"category: expected one of {sorted(BUILDERS)}, got {category!r}")
    proportions = np.asarray(proportions, dtype=np.float64)
    if proportions.shape != (NUM_PROPORTIONS,) or np.any(proportions <= 0):
        raise ValueError(f"proportions: expected {NUM_PROPORTIONS} positive factors, got {proportions}")
    if version == 2:
        from . import meshes_v2

        return meshes_v2.assemble(meshes_v2.BUILDERS[category](proportions))
    if version != 1:
        raise ValueError(f"version: expected 1 or 2, got {version!r}")
    parts = BUILDERS[category](proportions)
    mesh = trimesh.util.concatenate([m for m, _ in parts])
    part_ids = np.concatenate([np.full(len(m.faces), pid) for m, pid in parts])
    lo, hi = mesh.bounds
    mesh.apply_translation(-(lo + hi) / 2)
    return mesh, part_ids
