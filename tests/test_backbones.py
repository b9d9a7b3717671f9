"""Backbones: torchvision ResNets and timm CNNs / ViTs give the same map geometry, freeze, load local weights.

timm models are the smallest that show each family: ``convnext_atto`` (a CNN without BatchNorm),
``resnet10t`` (a timm CNN with BatchNorm) and a 4-block, 48-wide DINOv2-style ViT-14 with registers
(``vit_small_patch14_reg4_dinov2`` built small through ``model.backbone_kwargs``); weights are random.
"""

from __future__ import annotations

import hashlib
import socket
import sys

import pytest
import torch
import torchvision

from novum3d.checkpoint import read_state_dict
from novum3d.config import BaselineConfig, ModelConfig, config_to_dict, load_experiment
from novum3d.data.batch import collate
from novum3d.errors import ConfigError, WeightsError
from novum3d.model.backbone import FeatureBackbone, build_backbone, map_size
from novum3d.model.backbone.base import resample_cells
from novum3d.train.trainer import Trainer, training_identity
from tests.test_config import assert_default_keeps_older_identity
from tests.test_trainer import CLASSES, data_root, tiny_config  # noqa: F401  (data_root: module fixture)

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

VIT = "timm:vit_small_patch14_reg4_dinov2"
TINY_VIT = {"depth": 4, "embed_dim": 48, "num_heads": 2}
FAMILIES = {
    "resnet": ("resnet18", {}),
    "convnext": ("timm:convnext_atto", {}),
    "vit14-dpt": (VIT, TINY_VIT),
    "vit14-fpn": (VIT, TINY_VIT),
}


def backbone(family: str, stride: int = 8, **options) -> torch.nn.Module:
    """A small backbone of ``family``; the ViT's decoders 32 channels wide (the geometry does not depend on it)."""
    name, kwargs = FAMILIES[family]
    torch.manual_seed(0)
    if family.startswith("vit14"):
        from novum3d.model.backbone.timm_trunks import TimmViTBackbone

        decoder = family.split("-")[1]
        return TimmViTBackbone(name, 16, decoder=decoder, stride=stride, width=32, kwargs=kwargs, **options)
    return build_backbone(ModelConfig(backbone=name, feature_dim=16, backbone_kwargs=kwargs, stride=stride, **options))


def vit_config(**model) -> ModelConfig:
    return ModelConfig(backbone=VIT, feature_dim=16, backbone_kwargs=TINY_VIT, **model)


@pytest.mark.parametrize("stride", [8, 4])
@pytest.mark.parametrize("family", ["convnext", "vit14-dpt", "vit14-fpn"])
def test_maps_have_the_resnet_size_at_awkward_sizes_and_unit_norm(family, stride):
    net, resnet = backbone(family, stride).eval(), backbone("resnet", stride).eval()
    with torch.no_grad():
        for size in ((250, 333), (64, 72), (97, 45)):
            images = torch.randn(1, 3, *size)
            out = net(images)
            assert out.shape[-2:] == resnet(images).shape[-2:] == map_size(*size, stride), (family, size)
            torch.testing.assert_close(out.norm(dim=1), torch.ones(1, *out.shape[-2:]))


@pytest.mark.parametrize("family", ["convnext", "vit14-dpt"])
def test_padding_is_zeros_at_the_bottom_and_right_and_the_map_is_cropped_back(family):
    # 250x333 padded by hand with normalised zeros: the same cells, the same features (no shift to undo).
    net = backbone(family).eval()
    images = torch.randn(1, 3, 250, 333)
    padded = torch.nn.functional.pad(images, (0, 3, 0, 6))  # 256x336: still 32x42 cells at stride 8
    with torch.no_grad():
        torch.testing.assert_close(net(padded), net(images))
        assert not torch.allclose(net(torch.roll(images, 3, -1)), net(images))


def test_vit_maps_are_resampled_to_the_pixels_their_cells_stand_for():
    # A ramp holding each cell's centre in pixels at stride 7 (patch 14, halved) read back at stride 8
    # (and 3.5 -> 4): bilinear interpolation of a linear function is exact, so every cell holds its own centre.
    for t, s in ((7.0, 8), (3.5, 4)):
        ramp = ((torch.arange(38) + 0.5) * t).expand(1, 1, 2, 38)
        out = resample_cells(ramp, t, s)
        torch.testing.assert_close(out[0, 0, 0], (torch.arange(out.shape[-1]) + 0.5) * s)
        assert out.shape[-1] == int(38 * t / s)


