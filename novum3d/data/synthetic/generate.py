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
    out/dataset.json                        preset, seed, sizes, counts
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rendering import pascal3d_intrinsics, pose_to_viewmat

from ...categories import load_categories
from ..annotations import ObjectAnnotation, save_annotation
from ..pascal3d import occluded_subset
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


def job_rng(seed: int, job: Job) -> np.random.Generator:
    key = zlib.crc32(f"{job.split}/{job.subset}/{job.index}".encode())
    return np.random.default_rng(np.random.SeedSequence([seed, key]))


def sample_scene(job: Job, preset: Preset, category_size: tuple[float, float, float], rng) -> Scene:
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
    textures = TEXTURES_OOD if ood == "texture" else TEXTURES_ID
    backgrounds = BACKGROUNDS_OOD if ood == "context" else BACKGROUNDS_ID
    light = rng.normal(size=3) + np.array([0.0, -1.0, 1.5])  # mostly from the front, above
    return Scene(
        category=job.category,
        proportions=proportions,
        azimuth=azimuth,
        elevation=elevation,
        theta=theta,
        distance=float(distance),
        principal=principal,
        texture=str(rng.choice(textures)),
        background=str(rng.choice(backgrounds)),
        light=light / np.linalg.norm(light),
        ambient=float(rng.uniform(0.3, 0.5)),
    )


@dataclass
class Rendered:
    image: np.ndarray  # [H, W, 3] float in [0, 1], nuisances applied
    mask: np.ndarray  # [H, W] bool, the whole object (before occlusion)
    occluder: np.ndarray | None  # [H, W] bool
    occlusion_ratio: float
    annotation: ObjectAnnotation
    scene: Scene


def render_job(job: Job, preset: Preset, category_size: tuple[float, float, float], seed: int) -> Rendered:
    """Sample and render one image of a job (deterministic in ``seed`` and the job)."""
    rng = job_rng(seed, job)
    for _attempt in range(20):
        scene = sample_scene(job, preset, category_size, rng)
        mesh, part_ids = build_mesh(job.category, scene.proportions)
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
    ys, xs = np.nonzero(frags.mask)
    ann = ObjectAnnotation(
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
    return Rendered(image, frags.mask, occluder, ratio, ann, scene)


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


def write_job(out: Path, job: Job, preset: Preset, category_size, seed: int) -> dict[str, Any]:
    """Render one job and write its image, annotation and masks; returns a small record."""
    r = render_job(job, preset, category_size, seed)
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
) -> dict[str, Any]:
    """Write the whole synthetic benchmark under ``out``; returns the manifest (also dataset.json)."""
    out = Path(out)
    spec = PRESETS[preset] if isinstance(preset, str) else preset
    name = preset if isinstance(preset, str) else next((k for k, v in PRESETS.items() if v == spec), "custom")
    cats = load_categories()
    sizes = {c.name: c.size for c in cats}
    names = categories or [c.name for c in cats]
    unknown = sorted(set(names) - set(sizes))
    if unknown:
        raise ValueError(f"categories: unknown {unknown}; known: {sorted(sizes)}")
    jobs = plan_jobs(spec, names)
    args = [(out, job, spec, sizes[job.category], seed) for job in jobs]
    out.mkdir(parents=True, exist_ok=True)
    if workers > 1:
        with get_context("spawn").Pool(workers) as pool:
            results = pool.imap(_run, args, chunksize=4)
            records = list(progress(results, len(args)) if progress else results)
    else:
        results = map(_run, args)
        records = list(progress(results, len(args)) if progress else results)
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
    (out / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
