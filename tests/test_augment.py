"""Occlusion augmentation: the data-layer function, NOVUM's use of its mask, the config and both trainers."""

import math

import numpy as np
import pytest
import torch

from novum3d.baselines import BaselineTrainer
from novum3d.checkpoint import load_checkpoint
from novum3d.config import BaselineConfig, ConfigError, ExperimentConfig, config_to_dict, from_mapping, load_experiment
from novum3d.data.augment import occlude_objects
from novum3d.data.batch import box_cells, collate
from novum3d.data.synthetic import generate
from novum3d.evaluation.suite import load_suite, method_config
from novum3d.train import trainer as trainer_module
from novum3d.train.correspondence import Correspondences, drop_occluded, object_cells, occluded_cells
from novum3d.train.trainer import AUGMENT_STREAM, Trainer, training_identity
from tests.test_robustness import baseline_config
from tests.test_trainer import CLASSES, tiny_config

B, H, W = 4, 32, 40


def ellipse_masks(batch=B, height=H, width=W) -> torch.Tensor:
    """[batch, height, width] bool: a centred ellipse per image, of slightly different sizes."""
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    out = []
    for b in range(batch):
        ry, rx = height * (0.3 + 0.02 * (b % 4)), width * (0.25 + 0.02 * (b % 4))
        out.append(((ys - height / 2) / ry) ** 2 + ((xs - width / 2) / rx) ** 2 < 1)
    return torch.stack(out)


def random_images(seed=0, batch=B, dtype=torch.uint8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, H, W), generator=g, dtype=torch.uint8)
    return images if dtype == torch.uint8 else images.float() / 255


