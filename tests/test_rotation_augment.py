"""Rotation augmentation: a camera rolled about its optical axis, i.e. the image rotated about the
principal point and theta changed by the same angle; and the vertical stretch: rows scaled about the
principal point and the camera's fy by the same factor."""

import math

import pytest
import torch

from novum3d.baselines import BaselineTrainer
from novum3d.config import ConfigError, ExperimentConfig, config_to_dict, from_mapping, load_experiment
from novum3d.data.augment import (
    roll_and_stretch,
    rotate_about_principal,
    rotation_angles,
    stretch_factors,
    warp_about_principal,
)
from novum3d.data.batch import batch_cameras, collate
from novum3d.data.synthetic import generate
from novum3d.evaluation.suite import load_suite, method_config
from novum3d.train.trainer import ROTATION_STREAM, STRETCH_STREAM, Trainer, training_identity
from rendering.cameras import pascal3d_intrinsics, pose_to_viewmat, project_points
from tests.test_config import assert_default_keeps_older_identity
from tests.test_robustness import baseline_config
from tests.test_trainer import CLASSES, tiny_config

H, W = 48, 56


def blobs(points: torch.Tensor, height: int = H, width: int = W, sigma: float = 2.5) -> torch.Tensor:
    """[1, 3, height, width] float: a Gaussian blob at each pixel point [N, 2] (x, y; centres at +0.5)."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    d2 = (xs[None] - points[:, 0, None, None]) ** 2 + (ys[None] - points[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma**2)).sum(0).clamp(max=1).expand(1, 3, height, width).clone()


@pytest.mark.parametrize("angle", [0.35, -0.5])
def test_the_rotated_image_is_the_view_at_theta_plus_the_angle(angle):
    # Points of an object seen at theta 0.1, drawn as blobs; rotated by `angle`, the image must be the
    # blobs of the same points seen at theta 0.1 + angle (the camera projects; nothing is assumed).
    g = torch.Generator().manual_seed(0)
    points3d = (torch.rand(6, 3, generator=g) - 0.5) * 1.2
    principal = torch.tensor([[25.3, 21.8]])  # off-centre, like the synthetic data's jitter
    K = pascal3d_intrinsics(1.0, 250.0, principal[0])

    def seen(theta):
        return project_points(points3d[None], pose_to_viewmat(0.7, 0.3, theta, 8.0), K)[0]

    before, after = seen(0.1), seen(0.1 + angle)
    assert (after - before).abs().max() > 4  # the angle moves the points by pixels
    rotated, _, _ = rotate_about_principal(blobs(before), None, torch.tensor([[0.0, 0, W, H]]), principal,
                                           torch.tensor([angle]))  # fmt: skip
    expected = blobs(after)
    inner = (slice(None), slice(None), slice(6, H - 6), slice(6, W - 6))  # away from the mirrored border
    assert (rotated[inner] - expected[inner]).abs().max() < 0.05
    # The other sign is far off: the test tells the two directions apart.
    wrong, _, _ = rotate_about_principal(blobs(before), None, torch.tensor([[0.0, 0, W, H]]), principal,
                                         torch.tensor([-angle]))  # fmt: skip
    assert (wrong[inner] - expected[inner]).abs().max() > 0.5


def test_angle_zero_leaves_images_masks_and_boxes_alone():
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (2, 3, H, W), generator=g, dtype=torch.uint8)
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    masks[0, 10:30, 12:40] = True
    masks[1, 5:9, 3:50] = True
    boxes = torch.tensor([[12.0, 10, 40, 30], [3, 5, 50, 9]])
    out, out_masks, out_boxes = rotate_about_principal(images, masks, boxes, torch.tensor([[28.0, 24], [20, 30]]),
                                                       torch.zeros(2))  # fmt: skip
    assert torch.equal(out, images) and torch.equal(out_masks, masks) and torch.equal(out_boxes, boxes)
    assert out.dtype == torch.uint8


def test_masks_turn_with_the_image_and_boxes_bound_them():
    images = torch.zeros(3, 3, H, W)
    masks = torch.zeros(3, H, W, dtype=torch.bool)
    masks[:, 16:32, 10:46] = True  # a wide bar
    images[:, :, 16:32, 10:46] = 1.0
    boxes = torch.tensor([[10.0, 16, 46, 32]]).expand(3, 4)
    principal = torch.tensor([[28.0, 24.0]]).expand(3, 2)
    angles = torch.tensor([math.pi / 2, 0.3, -0.3])
    out, out_masks, out_boxes = rotate_about_principal(images, masks, boxes, principal, angles)
    # A quarter turn about the bar's centre makes it tall: 16 wide, 36 high.
    x0, y0, x1, y1 = out_boxes[0].tolist()
    assert x1 - x0 == pytest.approx(16, abs=1) and y1 - y0 == pytest.approx(36, abs=1)
    assert (out_masks.flatten(1).sum(1).float() / masks.flatten(1).sum(1) - 1).abs().max() < 0.05  # area kept
    assert torch.equal(out[:, 0] > 0.5, out_masks)  # the object's pixels are where its mask is
    for b in range(3):  # each box is the rotated mask's bounds
        ys, xs = torch.nonzero(out_masks[b], as_tuple=True)
        assert out_boxes[b].tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    # Without masks the rotated box's corners bound the object, a little more loosely.
    _, none, loose = rotate_about_principal(images, None, boxes, principal, angles)
    assert none is None
    assert (loose[:, :2] <= out_boxes[:, :2] + 0.5).all() and (loose[:, 2:] >= out_boxes[:, 2:] - 0.5).all()


def test_boxes_without_masks_turn_the_way_the_image_does():
    # An off-centre box turned a quarter about the principal point: its corners must land where the
    # image's content lands (a sign error would put it on the other side of the principal point).
    images = torch.zeros(2, 3, H, W)
    images[:, :, 4:12, 30:50] = 1.0  # a bar above and right of the principal point
    boxes = torch.tensor([[30.0, 4, 50, 12]]).expand(2, 4)
    principal = torch.tensor([[28.0, 24.0]]).expand(2, 2)
    angles = torch.tensor([math.pi / 2, -math.pi / 2])
    out, _, turned = rotate_about_principal(images, None, boxes, principal, angles)
    for b in range(2):
        ys, xs = torch.nonzero(out[b, 0] > 0.5, as_tuple=True)
        content = [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
        assert turned[b].tolist() == pytest.approx(content, abs=1.01), (b, turned[b], content)
    # +90 deg: points turn by -90 deg (x right, y down), so the bar ends up left of the principal point.
    assert turned[0, 2] <= 28.0 and turned[1, 0] >= 28.0


def test_an_empty_mask_keeps_the_rotated_box():
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    masks[1, 10:20, 10:20] = True
    boxes = torch.tensor([[20.0, 16, 36, 32], [10, 10, 20, 20]])
    principal = torch.tensor([[28.0, 24.0]]).expand(2, 2)
    _, out_masks, out_boxes = rotate_about_principal(torch.zeros(2, 3, H, W), masks, boxes, principal,
                                                     torch.tensor([0.4, 0.4]))  # fmt: skip
    _, _, corners = rotate_about_principal(torch.zeros(2, 3, H, W), None, boxes, principal, torch.tensor([0.4, 0.4]))
    assert not out_masks[0].any() and torch.equal(out_boxes[0], corners[0])  # no mask pixel: the corners' bounds
    assert out_boxes[0, 2] > out_boxes[0, 0] and out_boxes[0, 3] > out_boxes[0, 1]


def test_rotation_angles_are_seeded_uniform_and_bounded():
    a = rotation_angles(list(range(400)), 30.0)
    assert a.dtype == torch.float64 and a.shape == (400,)
    assert torch.equal(a, rotation_angles(list(range(400)), 30.0))
    assert a.abs().max() <= math.radians(30) and a.abs().max() > math.radians(28)
    assert abs(a.mean().item()) < math.radians(3) and (a > 0).float().mean().item() == pytest.approx(0.5, abs=0.08)
    assert torch.equal(rotation_angles([5, 6], 0.0), torch.zeros(2, dtype=torch.float64))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match=r"expected principal \[1, 2\], angles \[1\], boxes \[1, 4\]"):
        rotate_about_principal(torch.zeros(1, 3, H, W), None, torch.zeros(1, 4), torch.zeros(2), torch.zeros(1))


@pytest.mark.parametrize(("angle", "stretch"), [(0.0, 1.4), (0.0, 0.7), (0.3, 1.3), (-0.4, 0.75)])
def test_stretched_rows_are_the_view_of_a_camera_with_fy_scaled(angle, stretch):
    # The roll, then the rows stretched by s: the image must be the blobs of the same points seen at
    # theta + angle by the camera with fy scaled by s (its projection decides; nothing is assumed).
    g = torch.Generator().manual_seed(3)
    points3d = (torch.rand(6, 3, generator=g) - 0.5) * 1.2
    principal = torch.tensor([[27.1, 23.4]])
    K = pascal3d_intrinsics(1.0, 230.0, principal[0])
    K_stretched = K.clone()
    K_stretched[:, 1, 1] *= stretch

    def seen(theta, k):
        return project_points(points3d[None], pose_to_viewmat(0.7, 0.3, theta, 8.0), k)[0]

    before, after = seen(0.1, K), seen(0.1 + angle, K_stretched)
    assert (after - before).abs().max() > 3
    box = torch.tensor([[0.0, 0, W, H]])
    warped, _, _ = warp_about_principal(blobs(before, sigma=2.0), None, box, principal,
                                        roll_and_stretch(torch.tensor([angle]), torch.tensor([stretch])))  # fmt: skip
    # Blobs stretch with the rows, so compare them at their centres: the warped image must peak
    # where the stretched camera puts each point.
    x, y = after[:, 0].long(), after[:, 1].long()
    inside = (x >= 2) & (x < W - 2) & (y >= 2) & (y < H - 2)
    assert inside.sum() >= 4
    assert (warped[0, 0, y[inside], x[inside]] > 0.85).all()
    if angle != 0:  # the other order (stretch, then roll) is no camera: it puts the points elsewhere
        stretch_first = torch.tensor([[[1.0, 0.0], [0.0, stretch]]], dtype=torch.float64)
        wrong = roll_and_stretch(torch.tensor([angle]), torch.ones(1)) @ stretch_first
        other, _, _ = warp_about_principal(blobs(before, sigma=2.0), None, box, principal, wrong)
        assert (other[0, 0, y[inside], x[inside]] < 0.85).any()


def test_stretch_one_and_angle_zero_leave_everything_alone_and_stretch_scales_boxes_about_the_principal_row():
    g = torch.Generator().manual_seed(4)
    images = torch.randint(0, 256, (2, 3, H, W), generator=g, dtype=torch.uint8)
    masks = torch.zeros(2, H, W, dtype=torch.bool)
    masks[0, 10:30, 12:40] = True
    masks[1, 20:28, 3:50] = True
    boxes = torch.tensor([[12.0, 10, 40, 30], [3, 20, 50, 28]])
    principal = torch.tensor([[28.0, 20.0], [20.0, 24.0]])
    same = warp_about_principal(images, masks, boxes, principal, roll_and_stretch(torch.zeros(2), torch.ones(2)))
    assert torch.equal(same[0], images) and torch.equal(same[1], masks) and torch.equal(same[2], boxes)
    stretch = roll_and_stretch(torch.zeros(2), torch.tensor([1.5, 0.5]))
    _, out_masks, out_boxes = warp_about_principal(images, masks, boxes, principal, stretch)
    # Rows move away from (1.5) or towards (0.5) the principal row; columns stay.
    assert out_boxes[0].tolist() == pytest.approx([12, 20 - 1.5 * 10, 40, 20 + 1.5 * 10], abs=1)
    assert out_boxes[1].tolist() == pytest.approx([3, 24 - 0.5 * 4, 50, 24 + 0.5 * 4], abs=1)
    area = out_masks.flatten(1).sum(1).float() / masks.flatten(1).sum(1)
    assert area.tolist() == pytest.approx([1.5, 0.5], abs=0.08)


def test_a_squashed_image_padded_at_the_border_copies_no_object():
    # Squashed rows read past the frame. Mirrored, the object comes back into the background;
    # padded with the border's pixels, it does not.
    images = torch.zeros(1, 3, H, W)
    images[:, :, 8:40, 10:46] = 1.0
    masks = images[:, 0] > 0.5
    boxes, principal = torch.tensor([[10.0, 8, 46, 40]]), torch.tensor([[28.0, 24.0]])
    squash = roll_and_stretch(torch.zeros(1), torch.tensor([0.4]))
    mirrored, m, _ = warp_about_principal(images, masks, boxes, principal, squash)
    bordered, m2, _ = warp_about_principal(images, masks, boxes, principal, squash, padding="border")
    assert torch.equal(m, m2)
    assert (mirrored[0, 0][~m[0]] > 0.5).any() and not (bordered[0, 0][~m[0]] > 0.5).any()


def test_stretch_factors_are_seeded_log_uniform_and_bounded():
    s = stretch_factors(list(range(400)), 1.6)
    assert s.dtype == torch.float64 and torch.equal(s, stretch_factors(list(range(400)), 1.6))
    assert s.max() <= 1.6 + 1e-12 and s.min() >= 1 / 1.6 - 1e-12 and s.max() > 1.55 and s.min() < 1 / 1.55
    assert abs(s.log().mean().item()) < 0.04 and (s > 1).float().mean().item() == pytest.approx(0.5, abs=0.08)
    assert torch.equal(stretch_factors([5, 6], 1.0), torch.ones(2, dtype=torch.float64))


def test_a_singular_map_and_bad_shapes_are_refused():
    box, principal = torch.zeros(1, 4), torch.zeros(1, 2)
    with pytest.raises(ValueError, match="linear: every map must be invertible"):
        warp_about_principal(torch.zeros(1, 3, H, W), None, box, principal, torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"expected principal \[1, 2\], linear \[1, 2, 2\], boxes \[1, 4\]"):
        warp_about_principal(torch.zeros(1, 3, H, W), None, box, principal, torch.eye(2))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rotate") / "tiny"
    generate(root, "tiny", seed=0, categories=CLASSES)
    return root


def share_inside(trainer: Trainer, batch: dict) -> torch.Tensor:
    """[B]: share of each image's class-volume centres that project inside its object mask."""
    viewmats, Ks = batch_cameras(batch, 1, torch.device("cpu"))
    means = trainer.model.volumes.means[batch["label"]]
    points = project_points(means, viewmats, Ks)  # [B, N, 2]
    valid = trainer.model.volumes.valid[batch["label"]]
    mask = batch["mask"]
    x, y = points[..., 0].long().clamp(0, mask.shape[2] - 1), points[..., 1].long().clamp(0, mask.shape[1] - 1)
    inside = mask[torch.arange(len(mask))[:, None], y, x]
    return (inside & valid).sum(1) / valid.sum(1)


