"""The synthetic PASCAL3D+-format benchmark: splits, presets, one image per job, parallel writer.

Every image is a job with its own seed, derived from the data set seed and the job's place
(split, folder, index), so the output is byte-identical for a seed whatever the number of
worker processes. The on-disk layout is the NeMo preprocessed one, so
:class:`~novum3d.data.pascal3d.Pascal3DPreprocessed` reads it like real data::

    out/train/, out/val/, out/test-clean/   images/<cls>/, annotations/<cls>/, masks/<cls>/, lists/<cls>/
    out/test-occluded/                      <cls>FGL{1,2,3}_BGL{1,2,3} folders (OccludedPASCAL3D+ naming),
                                            occluders/<subset>/ holds the occluder masks
    out/test-corrupted/<corruption>/        all severities; 'severity' in each annotation
    out/test-ood/<nuisance>/                shape, pose, texture, context, weather (OOD-CV naming)
    out/dataset.json                        preset, seed, sizes, counts (and, from version 2, the
                                            version, the context bias and the corruption backends)

``version=2`` (the default) is the benchmark of docs/synthetic-benchmark.md: class-typical part
materials, a front and a back, context-biased natural backgrounds, occluders over object and
background, ImageNet-C's corruption recipes. ``version=1`` reproduces the first benchmark byte for
byte (its code paths below are kept unchanged: ``sample_scene``, ``_render_v1``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rendering import pascal3d_intrinsics, pose_to_viewmat

from ...categories import load_categories
from ...errors import ConfigError
from ..annotations import ObjectAnnotation, save_annotation
from ..jobs import keyed_rng, map_jobs
from ..pascal3d import occluded_subset
from . import appearance_v2, corruptions, materials_v2, occluders
from .appearance import (
    BACKGROUNDS_ID,
    BACKGROUNDS_OOD,
    TEXTURES_ID,
    TEXTURES_OOD,
    background,
    lambert,
    texture_colors,
)
from .meshes import NUM_PROPORTIONS, build_mesh
from .nuisances import CORRUPTIONS, WEATHER, corrupt, occlude
from .raster import interpolate, rasterize_mesh

VIEWPORT = 3000.0
FOCAL = 1.0
OOD_SPLITS = ("shape", "pose", "texture", "context", "weather")
VERSIONS = (1, 2)
DEFAULT_VERSION = 2
DEFAULT_CONTEXT_BIAS = 0.7


@dataclass(frozen=True)
class Preset:
    height: int
    width: int
    train: int  # images per class
    val: int
    test: int  # per class for test-clean, each occlusion level and each OOD nuisance
    corrupted: int  # per class and corruption (severities cycle 1-5)
    object_fill: float = 0.42  # half-diagonal of the object / min(H, W), at the nominal distance


PRESETS = {
    "tiny": Preset(height=64, width=64, train=3, val=1, test=1, corrupted=1),
    "small": Preset(height=256, width=256, train=100, val=20, test=20, corrupted=2),
    "full": Preset(height=640, width=800, train=500, val=50, test=100, corrupted=10),
}


@dataclass(frozen=True)
class Job:
    split: str  # folder under out/, e.g. "train", "test-occluded", "test-ood/pose"
    subset: str  # folder under images/, e.g. "car" or "carFGL2_BGL2"
    category: str
    index: int
    nuisance: str = "clean"
    occlusion_level: int = 0
    corruption: str | None = None
    severity: int = 0

    @property
    def name(self) -> str:
        return f"{self.category}_{self.index:05d}"


@dataclass
class Scene:
    """Everything sampled for one image (kept so tests can rebuild the mesh)."""

    category: str
    proportions: np.ndarray
    azimuth: float
    elevation: float
    theta: float
    distance: float
    principal: tuple[float, float]
    texture: str
    background: str
    light: np.ndarray = field(repr=False)
    ambient: float = 0.4
    version: int = 1


def job_rng(seed: int, job: Job) -> np.random.Generator:
    return keyed_rng(seed, f"{job.split}/{job.subset}/{job.index}")


def _sample_geometry(job: Job, preset: Preset, category_size: tuple[float, float, float], rng) -> dict[str, Any]:
    """Proportions, pose, distance and principal point of a scene; both versions draw them alike, in this order."""
    ood = job.nuisance
    if ood == "shape":  # proportions the training split never draws
        low = rng.uniform(0.55, 0.72, size=NUM_PROPORTIONS)
        high = rng.uniform(1.3, 1.5, size=NUM_PROPORTIONS)
        proportions = np.where(rng.uniform(size=NUM_PROPORTIONS) < 0.5, low, high)
    else:
        proportions = rng.uniform(0.85, 1.15, size=NUM_PROPORTIONS)
    azimuth = rng.uniform(0, 2 * math.pi)
    if ood == "pose":
        high_view = rng.uniform() < 0.7
        elevation = math.radians(rng.uniform(45, 75) if high_view else rng.uniform(-35, -15))
        theta = math.radians(rng.uniform(15, 30)) * rng.choice([-1, 1])
    else:
        elevation = math.radians(rng.uniform(-5, 35))
        theta = math.radians(rng.uniform(-8, 8))
    radius = 0.5 * float(np.linalg.norm(category_size))
    nominal = VIEWPORT * FOCAL * radius / (preset.object_fill * min(preset.height, preset.width))
    distance = nominal * rng.uniform(0.9, 1.1)
    jitter = rng.uniform(-0.05, 0.05, size=2) * [preset.width, preset.height]
    principal = (preset.width / 2 + float(jitter[0]), preset.height / 2 + float(jitter[1]))
    return {"proportions": proportions, "azimuth": azimuth, "elevation": elevation, "theta": theta,
            "distance": float(distance), "principal": principal}  # fmt: skip


def sample_scene(job: Job, preset: Preset, category_size: tuple[float, float, float], rng) -> Scene:
    ood = job.nuisance
    geometry = _sample_geometry(job, preset, category_size, rng)
    textures = TEXTURES_OOD if ood == "texture" else TEXTURES_ID
    backgrounds = BACKGROUNDS_OOD if ood == "context" else BACKGROUNDS_ID
    light = rng.normal(size=3) + np.array([0.0, -1.0, 1.5])  # mostly from the front, above
    return Scene(
        category=job.category,
        **geometry,
        texture=str(rng.choice(textures)),
        background=str(rng.choice(backgrounds)),
        light=light / np.linalg.norm(light),
        ambient=float(rng.uniform(0.3, 0.5)),
    )


def sample_scene_v2(
    job: Job, preset: Preset, category_size: tuple[float, float, float], rng, context_bias: float
) -> Scene:
    """Version 2: as version 1 for shape and pose; context-biased backgrounds; light from the sky."""
    ood = job.nuisance
    geometry = _sample_geometry(job, preset, category_size, rng)
    textures = appearance_v2.TEXTURES_OOD if ood == "texture" else appearance_v2.TEXTURES_ID
    texture = str(rng.choice(textures))
    if ood == "context":  # held-out families, no class preference
        back = str(rng.choice(appearance_v2.BACKGROUNDS_OOD))
    else:
        preferred = appearance_v2.PREFERRED_BACKGROUNDS.get(job.category, ())
        if preferred and rng.uniform() < context_bias:
            back = str(rng.choice(preferred))
        else:
            back = str(rng.choice(appearance_v2.BACKGROUNDS_ID))
    sun_azimuth = rng.uniform(0, 2 * math.pi)  # independent of the object's heading
    sun_elevation = math.radians(rng.uniform(25, 75))
    light = np.array([
        math.cos(sun_elevation) * math.sin(sun_azimuth),
        -math.cos(sun_elevation) * math.cos(sun_azimuth),
        math.sin(sun_elevation),
    ])  # fmt: skip
    return Scene(
        category=job.category,
        **geometry,
        texture=texture,
        background=back,
        light=light,
        ambient=float(rng.uniform(0.3, 0.5)),
        version=2,
    )


@dataclass
class Rendered:
    image: np.ndarray  # [H, W, 3] float in [0, 1], nuisances applied
    mask: np.ndarray  # [H, W] bool, the whole object (before occlusion)
    occluder: np.ndarray | None  # [H, W] bool
    occlusion_ratio: float
    annotation: ObjectAnnotation
    scene: Scene
    materials: np.ndarray | None = None  # [H, W] int, version 2: material id per pixel, -1 off the object
    albedo: np.ndarray | None = None  # [H, W, 3], version 2: the object's albedo before shading
    background_occlusion_ratio: float = 0.0


def render_job(
    job: Job,
    preset: Preset,
    category_size: tuple[float, float, float],
    seed: int,
    version: int = DEFAULT_VERSION,
    context_bias: float = DEFAULT_CONTEXT_BIAS,
    corruption_backends: dict[str, str] | None = None,
) -> Rendered:
    """Sample and render one image of a job (deterministic in ``seed``, the job and the options)."""
    if version == 1:
        return _render_v1(job, preset, category_size, seed)
    if version != 2:
        raise ValueError(f"version: expected one of {VERSIONS}, got {version!r}")
    return _render_v2(job, preset, category_size, seed, context_bias, corruption_backends or {})


def _annotation(scene: Scene, mask: np.ndarray) -> ObjectAnnotation:
    ys, xs = np.nonzero(mask)
    return ObjectAnnotation(
        azimuth=scene.azimuth,
        elevation=scene.elevation,
        theta=scene.theta,
        distance=scene.distance,
        focal=FOCAL,
        principal=scene.principal,
        viewport=VIEWPORT,
        bbox=(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)),
        cad_index=1,
    )


def render_object_v2(
    scene: Scene, height: int, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render a version 2 scene's object: (colour [P, 3], albedo [P, 3], materials [H, W], fragments mask [H, W])."""
    mesh, materials = build_mesh(scene.category, scene.proportions, version=2)
    viewmat = pose_to_viewmat(scene.azimuth, scene.elevation, scene.theta, scene.distance)[0].double().numpy()
    K = pascal3d_intrinsics(FOCAL, VIEWPORT, scene.principal)[0].double().numpy()
    frags = rasterize_mesh(mesh.vertices, mesh.faces, viewmat, K, width, height)
    mask = frags.mask
    faces = frags.face[mask]
    points = interpolate(frags, mesh.faces, mesh.vertices)[mask]
    mats = materials[faces]
    albedo = materials_v2.object_albedo(scene.texture, points, mats, rng)
    camera = -viewmat[:3, :3].T @ viewmat[:3, 3]
    to_camera = camera - points
    to_camera /= np.linalg.norm(to_camera, axis=1, keepdims=True)
    color = materials_v2.shade(albedo, mats, mesh.face_normals[faces], to_camera, scene.light, scene.ambient)
    material_map = np.full((height, width), -1, dtype=np.int64)
    material_map[mask] = mats
    return color, albedo, material_map, mask


