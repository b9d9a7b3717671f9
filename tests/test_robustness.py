import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from novum3d.baselines import BaselineTrainer, load_baseline
from novum3d.config import BaselineConfig, ConfigError, load_experiment
from novum3d.data.batch import collate
from novum3d.data.synthetic import generate
from novum3d.evaluation.suite import load_suite, markdown_rows, table_columns
from novum3d.inference.loading import load_model
from novum3d.train.trainer import CheckpointError, Trainer
from tests.test_trainer import CLASSES, tiny_config

COLUMNS = ["clean", "L1", "L2", "L3", "corrupted", "OOD context", "OOD pose", "OOD shape", "OOD texture",
           "OOD weather", "OOD mean"]  # fmt: skip


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust") / "tiny"
    generate(root, "tiny", seed=0, categories=CLASSES)
    return root


def baseline_config(data_root, out, arch="resnet18", **extra):
    overrides = [
        f"data.root={data_root}", "data.image_size=[64, 64]", "data.num_workers=0", f"data.classes={CLASSES}",
        f"model.arch={arch}", "optim.batch_size=4", "optim.epochs=1", f"train.out_dir={out}", "train.device=cpu",
    ] + [f"{k}={v}" for k, v in extra.items()]  # fmt: skip
    return load_experiment("configs/baseline-resnet50.yaml", overrides, cls=BaselineConfig)


def test_table_columns_average_corruptions_and_ood_by_hand():
    per_split = {
        "clean": {"images": 10, "accuracy": 0.9, "acc_pi_6": 0.5},
        "occluded-L1": {"images": 10, "accuracy": 0.8},
        "occluded-L3": {"images": 10, "accuracy": 0.4},
        "corrupted-fog": {"images": 4, "accuracy": 0.5},
        "corrupted-snow": {"images": 6, "accuracy": 0.75},
        "ood-pose": {"images": 10, "accuracy": 0.2},
        "ood-shape": {"images": 10, "accuracy": 0.6},
    }
    cols = table_columns(per_split)
    assert list(cols) == ["clean", "L1", "L3", "corrupted", "OOD pose", "OOD shape", "OOD mean"]
    assert cols["corrupted"] == pytest.approx(0.625) and cols["OOD mean"] == pytest.approx(0.4)
    assert table_columns(per_split, "acc_pi_6") == {"clean": 0.5}
    counts = table_columns(per_split, "images", combine=np.sum)
    assert counts["corrupted"] == 10 and counts["OOD mean"] == 20


def test_markdown_rows_give_mean_and_std_over_seeds():
    text = markdown_rows({"A": [{"clean": 0.5, "L1": 0.2}, {"clean": 0.7, "L1": 0.4}], "B": [{"clean": 1.0}]})
    lines = text.splitlines()
    assert lines[0] == "| method | clean | L1 |"
    assert lines[2] == "| A | 60.0 +- 10.0 | 30.0 +- 10.0 |"
    assert lines[3] == "| B | 100.0 | - |"


def test_suite_errors_name_the_file_and_the_key(tmp_path):
    bad = tmp_path / "suite.yaml"
    bad.write_text("methods:\n  - {name: R, kind: baseline, config: configs/baseline-resnet50.yaml, pose: true}\n")
    with pytest.raises(ConfigError, match=r"suite.yaml.methods\[0\].*pose is estimated for NOVUM methods only"):
        load_suite(bad)
    bad.write_text("methods:\n  - {name: R, kind: resnet, config: x.yaml}\n")
    with pytest.raises(ConfigError, match=r"methods\[0\].kind: expected one of \['novum', 'baseline'\]"):
        load_suite(bad)
    slugs = [m.slug for m in load_suite("configs/robustness.yaml").methods]
    assert slugs[:2] == ["novum-cube", "novum-single-gaussian"]


