"""Photographs of any size through one input size: the letterbox and its intrinsics, poses at the
original size, templates shared across sizes and kept on disk, batches estimated class by class."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from novum3d.errors import Novum3DError
from novum3d.inference.photos import (
    Letterbox,
    PhotoSet,
    check_input_size,
    collate_photos,
    content_cells,
    letterbox,
    photo_intrinsics,
)
from novum3d.inference.pipeline import estimate_poses, mask_maps, predict_by_class
from novum3d.inference.pose import PoseConfig, PoseEstimator, TemplateStore
from rendering import pascal3d_intrinsics, pose_to_viewmat, rasterize_features, rotation_error, rotation_from_pose
from tests.test_pose import clean_prior, small_scene

STRIDE = 8


def coordinate_image(h: int, w: int) -> torch.Tensor:
    """[2, h, w]: each pixel's centre (x, y) in continuous pixel coordinates."""
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.stack([xs, ys]).double()


@pytest.mark.parametrize("original", [(300, 451), (500, 741), (97, 60), (256, 256)])
def test_letterbox_moves_every_point_by_its_matrix(original):
    """Bilinear resampling reproduces a linear ramp away from the border, so the letterboxed coordinate
    image says where each input pixel came from: u = (u' - o) / s, the inverse of S. Exactly when
    enlarging; shrinking, the antialiasing filter's sampled weights move a value by under 0.05 pixels."""
    size = (128, 160)
    out, box = letterbox(coordinate_image(*original), size, fill=-1.0)
    assert out.shape == (2, *size) and box.original == original
    x0, y0, x1, y1 = box.content_box()
    assert (x1 - x0, y1 - y0) == box.resized[::-1] and (x1 - x0 == size[1] or y1 - y0 == size[0])
    assert abs(box.scale[0] - box.scale[1]) < 1 / min(box.resized)  # the aspect ratio, up to a pixel's rounding
    assert (out[:, :y0] == -1).all() and (out[:, y1:] == -1).all() and (out[:, :, :x0] == -1).all()
    ys, xs = torch.meshgrid(torch.arange(y0, y1).double() + 0.5, torch.arange(x0, x1).double() + 0.5, indexing="ij")
    S = box.matrix(torch.float64)
    expected = torch.stack([(xs - S[0, 2]) / S[0, 0], (ys - S[1, 2]) / S[1, 1]])
    inner = (slice(None), slice(2, -2), slice(2, -2))  # the border pixels clamp, the rest not
    atol = 1e-9 if box.scale[0] >= 1 else 0.05
    torch.testing.assert_close(out[:, y0:y1, x0:x1][inner], expected[inner], atol=atol, rtol=0)
    # The intrinsics follow: a point projected with K lands where S says, under S @ K.
    K = pascal3d_intrinsics(1.0, 3000.0, (original[1] / 2, original[0] / 2))
    p = torch.tensor([0.3, -0.2, 5.0])
    uv = (K[0] @ p)[:2] / p[2]
    uv2 = (box.intrinsics(K)[0] @ p)[:2] / p[2]
    torch.testing.assert_close(uv2, uv * torch.tensor(box.scale) + torch.tensor(box.offset, dtype=uv.dtype))


def test_letterbox_keeps_uint8_and_content_cells_mark_the_image():
    image = torch.randint(0, 256, (3, 50, 100), dtype=torch.uint8)
    out, box = letterbox(image, (64, 64), fill=(124, 116, 104))
    assert out.dtype == torch.uint8 and box.offset == (0, 16) and box.resized == (32, 64)
    assert out[:, 0, 0].tolist() == [124, 116, 104]
    cells = content_cells([box, Letterbox.fit((64, 64), (64, 64))], (8, 8))
    assert cells[0].sum(1).tolist() == [0, 0, 8, 8, 8, 8, 0, 0] and cells[1].all()
    assert content_cells([Letterbox.fit((64, 64), (64, 64))], (8, 8)) is None


def test_input_size_must_be_multiples_of_32():
    assert check_input_size([256]) == (256, 256) and check_input_size([192, 256]) == (192, 256)
    with pytest.raises(Novum3DError, match=r"--size: expected HEIGHT WIDTH .* multiple of 32, got \[250\]"):
        check_input_size([250])