def test_novum_rotates_the_pose_with_the_image(data_root, tmp_path):
    trainer = Trainer(tiny_config(data_root, tmp_path, **{"augment.rotation_degrees": 40}), quiet=True)
    trainer.global_step = 1  # its seeds turn the four images by 19-38 degrees
    batch = collate([trainer.train_set[i] for i in range(4)], (64, 64))
    images = batch["image"].float() / 255
    rotated, out, occluders = trainer.augment(batch, images)
    assert occluders is None and not torch.equal(out, images) and rotated["image"] is out
    angles = rotation_angles(trainer.cell_seeds(4, stream=ROTATION_STREAM), 40)
    assert angles.abs().min() > math.radians(15)
    turned = torch.atan2(torch.sin(batch["theta"] + angles), torch.cos(batch["theta"] + angles))
    torch.testing.assert_close(rotated["theta"], turned.to(batch["theta"].dtype))
    for key in ("azimuth", "elevation", "distance", "principal", "label"):
        assert torch.equal(rotated[key], batch[key])
    # The volume at the new pose lies on the rotated object as it lay on the original; at the pose
    # turned the other way it does not.
    original, kept = share_inside(trainer, batch), share_inside(trainer, rotated)
    assert (kept > original - 0.08).all(), (original, kept)
    wrong = {**rotated, "theta": batch["theta"] - angles.to(batch["theta"].dtype)}
    assert (share_inside(trainer, wrong) < kept).all()
    step = trainer.train_step(batch)
    assert math.isfinite(step.loss) and step.correspondences > 0


