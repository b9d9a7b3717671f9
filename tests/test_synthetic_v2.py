"""Version 2 of the synthetic benchmark: context bias, part materials, front/back, occlusion of
the background, ImageNet-C corruptions, natural backgrounds; version 1 unchanged byte for byte."""

import hashlib
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from novum3d.categories import load_categories
from novum3d.data.synthetic import Job, Preset, generate, open_splits, render_job
from novum3d.data.synthetic import corruptions as C
from novum3d.data.synthetic.appearance_v2 import (
    BACKGROUNDS_ID,
    BACKGROUNDS_OOD,
    OCCLUDER_FAMILIES,
    background,
    context_distribution,
)
from novum3d.data.synthetic.generate import FOCAL, VIEWPORT, Scene, render_object_v2, sample_scene_v2
from novum3d.data.synthetic.materials_v2 import MATERIAL_TABLE
from novum3d.data.synthetic.meshes_v2 import MATERIALS, MID, SYMMETRIC
from novum3d.data.synthetic.preview import write_preview

SIZES = {c.name: c.size for c in load_categories()}
CATS = list(SIZES)

# sha256 over "relative path<TAB>sha256 of the file\n" for every file, sorted, of
# generate(out, "tiny", seed=0, workers=1) with all 12 classes, computed from the code as it was
# before version 2 existed (commit 2858cd4; numpy 2.4.6, scipy 1.17.1, Pillow 13.0.0, trimesh
# 5.2.0): 1069 files. A change of these libraries' output would show here too. numpy dispatches its
# float kernels to the processor's SIMD level, and their last bits differ between levels, so that
# same commit writes other bytes on another processor: each digest is commit 2858cd4's own output on
# one machine of this project (the second on an AMD EPYC without AVX-512, numpy SIMD X86_V3,
# 2026-12-05).
V1_TINY_DIGESTS = {
    "3092630d44727aff29656dbacaed8b2010a4024b10cf2eed903c19762d3e43ba",
    "6a2e2de93295068a3e700463edb131a2829d0410d703cb57c6178b73df1e0264",
}
V1_TINY_FILES = 1069


def tree_digest(root) -> tuple[str, int]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(root)}\t{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest(), len(files)


def test_version_1_is_reproduced_byte_for_byte(tmp_path):
    out = tmp_path / "v1"
    manifest = generate(out, "tiny", seed=0, workers=1, version=1)
    digest, files = tree_digest(out)
    assert files == V1_TINY_FILES and digest in V1_TINY_DIGESTS, digest
    assert manifest["format"].startswith("novum3d-synthetic/1") and "version" not in manifest


def nmi(a: list[str], b: list[str]) -> float:
    """Normalised mutual information, arithmetic-mean normalisation (scikit-learn's default)."""
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    joint = np.zeros((len(ua), len(ub)))
    np.add.at(joint, (ia, ib), 1)
    return nmi_of_joint(joint)


def nmi_of_joint(joint: np.ndarray) -> float:
    p = joint / joint.sum()
    pa, pb = p.sum(1), p.sum(0)

    def entropy(q):
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / np.outer(pa, pb)[nz])).sum())
    return mi / ((entropy(pa) + entropy(pb)) / 2)


def sampled_backgrounds(split: str, nuisance: str, per_class: int, bias: float = 0.7):
    preset = Preset(height=64, width=64, train=1, val=1, test=1, corrupted=1)
    classes, families = [], []
    for cat in CATS:
        for i in range(per_class):
            job = Job(split, cat, cat, i, nuisance)
            from novum3d.data.synthetic.generate import job_rng

            scene = sample_scene_v2(job, preset, SIZES[cat], job_rng(0, job), bias)
            classes.append(cat)
            families.append(scene.background)
    return classes, families


def test_class_and_background_share_information_in_distribution_and_not_in_ood_context():
    population = nmi_of_joint(context_distribution(CATS, 0.7))
    assert population >= 0.3, population
    cls, fam = sampled_backgrounds("train", "clean", 100)
    train = nmi(cls, fam)
    assert train >= 0.3 and set(fam) <= set(BACKGROUNDS_ID)
    cls, fam = sampled_backgrounds("test-ood/context", "context", 100)
    assert nmi(cls, fam) < 0.5 * train and set(fam) <= set(BACKGROUNDS_OOD)
    cls, fam = sampled_backgrounds("train", "clean", 100, bias=0.0)  # the bias is the only source
    assert nmi(cls, fam) < 0.5 * train