@pytest.mark.parametrize("family", ["resnet", "convnext", "vit14-dpt", "timm-resnet"])
def test_a_frozen_trunk_gets_no_gradient_and_keeps_its_statistics(family):
    if family == "timm-resnet":
        torch.manual_seed(0)
        net = build_backbone(ModelConfig(backbone="timm:resnet10t", feature_dim=16, freeze_trunk=True))
    else:
        net = backbone(family, freeze_trunk=True)
    trunk = net.trunk_modules()
    stats = {k: v.clone() for m in trunk for k, v in m.state_dict().items() if "running" in k}
    assert stats or family in ("convnext", "vit14-dpt")  # the ResNets have BatchNorm statistics to keep
    net.train()
    assert net.training and not any(m.training for t in trunk for m in t.modules())
    net(torch.randn(2, 3, 64, 72))[:, 0].sum().backward()
    trunk_params = {id(p) for t in trunk for p in t.parameters()}
    assert all(p.grad is None and not p.requires_grad for t in trunk for p in t.parameters())
    rest = [p for p in net.parameters() if id(p) not in trunk_params]
    assert rest and all(p.grad is not None for p in rest) and sum(p.grad.abs().sum() for p in rest) > 0
    after = {k: v for m in trunk for k, v in m.state_dict().items() if "running" in k}
    assert all(torch.equal(stats[k], after[k]) for k in stats)


