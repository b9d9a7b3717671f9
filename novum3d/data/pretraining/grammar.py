"""A shape grammar of object categories: a category is a tree of parts drawn once from its seed, and
each instance draws its proportions within the category's ranges.

A category (:class:`CategorySpec`) fixes, for every part, its primitive and the primitive's shape,
its mean extents, the part it attaches to and where (a point on a face of the parent's box, how far
the part stands out of that face), a fixed tilt, a symmetry (none; a mirrored pair; ``copies``
rotated about the parent's vertical axis; a row of ``copies`` along the face), how often an instance
has it, and which material slot colours it. An instance (:func:`build_instance`) keeps that
structure and varies within it: extents by up to ``jitter`` each, the whole object stretched by up
to ``stretch`` per axis, anchors and tilts a little, optional parts present or not. So categories
differ in structure and instances of one category differ in proportions and details, as ImageNet's
do. Parts are placed in their parent's frame (a scene graph), so a mirrored part carries its own
children with it.

The benchmark's twelve categories come from novum3d.data.synthetic.meshes*; nothing here calls them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..jobs import keyed_rng
from .materials import PATTERNS, SHADING
from .primitives import PRIMITIVES, primitive

SYMMETRIES = ("none", "mirror", "radial", "row")
# Root primitives favour solid bodies; parts any shape.
ROOT_WEIGHTS = {"box": 0.3, "cylinder": 0.2, "frustum": 0.1, "sphere": 0.15, "dome": 0.05, "torus": 0.05, "prism": 0.15}
PART_WEIGHTS = {"box": 0.3, "cylinder": 0.22, "frustum": 0.12, "sphere": 0.12, "dome": 0.06, "torus": 0.06,
                "prism": 0.12}  # fmt: skip


@dataclass(frozen=True)
class PartSpec:
    primitive: str
    params: tuple[float, ...]  # the primitive's shape (primitives.primitive)
    size: tuple[float, float, float]  # mean extents along the part's own axes
    jitter: float  # each extent varies by up to this share between instances
    parent: int  # index of the part it attaches to; -1 for the root
    anchor: tuple[float, float, float]  # on the parent's box in [-1, 1]^3; |anchor[axis]| = 1 names the face
    axis: int  # the parent face's normal axis (0, 1, 2)
    out: float  # 0.5: centred on the face, 1: resting on it
    rotation: tuple[float, ...]  # [3, 3] row-major, the part's fixed orientation in its parent's frame
    symmetry: str  # one of SYMMETRIES
    copies: int  # radial or row copies (1 otherwise)
    spread: float  # row: copies spread over this share of the face
    presence: float  # probability that an instance has the part
    slot: int  # material slot


@dataclass(frozen=True)
class SlotSpec:
    """What a material slot tends to look like in this category (materials.draw_material varies it)."""

    hue: float  # the category's typical hue for the slot
    typical: float  # probability that an instance uses that hue (else any)
    pattern: str  # the category's usual pattern family (materials.PATTERNS)
    pattern_share: float  # probability of that family (else any)
    shading: str  # the usual shading kind (materials.SHADING)
    shading_share: float


@dataclass(frozen=True)
class CategorySpec:
    index: int
    name: str
    sections: int  # vertices around curved outlines
    stretch: tuple[float, float, float]  # per-axis whole-object variation between instances
    parts: tuple[PartSpec, ...]
    slots: tuple[SlotSpec, ...]


@dataclass
class Instance:
    """One object of a category, centred and scaled to radius 1 (the largest vertex norm)."""

    vertices: np.ndarray  # [V, 3]
    faces: np.ndarray  # [F, 3]
    normals: np.ndarray  # [V, 3] unit
    slots: np.ndarray  # [F] material slot per face
    parts: int  # parts placed (copies counted)


def category_name(index: int) -> str:
    return f"p{index:04d}"


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = list(weights)
    p = np.array([weights[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _params(kind: str, rng: np.random.Generator) -> tuple[float, ...]:
    if kind == "frustum":
        return (round(float(rng.uniform(0.0, 0.8)), 4),)
    if kind == "torus":
        return (round(float(rng.uniform(0.15, 0.5)), 4),)
    if kind == "prism":
        n = int(rng.integers(3, 9))
        star = rng.uniform() < 0.3 and n >= 5
        radii = [1.0 if (not star or k % 2 == 0) else float(rng.uniform(0.4, 0.7)) for k in range(n)]
        return tuple(round(r * float(rng.uniform(0.85, 1.0)), 4) for r in radii)
    return ()


def _rotation(axis: int, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u, w = [k for k in range(3) if k != axis]
    r = np.eye(3)
    r[u, u], r[u, w], r[w, u], r[w, w] = c, -s, s, c
    return r


def _part_rotation(rng: np.random.Generator, axis: int, elongated: int | None) -> np.ndarray:
    """A part's orientation in its parent's frame: an elongated part's long axis along the face normal
    (legs, masts) or along the face; then a tilt about a tangent axis, sometimes."""
    r = np.eye(3)
    if elongated is not None:
        target = axis if rng.uniform() < 0.6 else int(rng.choice([k for k in range(3) if k != axis]))
        if target != elongated:  # swap the two axes (a rotation by 90 degrees about the third)
            third = 3 - target - elongated
            r = _rotation(third, np.pi / 2)
    if rng.uniform() < 0.35:
        tangent = int(rng.choice([k for k in range(3) if k != axis]))
        r = _rotation(tangent, float(rng.uniform(-0.7, 0.7))) @ r
    return r


def _slot(rng: np.random.Generator) -> SlotSpec:
    return SlotSpec(
        hue=round(float(rng.uniform()), 4),
        typical=round(float(rng.uniform(0.3, 0.85)), 4),
        pattern=str(rng.choice(PATTERNS)),
        pattern_share=round(float(rng.uniform(0.4, 0.9)), 4),
        shading=str(rng.choice(SHADING)),
        shading_share=round(float(rng.uniform(0.5, 0.9)), 4),
    )


@lru_cache(maxsize=256)
def draw_category(seed: int, index: int) -> CategorySpec:
    """Category ``index`` of the corpus made with ``seed`` (deterministic; cached per process)."""
    rng = keyed_rng(seed, f"category/{index}")
    sections = int(rng.choice([8, 10, 12]))
    slots = tuple(_slot(rng) for _ in range(int(rng.integers(1, 4))))
    root_kind = _choice(rng, ROOT_WEIGHTS)
    root_size = np.exp(rng.uniform(np.log(0.3), np.log(1.5), size=3))
    parts = [PartSpec(root_kind, _params(root_kind, rng), tuple(np.round(root_size, 4).tolist()),
                      round(float(rng.uniform(0.03, 0.2)), 4), -1, (0.0, 0.0, 0.0), 2, 0.5,
                      tuple(np.eye(3).ravel().tolist()), "none", 1, 0.0, 1.0, 0)]  # fmt: skip
    for i in range(1, int(rng.integers(2, 8))):
        parent = 0 if i == 1 or rng.uniform() < 0.5 else int(rng.integers(0, i))
        scale = float(np.mean(parts[parent].size))
        kind = _choice(rng, PART_WEIGHTS)
        shape = rng.uniform()
        elongated = None
        if shape < 0.3:  # a rod: one long axis
            elongated = int(rng.integers(3))
            size = rng.uniform(0.05, 0.15, size=3) * scale
            size[elongated] = rng.uniform(0.4, 1.2) * scale
        elif shape < 0.5:  # a plate: one thin axis
            size = rng.uniform(0.25, 0.8, size=3) * scale
            size[int(rng.integers(3))] = rng.uniform(0.04, 0.12) * scale
        else:
            size = np.exp(rng.uniform(np.log(0.15), np.log(0.7), size=3)) * scale
        axis = int(rng.integers(3))
        anchor = np.where(rng.uniform(size=3) < 0.3, 0.0, rng.uniform(-0.8, 0.8, size=3))
        anchor[axis] = float(rng.choice([-1.0, 1.0]))
        rotation = _part_rotation(rng, axis, elongated)
        sym = str(rng.choice(SYMMETRIES, p=[0.4, 0.3, 0.15, 0.15]))
        copies = int(rng.integers(3, 9)) if sym == "radial" else int(rng.integers(2, 6)) if sym == "row" else 1
        if sym == "radial" and axis == 2 and np.allclose(anchor[:2], 0):  # would stack copies in one place
            anchor[0] = 0.7
        parts.append(PartSpec(
            primitive=kind, params=_params(kind, rng), size=tuple(np.round(size, 4).tolist()),
            jitter=round(float(rng.uniform(0.03, 0.2)), 4), parent=parent,
            anchor=tuple(np.round(anchor, 4).tolist()), axis=axis, out=round(float(rng.uniform(0.35, 0.95)), 4),
            rotation=tuple(np.round(rotation, 6).ravel().tolist()), symmetry=sym, copies=copies,
            spread=round(float(rng.uniform(0.5, 0.85)), 4),
            presence=1.0 if rng.uniform() < 0.7 else round(float(rng.uniform(0.4, 0.9)), 4),
            slot=int(rng.integers(len(slots))),
        ))  # fmt: skip
    stretch = tuple(np.round(rng.uniform(0.05, 0.2, size=3), 4).tolist())
    return CategorySpec(index, category_name(index), sections, stretch, tuple(parts), slots)


def _placements(part: PartSpec, size: np.ndarray, parent_size: np.ndarray, rotation: np.ndarray,
                anchor: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """The (A [3, 3], t [3]) of each copy of a part in its parent's (unscaled) frame."""
    tangent = [k for k in range(3) if k != part.axis]
    anchors = [anchor]
    if part.symmetry == "row":
        along = tangent[0] if abs(anchor[tangent[0]]) <= abs(anchor[tangent[1]]) else tangent[1]
        anchors = []
        for u in np.linspace(-part.spread, part.spread, part.copies):
            a = anchor.copy()
            a[along] = u
            anchors.append(a)
    out = []
    half = np.abs(rotation) @ (size / 2)  # the part's box half extents in the parent's frame
    for a in anchors:
        t = a * parent_size / 2
        t[part.axis] += np.sign(a[part.axis]) * half[part.axis] * (2 * part.out - 1)
        out.append((rotation, t))
    if part.symmetry == "mirror":  # across the parent's plane through its centre, normal to a tangent axis
        m = np.eye(3)
        m[tangent[0] if abs(anchor[tangent[0]]) >= abs(anchor[tangent[1]]) else tangent[1]] *= -1
        out += [(m @ A, m @ t) for A, t in out]
    elif part.symmetry == "radial":
        A, t = out[0]
        turns = [_rotation(2, 2 * np.pi * k / part.copies) for k in range(part.copies)]
        out = [(turn @ A, turn @ t) for turn in turns]
    return out


