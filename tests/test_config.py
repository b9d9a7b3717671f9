from dataclasses import dataclass, field

import pytest
import torch
import yaml

from novum3d.categories import build_category_volumes, load_categories
from novum3d.config import ConfigError, VolumeConfig, config_to_dict, from_mapping, load_config, load_experiment

PASCAL3D = [
    "aeroplane", "bicycle", "boat", "bottle", "bus", "car",
    "chair", "diningtable", "motorbike", "sofa", "train", "tvmonitor",
]  # fmt: skip


def test_builtin_categories_are_the_twelve_pascal3d_classes():
    cats = load_categories()
    assert [c.name for c in cats] == PASCAL3D
    assert all(len(c.size) == 3 and min(c.size) > 0 for c in cats)


@pytest.mark.parametrize("name", ["cuboid", "sphere", "single"])
def test_shipped_volume_configs_load_and_build(name):
    cfg = load_config(VolumeConfig, f"configs/volumes/{name}.yaml")
    assert cfg.kind == name
    vols = build_category_volumes(cfg)
    assert list(vols) == PASCAL3D
    sizes = {len(v) for v in vols.values()}
    assert sizes == {1} if name == "single" else all(abs(s - 1100) < 60 for s in sizes)


def test_categories_file_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "cats.yaml"
    bad.write_text("categories:\n  car: {size: [1.0, 2.0]}\n")
    with pytest.raises(ConfigError, match=r"cats.yaml: categories.car.size: expected three positive"):
        load_categories(bad)
    with pytest.raises(ConfigError, match="no such categories file"):
        load_categories(tmp_path / "missing.yaml")
    bad.write_text("categories: [car]\n")
    with pytest.raises(ConfigError, match="non-empty mapping under 'categories'"):
        load_categories(bad)