def test_baseline_learns_a_batch_and_its_checkpoint_round_trips(data_root, tmp_path):
    trainer = BaselineTrainer(baseline_config(data_root, tmp_path / "run"), quiet=True)
    batch = collate([trainer.train_set[i] for i in range(4)], (64, 64))
    losses = [trainer.train_step(batch).loss for _ in range(12)]
    assert losses[-1] < 0.5 * losses[0], losses
    trainer.epoch = 1
    path = trainer.save()
    model, cfg = load_baseline(path)
    images = batch["image"].float() / 255
    trainer.model.eval()
    torch.testing.assert_close(model.classify(images), trainer.model.classify(images))
    assert model.classes == CLASSES and cfg.model.arch == "resnet18"
    with pytest.raises(CheckpointError, match="baseline classifier checkpoint, not NOVUM"):
        load_model(path)
    with pytest.raises(CheckpointError, match="a baseline checkpoint; this run trains a novum model"):
        Trainer(tiny_config(data_root, tmp_path / "run"), resume=True, quiet=True)


@pytest.mark.parametrize("arch", ["convnext_tiny", "vit_b_16"])
def test_other_baseline_architectures_give_class_logits(data_root, tmp_path, arch):
    trainer = BaselineTrainer(baseline_config(data_root, tmp_path, arch), quiet=True)
    assert trainer.model.classify(torch.rand(2, 3, 64, 64)).shape == (2, len(CLASSES))