def build_instance(spec: CategorySpec, rng: np.random.Generator) -> Instance:
    """Draw one instance of ``spec``: its proportions, optional parts and small variations, as a mesh."""
    stretch = 1 + rng.uniform(-1, 1, size=3) * np.asarray(spec.stretch)
    sizes, present = [], []
    frames: list[list[tuple[np.ndarray, np.ndarray]]] = []  # per part: world (A, t) of every copy
    verts, norms, faces, slots = [], [], [], []
    offset = 0
    for i, part in enumerate(spec.parts):
        size = np.asarray(part.size) * (1 + rng.uniform(-part.jitter, part.jitter, size=3))
        here = rng.uniform() < part.presence
        anchor = np.asarray(part.anchor) + rng.uniform(-0.05, 0.05, size=3)
        wobble = _rotation(int(rng.integers(3)), float(rng.normal(0, 0.04)))
        sizes.append(size)
        if part.parent < 0:
            present.append(True)
            frames.append([(np.eye(3), np.zeros(3))])
        else:
            present.append(here and present[part.parent])
            if not present[i]:
                frames.append([])
                continue
            anchor[part.axis] = np.sign(part.anchor[part.axis])
            anchor = np.clip(anchor, -1, 1)
            rotation = wobble @ np.asarray(part.rotation).reshape(3, 3)
            local = _placements(part, size, sizes[part.parent], rotation, anchor)
            frames.append([(Ap @ A, Ap @ t + tp) for Ap, tp in frames[part.parent] for A, t in local])
        prim = primitive(part.primitive, part.params, spec.sections)
        for A, t in frames[i]:
            verts.append(prim.vertices * size @ A.T + t)
            n = (prim.normals / size) @ A.T
            norms.append(n / np.linalg.norm(n, axis=1, keepdims=True))
            faces.append(prim.faces + offset)
            slots.append(np.full(len(prim.faces), part.slot))
            offset += len(prim.vertices)
    v = np.concatenate(verts) * stretch
    n = np.concatenate(norms) / stretch
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    v -= (v.min(0) + v.max(0)) / 2
    v /= np.linalg.norm(v, axis=1).max()
    return Instance(v, np.concatenate(faces), n, np.concatenate(slots), len(verts))


__all__ = ["PRIMITIVES", "CategorySpec", "Instance", "PartSpec", "SlotSpec", "build_instance", "draw_category"]