def test_baseline_trains_with_rotation_and_keeps_labels(data_root, tmp_path):
    trainer = BaselineTrainer(baseline_config(data_root, tmp_path, **{"augment.rotation_degrees": 30}), quiet=True)
    batch = collate([trainer.train_set[i] for i in range(4)], (64, 64))
    rotated, out, _ = trainer.augment(batch, batch["image"].float() / 255)
    assert torch.equal(rotated["label"], batch["label"]) and not torch.equal(out, batch["image"].float() / 255)
    assert all(math.isfinite(trainer.train_step(batch).loss) for _ in range(2))


def test_rotation_config_identity_and_suite(tmp_path):
    cfg = load_experiment("configs/synthetic-small.yaml")
    assert cfg.augment.rotation_degrees == 0.0
    with pytest.raises(ConfigError, match=r"augment: rotation_degrees: must lie in \[0, 180\], got 200"):
        load_experiment("configs/synthetic-small.yaml", ["augment.rotation_degrees=200"])
    # Off: the identity is the one of runs from before the field (and the section) existed.
    old = config_to_dict(cfg)
    del old["augment"]["rotation_degrees"]
    assert from_mapping(ExperimentConfig, old).augment.rotation_degrees == 0.0
    assert training_identity(config_to_dict(cfg), "t", "v") == training_identity(old, "t", "v")
    assert "augment" not in training_identity(config_to_dict(cfg), "t", "v")["config"]
    occl = config_to_dict(load_experiment("configs/synthetic-small.yaml", ["augment.occlusion_probability=0.5"]))
    assert "rotation_degrees" not in training_identity(occl, "t", "v")["config"]["augment"]
    on = load_experiment("configs/synthetic-small.yaml", ["augment.rotation_degrees=30"])
    identity = training_identity(config_to_dict(on), "t", "v")
    assert identity["config"]["augment"] == {"occlusion_probability": 0.0, "occluded_fraction": [0.2, 0.7],
                                             "rotation_degrees": 30.0}  # fmt: skip
    # The faithful suite: rotation alone and with occlusion, for NOVUM and (both) for the baseline.
    suite = load_suite("configs/robustness-faithful.yaml")
    methods = {m.slug: m for m in suite.methods}
    base = method_config(methods["volume-background"], suite, [], 0, tmp_path)
    for slug, (rotation, occlusion) in {
        "rotation-augmentation": (30, 0),
        "rotation-and-occlusion-augmentation": (30, 0.5),
    }.items():
        assert methods[slug].pose
        got = method_config(methods[slug], suite, [], 0, tmp_path)
        assert (got.augment.rotation_degrees, got.augment.occlusion_probability) == (rotation, occlusion)
        got.augment = base.augment
        assert got == base  # "+ volume background" plus the augmentation, nothing else
    resnet = methods["resnet-50-rotation-and-occlusion-augmentation"]
    got = method_config(resnet, suite, [], 0, tmp_path)
    assert (got.augment.rotation_degrees, got.augment.occlusion_probability) == (30, 0.5)
    from benchmarks.robustness import augmentation_note

    suite.methods = [methods["rotation-augmentation"], resnet, methods["resnet-50"]]
    assert augmentation_note(suite, [], 0, tmp_path) == (
        "occlusion augmentation (share of images) for ResNet-50 + rotation and occlusion augmentation 0.5; "
        "rotation augmentation (largest angle, degrees) for + rotation augmentation 30, "
        "ResNet-50 + rotation and occlusion augmentation 30; none for the others"
    )
    suite.methods = [methods["rotation-augmentation"]]
    assert augmentation_note(suite, ["augment.vertical_stretch=1.7"], 0, tmp_path) == (
        "rotation augmentation (largest angle, degrees) for + rotation augmentation 30; "
        "vertical stretch (largest factor) for + rotation augmentation 1.7; none for the others"
    )


