"""Pose priors travel from the training split through the checkpoint to every estimate."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
import torch.nn.functional as F

from novum3d.inference import pipeline
from novum3d.inference.loading import load_model
from novum3d.inference.pipeline import estimate_poses, estimate_poses_top_classes
from novum3d.inference.pose import PoseConfig, PoseEstimator
from novum3d.model.priors import PosePriors
from novum3d.train.trainer import Trainer
from rendering import pascal3d_intrinsics
from tests.test_pose import errors, oracle_maps
from tests.test_trainer import CLASSES, data_root, tiny_config  # noqa: F401  (module fixture)


def test_training_saves_the_priors_of_its_split_and_loading_restores_them(data_root, tmp_path):  # noqa: F811
    trainer = Trainer(tiny_config(data_root, tmp_path / "run", **{"optim.epochs": 1, "train.max_steps_per_epoch": 1}),
                      quiet=True)  # fmt: skip
    trainer.fit()
    model, _ = load_model(tmp_path / "run" / "last.pt")
    assert model.pose_priors == PosePriors.from_dataset(trainer.train_set, CLASSES)
    for y, c in enumerate(CLASSES):
        distances = [it.annotation.distance for it in trainer.train_set.items if it.category == c]
        assert model.pose_priors.for_class(y).distance_median == statistics.median(distances)


def _two_class_oracle(data_root, tmp_path):  # noqa: F811
    """A two-class model with smooth distinctive features and oracle maps of B images per class,
    objects at distance 10 (class 0) and 20 (class 1); the checkpoint's priors set."""
    model, _ = _model(data_root, tmp_path)
    v = model.volumes
    D = v.features.shape[-1]
    g = torch.Generator().manual_seed(0)
    for y in range(2):  # distinctive smooth features, so the oracle has a clear optimum
        k = v.count(y)
        v.features[y, :k] = F.normalize(v.means[y, :k] @ torch.randn(3, D, generator=g) + 0.3, dim=-1)
    h, w = 30, 40
    K = pascal3d_intrinsics(1.0, 3000.0, (w * 4.0, h * 4.0), downsample=8)[0]
    B, true_distance = 2, {0: 10.0, 1: 20.0}
    az = torch.tensor([0.7, 2.2])
    el = torch.tensor([0.25, 0.1])
    th = torch.tensor([0.05, -0.05])
    maps, labels = [], []
    for y in range(2):
        k = v.count(y)
        d = torch.full((B,), true_distance[y])
        maps.append(oracle_maps(v.volume(y), v.features[y, :k], v.bank, az, el, th, d, K, seed=y, size=(h, w)))
        labels += [y] * B
    maps, labels = torch.cat(maps), torch.tensor(labels)
    records = [(y, 0.0, float(e), float(t), true_distance[y] * s) for y in range(2) for e, t in zip(el, th, strict=True)
               for s in (0.95, 1.0, 1.05)]  # fmt: skip
    model.pose_priors = PosePriors.from_annotations(CLASSES, records)
    est = PoseEstimator(PoseConfig(steps=20, backend="torch", distance=5.0))  # the global fallback: wrong for both
    return model, maps, labels, K.expand(2 * B, 3, 3), est, (az, el, th), true_distance, records


def test_each_class_starts_at_its_own_distance_without_being_told(data_root, tmp_path):  # noqa: F811
    """Two classes, objects at distance 10 and 20: with the checkpoint's priors no --distance is needed,
    and a single global distance would start one of them far off."""
    model, maps, labels, K, est, (az, el, th), true_distance, records = _two_class_oracle(data_root, tmp_path)
    B = len(az)
    K = K[0]
    res = estimate_poses(model, maps, K.expand(2 * B, 3, 3), est, labels)
    truth = torch.tensor([true_distance[int(y)] for y in labels])
    assert ((res.distance - truth).abs() / truth).max() < 0.15, res.distance
    assert (errors(res, az.repeat(2), el.repeat(2), th.repeat(2)) < math.pi / 6).all()
    model.pose_priors = None  # one global starting distance (5) for both classes
    blind = estimate_poses(model, maps, K.expand(2 * B, 3, 3), est, labels)
    assert ((blind.distance - truth).abs() / truth)[2:].min() > 0.3  # the far class is not found
    model.pose_priors = PosePriors.from_annotations(CLASSES, records)
    one = estimate_poses(model, maps[:1], K.expand(1, 3, 3), est, labels[:1])  # batch-1 equals batched
    torch.testing.assert_close(one.azimuth, res.azimuth[:1], atol=1e-4, rtol=0)


def _model(data_root, tmp_path):  # noqa: F811
    cfg = tiny_config(data_root, tmp_path / "run", **{"volume.num_gaussians": 200, "model.feature_dim": 16})
    from novum3d.model.novum import NOVUM

    return NOVUM(cfg, CLASSES).eval(), cfg


def test_the_better_scoring_pose_chooses_between_the_two_best_classes(data_root, tmp_path, monkeypatch):  # noqa: F811
    """Class scores that rank the wrong class first: with two candidates render-and-compare takes the
    true class back, and its pose is the one estimated under that class alone; one candidate is the
    classifier's class."""
    model, maps, labels, K, est, (az, el, th), _, _ = _two_class_oracle(data_root, tmp_path)
    wrong_first = F.one_hot(1 - labels, 2).float() + 0.1  # [B, Y]: the other class first
    chosen, poses = estimate_poses_top_classes(model, maps, K, est, wrong_first, candidates=2)
    assert torch.equal(chosen, labels)
    alone = estimate_poses(model, maps, K, est, labels)
    torch.testing.assert_close(poses.azimuth, alone.azimuth, atol=1e-4, rtol=0)
    torch.testing.assert_close(poses.score, alone.score, atol=1e-5, rtol=0)
    assert (errors(poses, az.repeat(2), el.repeat(2), th.repeat(2)) < math.pi / 6).all()
    # predict() wires the same choice: images whose maps are the oracle's, scores ranking the wrong class first.
    monkeypatch.setattr(model, "forward", lambda images: maps)
    monkeypatch.setattr(model, "score_maps", lambda maps, mask=None: wrong_first)
    pred = pipeline.predict(model, torch.zeros(len(maps), 3, 8, 8), K, est, class_candidates=2)
    assert torch.equal(pred.labels, labels)
    torch.testing.assert_close(pred.pose.azimuth, alone.azimuth, atol=1e-4, rtol=0)
    assert torch.equal(pipeline.predict(model, torch.zeros(len(maps), 3, 8, 8), K, est).labels, 1 - labels)
    right_first = F.one_hot(labels, 2).float() + 0.1  # the true class first: kept, not always the last candidate
    kept, _ = estimate_poses_top_classes(model, maps, K, est, right_first, candidates=2)
    assert torch.equal(kept, labels)
    one, _ = estimate_poses_top_classes(model, maps, K, est, wrong_first, candidates=1)
    assert torch.equal(one, 1 - labels)
    with pytest.raises(ValueError, match="candidates"):
        estimate_poses_top_classes(model, maps, K, est, wrong_first, candidates=0)