@pytest.fixture(scope="module")
def tiny_v2(tmp_path_factory):
    out = tmp_path_factory.mktemp("v2") / "tiny"
    manifest = generate(out, "tiny", seed=1, workers=1, categories=["car", "boat", "sofa"])
    return out, manifest


def test_dataset_json_records_version_and_choices(tiny_v2):
    out, manifest = tiny_v2
    on_disk = json.loads((out / "dataset.json").read_text())
    assert on_disk == manifest and manifest["version"] == 2 and manifest["context_bias"] == 0.7
    assert manifest["format"].startswith("novum3d-synthetic/2")
    assert manifest["backgrounds"]["preferred"]["boat"] == ["water"]
    assert set(manifest["corruptions"]) == set(C.CORRUPTIONS + C.WEATHER)
    assert manifest["corruptions"]["rain"].startswith("ImageNet-C-like")
    assert all(v.startswith("ImageNet-C,") for k, v in manifest["corruptions"].items() if k != "rain")
    with np.load(out / "train" / "annotations" / "car" / "car_00000.npz") as a:
        assert int(a["version"]) == 2 and str(a["background"]) in BACKGROUNDS_ID


def test_occluded_images_hide_object_and_background_at_occludedpascal3ds_levels(tiny_v2):
    out, _ = tiny_v2
    root = out / "test-occluded"
    fg_levels = {1: (0.2, 0.4), 2: (0.4, 0.6), 3: (0.6, 0.8)}  # OccludedPASCAL3D+'s FGL1-3
    bg_levels = {1: (0.0, 0.2), 2: (0.2, 0.4), 3: (0.4, 0.6)}  # and its BGL1-3
    checked = 0
    for ann in sorted((root / "annotations").rglob("*.npz")):
        level = int(ann.parent.name[-1])
        (lo, hi), (blo, bhi) = fg_levels[level], bg_levels[level]
        obj = np.asarray(Image.open(root / "masks" / ann.parent.name / f"{ann.stem}.png")) > 0
        occ = np.asarray(Image.open(root / "occluders" / ann.parent.name / f"{ann.stem}.png")) > 0
        fg, bg = (occ & obj).sum() / obj.sum(), (occ & ~obj).sum() / (~obj).sum()
        with np.load(ann) as a:
            recorded = float(a["occlusion_ratio"]), float(a["background_occlusion_ratio"])
        assert math.isclose(fg, recorded[0]) and math.isclose(bg, recorded[1])
        assert lo <= fg <= hi and blo <= bg <= bhi, (ann, fg, bg)
        checked += 1
    assert checked == 9


def test_class_typical_materials_vary_little_and_body_colours_a_lot():
    preset = Preset(height=64, width=64, train=1, val=1, test=1, corrupted=1)
    for cat in CATS:
        per_material: dict[int, list[np.ndarray]] = {}
        for i in range(8):
            r = render_job(Job("train", cat, cat, i), preset, SIZES[cat], seed=2)
            for m in np.unique(r.materials[r.materials >= 0]):
                sel = r.materials == m
                if sel.sum() >= 3:
                    per_material.setdefault(int(m), []).append(r.albedo[sel].mean(0))
        typical = [m for m in per_material if MATERIALS[m] in MATERIAL_TABLE]
        assert typical and MID["body"] in per_material, cat
        for m in typical:
            colors = np.array(per_material[m])
            ref = np.array(MATERIAL_TABLE[MATERIALS[m]].color)
            # jitter +-0.06 at most, brightness +-6%, wood grain +-10%
            assert np.abs(colors - ref).max() < 0.13, (cat, MATERIALS[m], colors)
            assert colors.std(0).max() < 0.06, (cat, MATERIALS[m])
        body = np.array(per_material[MID["body"]])
        assert body.std(0).max() > 0.1, (cat, body)


