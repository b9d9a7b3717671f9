"""model.compile: the option, its rule per device, and compiled backbones that keep checkpoints and features.

Only the ``slow`` and ``gpu`` tests run torch.compile: ``nn.Module.compile`` is lazy, so the others (keys,
checkpoints) never trigger it and stay fast.
"""

import copy

import pytest
import torch

from novum3d.config import ExperimentConfig, config_to_dict, load_experiment
from novum3d.device import resolve_compile
from novum3d.errors import ConfigError
from novum3d.inference.loading import load_model
from novum3d.model.backbone import FeatureBackbone, compile_backbone, is_compiled
from novum3d.model.novum import NOVUM


def small_config(**model) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.model.backbone, cfg.model.feature_dim = "resnet18", 16
    cfg.volume.num_gaussians, cfg.bank.size = 120, 64
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg


def save_novum(model: NOVUM, cfg: ExperimentConfig, path) -> None:
    """What the trainer's checkpoint holds for load_model (kind, weights, config, classes)."""
    torch.save({"kind": "novum", "model": model.state_dict(), "config": config_to_dict(cfg),
                "classes": model.classes}, path)  # fmt: skip


def test_option_defaults_to_auto_and_rejects_other_values(tmp_path):
    assert ExperimentConfig().model.compile == "auto"
    assert load_experiment("configs/synthetic-small.yaml").model.compile == "auto"
    for value in ("auto", "on", "off"):
        assert load_experiment("configs/synthetic-small.yaml", [f"model.compile={value}"]).model.compile == value
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  compile: yes please\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml\.model\.compile: expected one of \['auto', 'on', 'off'\]"):
        load_experiment(bad)
    with pytest.raises(ConfigError, match=r"model\.compile: expected one of .*got 'max-autotune'"):
        load_experiment("configs/synthetic-small.yaml", ["model.compile=max-autotune"])


def test_unquoted_yaml_on_and_off_are_the_settings_not_booleans(tmp_path):
    # YAML 1.1 reads on / off as true / false; a user writing `compile: off` means the setting.
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  compile: off\n")
    cfg = load_experiment(path)
    assert cfg.model.compile == "off" and config_to_dict(cfg)["model"]["compile"] == "off"
    path.write_text("model:\n  compile: on\n")
    assert load_experiment(path).model.compile == "on"


def test_resolve_auto_is_cuda_only_and_on_off_are_forced():
    # Only the device's type is read, so no GPU is needed to ask about CUDA.
    assert resolve_compile("auto", torch.device("cpu")) is False
    assert resolve_compile("auto", torch.device("cuda")) is True
    assert resolve_compile("auto", torch.device("cuda", 1)) is True
    assert resolve_compile("auto", "cpu") is False
    for device in (torch.device("cpu"), torch.device("cuda")):
        assert resolve_compile("on", device) is True
        assert resolve_compile("off", device) is False
    assert resolve_compile(False, torch.device("cuda")) is False
    with pytest.raises(ConfigError, match=r"--compile: expected auto, on or off, got 'yes'") as err:
        resolve_compile("yes", torch.device("cpu"), field="--compile")
    assert err.value.field == "--compile"


def test_compiled_backbone_keeps_its_state_dict_keys():
    eager = NOVUM(small_config(), ["car", "bus"])
    compiled = copy.deepcopy(eager)
    assert compile_backbone(compiled.backbone, "on", torch.device("cpu"))
    assert not compile_backbone(eager.backbone, "auto", torch.device("cpu"))
    assert is_compiled(compiled.backbone) and not is_compiled(eager.backbone)
    assert list(compiled.state_dict()) == list(eager.state_dict())
    assert not any("_orig_mod" in k for k in compiled.state_dict())