def hidden_share(occluder: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
    return (occluder & objects).flatten(1).sum(1) / objects.flatten(1).sum(1)


NO_BOXES = torch.zeros(B, 4)


def test_same_seeds_give_the_same_occluders_and_other_seeds_others():
    images, masks = random_images(), ellipse_masks()
    a = occlude_objects(images, masks, NO_BOXES, [1, 2, 3, 4])
    b = occlude_objects(images.clone(), masks.clone(), NO_BOXES, [1, 2, 3, 4])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = occlude_objects(images, masks, NO_BOXES, [5, 6, 7, 8])
    assert all(not torch.equal(a[1][i], c[1][i]) for i in range(B))
    # An image's occluder depends on its own seed: changing another image's seed leaves its mask alone.
    d = occlude_objects(images, masks, NO_BOXES, [1, 2, 3, 9])
    assert torch.equal(d[1][:3], a[1][:3]) and not torch.equal(d[1][3], a[1][3])


def test_probability_zero_leaves_images_bit_identical_and_the_mask_empty():
    for dtype in (torch.uint8, torch.float32):
        images = random_images(dtype=dtype)
        out, occluder = occlude_objects(images, ellipse_masks(), NO_BOXES, [1, 2, 3, 4], probability=0.0)
        assert out.dtype == dtype and torch.equal(out, images) and not occluder.any()
        assert occluder.shape == (B, H, W) and occluder.dtype == torch.bool


def test_probability_decides_per_image_and_unchosen_images_stay_bit_identical():
    images, masks = random_images(batch=32), ellipse_masks(batch=32)
    out, occluder = occlude_objects(images, masks, torch.zeros(32, 4), list(range(32)), probability=0.5)
    chosen = occluder.flatten(1).any(1)
    assert 8 <= int(chosen.sum()) <= 24  # 16 expected; binomial sd 2.8
    assert torch.equal(out[~chosen], images[~chosen])
    assert (out[chosen] != images[chosen]).flatten(1).any(1).all()


@pytest.mark.parametrize("use_masks", [True, False])
def test_the_hidden_share_of_the_object_is_the_requested_fraction(use_masks):
    images, masks = random_images(batch=16), ellipse_masks(batch=16)
    boxes = torch.tensor([[4.0 + b % 3, 3.0, 30.0 + b % 5, 27.0] for b in range(16)])
    objects = masks if use_masks else box_cells(boxes, (H, W), (H, W))
    for fraction in (0.2, 0.45, 0.7):
        _, occluder = occlude_objects(
            images, masks if use_masks else None, boxes, list(range(16)), fraction=(fraction, fraction)
        )
        share = hidden_share(occluder, objects)
        # Exact up to the pixels that tie with a shape's boundary: stated tolerance 3% of the object.
        assert (share - fraction).abs().max() < 0.03, (fraction, share)
    # A range: every share inside it (same tolerance) and spread over it.
    _, occluder = occlude_objects(images, masks if use_masks else None, boxes, list(range(16)), fraction=(0.2, 0.7))
    share = hidden_share(occluder, objects)
    assert share.min() > 0.17 and share.max() < 0.73
    assert share.min() < 0.35 and share.max() > 0.55


def test_pixels_outside_the_occluder_mask_are_unchanged():
    for dtype in (torch.uint8, torch.float32):
        images = random_images(seed=3, dtype=dtype)
        out, occluder = occlude_objects(images, ellipse_masks(), NO_BOXES, [10, 11, 12, 13])
        assert out.dtype == dtype and out.shape == images.shape
        outside = ~occluder[:, None].expand_as(images)
        assert torch.equal(out[outside], images[outside])
        assert occluder.flatten(1).any(1).all()
        # Inside, the fill replaces the image: random pixels almost never survive.
        inside = occluder[:, None].expand_as(images)
        assert (out[inside] != images[inside]).float().mean() > 0.9


def test_the_fill_is_the_next_images_background_never_its_object():
    # Every pixel of every image holds its own id (>= 2), so a pasted pixel says where it came from;
    # the fallback fill lies in [0, 1].
    n = B * H * W * 3
    ids = torch.arange(n, dtype=torch.float32).view(B, H, W, 3).permute(0, 3, 1, 2) + 2
    masks = ellipse_masks()
    masks[:, :, : W // 2] |= True  # large objects: many reads land on one and need the fallback
    seen_pasted = seen_fallback = 0
    for seeds in ([1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]):
        out, occluder = occlude_objects(ids, masks, NO_BOXES, seeds, fraction=(0.6, 0.7))
        for b in range(B):
            values = out[b].permute(1, 2, 0)[occluder[b]]  # [P, 3]
            fallback = (values <= 1).all(1)
            assert ((values <= 1).any(1) == fallback).all()  # a pixel is wholly pasted or wholly fallback
            seen_fallback += int(fallback.sum())
            pasted = values[~fallback].long() - 2
            seen_pasted += len(pasted)
            channel, pixel = pasted % 3, pasted // 3
            assert (channel == torch.arange(3)).all()  # channels stay in place
            assert torch.equal(pixel[:, 1:], pixel[:, :1].expand(-1, 2))
            src, y, x = pixel[:, 0] // (H * W), (pixel[:, 0] // W) % H, pixel[:, 0] % W
            assert (src == (b + 1) % B).all()
            assert not masks[src, y, x].any()  # the no-leak property
    assert seen_pasted > 100 and seen_fallback > 100


def test_the_fill_of_a_single_image_batch_is_its_own_background():
    masks = ellipse_masks(batch=1)
    ids = torch.arange(H * W, dtype=torch.float32).view(1, 1, H, W).expand(1, 3, H, W) + 2
    out, occluder = occlude_objects(ids, masks, torch.zeros(1, 4), [4], fraction=(0.5, 0.5))
    values = out[0, 0][occluder[0]]
    pasted = values[values > 1].long() - 2
    assert len(pasted) > 0 and not masks[0].flatten()[pasted].any()


def test_occluded_cells_need_more_than_half_of_the_cell():
    occluders = torch.zeros(1, 8, 8, dtype=torch.bool)
    occluders[0, 0:4, 0:3] = True  # cell (0, 0): 12 of 16 pixels
    occluders[0, 0:4, 4:6] = True  # cell (0, 1): 8 of 16, exactly half
    occluders[0, 4:5, 0:4] = True  # cell (1, 0): 4 of 16
    occluders[0, 4:8, 4:8] = True  # cell (1, 1): all
    assert occluded_cells(occluders, (2, 2)).tolist() == [[[True, False], [False, True]]]


def test_drop_occluded_drops_exactly_the_correspondences_on_occluded_cells():
    g = torch.Generator().manual_seed(0)
    P, h, w = 200, 6, 7
    batch_ids = torch.randint(0, 3, (P,), generator=g)
    points = torch.rand(P, 2, generator=g) * torch.tensor([w, h])
    points[0] = torch.tensor([float(w), float(h)])  # on the far border: counted in the last cell
    corr = Correspondences(batch_ids, torch.randint(0, 2, (P,), generator=g), torch.arange(P),
                           torch.randn(P, 5, generator=g), torch.zeros(3, h, w, dtype=torch.bool), points)  # fmt: skip
    occluded = torch.rand(3, h, w, generator=g) < 0.4
    kept = drop_occluded(corr, occluded)
    expected = [
        i for i in range(P)
        if not occluded[batch_ids[i], min(int(points[i, 1]), h - 1), min(int(points[i, 0]), w - 1)]
    ]  # fmt: skip
    assert 0 < len(expected) < P
    assert kept.gauss_ids.tolist() == expected  # gauss_ids are 0..P-1 here, so they name the rows kept
    assert torch.equal(kept.batch_ids, batch_ids[expected]) and torch.equal(kept.class_ids, corr.class_ids[expected])
    assert torch.equal(kept.features, corr.features[expected]) and torch.equal(kept.points, points[expected])
    assert kept.covered is corr.covered


def test_augment_config_errors_name_the_key():
    configs = {ExperimentConfig: "configs/synthetic-small.yaml", BaselineConfig: "configs/baseline-resnet50.yaml"}
    for cls, config in configs.items():
        assert load_experiment(config, cls=cls).augment.occlusion_probability == 0.0  # off by default
        cfg = load_experiment(
            config, ["augment.occlusion_probability=0.5", "augment.occluded_fraction=[0.1, 0.3]"], cls
        )
        assert cfg.augment.occlusion_probability == 0.5 and cfg.augment.occluded_fraction == (0.1, 0.3)
        bad = {
            "augment.occlusion_probability=1.5": r"augment: occlusion_probability: must lie in \[0, 1\], got 1.5",
            "augment.occlusion_probability=-0.1": r"augment: occlusion_probability: must lie in \[0, 1\]",
            "augment.occlusion_probability=often": r"augment.occlusion_probability: expected a number",
            "augment.occluded_fraction=[0.7, 0.2]": r"augment: occluded_fraction: expected \[low, high\] with 0 <= low",
            "augment.occluded_fraction=[0.2, 1.2]": r"occluded_fraction: .* got \[0.2, 1.2\]",
            "augment.occluded_fraction=[0.2]": r"augment.occluded_fraction: expected 2 items, got 1",
            "augment.occlusion=0.5": r"augment: unknown key\(s\) \['occlusion'\]",
        }
        for override, message in bad.items():
            with pytest.raises(ConfigError, match=message):
                load_experiment(config, [override], cls)


def test_identity_and_checkpoint_config_of_runs_without_the_section_are_unchanged():
    cfg = load_experiment("configs/synthetic-small.yaml")
    old = config_to_dict(cfg)
    del old["augment"]  # a checkpoint written before the section existed
    assert from_mapping(ExperimentConfig, old).augment.occlusion_probability == 0.0
    assert training_identity(config_to_dict(cfg), "t", "v") == training_identity(old, "t", "v")
    on = load_experiment("configs/synthetic-small.yaml", ["augment.occlusion_probability=0.5"])
    identity = training_identity(config_to_dict(on), "t", "v")
    assert identity["config"]["augment"] == {"occlusion_probability": 0.5, "occluded_fraction": [0.2, 0.7]}
    assert from_mapping(ExperimentConfig, config_to_dict(on)) == on  # round trip


def test_the_faithful_suite_has_occlusion_augmentation_for_novum_and_the_baseline(tmp_path):
    suite = load_suite("configs/robustness-faithful.yaml")
    methods = {m.slug: m for m in suite.methods}
    novum, baseline = methods["occlusion-augmentation"], methods["resnet-50-occlusion-augmentation"]
    assert novum.kind == "novum" and novum.pose and baseline.kind == "baseline"
    with_it = method_config(novum, suite, [], 0, tmp_path)
    without = method_config(methods["volume-background"], suite, [], 0, tmp_path)
    assert with_it.augment.occlusion_probability == 0.5 and without.augment.occlusion_probability == 0.0
    with_it.augment = without.augment
    assert with_it == without  # "+ volume background" plus the augmentation, nothing else
    cfg = method_config(baseline, suite, [], 0, tmp_path)
    assert isinstance(cfg, BaselineConfig) and cfg.augment.occlusion_probability == 0.5
    assert method_config(methods["resnet-50"], suite, [], 0, tmp_path).augment.occlusion_probability == 0.0
    # The report says which methods were augmented.
    from benchmarks.robustness import augmentation_note

    suite.methods = [novum, baseline, methods["resnet-50"]]
    note = augmentation_note(suite, [], 0, tmp_path)
    assert note == (
        "occlusion augmentation (share of images) for + occlusion augmentation 0.5, "
        "ResNet-50 + occlusion augmentation 0.5; none for the others"
    )
    suite.methods = [methods["resnet-50"]]
    assert augmentation_note(suite, [], 0, tmp_path) == "no augmentation"


# ---- the trainers --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment") / "tiny"
    generate(root, "tiny", seed=0, categories=CLASSES)
    return root


def test_augmentation_seeds_are_their_own_stream(data_root, tmp_path):
    trainer = Trainer(tiny_config(data_root, tmp_path), quiet=True)
    trainer.global_step = 7
    cells, augment = trainer.cell_seeds(4), trainer.cell_seeds(4, stream=AUGMENT_STREAM)
    assert cells == [int(np.random.SeedSequence([0, 7, b]).generate_state(1)[0]) for b in range(4)]  # as before
    assert not set(cells) & set(augment) and len(set(augment)) == 4


def test_novum_trains_with_occlusion_augmentation_and_drops_occluded_correspondences(data_root, tmp_path, monkeypatch):
    on = Trainer(tiny_config(data_root, tmp_path / "on", **{"augment.occlusion_probability": 1.0}), quiet=True)
    off = Trainer(tiny_config(data_root, tmp_path / "off"), quiet=True)
    batch = collate([on.train_set[i] for i in range(4)], (64, 64))
    images = batch["image"].float() / 255
    kept, augmented, occluders = on.augment(batch, images)
    assert occluders.flatten(1).any(1).all() and not torch.equal(augmented, images)
    assert torch.equal(kept["theta"], batch["theta"])  # no rotation: the poses stay
    unchanged, same, none = off.augment(batch, images)
    assert unchanged is batch and same is images and none is None
    # Record the cells background features may come from (bank.background=mask here).
    passed, original = [], trainer_module.background_features

    def recording(maps, cells, *args):
        passed.append(cells)
        return original(maps, cells, *args)

    monkeypatch.setattr(trainer_module, "background_features", recording)
    bank = on.model.volumes.bank.clone()
    first_on, first_off = on.train_step(batch), off.train_step(batch)
    # Same poses, same projections: augmentation only removes the correspondences on occluded cells.
    assert 0 < first_on.correspondences < first_off.correspondences
    # Object cells under an occluder are offered as background, the others are not.
    objects = object_cells(batch["mask"], batch["bbox"], (64, 64), passed[0].shape[-2:])
    occluded = occluded_cells(occluders, passed[0].shape[-2:])
    assert (objects & occluded).any() and torch.equal(passed[0], objects & ~occluded)
    assert torch.equal(passed[1], objects)
    assert math.isfinite(first_on.loss) and math.isfinite(on.train_step(batch).loss)
    assert not torch.equal(on.model.volumes.bank, bank)  # the bank still takes background features
    # Validation is never augmented; a checkpoint carries the section and its identity names it.
    on.augment = None  # calling it would fail
    assert 0 <= on.validate()["val_accuracy"] <= 1
    on.epoch = 1
    ckpt = load_checkpoint(on.save())
    assert ckpt["config"]["augment"]["occlusion_probability"] == 1.0
    assert ckpt["identity"]["config"]["augment"]["occlusion_probability"] == 1.0
    assert "augment" not in off.identity()["config"]


def test_baseline_trains_with_occlusion_augmentation(data_root, tmp_path):
    trainer = BaselineTrainer(
        baseline_config(data_root, tmp_path, **{"augment.occlusion_probability": 1.0}), quiet=True
    )
    seen = []
    augment = trainer.augment

    def recording(batch, images):
        batch, out, occluders = augment(batch, images)
        seen.append((torch.equal(out, images), occluders.flatten(1).any(1).all()))
        return batch, out, occluders

    trainer.augment = recording
    batch = collate([trainer.train_set[i] for i in range(4)], (64, 64))
    losses = [trainer.train_step(batch).loss for _ in range(2)]
    assert all(math.isfinite(x) for x in losses)
    assert seen == [(False, True), (False, True)]  # each step's images were occluded, all four of them


@pytest.mark.gpu
def test_cuda_draws_the_occluders_the_cpu_draws():
    # The random numbers come from CPU generators; only float rounding at a shape's boundary may differ.
    images, masks = random_images(dtype=torch.float32), ellipse_masks()
    cpu_images, cpu_mask = occlude_objects(images, masks, NO_BOXES, [1, 2, 3, 4])
    gpu_images, gpu_mask = occlude_objects(images.cuda(), masks.cuda(), NO_BOXES.cuda(), [1, 2, 3, 4])
    agree = cpu_mask == gpu_mask.cpu()
    assert agree.float().mean() > 0.995 and cpu_mask.any()
    same = agree[:, None].expand_as(images)
    torch.testing.assert_close(gpu_images.cpu()[same], cpu_images[same], atol=1e-5, rtol=0)
