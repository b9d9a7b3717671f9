"""The pretraining corpus (novum3d.data.pretraining) and backbone pretraining (novum3d.baselines.pretrain)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.v2.functional as TF
from safetensors.torch import load_file

from novum3d.baselines import BaselineTrainer
from novum3d.baselines.model import build_classifier
from novum3d.baselines.pretrain import PretrainTrainer, export_weights
from novum3d.baselines.pretrain_config import PretrainConfig
from novum3d.categories import load_categories
from novum3d.config import BaselineConfig, ExperimentConfig, from_mapping, load_experiment
from novum3d.data.pretraining import CorpusConfig, CorpusDataset, build_instance, draw_category, generate_corpus
from novum3d.data.pretraining import generate as corpus_generate
from novum3d.data.pretraining.augment import color_jitter, draw_params, resized_crops
from novum3d.data.pretraining.backgrounds import BACKGROUNDS, CLUTTER_FILLS
from novum3d.data.pretraining.materials import PATTERNS
from novum3d.data.synthetic import appearance, appearance_v2, generate, materials_v2, meshes, meshes_v2, occluders
from novum3d.data.synthetic.raster import rasterize_mesh, rasterize_mesh_vectorized
from novum3d.errors import ConfigError, DataError
from novum3d.model.backbone import FeatureBackbone
from novum3d.train.command import train_main
from novum3d.train.trainer import Trainer
from rendering import pascal3d_intrinsics, pose_to_viewmat

ROOT = Path(__file__).resolve().parents[1]
TINY = CorpusConfig(categories=3, per_category=4, val_per_category=2, size=40, seed=7)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "tiny"
    generate_corpus(out, TINY, workers=1)
    return out


# --- the corpus --------------------------------------------------------------------------------


def test_same_seed_gives_the_same_bytes_whatever_the_workers(corpus, tmp_path):
    again = tmp_path / "two"
    generate_corpus(again, TINY, workers=2)
    reference = tree_bytes(corpus)
    assert tree_bytes(again) == reference
    assert {"corpus.json", "categories.json", "preview.png"} <= set(reference)
    assert sum(k.endswith(".jpg") for k in reference) == 3 * (4 + 2)
    other = tmp_path / "other"
    generate_corpus(other, dataclasses.replace(TINY, seed=8, categories=1), workers=1, preview=False)
    assert tree_bytes(other)["train/p0000/p0000_00000.jpg"] != reference["train/p0000/p0000_00000.jpg"]


def test_a_killed_run_resumes_to_the_same_bytes(corpus, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    real, calls = corpus_generate.write_job, []

    def dies_after_five(out_, cfg, job):
        if len(calls) == 5:  # killed while writing the sixth image: a half-written temporary file stays
            path = out_ / job.path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_name(path.name + ".tmp123").write_bytes(b"\xff\xd8 half")
            raise KeyboardInterrupt
        calls.append(job.path)
        return real(out_, cfg, job)

    monkeypatch.setattr(corpus_generate, "write_job", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        generate_corpus(out, TINY, workers=1)
    monkeypatch.setattr(corpus_generate, "write_job", real)
    with pytest.raises(DataError, match="unfinished corpus"):
        CorpusDataset(out, "train")
    kept = {p: (out / p).stat().st_mtime_ns for p in calls}
    generate_corpus(out, TINY, workers=1)
    assert tree_bytes(out) == tree_bytes(corpus)
    assert {p: (out / p).stat().st_mtime_ns for p in calls} == kept  # finished images were not rendered again


def test_other_arguments_into_an_existing_corpus_are_a_one_line_error(corpus, capsys):
    with pytest.raises(ConfigError, match=r"made with per_category=4 \(asked 5\); rerun with its arguments"):
        generate_corpus(corpus, dataclasses.replace(TINY, per_category=5))
    spec = importlib.util.spec_from_file_location("make_pretraining", ROOT / "scripts" / "make_pretraining.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--out", str(corpus), "--categories", "3", "--per-category", "4", "--size", "48", "--seed", "7"]
    assert script.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "size=40 (asked 48)" in err and "val_per_category=2 (asked 10)" in err


def test_changed_files_fail_the_digest_and_the_reader_gives_labelled_images(corpus, tmp_path):
    train = CorpusDataset(corpus, "train")
    assert len(train) == 12 and train.classes == ["p0000", "p0001", "p0002"]
    sample = train[5]
    assert sample["image"].shape == (3, 40, 40) and sample["image"].dtype == torch.uint8
    assert sample["label"] == 1 and sample["category"] == "p0001"
    assert train.digest() == train.manifest["digests"]["train"]
    copy = tmp_path / "copy"
    for name, data in tree_bytes(corpus).items():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes(data)
    (copy / "val/p0002/p0002_00001.jpg").write_bytes((corpus / "val/p0002/p0002_00000.jpg").read_bytes())
    with pytest.raises(DataError, match=r"val images differ from the ones corpus\.json records"):
        CorpusDataset(copy, "val").digest()


def test_the_corpus_calls_no_benchmark_shape_builder_background_or_occluder(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a benchmark generator was called")

    for module in (meshes, meshes_v2):
        monkeypatch.setattr(module, "BUILDERS", {k: forbidden for k in module.BUILDERS})
    for name in ("build_mesh",):
        monkeypatch.setattr(meshes, name, forbidden)
    monkeypatch.setattr(meshes_v2, "assemble", forbidden)
    for module in (appearance, appearance_v2):
        monkeypatch.setattr(module, "background", forbidden)
    for module in (appearance, materials_v2):
        monkeypatch.setattr(module, "texture_colors", forbidden)
    monkeypatch.setattr(appearance_v2, "occluder_fill", forbidden)
    monkeypatch.setattr(occluders, "occlude", forbidden)
    monkeypatch.setattr(sys.modules["novum3d.data.synthetic.generate"], "render_job", forbidden)
    cfg = CorpusConfig(categories=4, per_category=2, val_per_category=1, size=32, seed=3)
    manifest = generate_corpus(tmp_path / "c", cfg, workers=1, preview=False)
    assert manifest["counts"] == {"train": 8, "val": 4}
    benchmark = {c.name for c in load_categories()}
    assert not benchmark & set(manifest["category_names"])
    used_by_benchmark = set(appearance.BACKGROUNDS_ID + appearance.BACKGROUNDS_OOD + appearance_v2.BACKGROUNDS_ID
                            + appearance_v2.BACKGROUNDS_OOD + appearance_v2.OCCLUDER_FAMILIES)  # fmt: skip
    assert not used_by_benchmark & set(BACKGROUNDS + CLUTTER_FILLS)
    assert not set(appearance.TEXTURES_OOD) & set(PATTERNS)  # the OOD-texture split's families


def test_category_structure_is_fixed_by_the_seed_and_instances_vary_within_it():
    draw_category.cache_clear()
    first = dataclasses.asdict(draw_category(11, 4))
    draw_category.cache_clear()
    assert dataclasses.asdict(draw_category(11, 4)) == first
    specs = [draw_category(11, k) for k in range(20)]
    structures = {tuple((p.primitive, p.parent, p.symmetry, p.copies) for p in s.parts) for s in specs}
    assert len(structures) == 20  # every category its own structure
    spec = next(s for s in specs if all(p.presence == 1 for p in s.parts))
    a, b = (build_instance(spec, np.random.default_rng(i)) for i in (0, 1))
    assert np.array_equal(a.faces, b.faces) and np.array_equal(a.slots, b.slots)  # same parts, same structure
    assert not np.allclose(a.vertices, b.vertices)  # other proportions
    assert np.isclose(np.linalg.norm(a.vertices, axis=1).max(), 1.0)
    np.testing.assert_allclose(np.linalg.norm(a.normals, axis=1), 1.0)


def test_vectorized_rasterizer_gives_the_loops_fragments_bit_for_bit():
    mesh, _ = meshes.build_mesh("car", np.ones(6), version=2)
    objects = [(np.asarray(mesh.vertices) / np.linalg.norm(mesh.vertices, axis=1).max(), np.asarray(mesh.faces))]
    objects += [(o.vertices, o.faces) for o in (build_instance(draw_category(0, k), np.random.default_rng(k))
                                                for k in range(3))]  # fmt: skip
    K = pascal3d_intrinsics(1.0, 3000.0, (40.0, 36.0))[0].double().numpy()
    for i, (vertices, faces) in enumerate(objects):
        for fill in (0.3, 2.0):  # 2.0: triangles larger than LOOP_BOX_PIXELS take the loop
            viewmat = pose_to_viewmat(0.3 + i, 0.2 * i - 0.3, 0.1, 3000 / (fill * 80))[0].double().numpy()
            ref = rasterize_mesh(vertices, faces, viewmat, K, 80, 72)
            fast = rasterize_mesh_vectorized(vertices, faces, viewmat, K, 80, 72)
            assert ref.mask.sum() > 100
            assert np.array_equal(ref.face, fast.face)
            assert np.array_equal(ref.bary, fast.bary) and np.array_equal(ref.depth, fast.depth)


# --- augmentation ------------------------------------------------------------------------------


def test_colour_jitter_is_torchvisions_arithmetic():
    images = torch.rand(3, 3, 12, 14, generator=torch.Generator().manual_seed(0))
    factors = torch.tensor([[1.3, 0.7, 1.2, 0.04], [0.6, 1.4, 0.5, -0.05], [1.0, 1.0, 1.0, 0.0]], dtype=torch.float64)
    expected = []
    for img, (b, c, s, h) in zip(images, factors.tolist(), strict=True):
        img = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(img, b), c), s)
        expected.append(TF.adjust_hue(img, h))
    torch.testing.assert_close(color_jitter(images, factors), torch.stack(expected), atol=3e-6, rtol=0)


def test_crops_sample_their_box_and_flips_mirror():
    images = torch.rand(2, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[2.0, 3.0, 10.0, 12.0], [0.0, 0.0, 20.0, 24.0]], dtype=torch.float64)
    out = resized_crops(images, boxes, torch.tensor([False, True]), (10, 12))
    torch.testing.assert_close(out[0], images[0, :, 2:12, 3:15], atol=1e-5, rtol=0)  # 1:1: the pixels themselves
    whole = resized_crops(images, boxes, torch.tensor([False, True]), (20, 24))
    torch.testing.assert_close(whole[1], images[1].flip(-1), atol=1e-5, rtol=0)


def test_crop_parameters_follow_the_ranges_and_split_over_ranks_as_one_batch():
    kw = {"size": (40, 50), "scale": (0.25, 1.0), "ratio": (0.75, 4 / 3), "flip": 0.5, "jitter": (0.4, 0.4, 0.4, 0.05)}
    whole = draw_params(0, 3, 64, 0, 64, **kw)
    halves = [draw_params(0, 3, 64, r * 32, 32, **kw) for r in (0, 1)]
    assert torch.equal(torch.cat([h.boxes for h in halves]), whole.boxes)
    assert torch.equal(torch.cat([h.jitter for h in halves]), whole.jitter)
    top, left, h, w = whole.boxes.T
    assert bool(((top >= 0) & (left >= 0) & (top + h <= 40) & (left + w <= 50)).all())
    area = h * w / 2000
    assert bool(((area > 0.2) & (area < 1.05)).all()) and 0.2 < whole.flips.double().mean() < 0.8
    assert not torch.equal(draw_params(0, 4, 64, 0, 64, **kw).boxes, whole.boxes)  # another step, other crops


# --- pretraining -------------------------------------------------------------------------------


def pretrain_config(corpus: Path, out: Path, *extra: str) -> PretrainConfig:
    overrides = [f"data.root={corpus}", "data.image_size=[32, 32]", "data.num_workers=0", "model.arch=resnet18",
                 "optim.batch_size=4", "optim.epochs=2", "optim.lr=0.05", "optim.warmup_epochs=0.5",
                 f"train.out_dir={out}", "train.device=cpu", "corpus=null", *extra]  # fmt: skip
    return load_experiment(ROOT / "configs" / "pretrain.yaml", overrides, cls=PretrainConfig)


@pytest.fixture(scope="module")
def pretrained(corpus, tmp_path_factory) -> Path:
    """A tiny ResNet-18 pretrained for 2 epochs in one go: its output folder."""
    out = tmp_path_factory.mktemp("pretrained")
    PretrainTrainer(pretrain_config(corpus, out), quiet=True).fit()
    return out


def test_pretraining_resumes_exactly(corpus, pretrained, tmp_path):
    cfg = pretrain_config(corpus, tmp_path)
    PretrainTrainer(cfg, quiet=True).fit(until_epoch=1)
    resumed = PretrainTrainer(cfg, resume=True, quiet=True)
    assert resumed.epoch == 1 and resumed.scheduler.last_epoch == resumed.global_step == 3
    resumed.fit()
    once = torch.load(pretrained / "last.pt", weights_only=False)
    twice = torch.load(tmp_path / "last.pt", weights_only=False)
    for key, value in once["model"].items():
        assert torch.equal(value, twice["model"][key]), key
    assert once["history"][-1]["val_accuracy"] == twice["history"][-1]["val_accuracy"]
    weights = "resnet18-pretrained.safetensors"
    assert (pretrained / weights).read_bytes() == (tmp_path / weights).read_bytes()


def test_written_weights_load_strictly_into_torchvision_the_baseline_and_novums_trunk(corpus, pretrained, tmp_path):
    path = pretrained / "resnet18-pretrained.safetensors"
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["corpus"]["digests"] == CorpusDataset(corpus).manifest["digests"]
    assert record["val_top1"] is not None and record["dtype"] == "float16"
    state = load_file(str(path))
    assert state["conv1.weight"].dtype == torch.float16 and state["bn1.num_batches_tracked"].dtype == torch.int64
    net = torchvision.models.resnet18(num_classes=3)
    net.load_state_dict(state, strict=True)
    trained = torch.load(pretrained / "last.pt", weights_only=False)["model"]
    torch.testing.assert_close(state["layer4.1.conv2.weight"].float(),
                               trained["backbone.layer4.1.conv2.weight"].half().float())  # fmt: skip
    baseline = build_classifier("resnet18", 12, (64, 64), weights=path)  # model.weights reads the file as written
    trunk = FeatureBackbone("resnet18", feature_dim=16, weights=path)  # and so does model.backbone_weights
    for key, value in state.items():
        if key.startswith("fc.") or key.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(baseline.state_dict()[key], value.float())
    torch.testing.assert_close(trunk.layer3[0].conv1.weight, state["layer3.0.conv1.weight"].float())
    # ResNet-50: a fresh network through the same writer, strict but for the 1,000-class head
    fresh = torchvision.models.resnet50(num_classes=3)
    export_weights(fresh, tmp_path / "r50.safetensors", {"arch": "resnet50"})
    missing, unexpected = torchvision.models.resnet50().load_state_dict(
        {k: v for k, v in load_file(str(tmp_path / "r50.safetensors")).items() if not k.startswith("fc.")}, strict=False
    )
    assert sorted(missing) == ["fc.bias", "fc.weight"] and unexpected == []


def test_tiny_pretrain_then_fine_tune_on_the_tiny_preset(pretrained, tmp_path):
    weights = pretrained / "resnet18-pretrained.safetensors"  # as written: fp16 safetensors
    state = load_file(str(weights))
    data = tmp_path / "tiny"
    generate(data, "tiny", seed=0, categories=["car", "bus"])
    common = [f"data.root={data}", "data.image_size=[64, 64]", "data.num_workers=0", "data.classes=[car, bus]",
              "optim.batch_size=4", "optim.epochs=1", "train.device=cpu", "train.max_steps_per_epoch=1"]  # fmt: skip
    baseline_overrides = [*common, "model.arch=resnet18", f"model.weights={weights}", f"train.out_dir={tmp_path / 'b'}"]
    cfg = load_experiment(ROOT / "configs" / "baseline-resnet50.yaml", baseline_overrides, cls=BaselineConfig)
    baseline = BaselineTrainer(cfg, quiet=True)
    torch.testing.assert_close(baseline.model.backbone.layer2[0].conv1.weight, state["layer2.0.conv1.weight"].float())
    history = baseline.fit()
    assert np.isfinite(history[-1]["loss"]) and history[-1]["val_images"] > 0
    novum_cfg = load_experiment(ROOT / "configs" / "synthetic-small.yaml", [*common, "model.backbone=resnet18",
                                f"model.backbone_weights={weights}", "model.feature_dim=16", "volume.num_gaussians=120",
                                "bank.size=64", "bank.per_image=4", f"train.out_dir={tmp_path / 'novum'}"])  # fmt: skip
    assert isinstance(novum_cfg, ExperimentConfig)
    novum = Trainer(novum_cfg, quiet=True)
    torch.testing.assert_close(novum.model.backbone.layer2[0].conv1.weight, state["layer2.0.conv1.weight"].float())
    assert np.isfinite(novum.fit()[-1]["loss"])
    assert novum.provenance()["backbone_weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()


def test_pretrain_config_checks_its_values(corpus, tmp_path, capsys):
    cfg = load_experiment(ROOT / "configs" / "pretrain.yaml", [], cls=PretrainConfig)
    assert cfg.model.arch == "resnet50" and cfg.corpus.categories == 1000 and cfg.optim.batch_size == 256
    with pytest.raises(ConfigError, match=r"warmup_epochs: must lie in \[0, epochs\)"):
        from_mapping(PretrainConfig, {"optim": {"epochs": 2, "warmup_epochs": 2}})
    with pytest.raises(ConfigError, match="val_per_category: pretraining measures held-out accuracy"):
        from_mapping(PretrainConfig, {"corpus": {"val_per_category": 0}})
    argv = ["configs/pretrain.yaml", f"data.root={tmp_path / 'none'}", "corpus=null", "train.device=cpu"]
    old = os.getcwd()
    os.chdir(ROOT)
    try:
        assert train_main(argv, "", PretrainTrainer, PretrainConfig) == 2
    finally:
        os.chdir(old)
    assert "no pretraining corpus here" in capsys.readouterr().err


@pytest.mark.gpu
def test_pretraining_runs_compiled_in_bf16_on_cuda(corpus, tmp_path):
    cfg = pretrain_config(corpus, tmp_path, "train.device=cuda", "model.compile=on", "optim.epochs=1",
                          "optim.warmup_epochs=0")  # fmt: skip
    trainer = PretrainTrainer(cfg, quiet=True)
    assert trainer.compiled and trainer.amp
    history = trainer.fit()
    assert np.isfinite(history[-1]["loss"]) and 0 <= history[-1]["val_accuracy"] <= 1
    state = load_file(str(tmp_path / "resnet18-pretrained.safetensors"))
    torchvision.models.resnet18(num_classes=3).load_state_dict(state, strict=True)
