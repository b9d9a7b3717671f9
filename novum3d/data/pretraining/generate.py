"""The pretraining corpus: procedural object categories rendered for supervised backbone pretraining.

Layout under ``out``::

    corpus.json                       version, seed, categories, counts, size, digests; ``complete``
    categories.json                   every category's structure (grammar.CategorySpec)
    train/<category>/<category>_<i>.jpg   ``per_category`` images of each category
    val/<category>/<category>_<i>.jpg     ``val_per_category`` held-out images (other instances)
    preview.png                       a contact sheet of a few categories x instances

Every image is a job seeded by (seed, split/category/index) (novum3d.data.jobs), so the bytes are
the same whatever ``workers``. A file is written under a temporary name and renamed into place
once complete, so a killed run leaves only whole images; rerunning with the same arguments keeps
them and renders the rest. ``corpus.json`` is written first with ``complete: false`` and the
arguments, so another run with different arguments into the same folder is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rendering import pascal3d_intrinsics, pose_to_viewmat

from ...errors import ConfigError
from ...volume_sheet import save_grid
from ..jobs import keyed_rng, map_jobs
from ..synthetic.generate import FOCAL, VIEWPORT
from ..synthetic.materials_v2 import shade
from ..synthetic.raster import interpolate, rasterize_mesh_vectorized
from .backgrounds import BACKGROUNDS, CLUTTER_FILLS, add_clutter, background
from .grammar import PRIMITIVES, build_instance, category_name, draw_category
from .materials import PATTERNS, SHADING, albedo, draw_material

CORPUS_VERSION = 1
FORMAT = "novum3d-pretraining/1"
MANIFEST = "corpus.json"
JPEG_QUALITY = 90
SPLITS = ("train", "val")


@dataclass(frozen=True)
class CorpusConfig:
    """What determines a corpus's bytes (the number of workers does not)."""

    categories: int = 1000
    per_category: int = 100
    val_per_category: int = 10
    size: int = 160
    seed: int = 0
    version: int = CORPUS_VERSION

    def validate(self) -> None:
        if self.categories < 1 or self.per_category < 1 or self.val_per_category < 0:
            raise ConfigError("categories and per_category must be >= 1, val_per_category >= 0", field="categories")
        if not 16 <= self.size <= 1024:
            raise ConfigError(f"size: expected 16..1024 pixels, got {self.size}", field="size")
        if self.version != CORPUS_VERSION:
            raise ConfigError(f"version: this code makes version {CORPUS_VERSION}, got {self.version}", field="version")


@dataclass(frozen=True)
class CorpusJob:
    split: str
    category: int
    index: int

    @property
    def name(self) -> str:
        return category_name(self.category)

    @property
    def path(self) -> str:
        """Relative to the corpus root."""
        return f"{self.split}/{self.name}/{self.name}_{self.index:05d}.jpg"


def plan_jobs(cfg: CorpusConfig) -> list[CorpusJob]:
    """Every image, in a fixed order: each category's training images, then its held-out ones."""
    jobs = []
    for c in range(cfg.categories):
        jobs += [CorpusJob("train", c, i) for i in range(cfg.per_category)]
        jobs += [CorpusJob("val", c, i) for i in range(cfg.val_per_category)]
    return jobs


# --- one image ---------------------------------------------------------------------------------


@dataclass
class View:
    azimuth: float
    elevation: float
    theta: float
    distance: float
    principal: tuple[float, float]


def sample_view(rng: np.random.Generator, size: int) -> View:
    """A viewpoint anywhere on the sphere (elevation uniform in sin), a roll of up to 30 degrees, the
    object's radius-1 sphere filling 25-50% of the image side, the principal point jittered by 15%."""
    azimuth = rng.uniform(0, 2 * math.pi)
    elevation = math.asin(rng.uniform(-1, 1))
    theta = math.radians(rng.uniform(-30, 30))
    fill = rng.uniform(0.25, 0.5)
    distance = VIEWPORT * FOCAL / (fill * size)
    jitter = rng.uniform(-0.15, 0.15, size=2) * size
    return View(azimuth, elevation, theta, distance, (size / 2 + float(jitter[0]), size / 2 + float(jitter[1])))


