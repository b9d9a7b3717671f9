import hashlib
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from novum3d.categories import load_categories
from novum3d.data import Pascal3DPreprocessed
from novum3d.data.synthetic import (
    PRESETS,
    Job,
    Preset,
    appearance,
    appearance_v2,
    generate,
    nuisances,
    open_splits,
    render_job,
)
from novum3d.data.synthetic.appearance import TEXTURES_OOD
from novum3d.data.synthetic.corruptions import CORRUPTIONS, WEATHER
from novum3d.data.synthetic.meshes import build_mesh
from novum3d.data.synthetic.nuisances import OCCLUSION_LEVELS, corrupt
from rendering import project_pascal3d

SIZES = {c.name: c.size for c in load_categories()}
CLASSES = ["car", "chair"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "tiny"
    manifest = generate(out, "tiny", seed=3, workers=1, categories=CLASSES)
    return out, manifest


def projected_hull_mask(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pixels whose centres (j + 0.5, i + 0.5) lie in the convex hull of the projected points."""
    from scipy.spatial import Delaunay

    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    inside = Delaunay(uv).find_simplex(np.stack([xs.ravel(), ys.ravel()], -1)) >= 0
    return inside.reshape(height, width)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("category", sorted(SIZES))
def test_projection_of_mesh_vertices_falls_on_the_rendered_mask(category, version):
    preset = Preset(height=128, width=160, train=1, val=1, test=1, corrupted=1)
    r = render_job(Job("train", category, category, 0), preset, SIZES[category], seed=5, version=version)
    assert r.scene.version == version
    mesh, _ = build_mesh(category, r.scene.proportions, version=version)
    ann = r.annotation
    uv = project_pascal3d(
        torch.from_numpy(mesh.vertices), ann.azimuth, ann.elevation, ann.theta, ann.distance,
        ann.focal, torch.tensor(ann.principal, dtype=torch.float64), ann.viewport,
    ).numpy()  # fmt: skip
    hull = projected_hull_mask(uv, 160, 128)
    iou = (hull & r.mask).sum() / (hull | r.mask).sum()
    # The silhouette fills the hull for box-like shapes and lies inside it for chairs and
    # bicycles; nothing of it may fall outside (measured: 0 pixels for every category).
    assert (r.mask & ~hull).sum() <= 2
    convex = {"bus", "car", "sofa", "tvmonitor", "bottle", "train"}
    if version == 2:  # its stand stands back and wide: the hull has gaps (IoU 0.84)
        convex.discard("tvmonitor")
    assert iou > (0.85 if category in convex else 0.25), iou
    if category in convex:  # extreme vertices are rendered: boxes agree to a pixel
        ys, xs = np.nonzero(r.mask)
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        proj_box = np.array([*uv.min(0), *uv.max(0)])
        assert np.abs(box - proj_box).max() <= 1.0
    inside = (uv >= 0).all(1) & (uv[:, 0] < 160) & (uv[:, 1] < 128)
    assert inside.mean() > 0.99  # the object is framed


def test_same_seed_gives_byte_identical_files_whatever_the_workers(tiny, tmp_path):
    out, _ = tiny
    again = tmp_path / "again"
    generate(again, "tiny", seed=3, workers=2, categories=CLASSES)

    def digest(root):
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    first, second = digest(out), digest(again)
    assert len(first) > 100 and first == second
    other = tmp_path / "other"
    generate(other, "tiny", seed=4, workers=1, categories=CLASSES)
    assert digest(other) != first


def test_round_trip_through_the_reader(tiny):
    out, manifest = tiny
    splits = open_splits(out)
    p = PRESETS["tiny"]
    assert len(splits["train"]) == p.train * 2 and len(splits["clean"]) == p.test * 2
    ood = {k for k in splits if k.startswith("ood-")}
    assert ood == {f"ood-{n}" for n in ("shape", "pose", "texture", "context", "weather")}
    assert {k for k in splits if k.startswith("corrupted-")} == {f"corrupted-{n}" for n in CORRUPTIONS}
    assert list(CORRUPTIONS) == list(nuisances.CORRUPTIONS) and list(WEATHER) == list(nuisances.WEATHER)
    assert sum(len(d) for d in splits.values()) == manifest["images"]
    s = splits["train"][0]
    r = render_job(Job("train", s["category"], s["category"], 0), p, SIZES[s["category"]], seed=3)
    assert s["azimuth"] == r.annotation.azimuth and s["distance"] == r.annotation.distance
    assert s["image"].shape == (3, 64, 64) and torch.equal(s["mask"], torch.from_numpy(r.mask))
    assert s["label"] == CLASSES.index(s["category"])
    occ = splits["occluded-L2"][0]
    assert occ["occlusion_level"] == 2 and occ["nuisance"] == "occlusion"
    assert splits["ood-pose"][0]["nuisance"] == "pose"


def test_every_occluded_image_hides_its_level_share_of_the_object(tiny):
    out, _ = tiny
    root = out / "test-occluded"
    checked = 0
    for level, (lo, hi) in OCCLUSION_LEVELS.items():
        for cls in CLASSES:
            subset = f"{cls}FGL{level}_BGL{level}"
            for ann_path in sorted((root / "annotations" / subset).glob("*.npz")):
                obj = np.asarray(Image.open(root / "masks" / subset / f"{ann_path.stem}.png")) > 0
                occ = np.asarray(Image.open(root / "occluders" / subset / f"{ann_path.stem}.png")) > 0
                measured = (obj & occ).sum() / obj.sum()
                with np.load(ann_path) as a:
                    recorded = float(a["occlusion_ratio"])
                assert lo <= measured <= hi and math.isclose(measured, recorded)
                checked += 1
    assert checked == 3 * len(CLASSES) * PRESETS["tiny"].test


@pytest.mark.parametrize("version", [1, 2])
def test_ood_splits_leave_the_training_distribution(version):
    preset = Preset(height=48, width=48, train=1, val=1, test=1, corrupted=1)
    size = SIZES["car"]
    backgrounds_ood = (appearance if version == 1 else appearance_v2).BACKGROUNDS_OOD

    def scene(job, seed=0):
        return render_job(job, preset, size, seed, version=version).scene

    for i in range(6):
        s = scene(Job("test-ood/pose", "car", "car", i, "pose"))
        assert not (math.radians(-5) <= s.elevation <= math.radians(35))
        assert abs(s.theta) > math.radians(8)
        s = scene(Job("test-ood/shape", "car", "car", i, "shape"))
        assert np.all((s.proportions < 0.85) | (s.proportions > 1.15))
        assert scene(Job("t", "car", "car", i, "texture")).texture in TEXTURES_OOD
        assert scene(Job("t", "car", "car", i, "context")).background in backgrounds_ood
        s = scene(Job("train", "car", "car", i))
        assert s.texture not in TEXTURES_OOD and s.background not in backgrounds_ood
        assert np.all((s.proportions >= 0.85) & (s.proportions <= 1.15))


@pytest.mark.parametrize("name", sorted(nuisances.CORRUPTIONS | nuisances.WEATHER))
def test_version_1_corruptions_change_the_image_more_with_severity(name):
    ys, xs = np.mgrid[0:64, 0:64] / 64
    # Edges (blur changes nothing on a ramp), on a grid no pixelation block size divides.
    checker = ((np.floor(xs * 7 + 0.3) + np.floor(ys * 7 + 0.3)) % 2)[..., None]
    img = (np.stack([xs, ys, 0.5 * np.ones_like(xs)], -1) * 0.3 + 0.4 * checker) * 0.8 + 0.1
    diffs = [np.abs(corrupt(img, name, s, np.random.default_rng(1)) - img).mean() for s in (1, 3, 5)]
    assert diffs[0] > 1e-3 and diffs[2] > diffs[0]
    out = corrupt(img, name, 3, np.random.default_rng(0))
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="severity"):
        corrupt(img, name, 6, np.random.default_rng(0))


def test_cli_refuses_to_overwrite_and_names_bad_classes(tiny, tmp_path):
    out, _ = tiny
    run = subprocess.run(
        [sys.executable, "scripts/make_synthetic.py", "--preset", "tiny", "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 2 and "already holds a data set" in run.stderr
    run = subprocess.run(
        [sys.executable, "scripts/make_synthetic.py", "--preset", "tiny", "--out", str(tmp_path / "x"),
         "--classes", "car,unicorn"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 2 and "unicorn" in run.stderr


def test_clean_split_images_all_decode(tiny):
    out, _ = tiny
    ds = Pascal3DPreprocessed(out / "test-clean", CLASSES, on_error="skip", verify_images=True)
    assert len(ds) == 2 * PRESETS["tiny"].test and not ds.skipped