def test_the_loader_reports_bad_images_and_decodes_the_rest(tmp_path):
    from PIL import Image

    Image.new("RGB", (96, 64), (200, 10, 10)).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_text("not an image")
    items = PhotoSet([tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.png"], (64, 64))
    batch = collate_photos([items[i] for i in range(3)])
    assert batch["images"].shape == (1, 3, 64, 64) and batch["images"].dtype == torch.uint8
    assert batch["indices"] == [0] and batch["letterboxes"][0].original == (64, 96)
    assert [i for i, _ in batch["errors"]] == [1, 2]
    assert "unreadable image" in batch["errors"][0][1] and "not found" in batch["errors"][1][1]


def feature_image(vol, feats, bank, pose, K, size, seed=0):
    """Oracle feature "photographs" [B, D, H, W] at image scale: the volume rendered at known poses,
    noised, background features where the object is not."""
    g = torch.Generator().manual_seed(seed)
    az, el, th, dist = pose
    H, W = size
    out = rasterize_features(vol, feats, pose_to_viewmat(az, el, th, dist), K.expand(len(az), 3, 3), W, H,
                             backend="torch", with_depth=False)  # fmt: skip
    noisy = F.normalize(out.features + 0.1 * torch.randn(out.features.shape, generator=g), dim=-1)
    cells = bank[torch.randint(len(bank), (len(az), H // STRIDE, W // STRIDE), generator=g)]
    bg = cells.repeat_interleave(STRIDE, 1).repeat_interleave(STRIDE, 2)
    return torch.where(out.alpha[..., None] > 0.5, noisy, bg).permute(0, 3, 1, 2)


def backbone(images: torch.Tensor) -> torch.Tensor:
    """The oracle's "backbone": unit means over stride x stride pixels (a cell's centre is its pixels' centre)."""
    return F.normalize(F.avg_pool2d(images, STRIDE), dim=1)


def oracle_case():
    vol, feats, bank = small_scene()
    # At distance 20 the object spans about 60% of a 320 x 192 photograph's width, 65% of its height.
    pose = (torch.tensor([0.9, 3.8]), torch.deg2rad(torch.tensor([14.0, 22.0])),
            torch.deg2rad(torch.tensor([4.0, -5.0])), torch.tensor([20.8, 19.2]))  # fmt: skip
    return vol, feats, bank, pose, 1680.0


def test_a_letterboxed_photo_gives_the_pose_estimated_at_its_own_size():
    """An oracle photograph at its own size (24 x 40 cells) and the same photograph letterboxed to a
    256 x 256 input (scale 0.8, 19 x 32 cells of content): the pose reported through the letterbox is
    the one estimated directly, and both are the truth, within the estimator's tolerance."""
    vol, feats, bank, pose, f = oracle_case()
    size = (192, 320)
    K = pascal3d_intrinsics(1.0, f, (size[1] / 2, size[0] / 2))
    photos = feature_image(vol, feats, bank, pose, K, size)
    cfg = PoseConfig(distance_factors=[1.0], backend="torch", steps=20)
    K_map = K.clone()
    K_map[:, :2] /= STRIDE
    direct = PoseEstimator(cfg).estimate(backbone(photos), vol, feats, bank, K_map.expand(2, 3, 3), class_key="car",
                                         prior=clean_prior(20.0))  # fmt: skip

    canvas, box = zip(*(letterbox(p, (256, 256)) for p in photos), strict=True)
    assert box[0].scale[0] == 0.8 and box[0].resized == (154, 256) and box[0].offset == (0, 51)
    maps = mask_maps(backbone(torch.stack(canvas)), content_cells(box, (32, 32)))
    Ks = torch.cat([photo_intrinsics(b, 1.0, f, STRIDE) for b in box])
    est = PoseEstimator(cfg, reference_focal=f / STRIDE)
    # The letterbox shrinks the object by 0.8: in the reference camera the same apparent sizes lie at 25.
    reference_prior = clean_prior(25.0)
    via = est.estimate(maps, vol, feats, bank, Ks, class_key="car", prior=reference_prior)
    # The templates' own distance (one per set here) comes back in each image's camera: 0.8 x 25 = 20,
    # the direct estimate's template distance.
    start = est.estimate(maps, vol, feats, bank, Ks, class_key="car", prior=reference_prior, steps=0)
    start_direct = PoseEstimator(cfg).estimate(backbone(photos), vol, feats, bank, K_map.expand(2, 3, 3),
                                               class_key="car", prior=clean_prior(20.0), steps=0)  # fmt: skip
    torch.testing.assert_close(start.distance, start_direct.distance, atol=0, rtol=0.005)  # sy is 0.802

    truth = rotation_from_pose(*pose[:3])
    for res in (direct, via):
        assert (
            rotation_error(rotation_from_pose(res.azimuth, res.elevation, res.theta), truth) < math.radians(5)
        ).all()
        assert ((res.distance - pose[3]).abs() / pose[3]).max() < 0.1
    between = rotation_error(rotation_from_pose(via.azimuth, via.elevation, via.theta),
                             rotation_from_pose(direct.azimuth, direct.elevation, direct.theta))  # fmt: skip
    assert torch.rad2deg(between).max() < 3.0, torch.rad2deg(between)
    assert ((via.distance - direct.distance).abs() / direct.distance).max() < 0.05

    # Another photo size letterboxed to the same input scores the same templates: none rendered again.
    rendered = est.rendered["template"]
    other = (176, 304)
    K2 = pascal3d_intrinsics(1.0, f, (other[1] / 2, other[0] / 2))
    canvas2, box2 = letterbox(feature_image(vol, feats, bank, pose, K2, other)[0], (256, 256))
    maps2 = mask_maps(backbone(canvas2[None]), content_cells([box2], (32, 32)))
    again = est.estimate(maps2, vol, feats, bank, photo_intrinsics(box2, 1.0, f, STRIDE), class_key="car",
                         prior=reference_prior)  # fmt: skip
    assert est.rendered["template"] == rendered and box2.scale[0] != box[0].scale[0]
    err = rotation_error(rotation_from_pose(again.azimuth, again.elevation, again.theta), truth[:1])
    assert torch.rad2deg(err).max() < 5.0


def test_without_a_reference_focal_each_focal_renders_its_own_templates():
    vol, feats, bank, _, f = oracle_case()
    cfg = PoseConfig(azimuth_bins=4, elevations_deg=[0.0], thetas_deg=[0.0], distance_factors=[1.0], steps=0,
                     prior_grid=False, backend="torch")  # fmt: skip
    maps = F.normalize(torch.randn(2, 16, 24, 30), dim=1)
    Ks = pascal3d_intrinsics(torch.tensor([1.0, 0.8]), f / STRIDE, torch.tensor([[15.0, 12.0]] * 2))
    alone = PoseEstimator(cfg)
    alone.estimate(maps, vol, feats, bank, Ks, class_key="car")
    shared = PoseEstimator(cfg, reference_focal=f / STRIDE)
    shared.estimate(maps, vol, feats, bank, Ks, class_key="car")
    assert alone.rendered["template"] == 8 and shared.rendered["template"] == 4
    with pytest.raises(ValueError, match="reference_focal: must be > 0"):
        PoseEstimator(cfg, reference_focal=0.0)


# ---- templates on disk -------------------------------------------------------------------------------


def store_case(tmp_path, **cfg_fields):
    vol, feats, bank = small_scene()
    g = torch.Generator().manual_seed(3)
    maps = F.normalize(torch.randn(2, 16, 24, 30, generator=g), dim=1)
    K = pascal3d_intrinsics(1.0, 210.0, (15.0, 12.0)).expand(2, 3, 3)
    fields = dict(azimuth_bins=6, elevations_deg=[0.0, 30.0], thetas_deg=[0.0], distance_factors=[0.9, 1.1],
                  steps=2, backend="torch") | cfg_fields  # fmt: skip
    return vol, feats, bank, maps, K, PoseConfig(**fields)


def run_with(store, vol, feats, bank, maps, K, cfg):
    est = PoseEstimator(cfg, store=store)
    res = est.estimate(maps, vol, feats, bank, K, class_key="car", prior=clean_prior())
    return est.rendered["template"], res


def test_a_second_run_reads_the_templates_and_gives_the_same_poses(tmp_path):
    vol, feats, bank, maps, K, cfg = store_case(tmp_path)
    said = []
    store = TemplateStore(tmp_path / "t", "ckpt-a", warn=said.append)
    rendered, first = run_with(store, vol, feats, bank, maps, K, cfg)
    assert rendered > 0 and len(list((tmp_path / "t").glob("car-features-*.pt"))) == 1
    again, second = run_with(TemplateStore(tmp_path / "t", "ckpt-a"), vol, feats, bank, maps, K, cfg)
    assert again == 0
    torch.testing.assert_close(second.as_tensor(), first.as_tensor(), atol=0, rtol=0)
    assert said == [] and not list((tmp_path / "t").glob(".*tmp"))  # written then renamed


@pytest.mark.parametrize(
    "change",
    ["checkpoint", "grid", "dtype", "features", "code"],
)
def test_templates_from_other_inputs_are_never_used(tmp_path, change, monkeypatch):
    import novum3d.inference.pose.templates as templates

    vol, feats, bank, maps, K, cfg = store_case(tmp_path)
    run_with(TemplateStore(tmp_path / "t", "ckpt-a"), vol, feats, bank, maps, K, cfg)
    checkpoint = "ckpt-b" if change == "checkpoint" else "ckpt-a"
    if change == "grid":
        cfg = store_case(tmp_path, azimuth_bins=8)[-1]
    if change == "dtype":
        cfg = store_case(tmp_path, template_dtype="bfloat16")[-1]
    if change == "features":
        feats = F.normalize(feats + 0.01, dim=-1)
    if change == "code":
        monkeypatch.setattr(templates, "template_code_digest", lambda: "another version of the renderer")
    rendered, _ = run_with(TemplateStore(tmp_path / "t", checkpoint), vol, feats, bank, maps, K, cfg)
    assert rendered > 0
    files = list((tmp_path / "t").glob("car-features-*.pt"))
    # A new version of the same templates replaces the old; templates of other settings sit beside them.
    assert len(files) == (1 if change in ("checkpoint", "code") else 2)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_a_damaged_or_foreign_file_is_rendered_again_and_said_once(tmp_path, damage):
    vol, feats, bank, maps, K, cfg = store_case(tmp_path)
    run_with(TemplateStore(tmp_path / "t", "ckpt-a"), vol, feats, bank, maps, K, cfg)
    (path,) = (tmp_path / "t").glob("car-features-*.pt")
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\0" * 1000)
    else:  # another key's file under this key's name
        other = TemplateStore(tmp_path / "u", "ckpt-b")
        run_with(other, vol, feats, bank, maps, K, cfg)
        path.write_bytes(next((tmp_path / "u").glob("*.pt")).read_bytes())
    said = []
    store = TemplateStore(tmp_path / "t", "ckpt-a", warn=said.append)
    rendered, _ = run_with(store, vol, feats, bank, maps, K, cfg)
    assert rendered > 0 and len(said) == 1 and str(path) in said[0]
    assert ("does not load" if damage != "foreign" else "made from other inputs") in said[0]
    rendered, _ = run_with(store, vol, feats, bank, maps, K, cfg)  # the file rewritten under its key is read
    assert rendered == 0 and len(said) == 1


def test_an_unwritable_folder_leaves_templates_in_memory_and_says_so(tmp_path):
    vol, feats, bank, maps, K, cfg = store_case(tmp_path)
    (tmp_path / "file").write_text("")
    said = []
    rendered, res = run_with(TemplateStore(tmp_path / "file" / "t", "a", warn=said.append), vol, feats, bank, maps, K,
                             cfg)  # fmt: skip
    assert rendered > 0 and torch.isfinite(res.azimuth).all()
    assert len(said) == 1 and "cannot write" in said[0]


# ---- batches estimated class by class ---------------------------------------------------------------


class MapsModel:
    """A NOVUM whose "images" are feature maps already: the class scores and volumes are the model's."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, maps):
        return maps

    def eval(self):
        return self


def test_batches_are_estimated_class_by_class_with_each_images_own_result(tmp_path):
    from novum3d.model.novum import NOVUM
    from tests.test_trainer import CLASSES, tiny_config

    cfg = tiny_config(tmp_path, tmp_path / "run", **{"volume.num_gaussians": 120})
    model = MapsModel(NOVUM(cfg, CLASSES).eval())
    v = model.volumes
    g = torch.Generator().manual_seed(0)
    # Seven maps whose cells are one class's Gaussian features: the classifier's class is known.
    classes = [0, 1, 1, 0, 1, 1, 0]
    maps = torch.stack([v.features[y, torch.randint(v.count(y), (12, 12), generator=g)].permute(2, 0, 1)
                        for y in classes])  # fmt: skip
    K = pascal3d_intrinsics(1.0, 300.0, (48.0, 48.0), downsample=8)
    est = PoseEstimator(PoseConfig(azimuth_bins=4, elevations_deg=[0.0], thetas_deg=[0.0], distance_factors=[1.0],
                                   steps=2, prior_grid=False, backend="torch"))  # fmt: skip
    calls = []
    real = est.estimate
    est.estimate = lambda maps, *a, **k: calls.append(len(maps)) or real(maps, *a, **k)
    batches = [(maps[s : s + 3], K.expand(len(maps[s : s + 3]), 3, 3), None, list(range(s, min(s + 3, 7))))
               for s in (0, 3, 6)]  # fmt: skip
    seen = {}
    for tags, pred, seconds in predict_by_class(model, batches, est, batch_size=2):
        assert len(set(pred.labels.tolist())) == 1 and all(s > 0 for s in seconds)
        for i, tag in enumerate(tags):
            seen[tag] = (int(pred.labels[i]), pred.pose.as_tensor()[i])
    assert sorted(seen) == list(range(7)) and [seen[i][0] for i in range(7)] == classes
    # Full groups of two as they form, then what waits at the end.
    assert calls == [2, 2, 2, 1]
    alone = estimate_poses(model, maps, K.expand(7, 3, 3), est, torch.tensor(classes))
    for i in range(7):
        torch.testing.assert_close(seen[i][1], alone.as_tensor()[i], atol=1e-4, rtol=0)
    # A given class estimates every image under it; beyond max_waiting the largest group goes early.
    calls.clear()
    out = list(predict_by_class(model, batches, est, batch_size=10, label=1, max_waiting=4))
    assert all(p.labels.tolist() == [1] * len(t) for t, p, _ in out) and calls == [6, 1]