def test_torchvision_resnet50_safetensors_in_fp16_load_into_novum_and_the_baseline(tmp_path):
    from novum3d.baselines import build_classifier

    reference = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.safetensors"
    safetensors_torch.save_file({k: v.half() for k, v in reference.state_dict().items()}, str(path))
    expected = {k: v.half().float() for k, v in reference.state_dict().items() if v.is_floating_point()}
    net = FeatureBackbone("resnet50", 16, weights=path)
    torch.testing.assert_close(net.stem[0].weight, expected["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(net.layer4[2].bn3.running_var, expected["layer4.2.bn3.running_var"], rtol=0, atol=0)
    classifier = build_classifier("resnet50", 3, (64, 64), path)
    assert classifier.fc.out_features == 3 and classifier.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(classifier.layer3[0].conv2.weight, expected["layer3.0.conv2.weight"], rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("family", ["convnext", "vit14-dpt"])
def test_a_timm_state_dict_round_trips_to_the_same_trunk_outputs(tmp_path, family, suffix):
    name, kwargs = FAMILIES[family]
    torch.manual_seed(1)
    dynamic = {"dynamic_img_size": True} if family != "convnext" else {}  # the same state_dict, any image size
    plain = timm.create_model(name[5:], pretrained=False, num_classes=10, **kwargs, **dynamic).eval()  # a classifier
    path = tmp_path / f"w{suffix}"
    state = plain.state_dict()
    if suffix == ".safetensors":
        safetensors_torch.save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)  # a wrapped one, as training scripts write them
    # The decoder does not matter here (the trunks are compared): fpn, lighter than a 512-wide DPT.
    cfg = ModelConfig(backbone=name, feature_dim=16, backbone_kwargs=kwargs, backbone_weights=str(path), decoder="fpn")
    net = build_backbone(cfg)
    # Sides that need no padding: multiples of 32 for the CNN, of 56 (whole 8-pixel cells in whole 14-pixel
    # patches) for the ViT, which timm's own forward takes as they are.
    images = torch.randn(1, 3, *((64, 96) if family == "convnext" else (56, 112)))
    with torch.no_grad():
        ours = net.eval().trunk(images)
        indices = getattr(net, "blocks", None)
        theirs = plain.forward_intermediates(images, indices=indices, intermediates_only=True)
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)
    again = build_backbone(cfg)
    with torch.no_grad():
        torch.testing.assert_close(again.eval().trunk(images)[-1], ours[-1])


def test_mismatched_weights_name_the_file_and_the_first_keys(tmp_path):
    convnext = tmp_path / "convnext.pt"
    torch.save(timm.create_model("convnext_atto", pretrained=False).state_dict(), convnext)
    with pytest.raises(WeightsError, match=r"convnext\.pt: not a matching VisionTransformer state_dict \(\d+ missing, "
                                           r"first \['cls_token'.*unexpected, first \['stem\.0\.weight'"):  # fmt: skip
        build_backbone(vit_config(backbone_weights=str(convnext)))
    state = torch.load(convnext)
    state.pop("stages.1.downsample.1.weight")
    short = tmp_path / "short.safetensors"
    safetensors_torch.save_file(state, str(short))
    with pytest.raises(
        WeightsError, match=r"short\.safetensors: .*1 missing, first \['stages_1\.downsample\.1\.weight'"
    ):
        build_backbone(ModelConfig(backbone="timm:convnext_atto", backbone_weights=str(short)))
    with pytest.raises(WeightsError, match=r"convnext\.pt: not a matching ResNet state_dict"):
        FeatureBackbone("resnet18", 16, weights=convnext)
    # DINOv2's own files carry their masked-modelling token, which a timm ViT has no place for: left out.
    dinov2 = {**timm.create_model(VIT[5:], pretrained=False, **TINY_VIT).state_dict(), "mask_token": torch.zeros(1, 48)}
    torch.save(dinov2, tmp_path / "dinov2.pth")
    loaded = build_backbone(vit_config(backbone_weights=str(tmp_path / "dinov2.pth"), decoder="fpn"))
    assert torch.equal(loaded.vit.pos_embed, dinov2["pos_embed"])
    torch.save({**dinov2, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"extra\.pth: .*0 missing.*1 unexpected, first \['extra\.weight'\]"):
        build_backbone(vit_config(backbone_weights=str(tmp_path / "extra.pth"), decoder="fpn"))


def test_read_state_dict_takes_wrappers_and_refuses_what_is_not_one(tmp_path):
    state = {"a.weight": torch.ones(2), "b": torch.zeros(1, dtype=torch.float16)}
    for i, content in enumerate((state, {"state_dict": state}, {"model": state, "epoch": 3})):
        torch.save(content, tmp_path / f"{i}.pth")
        got = read_state_dict(tmp_path / f"{i}.pth")
        assert got.keys() == state.keys() and got["b"].dtype == torch.float16
    torch.save({"a": torch.ones(1), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(
        WeightsError, match=r"mixed\.pt: expected a state_dict \(names -> tensors\); entry 'step' is int"
    ):
        read_state_dict(tmp_path / "mixed.pt")
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match=r"list\.pt: expected a state_dict .* got list"):
        read_state_dict(tmp_path / "list.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(WeightsError, match=r"junk\.safetensors: unreadable weights file"):
        read_state_dict(tmp_path / "junk.safetensors")
    with pytest.raises(WeightsError, match=r"nothing\.pt: weights file not found \(weights are never downloaded\)"):
        read_state_dict(tmp_path / "nothing.pt")


def test_nothing_is_downloaded_and_timm_always_gets_pretrained_false(monkeypatch):
    from novum3d.baselines import build_classifier

    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    seen, create = [], timm.create_model

    def recording(name, *args, **kwargs):
        seen.append(kwargs.get("pretrained", "absent"))
        return create(name, *args, **kwargs)

    monkeypatch.setattr(timm, "create_model", recording)
    images = torch.randn(1, 3, 64, 64)
    for family in ("convnext", "vit14-dpt"):
        assert backbone(family)(images).shape == (1, 16, 8, 8)
    assert build_classifier("timm:convnext_atto", 3, (64, 64))(images).shape == (1, 3)
    assert build_classifier(VIT, 3, (64, 64), kwargs=TINY_VIT)(images).shape == (1, 3)
    assert seen == [False] * 4


def test_timm_names_and_kwargs_are_checked_and_timm_missing_names_its_extra(monkeypatch):
    with pytest.raises(ConfigError, match=r"model\.backbone: timm .* has no model 'convnext_nope'"):
        build_backbone(ModelConfig(backbone="timm:convnext_nope"))
    with pytest.raises(
        ConfigError, match=r"model\.backbone_kwargs: timm\.create_model\('convnext_atto', \.\.\.\) failed"
    ):
        build_backbone(ModelConfig(backbone="timm:convnext_atto", backbone_kwargs={"no_such_option": 1}))
    with pytest.raises(ConfigError, match=r"model\.decoder 'dpt' with stride 8: a timm CNN takes fpn"):
        build_backbone(ModelConfig(backbone="timm:convnext_atto", decoder="dpt"))
    with pytest.raises(ConfigError, match=r"model\.decoder 'unet' .* a timm ViT takes dpt or fpn"):
        build_backbone(vit_config(decoder="unet"))
    monkeypatch.setitem(sys.modules, "timm", None)  # as if not installed
    with pytest.raises(ConfigError, match=r'timm:convnext_atto: timm is not installed; pip install -e "\.\[timm\]"'):
        build_backbone(ModelConfig(backbone="timm:convnext_atto"))


def test_backbone_options_are_validated_and_leave_older_runs_identity_alone():
    base = "configs/synthetic-small.yaml"
    cfg = load_experiment(base, ["model.backbone=timm:vit_small_patch14_dinov2", "model.freeze_trunk=true"])
    assert cfg.model.decoder == "auto" and cfg.model.freeze_trunk  # dpt, once built: a ViT
    assert load_experiment(base).model.decoder == "fpn"  # a ResNet stores what it always had
    with pytest.raises(
        ConfigError, match=r"model\.backbone: expected one of \['resnet50', 'resnet18'\] or 'timm:<model"
    ):
        load_experiment(base, ["model.backbone=vit_b_16"])
    with pytest.raises(ConfigError, match=r"backbone_kwargs: only timm backbones take them"):
        load_experiment(base, ["model.backbone_kwargs={depth: 4}"])
    with pytest.raises(ConfigError, match=r"backbone_kwargs: \['pretrained'\] are set by novum3d"):
        load_experiment(base, ["model.backbone=timm:convnext_atto", "model.backbone_kwargs={pretrained: true}"])
    with pytest.raises(ConfigError, match=r"decoder: 'dpt' reads a ViT's blocks"):
        load_experiment(base, ["model.decoder=dpt"])
    with pytest.raises(ConfigError, match=r"model\.arch: expected one of .* or 'timm:<model name>', got 'vgg'"):
        load_experiment("configs/baseline-resnet50.yaml", ["model.arch=vgg"], cls=BaselineConfig)
    assert_default_keeps_older_identity("freeze_trunk", True)
    # backbone_kwargs: empty leaves a config without it the same identity; set, it is part of it.
    default = config_to_dict(load_experiment(base))
    older = {**default, "model": {k: v for k, v in default["model"].items() if k != "backbone_kwargs"}}
    assert training_identity(default, "t", "v") == training_identity(older, "t", "v")
    vit = config_to_dict(load_experiment(base, [f"model.backbone={VIT}", "model.backbone_kwargs={depth: 4}"]))
    assert training_identity(vit, "t", "v")["config"]["model"]["backbone_kwargs"] == {"depth": 4}


# ---- training on the tiny synthetic preset -------------------------------------------------------------


def timm_run(root, out, backbone_name, **extra):
    overrides = {"model.backbone": backbone_name, "optim.epochs": 1, "train.max_steps_per_epoch": 1, **extra}
    return tiny_config(root, out, **overrides)


@pytest.mark.parametrize(
    ("name", "extra"),
    [("timm:convnext_atto", {}),
     (VIT, {"model.backbone_kwargs": "{depth: 4, embed_dim: 48, num_heads: 2}", "model.decoder": "fpn"})],
    ids=["convnext", "vit14-fpn"],  # the DPT trains in the frozen ViT's test below
)  # fmt: skip
def test_one_training_step_per_family_moves_the_whole_backbone(data_root, tmp_path, name, extra):  # noqa: F811
    trainer = Trainer(timm_run(data_root, tmp_path / "run", name, **extra), quiet=True)
    before = {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}
    batch = collate([trainer.train_set[i] for i in range(4)], (64, 64))
    stats = trainer.train_step(batch)
    assert torch.isfinite(torch.tensor(stats.loss)) and stats.correspondences > 0
    after = trainer.model.backbone.state_dict()
    trunk = next(k for k in before if k.startswith(("net.", "vit.")) and before[k].is_floating_point())
    assert not torch.equal(before[trunk], after[trunk]) and not torch.equal(before["head.weight"], after["head.weight"])


def test_a_frozen_vit_trains_its_head_only_and_its_checkpoint_reloads_identically(data_root, tmp_path, monkeypatch):  # noqa: F811
    from novum3d.inference.loading import load_model
    from novum3d.model.backbone import timm_trunks

    monkeypatch.setattr(timm_trunks, "DPT_WIDTH", 64)  # the authors' 512 costs 3 s of CPU per build, tests the same
    weights = tmp_path / "vit.safetensors"
    safetensors_torch.save_file(timm.create_model(VIT[5:], pretrained=False, **TINY_VIT).state_dict(), str(weights))
    options = {"model.backbone_kwargs": "{depth: 4, embed_dim: 48, num_heads: 2}", "model.freeze_trunk": "true",
               "model.backbone_weights": str(weights)}  # fmt: skip
    cfg = timm_run(data_root, tmp_path / "run", VIT, **options)
    trainer = Trainer(cfg, quiet=True)
    net = trainer.model.backbone
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for n, p in net.named_parameters() if not n.startswith("vit.")}
    trunk = {k: v.clone() for k, v in net.vit.state_dict().items()}
    trainer.train_step(collate([trainer.train_set[i] for i in range(4)], (64, 64)))
    assert all(torch.equal(trunk[k], v) for k, v in net.vit.state_dict().items())
    trainer.epoch = 1
    path = trainer.save()
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert torch.load(path, weights_only=False)["provenance"] == {
        "source": "trained", "backbone": VIT, "backbone_weights": {"file": "vit.safetensors", "sha256": digest}
    }  # fmt: skip
    weights.unlink()  # the checkpoint holds the weights; the file is not needed to reload
    model, loaded = load_model(path)
    assert type(model.backbone) is type(net) and loaded.model.backbone == VIT
    images = torch.rand(2, 3, 64, 64)
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images), trainer.model(images), rtol=0, atol=0)


def test_a_timm_baseline_trains_and_takes_timm_weights_without_their_classifier(data_root, tmp_path):  # noqa: F811
    from novum3d.baselines import BaselineTrainer, build_classifier
    from tests.test_robustness import baseline_config

    plain = timm.create_model("convnext_atto", pretrained=False)  # a 1000-class head
    path = tmp_path / "convnext.safetensors"
    safetensors_torch.save_file(plain.state_dict(), str(path))
    net = build_classifier("timm:convnext_atto", 2, (64, 64), path)
    torch.testing.assert_close(net.stem[0].weight, plain.stem[0].weight)
    assert net.head.fc.out_features == 2
    trainer = BaselineTrainer(baseline_config(data_root, tmp_path / "run", "timm:convnext_atto",
                                              **{"model.weights": str(path)}), quiet=True)  # fmt: skip
    stats = trainer.train_step(collate([trainer.train_set[i] for i in range(4)], (64, 64)))
    assert torch.isfinite(torch.tensor(stats.loss))
    assert trainer.provenance()["backbone"] == "timm:convnext_atto"
    assert trainer.provenance()["backbone_weights"]["file"] == "convnext.safetensors"


def test_inference_benchmark_compares_backbones_in_one_run(tmp_path):
    """``--backbones``: classification rows for each backbone, pose as each one's forward plus the estimator,
    and backbone training steps with the trunk frozen (ResNet-50's trained whole as well)."""
    from benchmarks.inference import main as inference_main
    from tests.test_benchmarks import small_pose_run

    out = tmp_path / "bench.md"
    pose = [a for a in small_pose_run(out) if a not in ("--pose-only",)]
    args = ["--backbones", "resnet18,timm:convnext_atto", "--size", "64x64", "--batch", "1", "--train-batch", "1",
            "--min-time", "0.01", *pose]  # fmt: skip
    assert inference_main(args) == 0
    text = out.read_text()
    assert "| full classification, eager, torch matching, timm:convnext_atto + FPN | batch 1, 64x64 |" in text
    assert "| trunk (resnet18) |" in text and text.count("| matching alone, torch |") == 1
    assert "| timm:convnext_atto forward + pose | batch 2, 96x96, stride 8 |" in text
    assert "| timm:convnext_atto + FPN, trunk frozen (" in text and "| resnet18 + FPN, trunk frozen (" in text
    with pytest.raises(SystemExit):
        inference_main(["--backbones", "vgg16"])


def test_a_frozen_dinov2_style_vit_trains_evaluates_and_estimates_poses_from_the_scripts(data_root, tmp_path):  # noqa: F811
    """The command line end to end: train.py with a frozen timm ViT-14 and its DPT head, then evaluate.py and
    estimate_pose.py on the checkpoint (which rebuilds the backbone from its config)."""
    import json
    import subprocess

    def script(name, *args):
        run = subprocess.run([sys.executable, f"scripts/{name}.py", *args], capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stderr
        return run

    out = tmp_path / "run"
    script("train", "configs/synthetic-small.yaml", f"model.backbone={VIT}", "model.freeze_trunk=true",
           "model.backbone_kwargs={depth: 4, embed_dim: 48, num_heads: 2}", f"data.root={data_root}",
           "data.image_size=[64,64]", "data.num_workers=0", f"data.classes={CLASSES}", "model.feature_dim=16",
           "volume.num_gaussians=120", "optim.batch_size=4", "optim.epochs=1", f"train.out_dir={out}",
           "train.device=cpu")  # fmt: skip
    script("evaluate", "--checkpoint", str(out / "last.pt"), "--data", str(data_root), "--splits", "clean",
           "--out", str(tmp_path / "eval"), "--steps", "2", "--device", "cpu")  # fmt: skip
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["splits"]["clean"]["images"] == 2
    image = sorted((data_root / "test-clean" / "images" / "car").glob("*.JPEG"))[0]
    script("estimate_pose", str(image), "--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "pose"),
           "--steps", "2", "--device", "cpu")  # fmt: skip
    assert json.loads((tmp_path / "pose" / f"{image.stem}.json").read_text())["class"] in CLASSES
