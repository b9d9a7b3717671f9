"""Version 2 procedural meshes: named material parts and a real front and back.

Same frame as version 1 (PASCAL3D+ CAD frame: z up, the object's front facing -y, so azimuth 0
looks at the front; the right-hand side of a vehicle is -x) and the same six proportion factors,
but every face carries a *material* (an index into :data:`MATERIALS`) instead of an anonymous
part number, and each object has the parts that tell its front from its back in the real world:

- car: long bonnet, raked windscreen, short boot and steeper rear window; headlights and grille
  in front, red tail lights behind; black tyres on metal hubs.
- bus: large windscreen with a destination sign above it and headlights below; small rear
  window, tail lights and engine grille behind; the doors on the right-hand (kerb) side only.
- train: a sloped cab with windscreen and headlights in front; a flat end with a gangway and
  red tail lights behind; windows on both sides; metal wheels under dark bogies.
- aeroplane: nose with cockpit windows, engines with dark intakes in front, swept wings, a tail
  fin and tailplane behind.
- boat: pointed bow, flat transom with an outboard motor, white cabin with a windscreen facing
  forward, a mast and a white sail set behind it.
- bicycle / motorbike: fork, handlebar and a white lamp in front; saddle and a red reflector or
  tail light behind; chain ring or exhaust on the right-hand side.
- chair / sofa: the backrest behind, upholstery on the front of it and on the seat.
- tvmonitor: the screen on the front face only, a deeper housing and the stand behind.
- bottle (a solid of revolution) and diningtable (two-fold symmetric) stay symmetric, as the
  real objects are.

Materials are split into *body* materials (``body``, ``accent``: colours drawn at random from
the texture families, as real paint and upholstery vary) and *class-typical* ones (tyres,
glass, lights, wood, sails, screens, ...), whose colours vary only a little (materials_v2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import trimesh

MATERIALS = (
    "body",  # random colour / texture family (paint, upholstery, table tops, labels)
    "accent",  # a second random colour (tail fins, caps, cushions)
    "trim",  # dark plastic: bumpers, grilles, gangways, grips, stands
    "glass",  # windows and windscreens
    "rubber",  # tyres
    "metal",  # hubs, wings, masts, engines, frames
    "headlight",
    "taillight",
    "amber",  # destination signs, indicator lamps
    "wood",
    "cloth",  # sails
    "gelcoat",  # white boat cabins and decks
    "screen",
    "leather",  # saddles and motorbike seats
    "bottle_glass",
)
MID = {name: i for i, name in enumerate(MATERIALS)}
BODY_MATERIALS = ("body", "accent")

Part = tuple[trimesh.Trimesh, np.ndarray]  # mesh and the material of each of its faces


def _part(mesh: trimesh.Trimesh, material: str | np.ndarray) -> Part:
    if isinstance(material, str):
        return mesh, np.full(len(mesh.faces), MID[material])
    return mesh, np.asarray(material)


def _box(extents, center, material: str) -> Part:
    mesh = trimesh.creation.box(extents=extents, transform=trimesh.transformations.translation_matrix(center))
    return _part(mesh, material)


def _hull(points, material: str | Callable[[np.ndarray], np.ndarray]) -> Part:
    mesh = trimesh.convex.convex_hull(np.asarray(points, dtype=np.float64))
    if callable(material):
        return mesh, material(mesh.face_normals)
    return _part(mesh, material)


def _axis_transform(axis: str) -> np.ndarray:
    if axis == "x":
        return trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0])
    if axis == "y":
        return trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0])
    return np.eye(4)


def _cylinder(radius, height, center, material: str, axis: str = "z", sections: int = 12) -> Part:
    mesh = trimesh.creation.cylinder(radius=radius, height=height, sections=sections)
    mesh.apply_transform(_axis_transform(axis))
    mesh.apply_translation(center)
    return _part(mesh, material)


def _ring(r_out, r_in, width, center, material: str, axis: str = "x", sections: int = 16) -> Part:
    mesh = trimesh.creation.annulus(r_min=r_in, r_max=r_out, height=width, sections=sections)
    mesh.apply_transform(_axis_transform(axis))
    mesh.apply_translation(center)
    return _part(mesh, material)


def _cone(radius, height, base_center, material: str, direction=(0, 0, 1), sections: int = 12) -> Part:
    mesh = trimesh.creation.cone(radius=radius, height=height, sections=sections)
    mesh.apply_transform(trimesh.geometry.align_vectors([0, 0, 1], direction))
    mesh.apply_translation(base_center)
    return _part(mesh, material)


def _rod(p0, p1, thickness: float, material: str) -> Part:
    """A square bar from p0 to p1."""
    p0, p1 = np.asarray(p0, dtype=np.float64), np.asarray(p1, dtype=np.float64)
    d = p1 - p0
    length = float(np.linalg.norm(d))
    mesh = trimesh.creation.box(extents=(thickness, length, thickness))
    mesh.apply_transform(trimesh.geometry.align_vectors([0, 1, 0], d / length))
    mesh.apply_translation((p0 + p1) / 2)
    return _part(mesh, material)


def _wheel(radius, width, center, hub: str = "metal", tyre: str = "rubber") -> list[Part]:
    x, y, z = center
    return [
        _cylinder(radius, width, center, tyre, axis="x", sections=14),
        _cylinder(0.55 * radius, width * 1.06, (x, y, z), hub, axis="x", sections=10),
    ]


def _off(point, dx: float, dy: float, dz: float) -> np.ndarray:
    return np.asarray(point, dtype=np.float64) + np.array([dx, dy, dz])


def _glass_unless_up(normals: np.ndarray, roof: str = "body") -> np.ndarray:
    """Cabin faces: glass all round, the roof (facing up) in ``roof``."""
    return np.where(normals[:, 2] > 0.9, MID[roof], MID["glass"])


# --- vehicles ----------------------------------------------------------------------------------


def _car(p: np.ndarray) -> list[Part]:
    w, L, h, r = 0.8 * p[0], 1.85 * p[1], 0.3 * p[2], 0.14 * p[3]
    z0 = 0.55 * r  # underside of the body
    zt = z0 + h
    y0, y1 = -L / 2, L / 2
    body = [[sx * w / 2, y, z0] for sx in (-1, 1) for y in (y0, y1)]
    body += [[sx * w / 2, y1, zt] for sx in (-1, 1)] + [[sx * w / 2, y1 - 0.05, zt] for sx in (-1, 1)]
    body += [[sx * 0.46 * w, y0, zt - 0.07] for sx in (-1, 1)]  # the bonnet slopes down to the nose
    body += [[sx * w / 2, y0 + 0.08, zt - 0.04] for sx in (-1, 1)]
    hc = 0.22 * p[5]
    cab_front = y0 + L * 0.33 * p[4]  # long bonnet in front
    cab_back = y1 - L * 0.17  # short boot behind
    cabin = [[sx * 0.43 * w, y, zt - 0.005] for sx in (-1, 1) for y in (cab_front, cab_back)]
    cabin += [[sx * 0.37 * w, y, zt + hc] for sx in (-1, 1) for y in (cab_front + 0.22 * L, cab_back - 0.1 * L)]
    parts = [_hull(body, "body"), _hull(cabin, _glass_unless_up)]
    zl = zt - 0.1
    for sx in (-1, 1):
        parts.append(_box((0.16, 0.03, 0.06), (sx * (w / 2 - 0.13), y0 + 0.03, zl), "headlight"))
        parts.append(_box((0.14, 0.03, 0.07), (sx * (w / 2 - 0.09), y1 + 0.005, zt - 0.08), "taillight"))
    parts.append(_box((0.3 * w, 0.03, 0.07), (0, y0 + 0.02, zl - 0.02), "trim"))  # grille
    for y in (y0 + 0.02, y1 - 0.02):  # bumpers, front and back
        parts.append(_box((w * 1.02, 0.08, 0.07), (0, y, z0 + 0.04), "trim"))
    for y in (-L * 0.31, L * 0.31):
        for sx in (-1, 1):
            parts += _wheel(r, 0.1, (sx * (w / 2 - 0.04), y, r))
    return parts


def _bus(p: np.ndarray) -> list[Part]:
    w, L, h, r = 0.55 * p[0], 1.9 * p[1], 0.62 * p[2], 0.1 * p[3]
    z0 = 0.6 * r
    y0, y1 = -L / 2, L / 2
    parts = [_box((w, L, h), (0, 0, z0 + h / 2), "body")]
    zw0, zw1 = z0 + 0.45 * h, z0 + 0.88 * h
    door = (y0 + 0.06, y0 + 0.06 + 0.17 * p[4])  # front door, right-hand (kerb) side = -x
    mid_door = (0.02, 0.02 + 0.15 * p[4])
    # left side: one window band from the driver's window back
    parts.append(_box((0.012, L - 0.2, zw1 - zw0), (w / 2 + 0.003, 0.05, (zw0 + zw1) / 2), "glass"))
    # right side: window band interrupted by two full-height glazed doors
    spans = [(door[1] + 0.02, mid_door[0] - 0.02), (mid_door[1] + 0.02, y1 - 0.05)]
    for a, b in spans:
        parts.append(_box((0.012, b - a, zw1 - zw0), (-w / 2 - 0.003, (a + b) / 2, (zw0 + zw1) / 2), "glass"))
    for a, b in (door, mid_door):
        parts.append(
            _box((0.014, b - a, zw1 - z0 - 0.04), (-w / 2 - 0.004, (a + b) / 2, (z0 + 0.04 + zw1) / 2), "glass")
        )
    # front: big windscreen, destination sign above, headlights and bumper below
    parts.append(_box((0.9 * w, 0.012, 0.5 * h), (0, y0 - 0.003, z0 + 0.62 * h), "glass"))
    parts.append(_box((0.7 * w, 0.014, 0.07 * h), (0, y0 - 0.004, z0 + 0.94 * h), "amber"))
    for sx in (-1, 1):
        parts.append(_box((0.1, 0.014, 0.05), (sx * (w / 2 - 0.08), y0 - 0.004, z0 + 0.17 * h), "headlight"))
        parts.append(_box((0.06, 0.014, 0.12), (sx * (w / 2 - 0.05), y1 + 0.004, z0 + 0.25 * h), "taillight"))
    parts.append(_box((w * 1.02, 0.05, 0.08 * h), (0, y0, z0 + 0.04 * h), "trim"))
    # back: small rear window high up, engine grille low
    parts.append(_box((0.7 * w, 0.012, 0.22 * h), (0, y1 + 0.003, z0 + 0.75 * h), "glass"))
    parts.append(_box((0.6 * w, 0.012, 0.18 * h), (0, y1 + 0.003, z0 + 0.25 * h), "trim"))
    for y in (y0 + 0.27 * L, y1 - 0.23 * L):
        for sx in (-1, 1):
            parts += _wheel(r, 0.08, (sx * (w / 2 - 0.03), y, r))
    return parts


def _train(p: np.ndarray) -> list[Part]:
    w, L, h = 0.45 * p[0], 1.9 * p[1], 0.52 * p[2]
    z0, y0, y1 = 0.1, -L / 2, L / 2
    nose = 0.22 * p[3]
    parts = [_box((w, L - nose, h), (0, (y0 + nose + y1) / 2, z0 + h / 2), "body")]
    cab = [[sx * w / 2, y0 + nose, z] for sx in (-1, 1) for z in (z0, z0 + h)]
    cab += [[sx * 0.45 * w, y0, z] for sx in (-1, 1) for z in (z0, z0 + 0.5 * h)]

    def cab_material(n: np.ndarray) -> np.ndarray:  # the sloped face is the windscreen
        return np.where((n[:, 1] < -0.3) & (n[:, 2] > 0.3), MID["glass"], MID["body"])

    parts.append(_hull(cab, cab_material))
    for sx in (-1, 1):
        parts.append(_box((0.07, 0.02, 0.04), (sx * 0.3 * w, y0 - 0.005, z0 + 0.2 * h), "headlight"))
        parts.append(_box((0.05, 0.02, 0.04), (sx * 0.35 * w, y1 + 0.005, z0 + 0.2 * h), "taillight"))
        parts.append(
            _box((0.012, L - nose - 0.15, 0.3 * h), (sx * (w / 2 + 0.003), 0.05 + nose / 2, z0 + 0.65 * h), "glass")
        )
    parts.append(_box((0.45 * w, 0.05, 0.75 * h), (0, y1 + 0.02, z0 + 0.45 * h), "trim"))  # gangway
    parts.append(_box((0.5 * w, 0.35 * L, 0.06), (0, 0.15 * L, z0 + h + 0.03), "metal"))  # roof gear
    for y in (y0 + 0.25 * L, y1 - 0.2 * L):
        parts.append(_box((0.8 * w, 0.3, 0.06), (0, y, z0 - 0.01), "trim"))  # bogie
        for dy in (-0.09, 0.09):
            for sx in (-1, 1):
                parts.append(_cylinder(0.06, 0.04, (sx * 0.4 * w, y + dy, 0.06), "metal", axis="x", sections=10))
    return parts


def _aeroplane(p: np.ndarray) -> list[Part]:
    L, span, rf = 1.4 * p[1], 1.6 * p[0], 0.085 * p[2]
    nose, tail = 0.16 * L, 0.2 * L
    zc = 0.15
    body_len = L - nose - tail
    yb0 = -L / 2 + nose
    yb1 = yb0 + body_len
    parts = [
        _cylinder(rf, body_len, (0, (yb0 + yb1) / 2, zc), "body", axis="y"),
        _cone(rf, nose, (0, yb0, zc), "body", direction=(0, -1, 0)),
    ]
    tail_pts = [[rf * np.cos(a), yb1, zc + rf * np.sin(a)] for a in np.linspace(0, 2 * np.pi, 10, endpoint=False)]
    tail_pts += [[sx * 0.25 * rf, L / 2, zc + 0.7 * rf] for sx in (-1, 1)]
    parts.append(_hull(tail_pts, "body"))
    parts.append(_box((1.3 * rf, 0.1 * L, 0.5 * rf), (0, yb0 + 0.03, zc + 0.62 * rf), "glass"))  # cockpit
    chord = 0.2 * L * p[3]
    wy = -0.04 * L
    wing = [[0, wy - chord / 2, zc - 0.4 * rf], [0, wy + chord / 2, zc - 0.4 * rf]]
    wing += [[sx * span / 2, wy + 0.45 * chord + 0.12 * span, zc - 0.2 * rf] for sx in (-1, 1)]
    wing += [[sx * span / 2, wy + 0.85 * chord + 0.12 * span, zc - 0.2 * rf] for sx in (-1, 1)]
    wing_top = [[x, y, z + 0.025] for x, y, z in wing]
    parts.append(_hull(wing + wing_top, "metal"))
    for sx in (-1, 1):
        ex, ey, ez = sx * 0.3 * span / 2, wy - 0.2 * chord + 0.05 * span, zc - 1.2 * rf
        parts.append(_cylinder(0.5 * rf, 0.16 * L, (ex, ey, ez), "metal", axis="y", sections=10))
        parts.append(_cylinder(0.42 * rf, 0.01, (ex, ey - 0.08 * L - 0.004, ez), "trim", axis="y", sections=10))
    tp = 0.55 * span * p[4] / 2
    tailplane = [[0, L / 2 - 0.12, zc], [0, L / 2, zc], [tp, L / 2 + 0.02, zc], [tp, L / 2 - 0.05, zc]]
    tailplane += [[-x, y, z] for x, y, z in tailplane]
    tailplane += [[x, y, z + 0.02] for x, y, z in tailplane]
    parts.append(_hull(tailplane, "metal"))
    fin_h = 0.24 * p[5]
    fin = [[0, yb1 - 0.05, zc + 0.6 * rf], [0, L / 2, zc + 0.6 * rf], [0, L / 2 + 0.02, zc + rf + fin_h],
           [0, L / 2 - 0.1, zc + rf + fin_h]]  # fmt: skip
    fin = [[x + dx, y, z] for x, y, z in fin for dx in (-0.015, 0.015)]
    parts.append(_hull(fin, "accent"))
    return parts


def _boat(p: np.ndarray) -> list[Part]:
    w, L, h = 0.7 * p[0], 1.9 * p[1], 0.35 * p[2]
    deck = [[-w / 2, -L / 2 + 0.35, h], [w / 2, -L / 2 + 0.35, h], [0, -L / 2, h + 0.04],
            [-w / 2, L / 2, h], [w / 2, L / 2, h]]  # fmt: skip
    keel = [[-w / 3, -L / 2 + 0.4, 0], [w / 3, -L / 2 + 0.4, 0], [-w / 3, L / 2, 0.03], [w / 3, L / 2, 0.03]]

    def hull_material(n: np.ndarray) -> np.ndarray:  # white deck on a painted hull
        return np.where(n[:, 2] > 0.8, MID["gelcoat"], MID["body"])

    parts = [_hull(deck + keel, hull_material)]
    cl, ch = L * 0.3 * p[3], 0.2 * p[4]
    cy0 = -0.05 * L
    cabin = [c for sx in (-1, 1) for c in ([sx * 0.27 * w, cy0 + 0.1, h + ch], [sx * 0.27 * w, cy0 + cl, h + ch])]
    cabin += [[sx * 0.3 * w, y, h] for sx in (-1, 1) for y in (cy0, cy0 + cl)]

    def cabin_material(n: np.ndarray) -> np.ndarray:  # windscreen facing forward
        return np.where((n[:, 1] < -0.3) & (n[:, 2] > 0.2), MID["glass"], MID["gelcoat"])

    parts.append(_hull(cabin, cabin_material))
    for sx in (-1, 1):  # side windows
        parts.append(_box((0.01, 0.5 * cl, 0.35 * ch), (sx * 0.285 * w, cy0 + 0.55 * cl, h + 0.55 * ch), "glass"))
    mast_h = 0.55 * p[5]
    my = -L * 0.12
    parts.append(_cylinder(0.018, mast_h, (0, my, h + mast_h / 2), "metal", sections=8))
    sail = [[0, my + 0.03, h + 0.08], [0, my + 0.03, h + mast_h * 0.97], [0, my + 0.03 + 0.42 * L, h + 0.1]]
    sail = [[x + dx, y, z] for x, y, z in sail for dx in (-0.006, 0.006)]
    parts.append(_hull(sail, "cloth"))
    parts.append(_box((0.1, 0.08, 0.22), (0, L / 2 + 0.04, h - 0.05), "trim"))  # outboard motor
    return parts


def _bicycle(p: np.ndarray) -> list[Part]:
    r, base = 0.32 * p[2], 0.52 * p[1]
    fy, ry = -base, base
    parts: list[Part] = []
    for y in (fy, ry):
        parts.append(_ring(r, 0.86 * r, 0.04, (0, y, r), "rubber"))
        parts.append(_cylinder(0.05, 0.06, (0, y, r), "metal", axis="x", sections=8))
    t = 0.035
    crank = np.array([0, 0.05 * base, r - 0.02])
    seat_top = np.array([0, 0.35 * base, r + 0.52 * p[3]])
    head_top = np.array([0, -0.68 * base, r + 0.48 * p[3]])
    head_low = np.array([0, -0.74 * base, r + 0.28 * p[3]])
    for a, b in ((crank, seat_top), (crank, head_low), (seat_top - [0, 0.02, 0.08], head_top),
                 (crank, [0, ry, r]), (seat_top - [0, 0.02, 0.08], [0, ry, r]),
                 (head_low, [0, fy, r]), (head_top, head_low)):  # fmt: skip
        parts.append(_rod(a, b, t, "body"))
    bar = _off(head_top, 0, -0.04, 0.12)
    parts.append(_rod(head_top, bar, t, "metal"))
    parts.append(_box((0.34 * p[0], 0.035, 0.035), bar, "metal"))
    for sx in (-1, 1):
        parts.append(_box((0.08, 0.04, 0.04), _off(bar, sx * 0.15 * p[0], 0, 0), "trim"))  # grips
    parts.append(_box((0.1, 0.24, 0.05), _off(seat_top, 0, 0.02, 0.02), "leather"))  # saddle
    parts.append(_box((0.06, 0.05, 0.05), _off(head_top, 0, -0.06, -0.03), "headlight"))  # front lamp
    parts.append(_box((0.06, 0.02, 0.05), _off(seat_top, 0, 0.12, -0.12), "taillight"))  # rear reflector
    parts.append(_cylinder(0.09, 0.02, _off(crank, -0.04, 0, 0), "metal", axis="x", sections=12))  # chain ring
    return parts


def _motorbike(p: np.ndarray) -> list[Part]:
    r, base = 0.28 * p[2], 0.55 * p[1]
    fy, ry = -base, base
    parts: list[Part] = []
    for y in (fy, ry):
        parts.append(_ring(r, 0.68 * r, 0.1, (0, y, r), "rubber"))
        parts.append(_cylinder(0.68 * r, 0.04, (0, y, r), "metal", axis="x", sections=12))
    parts.append(_box((0.24, 0.36 * p[3], 0.26), (0, 0.02, r + 0.05), "metal"))  # engine
    tank = [[sx * 0.13 * p[0], y, z] for sx in (-1, 1) for y, z in
            ((-0.42 * base, r + 0.3), (0.05, r + 0.22), (0.0, r + 0.45), (-0.38 * base, r + 0.48))]  # fmt: skip
    parts.append(_hull(tank, "body"))
    parts.append(_box((0.22, 0.42, 0.07), (0, 0.38 * base, r + 0.38), "leather"))  # seat
    tail_yz = (
        (0.6 * base, r + 0.33),
        (1.0 * base + 0.1, r + 0.46),
        (1.0 * base + 0.1, r + 0.4),
        (0.6 * base, r + 0.25),
    )
    tail = [[sx * 0.1, y, z] for sx in (-1, 1) for y, z in tail_yz]
    parts.append(_hull(tail, "body"))
    parts.append(_box((0.1, 0.03, 0.05), (0, base + 0.115, r + 0.42), "taillight"))
    head = np.array([0, -0.92 * base, r + 0.55 * p[4]])
    parts.append(_cylinder(0.08, 0.08, head, "trim", axis="y", sections=12))
    parts.append(_cylinder(0.065, 0.02, _off(head, 0, -0.045, 0), "headlight", axis="y", sections=12))
    for sx in (-1, 1):
        parts.append(_rod(_off(head, sx * 0.06, 0.03, 0), [sx * 0.06, fy, r], 0.04, "metal"))  # fork
    parts.append(_box((0.45 * p[0], 0.04, 0.04), _off(head, 0, 0.1, 0.1), "metal"))  # handlebar
    parts.append(
        _cylinder(0.045, 0.55 * base, (-0.16, 0.55 * base, r - 0.02), "metal", axis="y", sections=8)
    )  # exhaust
    return parts


# --- furniture and others --------------------------------------------------------------------


def _chair(p: np.ndarray) -> list[Part]:
    w, d, seat = 0.55 * p[0], 0.55 * p[1], 0.45 * p[2]
    leg = 0.045
    parts: list[Part] = []
    for sx in (-1, 1):
        for y in (-d / 2 + leg, d / 2 - leg):
            parts.append(_box((leg, leg, seat), (sx * (w / 2 - leg), y, seat / 2), "wood"))
    parts.append(_box((w, d, 0.04), (0, 0, seat + 0.02), "wood"))
    parts.append(_box((w - 0.03, d - 0.05, 0.05), (0, -0.02, seat + 0.065), "body"))  # seat cushion
    back = 0.55 * p[3]
    yb = d / 2 - 0.025
    for sx in (-1, 1):  # back posts carry on from the rear legs
        parts.append(_box((leg, leg, back), (sx * (w / 2 - leg), d / 2 - leg, seat + back / 2), "wood"))
    parts.append(_box((w, 0.04, 0.7 * back), (0, yb, seat + 0.6 * back), "wood"))
    parts.append(_box((w - 0.1, 0.03, 0.6 * back), (0, yb - 0.035, seat + 0.6 * back), "body"))  # pad, front only
    return parts


def _sofa(p: np.ndarray) -> list[Part]:
    w, d, h = 1.8 * p[0], 0.85 * p[1], 0.3 * p[2]
    arm, feet = 0.18 * p[3], 0.08
    parts = [_box((w, d, h), (0, 0, feet + h / 2), "body")]
    back_h = 0.42 * p[4]
    parts.append(_box((w, 0.2, back_h), (0, d / 2 - 0.1, feet + h + back_h / 2), "body"))
    for sx in (-1, 1):
        parts.append(_box((arm, d, 0.26), (sx * (w / 2 - arm / 2), 0, feet + h + 0.13), "body"))
    inner = w - 2 * arm
    n = 3 if inner > 1.3 else 2
    cw = inner / n
    for i in range(n):  # seat and back cushions, separated by seams, seen from the front
        x = -inner / 2 + cw * (i + 0.5)
        parts.append(_box((cw - 0.025, d - 0.24, 0.1), (x, -0.1, feet + h + 0.05), "accent"))
        parts.append(
            _box((cw - 0.025, 0.12, 0.7 * back_h), (x, d / 2 - 0.26, feet + h + 0.1 + 0.35 * back_h), "accent")
        )
    for sx in (-1, 1):
        for y in (-d / 2 + 0.06, d / 2 - 0.06):
            parts.append(_box((0.06, 0.06, feet), (sx * (w / 2 - 0.06), y, feet / 2), "wood"))
    return parts


def _tvmonitor(p: np.ndarray) -> list[Part]:
    w, h, depth = 1.1 * p[0], 0.7 * p[2], 0.07 * p[1]
    z = 0.22 * p[3] + h / 2 + 0.04
    parts = [
        _box((w, depth, h), (0, 0, z), "body"),
        _box((w * 0.92, 0.01, h * 0.86), (0, -depth / 2 - 0.004, z + 0.01 * h), "screen"),
        _box((0.03, 0.012, 0.015), (w * 0.4, -depth / 2 - 0.004, z - 0.465 * h), "amber"),  # power lamp
        _box((0.6 * w, 0.12 * p[1], 0.65 * h), (0, depth / 2 + 0.06 * p[1], z - 0.05 * h), "body"),  # housing
        _box((0.1, 0.06, 0.22 * p[3]), (0, depth / 2 + 0.05, 0.02 + 0.11 * p[3]), "trim"),  # neck
        _box((0.45 * p[4], 0.3, 0.03), (0, depth / 2 + 0.02, 0.015), "trim"),  # base
    ]
    return parts


def _bottle(p: np.ndarray) -> list[Part]:
    r, h = 0.2 * p[0], 0.75 * p[2]
    neck, nr = 0.3 * p[3], 0.06 * p[4]
    return [
        _cylinder(r, h, (0, 0, h / 2), "bottle_glass", sections=16),
        _cylinder(r * 1.01, 0.45 * h, (0, 0, 0.45 * h), "body", sections=16),  # label, all round
        _cone(r, 0.25, (0, 0, h), "bottle_glass", sections=16),
        _cylinder(nr, neck, (0, 0, h + 0.12 + neck / 2), "bottle_glass", sections=16),
        _cylinder(nr * 1.15, 0.05, (0, 0, h + 0.12 + neck), "accent", sections=16),  # cap
    ]


def _diningtable(p: np.ndarray) -> list[Part]:
    w, L, h = 1.1 * p[0], 1.7 * p[1], 0.72 * p[2]
    leg = 0.07 * p[3]
    top = 0.05
    parts = [_box((w, L, top), (0, 0, h - top / 2), "body")]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_box((leg, leg, h - top), (sx * (w / 2 - 0.06), sy * (L / 2 - 0.06), (h - top) / 2), "wood"))
        parts.append(_box((0.03, L - 0.12, 0.1), (sx * (w / 2 - 0.06), 0, h - top - 0.05), "wood"))
    for sy in (-1, 1):
        parts.append(_box((w - 0.12, 0.03, 0.1), (0, sy * (L / 2 - 0.06), h - top - 0.05), "wood"))
    return parts


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
SYMMETRIC = ("bottle", "diningtable")  # the same from azimuth a and a + 180 deg, as in reality


def assemble(parts: Sequence[Part]) -> tuple[trimesh.Trimesh, np.ndarray]:
    mesh = trimesh.util.concatenate([m for m, _ in parts])
    materials = np.concatenate([np.asarray(ids, dtype=np.int64) for _, ids in parts])
    lo, hi = mesh.bounds
    mesh.apply_translation(-(lo + hi) / 2)
    return mesh, materials