def test_volume_config_errors_name_file_and_key(tmp_path):
    path = tmp_path / "vol.yaml"
    path.write_text("kind: cuboid\nnum_gausians: 10\n")
    with pytest.raises(ConfigError, match=r"vol.yaml: unknown key\(s\) \['num_gausians'\]"):
        load_config(VolumeConfig, path)
    path.write_text("kind: cone\n")
    with pytest.raises(ConfigError, match=r"vol.yaml.kind: expected one of \['cuboid', 'sphere', 'single', 'points'\]"):
        load_config(VolumeConfig, path)
    path.write_text("num_gaussians: 10.5\n")
    with pytest.raises(ConfigError, match=r"vol\.yaml\.num_gaussians: expected an integer"):
        load_config(VolumeConfig, path)
    path.write_text("opacity: 1.5\n")
    with pytest.raises(ConfigError, match=r"vol.yaml: opacity: must lie in \(0, 1\]"):
        load_config(VolumeConfig, path)
    path.write_text("kind: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(VolumeConfig, path)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(VolumeConfig, tmp_path / "nope.yaml")


def test_nested_dataclasses_and_tuples():
    @dataclass
    class Inner:
        size: tuple[float, float] = (1.0, 2.0)

    @dataclass
    class Outer:
        inner: Inner = field(default_factory=Inner)
        names: list[str] = field(default_factory=list)
        lr: float = 1e-4

    cfg = from_mapping(Outer, {"inner": {"size": [3, 4]}, "names": ["a"], "lr": 1})
    assert cfg.inner.size == (3.0, 4.0) and cfg.names == ["a"] and cfg.lr == 1.0
    with pytest.raises(ConfigError, match=r"config.inner.size: expected 2 items"):
        from_mapping(Outer, {"inner": {"size": [3]}})
    with pytest.raises(ConfigError, match=r"config.names\[0\]: expected str"):
        from_mapping(Outer, {"names": [3]})
    with pytest.raises(ConfigError, match=r"config\.lr: expected a number"):
        from_mapping(Outer, {"lr": "fast"})
    # YAML 1.1 leaves `1e-3` (no dot) a string; a float field reads it as the number it means.
    assert yaml.safe_load("lr: 1e-3")["lr"] == "1e-3"
    assert from_mapping(Outer, {"lr": "1e-3"}).lr == 1e-3
    assert from_mapping(Outer, {"lr": " -2E4 "}).lr == -2e4
    for bad in ("1e", "e-3", "nan", "inf", "1e-3x"):
        with pytest.raises(ConfigError, match=r"config\.lr: expected a number"):
            from_mapping(Outer, {"lr": bad})


def test_render_volumes_script_writes_a_png(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "sheet.png"
    cfg = tmp_path / "vol.yaml"
    cfg.write_text("kind: cuboid\nnum_gaussians: 200\n")
    run = subprocess.run(
        [sys.executable, "scripts/render_volumes.py", str(cfg), "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    from PIL import Image

    img = Image.open(out)
    assert img.size == (4 * 256, 3 * (256 + 16))
    import numpy as np

    colours = np.unique(np.asarray(img.convert("RGB")).reshape(-1, 3), axis=0)
    assert len(colours) > 100  # coloured renders, not a blank sheet
    bad = subprocess.run(
        [sys.executable, "scripts/render_volumes.py", str(tmp_path / "missing.yaml")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "no such config file" in bad.stderr


def test_one_device_rule_for_scripts_and_trainer():
    from novum3d.device import select_device

    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match=r"train.device: expected auto, cpu or cuda, got 'tpu'"):
        select_device("tpu", field="train.device")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"train.device cuda: no CUDA device here; use train.device cpu or auto"):
            select_device("cuda", index=0, field="train.device")


def test_model_stride_is_validated_on_load():
    from novum3d.config import load_experiment

    assert load_experiment("configs/cube.yaml", ["model.stride=4"]).model.stride == 4
    with pytest.raises(ConfigError, match="stride: expected 8 or 4, got 16"):
        load_experiment("configs/cube.yaml", ["model.stride=16"])
    with pytest.raises(ConfigError, match="stride: 4 needs decoder 'fpn'"):
        load_experiment("configs/cube.yaml", ["model.stride=4", "model.decoder=unet"])
    # Runs from before the field existed (stride 8) keep their identity: resume and the suite's results match.
    assert_default_keeps_older_identity("stride", 4)


def test_trunk_depth_is_validated_and_leaves_older_runs_identity_alone():
    from novum3d.config import load_experiment

    assert load_experiment("configs/cube.yaml", ["model.trunk_depth=3"]).model.trunk_depth == 3
    with pytest.raises(ConfigError, match="trunk_depth"):
        load_experiment("configs/cube.yaml", ["model.trunk_depth=5"])
    with pytest.raises(ConfigError, match="trunk_depth"):
        load_experiment("configs/cube.yaml", ["model.trunk_depth=2", "model.decoder=unet"])
    assert_default_keeps_older_identity("trunk_depth", 3)


def assert_default_keeps_older_identity(field: str, other: float, section: str = "model") -> None:
    """A field added later: at its default, a config without it has the same training identity
    (resume and the suite's cached results still match); any ``other`` value is part of the identity."""
    from novum3d.config import config_to_dict, load_experiment
    from novum3d.train.identity import training_identity

    default = config_to_dict(load_experiment("configs/cube.yaml"))
    old = {**default, section: {k: v for k, v in default[section].items() if k != field}}
    assert training_identity(default, "t", "v") == training_identity(old, "t", "v")
    changed = config_to_dict(load_experiment("configs/cube.yaml", [f"{section}.{field}={other}"]))
    assert training_identity(changed, "t", "v")["config"][section][field] == other


def test_the_faithful_suite_has_stride_4_features_branching_from_volume_background(tmp_path):
    from novum3d.evaluation.suite import load_suite, method_config

    suite = load_suite("configs/robustness-faithful.yaml")
    methods = {m.slug: m for m in suite.methods}
    extra = ["data.root=d", "data.num_workers=2"]  # what the benchmark passes every method
    four = method_config(methods["stride-4-features"], suite, extra, 0, tmp_path)
    base = method_config(methods["volume-background"], suite, extra, 0, tmp_path)
    assert methods["stride-4-features"].pose and four.model.stride == 4 and base.model.stride == 8
    four.model.stride = 8
    assert four == base  # "+ volume background" with stride 4, nothing else


def test_the_faithful_suite_has_the_dense_stride_4_volume_and_its_baseline_at_the_same_rate(tmp_path):
    from novum3d.evaluation.suite import load_suite, method_config

    suite = load_suite("configs/robustness-faithful.yaml")
    methods = {m.slug: m for m in suite.methods}
    extra = ["data.root=d", "data.num_workers=2"]  # what the benchmark passes every method
    dense = method_config(methods["stride-4-dense-volume-lr-1e-3"], suite, extra, 0, tmp_path)
    base = method_config(methods["volume-background"], suite, extra, 0, tmp_path)
    assert methods["stride-4-dense-volume-lr-1e-3"].pose
    assert (dense.model.stride, dense.volume.num_gaussians, dense.optim.lr) == (4, 2000, 1e-3)
    assert (base.model.stride, base.volume.num_gaussians, base.optim.lr) == (8, 500, 3e-4)
    dense.model.stride, dense.volume.num_gaussians, dense.optim.lr = 8, 500, 3e-4
    assert dense == base  # "+ volume background" with the three changes, nothing else
    local = method_config(methods["stride-4-dense-volume-lr-1e-3-trunk-to-layer2"], suite, extra, 0, tmp_path)
    assert local.model.trunk_depth == 2 and methods["stride-4-dense-volume-lr-1e-3-trunk-to-layer2"].pose
    local.model.trunk_depth = 4
    assert local == method_config(methods["stride-4-dense-volume-lr-1e-3"], suite, extra, 0, tmp_path)
    resnet = {s: method_config(methods[s], suite, extra, 0, tmp_path) for s in ("resnet-50", "resnet-50-lr-1e-3")}
    assert (resnet["resnet-50"].optim.lr, resnet["resnet-50-lr-1e-3"].optim.lr) == (3e-4, 1e-3)


def test_override_of_a_float_in_e_notation_without_a_dot():
    from novum3d.config import load_experiment

    cfg = load_experiment("configs/synthetic-small.yaml", ["optim.lr=1e-3", "loss.temperature=7e-2"])
    assert cfg.optim.lr == 1e-3 and cfg.loss.temperature == 0.07


SUITE_BUDGET = ["data.image_size=[256, 256]", "optim.epochs=8", "optim.batch_size=32", "optim.lr=3.0e-4",
                "train.val_max_images=240"]  # fmt: skip
AUTHORS = ["model.backbone=resnet50", "loss.clutter_weight=0.1", "loss.bank_weight=0.005", "bank.background=volume",
           "bank.per_image=5", "bank.size=2560"]  # fmt: skip
DENSE = ["model.stride=4", "volume.num_gaussians=2000", "optim.lr=1.0e-3"]


@pytest.mark.parametrize(
    ("recipe", "overrides"),
    [
        ("configs/synthetic-paper.yaml", AUTHORS),
        ("configs/synthetic-best.yaml", [*AUTHORS, *DENSE]),
        ("configs/synthetic-unseen-poses.yaml", [*AUTHORS, *DENSE, "augment.rotation_degrees=30",
                                                 "augment.vertical_stretch=1.7"]),
    ],
)  # fmt: skip
def test_recipe_files_train_the_runs_their_override_strings_trained(recipe, overrides):
    """Each recipe is the run measured as the CPU demo's config with the benchmark's budget and overrides."""
    from novum3d.train.identity import training_identity

    def identity(path, extra):
        return training_identity(config_to_dict(load_experiment(path, extra)), "t", "v")

    assert identity(recipe, []) == identity("configs/synthetic-small.yaml", [*SUITE_BUDGET, *overrides])
    assert identity(recipe, []) != identity("configs/synthetic-small.yaml", SUITE_BUDGET)