def render_image(cfg: CorpusConfig, job: CorpusJob) -> np.ndarray:
    """The job's image: [size, size, 3] uint8 (deterministic in the config's seed and the job)."""
    rng = keyed_rng(cfg.seed, job.path)
    spec = draw_category(cfg.seed, job.category)
    size = cfg.size
    for _attempt in range(20):
        obj = build_instance(spec, rng)
        view = sample_view(rng, size)
        viewmat = pose_to_viewmat(view.azimuth, view.elevation, view.theta, view.distance)[0].double().numpy()
        K = pascal3d_intrinsics(FOCAL, VIEWPORT, view.principal)[0].double().numpy()
        frags = rasterize_mesh_vectorized(obj.vertices, obj.faces, viewmat, K, size, size)
        if frags.mask.sum() >= max(16, 0.01 * size * size):
            break
    else:
        raise RuntimeError(f"{job.path}: object never visible in 20 samples")
    mask = frags.mask
    faces = frags.face[mask]
    points = interpolate(frags, obj.faces, obj.vertices)[mask]
    normals = interpolate(frags, obj.faces, obj.normals)[mask]
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    slots = obj.slots[faces]
    materials = [draw_material(s, rng) for s in spec.slots]
    color_albedo = np.zeros((len(points), 3))
    shading = np.zeros(len(points), dtype=np.int64)
    for k, m in enumerate(materials):
        on = slots == k
        color_albedo[on] = albedo(m, points[on])
        shading[on] = m.shading_id
    sun_azimuth, sun_elevation = rng.uniform(0, 2 * math.pi), math.radians(rng.uniform(-20, 85))
    light = np.array([math.cos(sun_elevation) * math.sin(sun_azimuth), -math.cos(sun_elevation) * math.cos(sun_azimuth),
                      math.sin(sun_elevation)])  # fmt: skip
    camera = -viewmat[:3, :3].T @ viewmat[:3, 3]
    to_camera = camera - points
    to_camera /= np.linalg.norm(to_camera, axis=1, keepdims=True)
    color = shade(color_albedo, shading, normals, to_camera, light, float(rng.uniform(0.3, 0.65)))
    tint = rng.uniform(0.9, 1.1, size=3) * rng.uniform(0.8, 1.15)  # the light's colour and the exposure
    image = background(str(rng.choice(BACKGROUNDS)), size, size, rng)
    image = add_clutter(image, rng)
    image[mask] = color
    return (np.clip(image * tint, 0, 1) * 255).round().astype(np.uint8)


def encode_jpeg(image: np.ndarray) -> bytes:
    buffer = BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def write_job(out: Path, cfg: CorpusConfig, job: CorpusJob) -> tuple[str, str]:
    """Render and write one image (atomically); returns (relative path, sha256 of its bytes)."""
    data = encode_jpeg(render_image(cfg, job))
    path = out / job.path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)  # a killed run leaves a .tmp file, never a partial image under the final name
    return job.path, hashlib.sha256(data).hexdigest()


def _run(args: tuple) -> tuple[str, str]:
    return write_job(*args)


# --- the whole corpus --------------------------------------------------------------------------


def split_digest(entries: list[tuple[str, str]]) -> str:
    """sha256 over a split's (relative path, file sha256) pairs in path order."""
    h = hashlib.sha256()
    for path, digest in sorted(entries):
        h.update(f"{path} {digest}\n".encode())
    return h.hexdigest()


def _arguments(cfg: CorpusConfig) -> dict[str, Any]:
    return asdict(cfg)


