import math

import pytest
import torch
import torch.nn.functional as F

from novum3d.config import ExperimentConfig, LossConfig
from novum3d.model.matching import class_scores
from novum3d.model.neural_volumes import NeuralVolumes
from novum3d.model.novum import NOVUM
from novum3d.train.correspondence import (
    background_features,
    find_correspondences,
    object_cells,
    sample_features,
)
from novum3d.train.loss import contrastive_loss, contrastive_loss_reference
from rendering import cuboid_volume, pascal3d_intrinsics, pose_to_viewmat


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def toy():
    """2 classes x 2 Gaussians, D=2, one bank vector, one feature of class 0 Gaussian 0."""
    ang = torch.tensor([[0.0, 0.4], [1.5, 2.5]])
    C = torch.stack([torch.cos(ang), torch.sin(ang)], -1)  # [2, 2, 2]
    bank = torch.tensor([[math.cos(3.5), math.sin(3.5)]])
    f = torch.tensor([[math.cos(0.1), math.sin(0.1)]], requires_grad=True)
    valid = torch.ones(2, 2, dtype=torch.bool)
    return f, C, valid, bank


def hand_loss(f, columns, target, T=0.07):
    logits = torch.stack([f[0] @ c for c in columns]) / T
    return -(logits[target] - torch.logsumexp(logits, 0))


@pytest.mark.parametrize(
    ("kwargs", "neighbour", "columns"),
    [
        ({}, False, ["C00", "C01", "C10", "C11", "b"]),
        ({}, True, ["C00", "C10", "C11", "b"]),  # C01 is C00's neighbour: not a negative
        ({"same_class_negatives": False}, False, ["C00", "C10", "C11", "b"]),
        ({"other_class_negatives": False}, False, ["C00", "C01", "b"]),
        ({"background_negatives": False}, False, ["C00", "C01", "C10", "C11"]),
    ],
)
def test_loss_matches_hand_computation(kwargs, neighbour, columns):
    f, C, valid, bank = toy()
    neighbors = torch.zeros(2, 2, 2, dtype=torch.bool)
    neighbors[0, 0, 1] = neighbors[0, 1, 0] = neighbour
    cfg = LossConfig(**kwargs)
    loss = contrastive_loss(f, torch.tensor([0]), torch.tensor([0]), C, valid, neighbors, bank, cfg)
    vec = {"C00": C[0, 0], "C01": C[0, 1], "C10": C[1, 0], "C11": C[1, 1], "b": bank[0]}
    expected = hand_loss(f, [vec[c] for c in columns], 0)
    torch.testing.assert_close(loss, expected)


def test_loss_ignores_padding_and_gives_gradient_to_features_only():
    f, C, valid, bank = toy()
    valid[1, 1] = False
    C.requires_grad_(True)
    loss = contrastive_loss(
        f,
        torch.tensor([0]),
        torch.tensor([0]),
        C,
        valid,
        torch.zeros(2, 2, 2, dtype=torch.bool),
        bank,
        LossConfig(),
    )
    expected = hand_loss(f, [C[0, 0], C[0, 1], C[1, 0], bank[0]], 0)
    torch.testing.assert_close(loss, expected.detach())
    loss.backward()
    assert f.grad is not None and f.grad.abs().sum() > 0 and C.grad is None


def small_volumes(bank=8):
    vols = {"a": cuboid_volume((1.0, 1.0, 1.0), 60), "b": cuboid_volume((0.6, 1.4, 0.5), 50)}
    return NeuralVolumes(vols, feature_dim=4, bank_size=bank, seed=1)


def test_volumes_pad_classes_and_neighbour_mask():
    v = small_volumes()
    assert v.features.shape[:2] == v.valid.shape and v.valid.sum(1).tolist() == [
        len(v.volume(0)),
        len(v.volume(1)),
    ]
    nb = v.neighbor_mask(1.01)
    k = v.count(0)
    d = torch.cdist(v.means[0, :k], v.means[0, :k])
    assert torch.equal(nb[0, :k, :k], (d < 1.01 * v.spacing[0]) & ~torch.eye(k, dtype=torch.bool))
    assert not nb[1, v.count(1) :].any()


def test_momentum_update_matches_reference_loop():
    v = small_volumes()
    before = v.features.clone()
    cls = torch.tensor([0, 0, 1, 0])
    gid = torch.tensor([3, 3, 7, 5])
    feats = unit(4, 4, seed=2)
    v.momentum_update(cls, gid, feats, momentum=0.9)
    expected = before.clone()
    for c, g in {(0, 3), (1, 7), (0, 5)}:
        sel = (cls == c) & (gid == g)
        expected[c, g] = F.normalize(0.9 * before[c, g] + 0.1 * feats[sel].mean(0), dim=0)
    torch.testing.assert_close(v.features, expected)