def test_novum_stretches_the_camera_with_the_image(data_root, tmp_path):
    cfg = tiny_config(data_root, tmp_path, **{"augment.vertical_stretch": 1.8, "augment.rotation_degrees": 20})
    trainer = Trainer(cfg, quiet=True)
    trainer.global_step = 3
    batch = collate([trainer.train_set[i] for i in range(4)], (64, 64))
    warped, out, occluders = trainer.augment(batch, batch["image"].float() / 255)
    assert occluders is None and warped["image"] is out
    stretch = stretch_factors(trainer.cell_seeds(4, stream=STRETCH_STREAM), 1.8)
    assert torch.equal(warped["pixel_aspect"], stretch) and (stretch.log().abs() > 0.1).all()
    angles = rotation_angles(trainer.cell_seeds(4, stream=ROTATION_STREAM), 20)
    turned = torch.atan2(torch.sin(batch["theta"] + angles), torch.cos(batch["theta"] + angles))
    torch.testing.assert_close(warped["theta"], turned.to(batch["theta"].dtype))
    # The images, masks and boxes went through the roll, then the stretch, padded at the border.
    expected = warp_about_principal(batch["image"].float() / 255, batch["mask"], batch["bbox"], batch["principal"],
                                    roll_and_stretch(angles, stretch), "border")  # fmt: skip
    assert torch.equal(out, expected[0]) and torch.equal(warped["mask"], expected[1])
    assert torch.equal(warped["bbox"], expected[2])
    # batch_cameras scales fy by the factor; the volume's centres then project where the warp moves
    # their original projections (c + A (p - c), the map the image went through); with the factor
    # inverted they do not.
    _, K0 = batch_cameras(batch, 1, torch.device("cpu"))
    _, K1 = batch_cameras(warped, 1, torch.device("cpu"))
    torch.testing.assert_close(K1[:, 1, 1], K0[:, 1, 1] * stretch.float())
    torch.testing.assert_close(K1[:, 0], K0[:, 0])
    torch.testing.assert_close(K1[:, 1, 2], K0[:, 1, 2])

    def centres(b):
        viewmats, Ks = batch_cameras(b, 1, torch.device("cpu"))
        return project_points(trainer.model.volumes.means[b["label"]], viewmats, Ks)  # [B, N, 2]

    c = batch["principal"][:, None].float()
    A = roll_and_stretch(angles, stretch).float()
    moved = c + torch.einsum("bij,bnj->bni", A, centres(batch) - c)
    valid = trainer.model.volumes.valid[batch["label"]]
    torch.testing.assert_close(centres(warped)[valid], moved[valid], atol=1e-3, rtol=1e-4)
    wrong = centres({**warped, "pixel_aspect": 1 / stretch})
    off = ((wrong - moved)[..., 1].abs() * valid).amax(1)  # [B] rows only: fy scales nothing else
    assert (off > 2).all(), off
    step = trainer.train_step(batch)
    assert math.isfinite(step.loss) and step.correspondences > 0
    # Stretch alone leaves theta alone.
    alone = Trainer(tiny_config(data_root, tmp_path / "alone", **{"augment.vertical_stretch": 1.8}), quiet=True)
    only, _, _ = alone.augment(batch, batch["image"].float() / 255)
    assert torch.equal(only["theta"], batch["theta"]) and "pixel_aspect" in only