def _render_v2(job, preset, category_size, seed, context_bias, backends) -> Rendered:
    rng = job_rng(seed, job)
    for _attempt in range(20):
        scene = sample_scene_v2(job, preset, category_size, rng, context_bias)
        color, albedo, material_map, mask = render_object_v2(scene, preset.height, preset.width, rng)
        if mask.sum() >= 16:
            break
    else:
        raise RuntimeError(f"{job.split}/{job.subset}/{job.name}: object never visible in 20 samples")
    image = appearance_v2.background(scene.background, preset.height, preset.width, rng, scene.elevation)
    image[mask] = color
    albedo_map = np.zeros((preset.height, preset.width, 3))
    albedo_map[mask] = albedo
    occluder, ratio, bg_ratio = None, 0.0, 0.0
    if job.occlusion_level:
        image, occluder, ratio, bg_ratio = occluders.occlude(image, mask, job.occlusion_level, rng)
    if job.corruption is not None:
        seed32 = int(rng.integers(2**31))
        backend = backends.get(job.corruption, "own")
        image = corruptions.corrupt(image, job.corruption, job.severity, seed32, backend)
    return Rendered(image, mask, occluder, ratio, _annotation(scene, mask), scene, material_map, albedo_map, bg_ratio)


def _render_v1(job: Job, preset: Preset, category_size: tuple[float, float, float], seed: int) -> Rendered:
    """Version 1, unchanged (byte-for-byte reproducible)."""
    rng = job_rng(seed, job)
    for _attempt in range(20):
        scene = sample_scene(job, preset, category_size, rng)
        mesh, part_ids = build_mesh(job.category, scene.proportions, version=1)
        viewmat = pose_to_viewmat(scene.azimuth, scene.elevation, scene.theta, scene.distance)[0].double().numpy()
        K = pascal3d_intrinsics(FOCAL, VIEWPORT, scene.principal)[0].double().numpy()
        frags = rasterize_mesh(mesh.vertices, mesh.faces, viewmat, K, preset.width, preset.height)
        if frags.mask.sum() >= 16:
            break
    else:
        raise RuntimeError(f"{job.split}/{job.subset}/{job.name}: object never visible in 20 samples")
    points = interpolate(frags, mesh.faces, mesh.vertices)[frags.mask]
    faces = frags.face[frags.mask]
    albedo = texture_colors(scene.texture, points, part_ids[faces], rng)
    shade = lambert(mesh.face_normals[faces], scene.light, scene.ambient)
    image = background(scene.background, preset.height, preset.width, rng)
    image[frags.mask] = np.clip(albedo * shade[:, None], 0, 1)
    occluder, ratio = None, 0.0
    if job.occlusion_level:
        texture = background(str(rng.choice(BACKGROUNDS_ID)), preset.height, preset.width, rng)
        image, occluder, ratio = occlude(image, frags.mask, job.occlusion_level, rng, texture)
    if job.corruption is not None:
        image = corrupt(image, job.corruption, job.severity, rng)
    return Rendered(image, frags.mask, occluder, ratio, _annotation(scene, frags.mask), scene)


