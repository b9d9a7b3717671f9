import math

import numpy as np
import pytest
import torch

from novum3d.data import OODCV, AnnotationError, Pascal3DPreprocessed, Pascal3DRaw, load_annotation
from novum3d.data.pascal3d import DataError, load_cad_models, read_pascal3d_record
from tests.data_fixtures import (
    make_nemo_layout,
    mat_object,
    viewpoint,
    write_image,
    write_off,
    write_pascal3d_record,
)


def test_nemo_layout_reads_back_exactly(tmp_path):
    truth = make_nemo_layout(tmp_path)
    ds = Pascal3DPreprocessed(tmp_path, classes=["car", "bus"])
    assert len(ds) == 6 and not ds.skipped
    for i in range(len(ds)):
        s = ds[i]
        ann = truth[(s["category"], s["name"])]
        assert s["label"] == ["car", "bus"].index(s["category"])
        assert s["image"].shape == (3, 40, 48) and s["image"].dtype == torch.float32
        for key in ("azimuth", "elevation", "theta", "distance", "focal", "viewport", "cad_index"):
            assert s[key] == getattr(ann, key)
        assert s["principal"].tolist() == list(ann.principal)
        assert s["bbox"].tolist() == list(ann.bbox)
        assert s["nuisance"] == "clean" and s["occlusion_level"] == 0
    with_mask = [ds[i] for i in range(len(ds)) if "mask" in ds[i]]
    assert len(with_mask) == 2 and with_mask[0]["mask"].sum() == 15 * 20


def test_png_pixels_read_back_exactly(tmp_path):
    make_nemo_layout(tmp_path, classes=["car"], per_class=1)
    img = tmp_path / "images" / "car" / "n0000.JPEG"
    img.unlink()
    rgb = write_image(tmp_path / "images" / "car" / "n0000.png", seed=7, fmt="PNG")
    s = Pascal3DPreprocessed(tmp_path, classes=["car"])[0]
    assert torch.equal((s["image"] * 255).round().byte().permute(1, 2, 0), torch.from_numpy(rgb))


def test_occluded_levels_and_oodcv_nuisance_folders(tmp_path):
    make_nemo_layout(tmp_path, classes=["car"], subset_suffix="FGL2_BGL2")
    ds = Pascal3DPreprocessed(tmp_path, classes=["car"], occlusion_level=2)
    assert len(ds) == 3 and ds[0]["occlusion_level"] == 2 and ds[0]["nuisance"] == "occlusion"
    make_nemo_layout(tmp_path / "weather", classes=["car"])
    ood = OODCV(tmp_path, "weather", classes=["car"])
    assert len(ood) == 3 and ood[0]["nuisance"] == "weather"
    with pytest.raises(ValueError, match="nuisance: expected one of"):
        OODCV(tmp_path, "lighting")


def test_grayscale_and_rgba_images_become_rgb(tmp_path):
    from PIL import Image

    make_nemo_layout(tmp_path, classes=["car"], per_class=2, masks=False)
    Image.new("L", (48, 40), 128).save(tmp_path / "images" / "car" / "n0000.JPEG", format="JPEG")
    Image.new("RGBA", (48, 40), (10, 20, 30, 0)).save(tmp_path / "images" / "car" / "n0001.JPEG", format="PNG")
    ds = Pascal3DPreprocessed(tmp_path, classes=["car"])
    assert ds[0]["image"].shape == ds[1]["image"].shape == (3, 40, 48)


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (lambda d: {k: v for k, v in d.items() if k != "azimuth"}, r"missing field\(s\) \['azimuth'\]"),
        (lambda d: d | {"elevation": np.float64("nan")}, "field 'elevation' is not finite"),
        (lambda d: d | {"principal": np.zeros(3)}, "field 'principal' must be 2 finite numbers"),
        (lambda d: d | {"distance": np.float64(0)}, "field 'distance' must be > 0"),
        (lambda d: {k: v for k, v in d.items() if k not in ("bbox", "box_obj")}, r"bbox \(or box_obj\)"),
    ],
)
def test_malformed_annotation_names_file_and_field(tmp_path, corrupt, match):
    make_nemo_layout(tmp_path, classes=["car"], per_class=2, masks=False)
    path = tmp_path / "annotations" / "car" / "n0001.npz"
    with np.load(path) as f:
        data = dict(f)
    np.savez(path, **corrupt(data))
    with pytest.raises(AnnotationError, match=f"n0001.npz: .*{match}"):
        Pascal3DPreprocessed(tmp_path, classes=["car"])
    ds = Pascal3DPreprocessed(tmp_path, classes=["car"], on_error="skip")
    assert len(ds) == 1 and len(ds.skipped) == 1 and "n0001.npz" in ds.skipped[0][0]


def test_not_an_npz_file(tmp_path):
    path = tmp_path / "x.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(AnnotationError, match=r"x\.npz: not a readable \.npz"):
        load_annotation(path)