def test_checkpoints_of_compiled_and_eager_models_load_into_each_other(tmp_path):
    cfg = small_config(compile="on")
    trained = NOVUM(cfg, ["car", "bus"])
    compile_backbone(trained.backbone, cfg.model.compile, torch.device("cpu"))
    save_novum(trained, cfg, tmp_path / "compiled.pt")
    eager, loaded_cfg = load_model(tmp_path / "compiled.pt", compile="off")
    assert not is_compiled(eager.backbone) and loaded_cfg.model.compile == "on"
    for key, value in trained.state_dict().items():
        assert torch.equal(eager.state_dict()[key], value), key

    save_novum(eager, small_config(compile="off"), tmp_path / "eager.pt")
    again, _ = load_model(tmp_path / "eager.pt", compile="on")
    assert is_compiled(again.backbone)
    for key, value in eager.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    # Without an argument it is auto, whatever the checkpoint was trained with: eager on this CPU
    # even for a checkpoint trained with "on" (compiling on a CPU needs minutes and a C++ toolchain).
    assert not is_compiled(load_model(tmp_path / "eager.pt")[0].backbone)
    assert not is_compiled(load_model(tmp_path / "compiled.pt")[0].backbone)


def test_checkpoints_older_than_the_option_load_as_auto(tmp_path):
    cfg = small_config()
    model = NOVUM(cfg, ["car", "bus"])
    save_novum(model, cfg, tmp_path / "old.pt")
    ckpt = torch.load(tmp_path / "old.pt", weights_only=False)
    del ckpt["config"]["model"]["compile"]
    torch.save(ckpt, tmp_path / "old.pt")
    loaded, loaded_cfg = load_model(tmp_path / "old.pt", "cpu")
    assert loaded_cfg.model.compile == "auto" and not is_compiled(loaded.backbone)  # auto: eager on a CPU


def _toolchain_missing(exc: BaseException) -> str | None:
    """Inductor's 'no usable C++ compiler / headers' error in ``exc``'s chain, as a skip reason, else None."""
    while exc is not None:
        if type(exc).__name__ in ("InvalidCxxCompiler", "CppCompileError"):
            return f"torch.compile cannot build CPU kernels here ({type(exc).__name__}: {str(exc)[:200]})"
        exc = exc.__cause__ or exc.__context__
    return None


@pytest.mark.slow
def test_compiled_backbone_gives_the_eager_features_on_cpu():
    """float32 on a CPU (~25 s of compiling on 2 cores): fused kernels reorder sums, nothing more."""
    torch.manual_seed(0)
    eager = FeatureBackbone("resnet18", 16).eval()
    compiled = copy.deepcopy(eager)
    assert compile_backbone(compiled, "on", torch.device("cpu"))
    images = torch.randn(2, 3, 64, 64)
    try:
        with torch.no_grad():
            got = compiled(images)
    except Exception as exc:
        if reason := _toolchain_missing(exc):
            pytest.skip(reason)
        raise
    finally:
        torch._dynamo.reset()
    with torch.no_grad():
        expected = eager(images)
    assert got.shape == expected.shape == (2, 16, 8, 8)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def mean_cosine_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over pixels of 1 - cos between two feature maps [B, D, h, w]."""
    return float((1 - torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1)).mean())


@pytest.mark.gpu
def test_compiled_backbone_gives_the_eager_features_in_bf16_on_cuda():
    """The paper's ResNet-50 + FPN as inference runs it (eval, channels_last, bf16 autocast), compiled as
    ``model.compile: auto`` does on CUDA. Tolerance: a mean cosine to eager's features of at least 0.999,
    and no further from the float32 features than eager bf16 is, plus half (each eager bf16 op rounds its
    output; inductor fuses BatchNorm, ReLU and the residual adds and rounds once, so it may differ either way)."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    eager = FeatureBackbone("resnet50", 128).to(device).eval().to(memory_format=torch.channels_last)
    compiled = copy.deepcopy(eager)
    assert compile_backbone(compiled, "auto", device)
    images = torch.randn(4, 3, 256, 320, device=device).contiguous(memory_format=torch.channels_last)
    try:
        with torch.no_grad():
            reference = eager(images)  # float32
            with torch.autocast("cuda", dtype=torch.bfloat16):
                expected = eager(images)
                got = compiled(images)
    finally:
        torch._dynamo.reset()
    assert got.shape == expected.shape == (4, 128, 32, 40)
    assert mean_cosine_gap(got, expected) <= 1e-3
    assert mean_cosine_gap(got, reference) <= 1.5 * mean_cosine_gap(expected, reference) + 1e-4