def render_view(cat: str, azimuth: float, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Material map and shaded image of a nominal instance, lit from straight above (a light that
    turns with nothing), body in one flat colour, principal point at the centre."""
    radius = 0.5 * float(np.linalg.norm(SIZES[cat]))
    distance = VIEWPORT * FOCAL * radius / (0.42 * size)
    scene = Scene(cat, np.ones(6), azimuth, math.radians(10), 0.0, distance, (size / 2, size / 2), "solid", "sky",
                  np.array([0.0, 0.0, 1.0]), 0.4, 2)  # fmt: skip
    color, _, materials, mask = render_object_v2(scene, size, size, np.random.default_rng(0))
    image = np.zeros((size, size, 3))
    image[mask] = color
    return materials, image


@pytest.mark.parametrize("category", CATS)
def test_front_and_back_views_differ_except_for_symmetric_classes(category):
    for a in (0, 45, 90, 135):
        m1, i1 = render_view(category, math.radians(a))
        m2, i2 = render_view(category, math.radians(a + 180))
        union = (m1 >= 0) | (m2 >= 0)
        material_change = ((m1 != m2) & union).sum() / union.sum()
        image_change = np.abs(i1 - i2)[union].mean()
        if category in SYMMETRIC:  # a bottle and a table look the same from a and a + 180 deg
            assert material_change < 0.01 and image_change < 0.006, (a, material_change, image_change)
        else:  # measured: >= 0.18 of the object's pixels change material, >= 0.019 mean colour
            assert material_change > 0.1 and image_change > 0.01, (a, material_change, image_change)


def spectrum_slope(img: np.ndarray) -> float:
    """Slope of the radially averaged power spectrum in log-log (natural images: about -2)."""
    g = img.mean(-1)
    g = g - g.mean()
    power = np.abs(np.fft.fft2(g)) ** 2
    h, w = g.shape
    f = np.sqrt(np.fft.fftfreq(h)[:, None] ** 2 + np.fft.fftfreq(w)[None, :] ** 2)
    bins = np.logspace(np.log10(2 / h), np.log10(0.25), 12)
    idx = np.digitize(f, bins)
    p = [power[idx == k].mean() for k in range(1, len(bins))]
    return float(np.polyfit(np.log(np.sqrt(bins[1:] * bins[:-1])), np.log(p), 1)[0])


def test_backgrounds_have_natural_image_spectra_and_occluders_their_own_families():
    rng = np.random.default_rng(0)
    for fam in BACKGROUNDS_ID:  # measured means: -1.7 (dead leaves) to -2.5 (sky)
        slopes = [spectrum_slope(background(fam, 128, 128, rng)) for _ in range(4)]
        assert -3.0 < np.mean(slopes) < -1.5, (fam, slopes)
    for fam in BACKGROUNDS_ID + BACKGROUNDS_OOD:  # every family, many draws, odd sizes
        for k in range(25):
            img = background(fam, 33 + k, 47 - k, rng, elevation=math.radians(-5 + 3 * k))
            assert img.shape == (33 + k, 47 - k, 3) and 0 <= img.min() and img.max() <= 1
    assert not set(OCCLUDER_FAMILIES) & (set(BACKGROUNDS_ID) | set(BACKGROUNDS_OOD))
    assert not set(BACKGROUNDS_ID) & set(BACKGROUNDS_OOD)


def test_own_corruptions_fix_v1s_defocus_and_brightness():
    k = C.disk(3, 0.1)
    assert k[8, 8] > 0 and k[8, 11] > 0 and k[5, 5] < 1e-4 * k[8, 8]  # a disk, not a box
    x = np.zeros((32, 32, 3), np.uint8)
    x[...] = (128, 26, 26)
    out = C.corrupt_uint8(x, "brightness", 1, seed=0)[0, 0].astype(float)
    hsv = C.rgb2hsv(out[None] / 255)[0]
    assert abs(hsv[1] - 0.797) < 0.01 and abs(out[0] - (128 + 25.5)) <= 1  # V up by 0.1, saturation kept
    assert out[1] < 36  # RGB addition would give 51


@pytest.mark.parametrize("name", C.CORRUPTIONS + C.WEATHER)
def test_corruptions_are_seeded_per_image_and_grow_with_severity(name):
    rng = np.random.default_rng(0)
    img = background("road", 48, 64, rng)
    a, b = C.corrupt(img, name, 3, seed=5), C.corrupt(img, name, 3, seed=5)
    assert np.array_equal(a, b) and a.shape == img.shape
    diffs = [np.abs(C.corrupt(img, name, s, seed=5) - img).mean() for s in (1, 5)]
    assert diffs[1] > diffs[0] > 1e-3


def _patched_imagecorruptions():
    """The package with the two fixes today's libraries need (np.float_, skimage's multichannel)."""
    ic = pytest.importorskip("imagecorruptions")
    import imagecorruptions.corruptions as icc
    import skimage.filters

    def gaussian(x, sigma, multichannel=None, **kw):
        if multichannel:
            kw["channel_axis"] = -1
        return skimage.filters.gaussian(x, sigma=sigma, **kw)

    return ic, icc, gaussian


@pytest.mark.parametrize("name", sorted(C.IMAGENET_C))
def test_transcription_matches_the_imagecorruptions_package(name, monkeypatch):
    """Deterministic corruptions and the Gaussian/shot noises: equal to a grey level (same seed,
    same legacy random stream); impulse noise (scikit-image's own unseeded generator in the
    package): the same share of values flipped, within 15%."""
    ic, icc, gaussian = _patched_imagecorruptions()
    monkeypatch.setattr(np, "float_", np.float64, raising=False)
    monkeypatch.setattr(icc, "gaussian", gaussian)
    img = (background("road", 96, 128, np.random.default_rng(0)) * 255).round().astype(np.uint8)
    for severity in (1, 3, 5):
        np.random.seed(11)  # noqa: NPY002 (the package uses the global state)
        ref = np.asarray(ic.corrupt(img, severity=severity, corruption_name=name)).astype(int)
        own = C.corrupt_uint8(img, name, severity, seed=11).astype(int)
        if name == "impulse_noise":
            changed_ref, changed_own = (ref != img).mean(), (own != img).mean()
            assert abs(changed_own - changed_ref) < 0.15 * changed_ref
        else:
            assert np.abs(own - ref).max() <= 1, (severity, np.abs(own - ref).max())


def test_imagecorruptions_backend_is_seeded_and_leaves_numpys_global_state_alone():
    pytest.importorskip("imagecorruptions")
    which = C.backends(["gaussian_noise", "impulse_noise", "rain"], "imagecorruptions")
    assert which["gaussian_noise"].startswith("imagecorruptions") and which["rain"] == "own"
    assert which["impulse_noise"] == "own"  # not reproducible through the package
    img = (np.random.default_rng(0).uniform(size=(40, 40, 3)) * 255).astype(np.uint8)
    np.random.seed(123)  # noqa: NPY002
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    a = C.corrupt_uint8(img, "gaussian_noise", 2, 9, which["gaussian_noise"])
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    assert np.array_equal(a, C.corrupt_uint8(img, "gaussian_noise", 2, 9, which["gaussian_noise"]))
    assert np.array_equal(a, C.corrupt_uint8(img, "gaussian_noise", 2, 9, "own"))


def test_preview_shows_every_split(tiny_v2, tmp_path):
    out, _ = tiny_v2
    path = write_preview(open_splits(out), tmp_path / "preview.png", per_split=3, size=48)
    sheet = Image.open(path)
    rows = len(open_splits(out))
    assert sheet.size == (3 * 48, rows * (48 + 16)) and np.asarray(sheet).std() > 20


def test_cli_version_flag(tmp_path):
    run = subprocess.run(
        [sys.executable, "scripts/make_synthetic.py", "--preset", "tiny", "--out", str(tmp_path / "x"),
         "--version", "1", "--context-bias", "0.5"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 2 and "version 2" in run.stderr
    run = subprocess.run(
        [sys.executable, "scripts/make_synthetic.py", "--preset", "tiny", "--out", str(tmp_path / "y"),
         "--classes", "bottle", "--context-bias", "1.0", "--counts", "train=4,val=0,test=0,corrupted=0"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    manifest = json.loads((tmp_path / "y" / "dataset.json").read_text())
    assert manifest["version"] == 2 and manifest["context_bias"] == 1.0
    for ann in (tmp_path / "y" / "train" / "annotations" / "bottle").glob("*.npz"):
        with np.load(ann) as a:
            assert str(a["background"]) == "room"