def test_stretch_config_and_identity():
    cfg = load_experiment("configs/synthetic-small.yaml")
    assert cfg.augment.vertical_stretch == 1.0
    with pytest.raises(ConfigError, match=r"augment: vertical_stretch: must lie in \[1, 4\] \(1 = off\), got 0.5"):
        load_experiment("configs/synthetic-small.yaml", ["augment.vertical_stretch=0.5"])
    old = config_to_dict(cfg)
    del old["augment"]["vertical_stretch"]
    assert from_mapping(ExperimentConfig, old).augment.vertical_stretch == 1.0
    assert training_identity(config_to_dict(cfg), "t", "v") == training_identity(old, "t", "v")
    rot = config_to_dict(load_experiment("configs/synthetic-small.yaml", ["augment.rotation_degrees=30"]))
    assert "vertical_stretch" not in training_identity(rot, "t", "v")["config"]["augment"]
    assert_default_keeps_older_identity("vertical_stretch", 1.6, section="augment")


@pytest.mark.gpu
def test_cuda_rotates_as_the_cpu_does():
    g = torch.Generator().manual_seed(2)
    images = torch.rand(3, 3, H, W, generator=g)
    masks = torch.rand(3, H, W, generator=g) > 0.5
    boxes = torch.tensor([[4.0, 5, 40, 30]]).expand(3, 4)
    principal, angles = torch.tensor([[28.0, 24.0]]).expand(3, 2), torch.tensor([0.3, -0.6, 1.0])
    cpu = rotate_about_principal(images, masks, boxes, principal, angles)
    gpu = rotate_about_principal(images.cuda(), masks.cuda(), boxes.cuda(), principal.cuda(), angles.cuda())
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-4, rtol=0)
    assert (gpu[1].cpu() == cpu[1]).float().mean() > 0.995
    stretched = roll_and_stretch(angles, torch.tensor([1.5, 0.6, 1.0]))
    cpu = warp_about_principal(images, masks, boxes, principal, stretched, "border")
    gpu = warp_about_principal(images.cuda(), masks.cuda(), boxes.cuda(), principal.cuda(), stretched.cuda(), "border")
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], atol=1e-4, rtol=0)
    assert (gpu[1].cpu() == cpu[1]).float().mean() > 0.995