def check_existing(out: Path, cfg: CorpusConfig) -> dict[str, Any] | None:
    """The manifest already in ``out`` (None if none); a corpus made with other arguments is a ConfigError."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        saved = {k: manifest[k] for k in _arguments(cfg)}
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a corpus manifest ({exc}); choose another --out") from exc
    differ = {k: (saved.get(k), v) for k, v in _arguments(cfg).items() if saved.get(k) != v}
    if differ:
        first = next(iter(differ))
        said = ", ".join(f"{k}={a} (asked {b})" for k, (a, b) in differ.items())
        raise ConfigError(f"{out}: holds a corpus made with {said}; rerun with its arguments to resume it, or choose "
                          "another --out", path=None, field=first)  # fmt: skip
    return manifest


def _manifest(cfg: CorpusConfig, complete: bool, counts=None, digests=None) -> dict[str, Any]:
    from ..synthetic import appearance, appearance_v2

    names = [category_name(c) for c in range(cfg.categories)]
    manifest = {"format": FORMAT, **_arguments(cfg), "complete": complete, "category_names": names}
    manifest["families"] = {
        "backgrounds": list(BACKGROUNDS),
        "clutter": list(CLUTTER_FILLS),
        "patterns": list(PATTERNS),
        "shading": list(SHADING),
        "primitives": list(PRIMITIVES),
    }
    # Recorded so a reader of the corpus sees what it was kept apart from (docs/pretraining.md says why).
    manifest["not_used_benchmark_families"] = {
        "backgrounds": sorted(set(appearance_v2.BACKGROUNDS_ID + appearance_v2.BACKGROUNDS_OOD
                                  + appearance.BACKGROUNDS_ID + appearance.BACKGROUNDS_OOD)),
        "occluders": list(appearance_v2.OCCLUDER_FAMILIES),
        "textures": list(appearance.TEXTURES_OOD),
    }  # fmt: skip
    if counts is not None:
        manifest["counts"] = counts
        manifest["digests"] = digests
    return manifest


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def generate_corpus(
    out: str | Path,
    cfg: CorpusConfig,
    workers: int = 1,
    progress: Callable[[Iterator, int], Iterator] | None = None,
    preview: bool = True,
) -> dict[str, Any]:
    """Write (or finish) the corpus of ``cfg`` under ``out``; returns the manifest (also corpus.json)."""
    cfg.validate()
    out = Path(out)
    existing = check_existing(out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    if existing is None:
        _write_json(out / MANIFEST, _manifest(cfg, complete=False))
    for stale in out.glob("*/*/*.tmp*"):  # half-written images of a killed run
        stale.unlink()
    jobs = plan_jobs(cfg)
    done = {p.relative_to(out).as_posix() for split in SPLITS if (out / split).is_dir()
            for p in (out / split).glob("*/*.jpg")}  # fmt: skip
    todo = [j for j in jobs if j.path not in done]
    records = map_jobs(_run, [(out, cfg, j) for j in todo], workers, progress, chunksize=8, ordered=False)
    records += [(j.path, hashlib.sha256((out / j.path).read_bytes()).hexdigest()) for j in jobs if j.path in done]
    by_split = {s: [r for r in records if r[0].startswith(s + "/")] for s in SPLITS}
    counts = {s: len(v) for s, v in by_split.items()}
    digests = {s: split_digest(v) for s, v in by_split.items()}
    _write_json(out / "categories.json", [asdict(draw_category(cfg.seed, c)) for c in range(cfg.categories)])
    if preview:
        write_preview(out, cfg)
    manifest = _manifest(cfg, complete=True, counts=counts, digests=digests)
    _write_json(out / MANIFEST, manifest)
    return manifest


def ensure_corpus(
    out: str | Path,
    cfg: CorpusConfig,
    workers: int = 1,
    progress: Callable[[Iterator, int], Iterator] | None = None,
) -> dict[str, Any]:
    """The corpus of ``cfg`` at ``out``: as it is when complete (its files are not re-read), else made or
    finished by :func:`generate_corpus`; one made with other arguments is a ConfigError."""
    existing = check_existing(Path(out), cfg)
    if existing is not None and existing.get("complete"):
        return existing
    return generate_corpus(out, cfg, workers, progress)


def write_preview(out: Path, cfg: CorpusConfig, categories: int = 8, per_category: int = 6) -> Path:
    """A contact sheet: a row per category (the first few), its first training instances."""
    images, labels = [], []
    cols = min(per_category, cfg.per_category)
    for c in range(min(categories, cfg.categories)):
        for i in range(cols):
            job = CorpusJob("train", c, i)
            img = Image.open(out / job.path).convert("RGB")
            images.append(np.asarray(img.resize((128, 128), Image.Resampling.BILINEAR)))
            labels.append(f"{job.name} #{i}")
    return save_grid(images, labels, out / "preview.png", columns=cols)
