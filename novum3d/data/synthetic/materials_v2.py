"""Version 2 materials and light: class-typical part materials, sky lighting, shading.

- Materials. Body parts (``body``, ``accent``) take a colour and pattern from the texture
  families, as paint and upholstery vary; every other part keeps its real material with a
  small variation (:data:`MATERIAL_TABLE`): black rubber tyres, dark glass, red tail lights,
  brown wood, white sails.
- Light comes from the sky: one sun at a random azimuth (independent of the object's
  heading, so shading never tells front from back) and 25-75 deg above the ground, a fill
  light from above, one-sided Lambert shading and a Blinn-Phong highlight on glossy materials.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .appearance import texture_colors
from .meshes_v2 import MATERIALS, MID

__all__ = ["BODY_MATERIAL", "MATERIAL_TABLE", "Material", "material_colors", "object_albedo", "shade"]


@dataclass(frozen=True)
class Material:
    color: tuple[float, float, float]
    jitter: float  # per-channel uniform variation between images
    specular: float = 0.1
    shininess: float = 20.0
    emissive: float = 0.0  # share of the colour that does not depend on the light


MATERIAL_TABLE = {
    "trim": Material((0.11, 0.11, 0.12), 0.03, 0.15, 15),
    "glass": Material((0.14, 0.18, 0.23), 0.03, 0.7, 60),
    "rubber": Material((0.06, 0.06, 0.06), 0.015, 0.05, 8),
    "metal": Material((0.66, 0.67, 0.7), 0.05, 0.6, 25),
    "headlight": Material((0.96, 0.95, 0.86), 0.03, 0.5, 40, emissive=0.8),
    "taillight": Material((0.8, 0.07, 0.05), 0.04, 0.5, 40, emissive=0.6),
    "amber": Material((0.98, 0.6, 0.1), 0.03, 0.3, 30, emissive=0.7),
    "wood": Material((0.5, 0.31, 0.16), 0.06, 0.15, 15),
    "cloth": Material((0.93, 0.92, 0.88), 0.03, 0.05, 8),
    "gelcoat": Material((0.9, 0.9, 0.88), 0.03, 0.35, 30),
    "screen": Material((0.05, 0.06, 0.08), 0.015, 0.8, 80),
    "leather": Material((0.1, 0.08, 0.07), 0.03, 0.25, 20),
    "bottle_glass": Material((0.17, 0.3, 0.13), 0.04, 0.7, 60),
}
BODY_MATERIAL = Material((0.0, 0.0, 0.0), 0.0, 0.15, 30)  # colour from the texture family


def material_colors(rng: np.random.Generator) -> np.ndarray:
    """This image's colour of every class-typical material: [len(MATERIALS), 3] (body rows 0)."""
    out = np.zeros((len(MATERIALS), 3))
    for name, m in MATERIAL_TABLE.items():
        c = np.asarray(m.color) + rng.uniform(-m.jitter, m.jitter, size=3)
        out[MID[name]] = np.clip(c * rng.uniform(0.94, 1.06), 0, 1)
    return out


def object_albedo(texture: str, points: np.ndarray, materials: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Albedo [P, 3] of surface points [P, 3] (object frame) made of ``materials`` [P]."""
    colors = material_colors(rng)
    body = texture_colors(texture, points, (materials == MID["accent"]).astype(np.int64), rng)
    albedo = colors[materials]
    is_body = (materials == MID["body"]) | (materials == MID["accent"])
    albedo[is_body] = body[is_body]
    wood = materials == MID["wood"]
    if wood.any():  # grain along the longest axis of the part, irregular rings
        axis = np.array([0.0, 0.0, 1.0]) if rng.uniform() < 0.5 else np.array([0.0, 1.0, 0.0])
        t = points[wood] @ axis
        q = points[wood] @ np.array([0.7, 0.0, 0.7])
        grain = np.sin(60 * q + 3 * np.sin(9 * t))
        albedo[wood] *= (0.88 + 0.1 * grain)[:, None]
    return np.clip(albedo, 0, 1)


def shade(
    albedo: np.ndarray,
    materials: np.ndarray,
    normals: np.ndarray,
    to_camera: np.ndarray,
    light: np.ndarray,
    ambient: float,
) -> np.ndarray:
    """Colour [P, 3]: one-sided Lambert from the sun, a sky fill from above, Blinn-Phong highlights.

    Args:
        normals, to_camera: [P, 3] unit vectors (outward normal, direction to the camera).
        light: [3] unit direction towards the sun (object frame, z up).
    """
    spec = np.array([MATERIAL_TABLE[m].specular if m in MATERIAL_TABLE else BODY_MATERIAL.specular for m in MATERIALS])
    shin = np.array(
        [MATERIAL_TABLE[m].shininess if m in MATERIAL_TABLE else BODY_MATERIAL.shininess for m in MATERIALS]
    )
    emis = np.array([MATERIAL_TABLE[m].emissive if m in MATERIAL_TABLE else 0.0 for m in MATERIALS])
    lam = np.clip(normals @ light, 0, None)
    fill = ambient * (0.75 + 0.25 * normals[:, 2])
    diffuse = fill + (1 - ambient) * lam
    half = light[None, :] + to_camera
    half /= np.linalg.norm(half, axis=1, keepdims=True) + 1e-12
    highlight = spec[materials] * np.clip((normals * half).sum(1), 0, None) ** shin[materials] * (lam > 0)
    e = emis[materials][:, None]
    glass = (materials == MID["glass"]) | (materials == MID["screen"]) | (materials == MID["bottle_glass"])
    sky = 0.12 * glass * np.clip(0.5 + 0.5 * normals[:, 2], 0, 1)  # glass reflects the bright sky
    color = albedo * (e + (1 - e) * diffuse[:, None]) + highlight[:, None] + sky[:, None]
    return np.clip(color, 0, 1)