def test_train_baseline_script_names_bad_keys():
    result = subprocess.run(
        [sys.executable, "scripts/train_baseline.py", "configs/baseline-resnet50.yaml", "model.arch=vgg"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "baseline-resnet50.yaml.model.arch: expected one of" in result.stderr


TINY_SUITE = """
common: ["data.image_size=[64, 64]", optim.epochs=1, optim.batch_size=4, data.num_workers=0, "data.classes=[car, bus]"]
methods:
  - {name: NOVUM (cube), kind: novum, config: configs/synthetic-small.yaml, pose: true,
     overrides: [model.backbone=resnet18, model.feature_dim=16, volume.num_gaussians=120, bank.size=64,
                 bank.per_image=4]}
  - {name: NOVUM single Gaussian, kind: novum, config: configs/synthetic-small.yaml,
     overrides: [model.backbone=resnet18, model.feature_dim=16, volume.kind=single, bank.size=64, bank.per_image=4]}
  - {name: ResNet-18, kind: baseline, config: configs/baseline-resnet50.yaml, overrides: [model.arch=resnet18]}
"""


def test_robustness_benchmark_runs_end_to_end_on_tiny_data(data_root, tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text(TINY_SUITE)
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# existing\n")
    args = [sys.executable, "-m", "benchmarks.robustness", str(suite), "--data", str(data_root), "--work",
            str(tmp_path / "work"), "--results", str(tmp_path / "res"), "--append", str(bench), "--pose-steps",
            "2", "--device", "cpu", "--threads", "1", "--pose-max-per-split", "1"]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    # --threads reaches the trainers too (they would otherwise choose their own count on CUDA).
    saved = torch.load(tmp_path / "work" / "resnet-18-seed0" / "last.pt", map_location="cpu", weights_only=False)
    assert saved["config"]["train"]["cpu_threads"] == 1
    text = bench.read_text()
    assert text.startswith("# existing\n") and "### Robustness, CPU" in text
    tables = [block for block in text.split("\n\n") if block.startswith("| method |")]
    accuracy, pose, training = tables
    header = accuracy.splitlines()[0]
    assert header == "| method | " + " | ".join(COLUMNS) + " |"
    names = [line.split(" | ")[0].removeprefix("| ") for line in accuracy.splitlines()[2:]]
    assert names == [
        "NOVUM (cube)", "NOVUM (cube), GT box", "NOVUM single Gaussian", "NOVUM single Gaussian, GT box", "ResNet-18",
        "margin: NOVUM (cube) - ResNet-18", "margin: NOVUM (cube), GT box - ResNet-18",
    ]  # fmt: skip
    assert [line.split(" | ")[0] for line in pose.splitlines()[2:]] == ["| NOVUM (cube)", "| NOVUM (cube), GT box"]
    assert len(training.splitlines()) == 2 + 3
    report = json.loads((tmp_path / "res" / "robustness.json").read_text())
    for name, seeds in report["columns"].items():
        protocol = "reference" if name.endswith(", GT box") else "full"
        per_split = report["per_split"][f"{name.removesuffix(', GT box')} / seed 0"][protocol]
        assert seeds[0]["clean"] == per_split["clean"]["accuracy"]
        assert all(0 <= v <= 1 for v in seeds[0].values()) and list(seeds[0]) == COLUMNS
        row = next(line for line in accuracy.splitlines() if line.startswith(f"| {name} |"))
        assert row.split(" | ")[1] == f"{100 * seeds[0]['clean']:.1f}"
    assert (tmp_path / "res" / "accuracy_vs_occlusion.png").stat().st_size > 1000
    # Every method classifies the same images; the pose is estimated on the pose subset only.
    novum = report["per_split"]["NOVUM (cube) / seed 0"]["full"]
    baseline = report["per_split"]["ResNet-18 / seed 0"]["full"]
    assert {s: b["images"] for s, b in novum.items()} == {s: b["images"] for s, b in baseline.items()}
    assert novum["clean"]["images"] > 1 and "acc_pi_6" in novum["clean"]
    assert all(b["pose_images"] == 1 for b in novum.values())  # every split is a pose split here
    assert "Pose images per column: clean 1, L1 1," in text

    # A second run finds the trained checkpoints and cached evaluations: nothing is retrained.
    ckpt = tmp_path / "work" / "resnet-18-seed0" / "last.pt"
    before = ckpt.stat().st_mtime_ns
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    assert result.returncode == 0 and ckpt.stat().st_mtime_ns == before
    assert bench.read_text().count("### Robustness") == 2


def test_merge_pools_seeds_of_separate_runs(tmp_path):
    def report(seed, novum, resnet):
        return {"seeds": [seed], "columns": {"NOVUM (cube)": [{"clean": novum}], "ResNet-50": [{"clean": resnet}]},
                "pose_columns": {"NOVUM (cube)": [{"clean": 0.5}]}}  # fmt: skip

    paths = []
    for seed, (a, b) in enumerate([(0.9, 0.8), (0.7, 0.8)]):
        paths.append(tmp_path / f"r{seed}.json")
        paths[-1].write_text(json.dumps(report(seed, a, b)))
    out = tmp_path / "B.md"
    run = [sys.executable, "-m", "benchmarks.robustness", "--merge", *map(str, paths), "--append", str(out)]
    assert subprocess.run(run, capture_output=True, text=True, check=False).returncode == 0
    text = out.read_text()
    assert "| NOVUM (cube) | 80.0 +- 10.0 |" in text and "| ResNet-50 | 80.0 +- 0.0 |" in text
    assert "| margin: NOVUM (cube) - ResNet-50 | 0.0 +- 10.0 |" in text and "| NOVUM (cube) | 50.0 +- 0.0 |" in text
    same = subprocess.run(run[:4] + [str(paths[0])] * 2, capture_output=True, text=True, check=False)
    assert same.returncode == 2 and "seeds repeat" in same.stderr


def test_local_weights_of_another_architecture_are_a_clear_error(tmp_path):
    import torchvision

    from novum3d.baselines import build_classifier

    path = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    net = build_classifier("resnet18", 3, (64, 64), path)  # the 1000-class head is left out
    assert net.fc.out_features == 3
    torch.testing.assert_close(net.conv1.weight, torch.load(path)["conv1.weight"])
    with pytest.raises(ValueError, match=r"r18.pt: not a matching ResNet state_dict \(size mismatch"):
        build_classifier("resnet50", 3, (64, 64), path)
