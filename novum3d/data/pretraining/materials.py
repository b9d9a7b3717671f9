"""Random materials for the corpus's objects: a pattern family, its colours and a shading kind per slot.

Pattern families are the corpus's own; none is one of the benchmark's held-out texture families
(dots, marble: its OOD-texture split). Shading kinds reuse the benchmark's lighting model
(novum3d.data.synthetic.materials_v2.shade, through the names of its shading classes), with the
colour always from the pattern, never from the benchmark's material table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.colors import hsv_to_rgb

from ..synthetic.meshes_v2 import MID

PATTERNS = ("solid", "two_tone", "gradient", "speckle", "camo", "bands")
# Specular strength and sharpness of materials_v2's classes: body 0.15/30, metal 0.6/25, rubber 0.05/8,
# leather 0.25/20, gelcoat 0.35/30, trim 0.15/15; glass 0.7/60 also reflects the sky.
SHADING = ("body", "metal", "rubber", "leather", "gelcoat", "trim", "glass")


@dataclass
class Material:
    pattern: str
    colors: np.ndarray  # [3, 3] RGB in [0, 1]
    shading: str
    axis: np.ndarray  # [3] unit: the direction two-tone, gradient and bands vary along
    frequency: float
    threshold: float
    waves: np.ndarray  # [3, 4]: camo's wave vectors (xyz) and phases

    @property
    def shading_id(self) -> int:
        return MID[self.shading]


def _color(rng: np.random.Generator, hue: float | None) -> np.ndarray:
    h = (hue + rng.uniform(-0.04, 0.04)) % 1.0 if hue is not None else rng.uniform()
    return hsv_to_rgb([h, rng.uniform(0.1, 0.9), rng.uniform(0.3, 1.0)])


def draw_material(slot, rng: np.random.Generator) -> Material:
    """One instance's material for a :class:`~novum3d.data.pretraining.grammar.SlotSpec`."""
    typical = rng.uniform() < slot.typical
    colors = np.stack([_color(rng, slot.hue if typical else None), _color(rng, None), _color(rng, None)])
    pattern = slot.pattern if rng.uniform() < slot.pattern_share else str(rng.choice(PATTERNS))
    shading = slot.shading if rng.uniform() < slot.shading_share else str(rng.choice(SHADING))
    axis = rng.normal(size=3)
    waves = np.column_stack([rng.normal(size=(3, 3)) * rng.uniform(1.5, 4.0), rng.uniform(0, 2 * np.pi, size=3)])
    return Material(pattern, colors, shading, axis / np.linalg.norm(axis), float(rng.uniform(3, 10)),
                    float(rng.uniform(-0.4, 0.4)), waves)  # fmt: skip


def albedo(material: Material, points: np.ndarray) -> np.ndarray:
    """Albedo [P, 3] of surface points [P, 3] (object frame, radius 1)."""
    c0, c1, c2 = material.colors
    p = material.pattern
    if p == "solid":
        return np.broadcast_to(c0, points.shape).copy()
    t = points @ material.axis
    if p == "two_tone":
        return np.where((t > material.threshold)[:, None], c0, c1)
    if p == "gradient":
        s = np.clip((t + 1) / 2, 0, 1)[:, None]
        return c0 * (1 - s) + c1 * s
    if p == "bands":
        return np.where((np.floor(t * material.frequency) % 2 == 0)[:, None], c0, c1)
    if p == "speckle":  # granite: a value per small 3D cell, a few flecks of a second colour
        cell = np.floor(points * material.frequency * 2.5)
        h = np.sin(cell @ np.array([12.9898, 78.233, 37.719])) * 43758.5453 % 1.0
        out = c0 * (0.75 + 0.5 * h)[:, None]
        return np.clip(np.where((h > 0.92)[:, None], c1, out), 0, 1)
    if p == "camo":  # blotches: three level sets of a sum of low-frequency waves
        field = np.sin(points @ material.waves[:, :3].T + material.waves[:, 3]).sum(1)
        return np.where((field > 0.5)[:, None], c1, np.where((field < -0.7)[:, None], c2 * 0.6, c0))
    raise ValueError(f"pattern: expected one of {PATTERNS}, got {p!r}")
