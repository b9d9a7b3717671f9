import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from novum3d.categories import load_categories
from novum3d.data import Pascal3DPreprocessed
from novum3d.data.prepare import PrepareOptions, prepare_pascal3d
from rendering import project_pascal3d
from tests.data_fixtures import mat_object, viewpoint, write_off, write_pascal3d_record

POINT = np.array([[0.12, -0.05, 0.08]])  # a 3D point we paint into the raw image


def raw_dataset(root, az=40.0, el=15.0, th=5.0, distance=8.0, names=("n01", "n02")):
    """Raw PASCAL3D+ with 300x400 images, each with a red dot where POINT projects."""
    vp = viewpoint(az, el, th, distance=distance, px=210.0, py=140.0)
    uv = project_pascal3d(torch.from_numpy(POINT), *np.radians([az, el, th]), distance, 1.0, (210.0, 140.0))
    u, v = uv[0].round().int().tolist()
    for name in names:
        img = np.full((300, 400, 3), 90, np.uint8)
        img[v - 3 : v + 4, u - 3 : u + 4] = (255, 0, 0)
        path = root / "Images" / "car_imagenet" / f"{name}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, quality=98)
        write_pascal3d_record(
            root / "Annotations" / "car_imagenet" / f"{name}.mat",
            f"{name}.JPEG",
            [mat_object("car", [150, 80, 280, 200], vp, cad_index=2)],
        )
    return root


def red_centre(image: torch.Tensor) -> np.ndarray:
    img = image.permute(1, 2, 0).numpy()
    red = (img[..., 0] > 0.7) & (img[..., 1] < 0.35)
    ys, xs = np.nonzero(red)
    return np.array([xs.mean() + 0.5, ys.mean() + 0.5])


@pytest.mark.parametrize("mode", ["exact", "nemo"])
def test_prepared_annotation_projects_onto_the_painted_point(tmp_path, mode):
    raw = raw_dataset(tmp_path / "raw")
    opts = PrepareOptions(height=160, width=200, target_distance=5.0, mode=mode)
    result = prepare_pascal3d(raw, tmp_path / "out", ["car"], opts)
    assert result["written"] == 2 and not result["broken"]
    ds = Pascal3DPreprocessed(tmp_path / "out", ["car"])
    s = ds[0]
    assert s["image"].shape == (3, 160, 200)
    assert s["principal"].tolist() == pytest.approx([100.0, 80.0], abs=0.5)
    uv = project_pascal3d(
        torch.from_numpy(POINT), s["azimuth"], s["elevation"], s["theta"], s["distance"], s["focal"],
        s["principal"].double(), s["viewport"],
    )[0].numpy()  # fmt: skip
    # Where the toolbox puts the point in the raw image, moved by the crop's scale and shift.
    raw_uv = project_pascal3d(torch.from_numpy(POINT), *np.radians([40.0, 15.0, 5.0]), 8.0, 1.0, (210.0, 140.0))
    scale = 1.6  # distance 8 brought to 5
    mapped = (raw_uv[0].numpy() - [210.0, 140.0]) * scale + s["principal"].numpy()
    # The dot is painted on whole pixels: its centre is within half a raw pixel of the point.
    assert np.abs(uv - red_centre(s["image"])).max() < (1.5 if mode == "exact" else 6.0)
    if mode == "exact":
        assert s["distance"] == 8.0 and np.abs(uv - mapped).max() < 1e-3
    else:  # distance forced to 5: off by the weak-perspective error only
        assert s["distance"] == 5.0 and s["focal"] == 1.0 and 0 < np.abs(uv - mapped).max() < 5.0


def test_resumable_and_broken_records_listed(tmp_path):
    raw = raw_dataset(tmp_path / "raw", names=("n01", "n02", "n03"))
    (raw / "Annotations" / "car_imagenet" / "n03.mat").write_bytes(b"garbage")
    opts = PrepareOptions(height=64, width=80)
    first = prepare_pascal3d(raw, tmp_path / "out", ["car"], opts)
    assert first["written"] == 2 and len(first["broken"]) == 1
    assert "n03.mat" in (tmp_path / "out" / "broken.txt").read_text()
    second = prepare_pascal3d(raw, tmp_path / "out", ["car"], opts)
    assert second["written"] == 0 and second["resumed"] == 2
    (tmp_path / "out" / "annotations" / "car" / "n02_00.npz").unlink()  # as if killed mid-item
    third = prepare_pascal3d(raw, tmp_path / "out", ["car"], opts)
    assert third["written"] == 1 and third["resumed"] == 1
    assert (tmp_path / "out" / "lists" / "car" / "mesh02.txt").read_text().split() == ["n01_00", "n02_00"]


def test_occluded_images_follow_their_source_crop(tmp_path):
    raw = raw_dataset(tmp_path / "raw", names=("n01",))
    occ = tmp_path / "occ"
    (occ / "images" / "carFGL1_BGL1").mkdir(parents=True)
    Image.open(raw / "Images" / "car_imagenet" / "n01.JPEG").save(occ / "images" / "carFGL1_BGL1" / "n01.JPEG")
    prepare_pascal3d(raw, tmp_path / "out", ["car"], PrepareOptions(height=64, width=80), occluded_root=occ)
    clean = Pascal3DPreprocessed(tmp_path / "out", ["car"])[0]
    occluded = Pascal3DPreprocessed(tmp_path / "out", ["car"], occlusion_level=1)[0]
    assert occluded["azimuth"] == clean["azimuth"] and torch.equal(occluded["bbox"], clean["bbox"])


def test_cli_with_cad_sizes(tmp_path):
    raw = raw_dataset(tmp_path / "raw", names=("n01",))
    verts = np.array([[-0.4, -0.9, -0.3], [0.4, 0.9, 0.3], [0.4, -0.9, 0.3], [-0.4, 0.9, -0.3]])
    write_off(raw / "CAD" / "car" / "01.off", verts, [(0, 1, 2), (0, 2, 3)])
    run = subprocess.run(
        [sys.executable, "scripts/prepare_pascal3d.py", "--raw", str(raw), "--out", str(tmp_path / "o"),
         "--classes", "car", "--size", "64x80", "--cad-sizes"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "written 1" in run.stdout
    cats = load_categories(tmp_path / "o" / "categories.yaml")
    assert cats[0].name == "car" and cats[0].size == pytest.approx((0.8, 1.8, 0.6))
    bad = subprocess.run(
        [sys.executable, "scripts/prepare_pascal3d.py", "--raw", str(tmp_path / "x"), "--out", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "no Annotations/ folder" in bad.stderr