def test_background_bank_is_a_fifo_ring():
    v = small_volumes(bank=5)
    ref = v.bank.clone()
    ptr = 0
    for n, seed in ((3, 1), (4, 2), (7, 3)):
        feats = unit(n, 4, seed=seed)
        v.enqueue_background(feats)
        for row in feats[-5:]:
            ref[ptr] = row
            ptr = (ptr + 1) % 5
        torch.testing.assert_close(v.bank, ref)
        assert int(v.bank_ptr) == ptr


def test_sample_features_reads_cells_at_their_centres():
    maps = F.normalize(torch.randn(2, 4, 3, 5), dim=1)
    pts = torch.tensor([[[0.5, 0.5], [1.5, 0.5]], [[4.5, 2.5], [2.5, 1.5]]])  # [B=2, N=2, 2]
    got = sample_features(maps, pts)
    expected = torch.stack([maps[0, :, 0, [0, 1]].T, maps[1, :, [2, 1], [4, 2]].T])
    torch.testing.assert_close(got, expected)
    # Half-way between two cell centres: the normalised mean of both.
    mid = sample_features(maps, torch.tensor([[[1.0, 0.5]], [[1.0, 0.5]]]))
    torch.testing.assert_close(mid[0, 0], F.normalize(maps[0, :, 0, 0] + maps[0, :, 0, 1], dim=0))


def test_correspondences_lie_on_visible_projected_gaussians():
    v = small_volumes()
    labels = torch.tensor([0, 1, 0])
    vm = pose_to_viewmat(torch.tensor([0.0, 1.0, 2.0]), 0.3, 0.0, 40.0)  # object ~10 cells wide
    K = pascal3d_intrinsics(1.0, 3000.0, (128.0, 128.0), downsample=8).expand(3, 3, 3)
    maps = F.normalize(torch.randn(3, 4, 32, 32), dim=1)
    corr = find_correspondences(v, maps, labels, vm, K)
    assert corr.features.shape == (len(corr.batch_ids), 4) and len(corr.batch_ids) > 20
    assert torch.equal(corr.class_ids, labels[corr.batch_ids])
    assert (corr.gauss_ids < v.valid.sum(1)[corr.class_ids]).all()
    assert set(corr.batch_ids.tolist()) == {0, 1, 2}
    # The batched call equals projecting each image's own class volume separately.
    from rendering import project_visible

    for b in range(3):
        vol = v.volume(int(labels[b]))
        means2d, visible = project_visible(
            vol.means, vol.quats, vol.scales, vol.opacities, vm[b : b + 1], K[b : b + 1], 32, 32
        )
        mine = corr.gauss_ids[corr.batch_ids == b]
        assert torch.equal(mine, torch.nonzero(visible[0])[:, 0])
        expected = sample_features(maps[b : b + 1], means2d)[0, mine]
        torch.testing.assert_close(corr.features[corr.batch_ids == b], expected)


def test_object_cells_and_background_sampling():
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0], [100.0, 100.0, 200.0, 150.0]])
    cells = object_cells(None, boxes, (256, 256), (32, 32))
    assert cells[0, :8, :8].all() and not cells[0, 8:, :].any()
    masks = torch.zeros(2, 256, 256, dtype=torch.bool)
    masks[0, 10:20, 10:20] = True
    cells = object_cells(masks, boxes, (256, 256), (32, 32))
    assert cells[0].sum() == 4 and not cells[1].any()
    maps = F.normalize(torch.randn(2, 4, 32, 32), dim=1)
    bg = background_features(maps, cells, per_image=10, seeds=[0, 1])
    assert bg.shape == (20, 4)
    on_object = maps[0, :, cells[0]].T
    assert (torch.cdist(bg[:10], on_object).min() > 1e-6).all()


def test_class_scores_match_brute_force():
    maps = F.normalize(torch.randn(2, 4, 3, 5), dim=1)
    C = unit(3, 6, 4, seed=5)
    valid = torch.ones(3, 6, dtype=torch.bool)
    valid[2, 4:] = False
    bank = unit(7, 4, seed=6)
    mask = torch.rand(2, 3, 5) > 0.3
    got = class_scores(maps, C, valid, bank, mask, chunk_pixels=4)
    for b in range(2):
        for y in range(3):
            s = []
            for i in range(3):
                for j in range(5):
                    if mask[b, i, j]:
                        f = maps[b, :, i, j]
                        s.append(max((C[y, valid[y]] @ f).max(), (bank @ f).max()))
            torch.testing.assert_close(got[b, y], torch.stack(s).mean())


