"""The authors' training and evaluation choices, each an option: clutter term, bank weight,
background cells where no Gaussian projects, the U-Net decoder, the ground-truth box protocol,
and a calibrated softmax."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from novum3d.config import LossConfig
from novum3d.data.batch import box_cells
from novum3d.inference.pipeline import mask_maps
from novum3d.inference.pose import PoseConfig, PoseEstimator
from novum3d.model.backbone import FeatureBackbone
from novum3d.model.calibration import expected_calibration_error, fit_temperature
from novum3d.model.matching import class_scores
from novum3d.train.correspondence import background_features, find_correspondences
from novum3d.train.loss import clutter_loss, contrastive_loss
from rendering import pascal3d_intrinsics, pose_to_viewmat
from tests.test_model import hand_loss, small_volumes, toy


def test_bank_weight_scales_the_bank_terms_of_the_softmax():
    f, C, valid, bank = toy()
    neighbors = torch.zeros(2, 2, 2, dtype=torch.bool)
    cfg = LossConfig(bank_weight=0.005)
    loss = contrastive_loss(f, torch.tensor([0]), torch.tensor([0]), C, valid, neighbors, bank, cfg)
    logits = torch.stack([f[0] @ c for c in (C[0, 0], C[0, 1], C[1, 0], C[1, 1], bank[0])]) / 0.07
    expected = -(logits[0] - torch.log(logits[:4].exp().sum() + 0.005 * logits[4].exp()))
    torch.testing.assert_close(loss, expected)
    unweighted = contrastive_loss(f, torch.tensor([0]), torch.tensor([0]), C, valid, neighbors, bank, LossConfig())
    torch.testing.assert_close(unweighted, hand_loss(f, [C[0, 0], C[0, 1], C[1, 0], C[1, 1], bank[0]], 0))


def test_clutter_gradient_reaches_the_backbone_at_background_cells_only():
    v = small_volumes()
    labels = torch.tensor([0, 1])
    vm = pose_to_viewmat(torch.tensor([0.4, 2.0]), 0.3, 0.0, 40.0)
    K = pascal3d_intrinsics(1.0, 3000.0, (128.0, 128.0), downsample=8).expand(2, 3, 3)
    maps = F.normalize(torch.randn(2, 4, 32, 32), dim=1).requires_grad_(True)
    corr = find_correspondences(v, maps, labels, vm, K)
    bg = background_features(maps, corr.covered, per_image=6, seeds=[3, 4])
    (grad,) = torch.autograd.grad(clutter_loss(bg, v.features, v.valid), maps)
    touched = grad.abs().sum(1) > 0  # [B, h, w]
    assert [int(t.sum()) for t in touched] == [6, 6]  # exactly the sampled cells
    assert not (touched & corr.covered).any()  # none of them where the volume projects
    # The term is mean(f_bg . C_k) over every real Gaussian: the gradient at a cell is the mean Gaussian
    # feature / Q, projected onto the unit sphere's tangent at the map's feature.
    mean_c = v.features[v.valid].mean(0)
    b, y, x = torch.nonzero(touched, as_tuple=True)
    f = maps.detach()[b, :, y, x]
    expected = (mean_c - (f @ mean_c)[:, None] * f) / 12
    torch.testing.assert_close(grad[b, :, y, x], expected, atol=1e-6, rtol=1e-5)
    assert clutter_loss(bg[:0], v.features, v.valid) == 0


def test_volume_background_cells_never_fall_on_visible_projected_gaussians():
    v = small_volumes()
    labels = torch.tensor([0, 1, 0])
    vm = pose_to_viewmat(torch.tensor([0.0, 1.0, 2.0]), 0.3, 0.0, 40.0)
    K = pascal3d_intrinsics(1.0, 3000.0, (128.0, 128.0), downsample=8).expand(3, 3, 3)
    maps = F.normalize(torch.randn(3, 4, 32, 32), dim=1)
    corr = find_correspondences(v, maps, labels, vm, K)
    from rendering import project_visible

    for b in range(3):
        vol = v.volume(int(labels[b]))
        means2d, visible = project_visible(
            vol.means, vol.quats, vol.scales, vol.opacities, vm[b : b + 1], K[b : b + 1], 32, 32
        )
        cells = means2d[0, visible[0]].floor().long()
        assert corr.covered[b, cells[:, 1], cells[:, 0]].all()  # every visible Gaussian's cell is covered
    # Drawn cells: identify them by the feature they copy.
    bg = background_features(maps, corr.covered, per_image=40, seeds=[0, 1, 2])
    for b in range(3):
        flat = maps[b].reshape(4, -1).T  # [h*w, D]
        idx = torch.cdist(bg[40 * b : 40 * (b + 1)], flat).argmin(1)
        assert not corr.covered[b].reshape(-1)[idx].any()


def test_box_protocol_scores_equal_cropping_by_hand():
    g = torch.Generator().manual_seed(0)
    maps = F.normalize(torch.randn(2, 8, 10, 12, generator=g), dim=1)
    C = F.normalize(torch.randn(3, 5, 8, generator=g), dim=-1)
    valid = torch.ones(3, 5, dtype=torch.bool)
    valid[2, 3:] = False
    bank = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    boxes = torch.tensor([[16.0, 8.0, 64.0, 48.0], [0.0, 0.0, 95.0, 79.0]])  # pixels of an 80x96 image
    mask = box_cells(boxes, (80, 96), (10, 12))
    got = class_scores(maps, C, valid, bank, pixel_mask=mask, backend="torch")
    crop = maps[:1, :, 1:6, 2:8]  # cells whose centres (8 px apart, at +4) lie inside box 0
    assert mask[0].sum() == 5 * 6 and mask[0, 1:6, 2:8].all()
    torch.testing.assert_close(got[:1], class_scores(crop, C, valid, bank, backend="torch"))
    torch.testing.assert_close(got[1:], class_scores(maps[1:], C, valid, bank, backend="torch"))


def test_box_protocol_pose_ignores_everything_outside_the_box():
    from rendering import cuboid_volume
    from tests.test_pose import H, W, oracle_maps

    vol = cuboid_volume((0.8, 1.8, 0.6), 300)
    feats = F.normalize(torch.randn(len(vol), 16, generator=torch.Generator().manual_seed(0)), dim=-1)
    bank = F.normalize(torch.randn(32, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    K = pascal3d_intrinsics(1.0, 70.0 * 5 * 8, (W * 4.0, H * 4.0), downsample=8)
    maps = oracle_maps(vol, feats, bank, torch.tensor([0.8]), torch.tensor([0.2]), torch.tensor([0.0]),
                       torch.tensor([5.0]), K)  # fmt: skip
    mask = torch.zeros(1, H, W, dtype=torch.bool)
    mask[:, 8:32, 8:42] = True  # around the object
    noisy = maps.clone()
    noisy[:, :, ~mask[0]] = F.normalize(torch.randn(16, int((~mask).sum())), dim=0)  # clutter outside the box
    est = PoseEstimator(PoseConfig(steps=5, backend="torch", distance=5.0))
    a = est.estimate(mask_maps(maps, mask), vol, feats, bank, K.expand(1, 3, 3), class_key="x")
    b = est.estimate(mask_maps(noisy, mask), vol, feats, bank, K.expand(1, 3, 3), class_key="x")
    for name in ("azimuth", "elevation", "theta", "distance", "score"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name))


def test_temperature_fitted_on_held_out_scores_recovers_the_true_one_and_lowers_ece():
    g = torch.Generator().manual_seed(0)
    scores = 0.05 * torch.randn(4000, 12, generator=g)  # NOVUM-like: all within a few hundredths
    true_t = 0.02
    labels = torch.multinomial(torch.softmax(scores / true_t, dim=1), 1, generator=g)[:, 0]
    t = fit_temperature(scores, labels)
    assert t == pytest.approx(true_t, rel=0.1)
    before, after = (torch.softmax(scores / temp, dim=1) for temp in (0.07, t))
    ece = [expected_calibration_error(p.amax(1), p.argmax(1) == labels) for p in (before, after)]
    assert ece[1] < 0.03 < ece[0]
    assert math.isnan(expected_calibration_error(torch.zeros(0), torch.zeros(0, dtype=torch.bool)))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_unet_decoder_has_the_authors_widths_and_trains(arch):
    net = FeatureBackbone(arch, 16, decoder="unet")
    c2 = 128 if arch == "resnet18" else 512
    assert net.decoder.up0[0][0].in_channels == 4 * c2 and net.decoder.up0[1][0].out_channels == 2 * c2
    assert net.decoder.up2[1][0].out_channels == c2 // 2 and net.head.in_channels == c2 // 2
    out = net(torch.randn(2, 3, 64, 72))
    assert out.shape == (2, 16, 8, 9)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, 8, 9))
    out[:, 0].sum().backward()
    assert net.decoder.up0[0][0].weight.grad.abs().sum() > 0 and net.stem[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("stride", [8, 4])
def test_a_shallower_trunk_keeps_features_local_and_trains(stride):
    torch.manual_seed(0)
    full = FeatureBackbone("resnet18", 16, stride=stride).eval()
    torch.manual_seed(0)
    three = FeatureBackbone("resnet18", 16, stride=stride, trunk_depth=3).eval()
    torch.manual_seed(0)
    two = FeatureBackbone("resnet18", 16, stride=stride, trunk_depth=2).eval()
    # The whole trunk is built before stages are dropped, so a seed gives the shared stages the same weights.
    torch.testing.assert_close(two.layer2.state_dict(), full.layer2.state_dict())
    assert not hasattr(three, "layer4") and not hasattr(two, "layer3")
    assert not any(k.startswith(("decoder.lateral4", "decoder.fuse3")) for k in three.state_dict())
    assert not any(k.startswith(("decoder.lateral3", "decoder.fuse2")) for k in two.state_dict())
    image = torch.rand(1, 3, 256, 256)
    moved = image.clone()
    moved[..., :8, :8] = 1 - moved[..., :8, :8]  # change one corner
    with torch.no_grad():
        change = {d: (net(moved) - net(image)).abs().amax(1)[0] for d, net in ((4, full), (3, three), (2, two))}
    h = 256 // stride
    assert all(c.shape == (h, h) for c in change.values())
    # A cell 160 px away from the corner along the diagonal sees the change only through layer4: the
    # receptive fields of layer2 and layer3 stop short of it (layer4's change there is ~2e-5 at random init).
    far = int(0.625 * h)
    assert change[4][far, far] > 1e-6 and change[3][far, far] == 0 and change[2][far, far] == 0
    assert all(c[0, 0] > 1e-3 for c in change.values())
    out = two.train()(torch.rand(2, 3, 64, 72))
    assert out.shape == (2, 16, 64 // stride, 72 // stride)
    out[:, 0].sum().backward()
    assert two.decoder.lateral2.weight.grad.abs().sum() > 0 and two.stem[0].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="trunk_depth"):
        FeatureBackbone("resnet18", 16, decoder="unet", trunk_depth=3)
    with pytest.raises(ValueError, match="trunk_depth"):
        FeatureBackbone("resnet18", 16, trunk_depth=1)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_stride_4_fuses_the_stride_4_stage_and_keeps_stride_8_checkpoints(arch):
    eight, four = FeatureBackbone(arch, 16), FeatureBackbone(arch, 16, stride=4)
    assert eight.stride == 8 and four.stride == 4
    # Stride 8 has no new modules, so checkpoints written before the option load unchanged.
    assert not any(k.split(".")[1] in ("lateral1", "fuse1") for k in eight.state_dict())
    assert four.decoder.lateral1.in_channels == (64 if arch == "resnet18" else 256)
    assert eight(torch.randn(1, 3, 64, 72)).shape == (1, 16, 8, 9)
    out = four(torch.randn(2, 3, 64, 72))
    assert out.shape == (2, 16, 16, 18)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2, 16, 18))
    out[:, 0, :8].sum().backward()
    assert four.decoder.lateral1.weight.grad.abs().sum() > 0 and four.decoder.lateral4.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="4 with the fpn decoder"):
        FeatureBackbone(arch, 16, decoder="unet", stride=4)
    with pytest.raises(ValueError, match="stride"):
        FeatureBackbone(arch, 16, stride=16)