def test_broken_images_name_the_file_or_are_skipped_and_counted(tmp_path):
    make_nemo_layout(tmp_path, classes=["car"], per_class=3, masks=False)
    truncated = tmp_path / "images" / "car" / "n0001.JPEG"
    truncated.write_bytes(truncated.read_bytes()[:200])
    (tmp_path / "images" / "car" / "n0002.JPEG").write_text("this is not an image")
    ds = Pascal3DPreprocessed(tmp_path, classes=["car"])
    assert len(ds) == 3
    with pytest.raises(DataError, match=r"n0001\.JPEG: unreadable image"):
        ds[1]
    with pytest.raises(DataError, match=r"n0002\.JPEG: unreadable image"):
        ds[2]
    with pytest.raises(DataError, match=r"n0001\.JPEG: unreadable image"):
        Pascal3DPreprocessed(tmp_path, classes=["car"], verify_images=True)
    skipping = Pascal3DPreprocessed(tmp_path, classes=["car"], verify_images=True, on_error="skip")
    assert len(skipping) == 1 and sorted(p.split("/")[-1] for p, _ in skipping.skipped) == [
        "n0001.JPEG",
        "n0002.JPEG",
    ]


def test_missing_image_and_missing_layout(tmp_path):
    make_nemo_layout(tmp_path, classes=["car"], per_class=2, masks=False)
    (tmp_path / "images" / "car" / "n0000.JPEG").unlink()
    with pytest.raises(DataError, match=r"n0000\.JPEG: image file not found"):
        Pascal3DPreprocessed(tmp_path, classes=["car"])
    assert len(Pascal3DPreprocessed(tmp_path, classes=["car"], on_error="skip")) == 1
    with pytest.raises(DataError, match="no annotations/ folder"):
        Pascal3DPreprocessed(tmp_path / "nowhere")


def test_raw_pascal3d_record_reads_back(tmp_path):
    root = tmp_path / "PASCAL3D+_release1.1"
    write_image(root / "Images" / "car_imagenet" / "n01.JPEG", seed=1)
    objs = [
        mat_object("car", [1, 2, 30, 20], viewpoint(30, 10, 5, distance=6.5), cad_index=3),
        mat_object("car", [5, 5, 10, 10], viewpoint(0, 0, 0, distance=0)),  # no distance: unusable
        mat_object("person", [0, 0, 5, 5], None),
    ]
    write_pascal3d_record(root / "Annotations" / "car_imagenet" / "n01.mat", "n01.JPEG", objs)
    filename, objects = read_pascal3d_record(root / "Annotations" / "car_imagenet" / "n01.mat")
    assert filename == "n01.JPEG" and [o["class"] for o in objects] == ["car", "car", "person"]
    assert objects[0]["viewpoint"]["azimuth"] == 30.0 and "viewpoint" not in objects[2]
    ds = Pascal3DRaw(root, classes=["car"], sources=["imagenet"])
    assert len(ds) == 1
    s = ds[0]
    assert math.isclose(s["azimuth"], math.radians(30)) and math.isclose(s["theta"], math.radians(5))
    assert s["distance"] == 6.5 and s["cad_index"] == 3 and s["bbox"].tolist() == [1, 2, 30, 20]
    assert s["principal"].tolist() == [24.0, 20.0] and s["image"].shape == (3, 40, 48)


def test_raw_record_with_single_object_and_split_lists(tmp_path):
    root = tmp_path / "P"
    for name in ("a", "b"):
        write_image(root / "Images" / "bus_imagenet" / f"{name}.JPEG", seed=2)
        write_pascal3d_record(
            root / "Annotations" / "bus_imagenet" / f"{name}.mat",
            f"{name}.JPEG",
            [mat_object("bus", [1, 1, 9, 9], viewpoint(90, 0, 0))],
        )
    (root / "Image_sets").mkdir()
    (root / "Image_sets" / "bus_imagenet_val.txt").write_text("b\n")
    assert len(Pascal3DRaw(root, classes=["bus"], sources=["imagenet"])) == 2
    assert [s["name"] for s in Pascal3DRaw(root, classes=["bus"], sources=["imagenet"], split="val")] == ["b_00"]


def test_raw_record_errors(tmp_path):
    root = tmp_path / "P"
    path = root / "Annotations" / "car_imagenet" / "x.mat"
    write_pascal3d_record(path, "x.JPEG", [mat_object("car", [1, 1, 9, 9], viewpoint(float("nan"), 0, 0))])
    with pytest.raises(AnnotationError, match=r"x\.mat: objects\(1\)\.viewpoint: field 'azimuth' is not finite"):
        read_pascal3d_record(path)
    path.write_bytes(b"garbage")
    with pytest.raises(AnnotationError, match=r"x\.mat: not a readable \.mat"):
        read_pascal3d_record(path)
    ds = Pascal3DRaw(root, classes=["car"], sources=["imagenet"], on_error="skip")
    assert len(ds) == 0 and len(ds.skipped) == 1


def test_off_cad_models_read_back_exactly(tmp_path):
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.5]], float)
    faces = [(0, 2, 1), (0, 1, 3), (0, 3, 2), (1, 2, 3)]
    write_off(tmp_path / "CAD" / "car" / "01.off", verts, faces)
    write_off(tmp_path / "CAD" / "car" / "02.off", verts * 2, faces)
    meshes = load_cad_models(tmp_path, "car")
    assert len(meshes) == 2
    np.testing.assert_allclose(meshes[0].vertices, verts)
    np.testing.assert_array_equal(meshes[1].faces, np.array(faces))
    with pytest.raises(DataError, match=r"no \.off CAD models"):
        load_cad_models(tmp_path, "bus")