def test_novum_gradients_reach_only_the_backbone():
    cfg = ExperimentConfig()
    cfg.model.backbone, cfg.model.feature_dim, cfg.volume.num_gaussians, cfg.bank.size = "resnet18", 8, 80, 16
    model = NOVUM(cfg, ["car", "bus"])
    assert [n for n, _ in model.named_parameters() if not n.startswith("backbone.")] == []
    images = torch.rand(2, 3, 64, 64)
    maps = model(images)
    assert maps.shape == (2, 8, 8, 8)
    vm = pose_to_viewmat(torch.tensor([0.5, 2.0]), 0.2, 0.0, 9.0)
    K = pascal3d_intrinsics(1.0, 3000.0 / 8, (32.0, 32.0), downsample=8).expand(2, 3, 3)
    v = model.volumes
    corr = find_correspondences(v, maps, torch.tensor([0, 1]), vm, K)
    before = v.features.clone()
    loss = contrastive_loss(
        corr.features,
        corr.class_ids,
        corr.gauss_ids,
        v.features,
        v.valid,
        v.neighbor_mask(2.0),
        v.bank,
        cfg.loss,
    )
    loss.backward()
    grads = [p.grad for p in model.backbone.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0
    assert torch.equal(v.features, before)


@pytest.mark.parametrize("bank_size, bank_weight", [(0, 1.0), (6, 1.0), (6, 0.005)])
@pytest.mark.parametrize(
    "negatives", [(True, True, True), (True, True, False), (False, True, True), (True, False, True)]
)
def test_contrastive_loss_equals_the_reference_form(bank_size, bank_weight, negatives):
    g = torch.Generator().manual_seed(bank_size + len(negatives))
    Y, K, D, P = 3, 7, 5, 40
    C = F.normalize(torch.randn(Y, K, D, generator=g), dim=-1)
    valid = torch.ones(Y, K, dtype=torch.bool)
    valid[1, 5:] = valid[2, 3:] = False  # padded Gaussians of smaller volumes
    neighbors = torch.rand(Y, K, K, generator=g) > 0.6
    neighbors &= ~torch.eye(K, dtype=torch.bool)
    class_ids = torch.randint(0, Y, (P,), generator=g)
    gauss_ids = (torch.rand(P, generator=g) * valid.sum(1)[class_ids]).long()
    bank = F.normalize(torch.randn(bank_size, D, generator=g), dim=-1)
    same, other, background = negatives
    cfg = LossConfig(bank_weight=bank_weight, same_class_negatives=same, other_class_negatives=other,
                     background_negatives=background)  # fmt: skip
    feats = F.normalize(torch.randn(P, D, generator=g), dim=-1).requires_grad_(True)
    fast = contrastive_loss(feats, class_ids, gauss_ids, C, valid, neighbors, bank, cfg)
    ref = contrastive_loss_reference(feats, class_ids, gauss_ids, C, valid, neighbors, bank, cfg)
    torch.testing.assert_close(fast, ref)
    (g_fast,) = torch.autograd.grad(fast, feats)
    (g_ref,) = torch.autograd.grad(ref, feats)
    torch.testing.assert_close(g_fast, g_ref)
    assert g_fast.abs().sum() > 0


def test_background_draw_is_seeded_uniform_and_off_the_object():
    maps = F.normalize(torch.randn(3, 4, 6, 5), dim=1)
    masks = torch.zeros(3, 6, 5, dtype=torch.bool)
    masks[0, 1:5, 1:4] = True
    masks[2] = True
    masks[2, 0, :2] = False  # only two free cells: fewer than per_image
    a = background_features(maps, masks, per_image=4, seeds=[0, 1, 2])
    assert a.shape == (4 + 4 + 2, 4)
    torch.testing.assert_close(a, background_features(maps, masks, per_image=4, seeds=[0, 1, 2]))
    assert not torch.equal(a[:4], background_features(maps, masks, per_image=4, seeds=[9, 1, 2])[:4])
    for b, rows in ((0, a[:4]), (1, a[4:8]), (2, a[8:])):
        flat = maps[b].reshape(4, -1).T
        idx = torch.cdist(rows, flat).argmin(1)
        assert len(set(idx.tolist())) == len(idx)  # without replacement
        assert not masks[b].reshape(-1)[idx].any()
    # Uniform over the free cells: each of image 0's 18 free cells drawn about 4/18 of the time.
    counts = torch.zeros(30)
    flat = maps[0].reshape(4, -1).T
    for seed in range(900):
        rows = background_features(maps[:1], masks[:1], per_image=4, seeds=[seed])
        counts[torch.cdist(rows, flat).argmin(1)] += 1
    free = ~masks[0].reshape(-1)
    assert counts[~free].sum() == 0
    assert (counts[free] - 200).abs().max() < 60  # binomial sd ~12.5
    assert background_features(maps, masks, per_image=0, seeds=[0, 1, 2]).shape == (0, 4)