def plan_jobs(preset: Preset, categories: list[str]) -> list[Job]:
    """Every image of the data set, in a fixed order."""
    jobs: list[Job] = []
    for cat in categories:
        jobs += [Job("train", cat, cat, i) for i in range(preset.train)]
        jobs += [Job("val", cat, cat, i) for i in range(preset.val)]
        jobs += [Job("test-clean", cat, cat, i) for i in range(preset.test)]
        for level in (1, 2, 3):
            sub = occluded_subset(cat, level)
            jobs += [Job("test-occluded", sub, cat, i, "occlusion", level) for i in range(preset.test)]
        for k, name in enumerate(CORRUPTIONS):
            for i in range(preset.corrupted):
                sev = 1 + (i + k) % 5
                jobs.append(Job(f"test-corrupted/{name}", cat, cat, i, name, corruption=name, severity=sev))
        for nuisance in OOD_SPLITS:
            for i in range(preset.test):
                if nuisance == "weather":
                    weather = list(WEATHER)[i % len(WEATHER)]
                    job = Job("test-ood/weather", cat, cat, i, "weather", corruption=weather, severity=2 + i % 3)
                else:
                    job = Job(f"test-ood/{nuisance}", cat, cat, i, nuisance)
                jobs.append(job)
    return jobs


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def write_job(
    out: Path,
    job: Job,
    preset: Preset,
    category_size,
    seed: int,
    version: int = DEFAULT_VERSION,
    context_bias: float = DEFAULT_CONTEXT_BIAS,
    corruption_backends: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Render one job and write its image, annotation and masks; returns a small record."""
    r = render_job(job, preset, category_size, seed, version, context_bias, corruption_backends)
    root = out / job.split
    img_path = root / "images" / job.subset / f"{job.name}.JPEG"
    img_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((r.image * 255).round().astype(np.uint8)).save(img_path, format="JPEG", quality=95)
    extra = {
        "proportions": r.scene.proportions,
        "occlusion_ratio": np.float64(r.occlusion_ratio),
        "severity": np.int64(job.severity),
        "texture": np.array(r.scene.texture),
        "background": np.array(r.scene.background),
        "height": np.int64(preset.height),
        "width": np.int64(preset.width),
    }
    if version != 1:
        extra["version"] = np.int64(version)
        extra["background_occlusion_ratio"] = np.float64(r.background_occlusion_ratio)
    save_annotation(root / "annotations" / job.subset / f"{job.name}.npz", r.annotation, **extra)
    _write_png(root / "masks" / job.subset / f"{job.name}.png", r.mask.astype(np.uint8) * 255)
    if r.occluder is not None:
        _write_png(root / "occluders" / job.subset / f"{job.name}.png", r.occluder.astype(np.uint8) * 255)
    return {"split": job.split, "occlusion_ratio": r.occlusion_ratio}


def _run(args: tuple) -> dict[str, Any]:
    return write_job(*args)


def generate(
    out: str | Path,
    preset: str | Preset = "small",
    seed: int = 0,
    workers: int = 1,
    categories: list[str] | None = None,
    progress: Callable[[Iterator, int], Iterator] | None = None,
    version: int = DEFAULT_VERSION,
    context_bias: float = DEFAULT_CONTEXT_BIAS,
    corruption_backend: str = "own",
) -> dict[str, Any]:
    """Write the whole synthetic benchmark under ``out``; returns the manifest (also dataset.json).

    Args:
        version: 2 (default) or 1 (the first benchmark, byte for byte).
        context_bias: version 2: probability that an in-distribution image's background comes
            from its class's preferred families (the rest: uniform over all of them).
        corruption_backend: version 2: "own" (ImageNet-C's recipes, transcribed) or
            "imagecorruptions" (the package where it runs reproducibly, the transcription elsewhere).
    """
    if version not in VERSIONS:
        raise ConfigError(f"version: expected one of {VERSIONS}, got {version!r}", field="version")
    if not 0.0 <= context_bias <= 1.0:
        raise ConfigError(f"context_bias: expected a probability in [0, 1], got {context_bias}", field="context_bias")
    if version == 1 and (context_bias != DEFAULT_CONTEXT_BIAS or corruption_backend != "own"):
        raise ConfigError("context_bias and corruption_backend belong to version 2; version 1 has neither",
                          field="version")  # fmt: skip
    out = Path(out)
    spec = PRESETS[preset] if isinstance(preset, str) else preset
    name = preset if isinstance(preset, str) else next((k for k, v in PRESETS.items() if v == spec), "custom")
    cats = load_categories()
    sizes = {c.name: c.size for c in cats}
    names = categories or [c.name for c in cats]
    unknown = sorted(set(names) - set(sizes))
    if unknown:
        raise ConfigError(f"categories: unknown {unknown}; known: {sorted(sizes)}", field="categories")
    jobs = plan_jobs(spec, names)
    if version == 1:
        args = [(out, job, spec, sizes[job.category], seed, 1) for job in jobs]
    else:
        backends = corruptions.backends(corruptions.CORRUPTIONS + corruptions.WEATHER, corruption_backend)
        args = [(out, job, spec, sizes[job.category], seed, version, context_bias, backends) for job in jobs]
    out.mkdir(parents=True, exist_ok=True)
    records = map_jobs(_run, args, workers, progress, chunksize=4)
    by_folder: dict[tuple[str, str], list[str]] = {}
    for job in jobs:
        by_folder.setdefault((job.split, job.subset), []).append(job.name)
    for (split, subset), members in by_folder.items():
        list_path = out / split / "lists" / subset / "mesh01.txt"
        list_path.parent.mkdir(parents=True, exist_ok=True)
        list_path.write_text("\n".join(members) + "\n")
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec["split"]] = counts.get(rec["split"], 0) + 1
    manifest = {
        "format": "novum3d-synthetic/1 (NeMo preprocessed layout)",
        "preset": name,
        "preset_spec": asdict(spec),
        "seed": seed,
        "categories": names,
        "images": len(jobs),
        "counts": dict(sorted(counts.items())),
    }
    if version != 1:  # version 1's manifest stays as it was ("format" names the version)
        manifest["format"] = f"novum3d-synthetic/{version} (NeMo preprocessed layout)"
        manifest["version"] = version
        manifest["context_bias"] = context_bias
        manifest["backgrounds"] = {
            "in_distribution": list(appearance_v2.BACKGROUNDS_ID),
            "ood_context": list(appearance_v2.BACKGROUNDS_OOD),
            "preferred": {c: list(appearance_v2.PREFERRED_BACKGROUNDS.get(c, ())) for c in names},
        }
        manifest["occluders"] = list(appearance_v2.OCCLUDER_FAMILIES)
        manifest["corruptions"] = {
            name: ("ImageNet-C, " + (b if b != "own" else "novum3d transcription of imagecorruptions 1.1.2"))
            if name in corruptions.IMAGENET_C
            else "ImageNet-C-like (novum3d's own, not in ImageNet-C)"
            for name, b in backends.items()
        }
    (out / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
