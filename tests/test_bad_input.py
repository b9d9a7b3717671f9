"""Every script against every kind of bad input: exit code, one ``error:`` line naming the file, no traceback.

The rows of the README's "bad input -> what happens" table are the cases of
``test_script_reports_bad_input_in_one_line``. Scripts run in-process (their ``main``), so an
exception escaping one fails the test exactly as a traceback would fail a user.
"""

from __future__ import annotations

import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from novum3d.baselines import BaselineTrainer
from novum3d.config import BaselineConfig, ExperimentConfig, load_experiment
from novum3d.data.synthetic import generate
from novum3d.train.command import train_main
from novum3d.train.trainer import Trainer
from tests.test_trainer import CLASSES, tiny_config

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
TINY = ["data.image_size=[64, 64]", "data.num_workers=0", f"data.classes={CLASSES}", "model.backbone=resnet18",
        "model.feature_dim=16", "volume.num_gaussians=120", "bank.size=64", "bank.per_image=4",
        "optim.batch_size=2", "optim.epochs=1", "train.device=cpu"]  # fmt: skip
SUITE = """
common: ["data.image_size=[64, 64]", optim.epochs=1, optim.batch_size=4, data.num_workers=0, "data.classes=[car, bus]",
         train.max_steps_per_epoch=1]
methods:
  - {name: NOVUM (cube), kind: novum, config: configs/synthetic-small.yaml,
     overrides: [model.backbone=resnet18, model.feature_dim=16, volume.num_gaussians=120, bank.size=64,
                 bank.per_image=4]}
"""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A tiny data set, a NOVUM checkpoint and a baseline checkpoint trained on it."""
    root = tmp_path_factory.mktemp("bad") / "tiny"
    generate(root, "tiny", seed=0, categories=CLASSES)
    novum = root.parent / "novum"
    Trainer(tiny_config(root, novum, **{"optim.epochs": 1, "train.max_steps_per_epoch": 1}), quiet=True).fit()
    baseline = root.parent / "baseline"
    overrides = [f"data.root={root}", f"train.out_dir={baseline}", "model.arch=resnet18", *TINY[:3], *TINY[8:]]
    BaselineTrainer(load_experiment("configs/baseline-resnet50.yaml", overrides, cls=BaselineConfig), quiet=True).fit()
    return root, novum / "last.pt", baseline / "last.pt"


def _script(path: Path):
    return runpy.run_path(str(path), run_name="novum3d_test")["main"]


def _one_image(root: Path, split: str) -> Path:
    return sorted((root / split / "images" / "car").glob("*.JPEG"))[0]


def _annotation_of(image: Path) -> Path:
    return image.parents[2] / "annotations" / image.parent.name / f"{image.stem}.npz"


def _rewrite_annotation(path: Path, drop: str | None = None, **values) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k != drop}
    arrays.update({k: np.float64(v) for k, v in values.items()})
    np.savez(path.with_suffix(""), **arrays)  # np.savez adds .npz


# ---- how each kind of bad input is made: (data root, work folder, checkpoints) -> what the error must name
def missing_image(root, split, **_):
    image = _one_image(root, split)
    image.unlink()
    return image.name


def corrupt_image(root, split, **_):
    image = _one_image(root, split)
    image.write_text("this is not a JPEG")
    return image.name


def truncated_jpeg(root, split, **_):
    image = _one_image(root, split)
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    return image.name


def annotation_missing_field(root, split, **_):
    path = _annotation_of(_one_image(root, split))
    _rewrite_annotation(path, drop="azimuth")
    return f"{path.name}: missing field(s) ['azimuth']"


def nan_pose(root, split, **_):
    path = _annotation_of(_one_image(root, split))
    _rewrite_annotation(path, elevation=float("nan"))
    return f"{path.name}: field 'elevation' is not finite"


def empty_data_folder(root, split):
    shutil.rmtree(root)
    root.mkdir()
    return str(root)


KINDS = {
    "missing image": missing_image,
    "corrupt image": corrupt_image,
    "truncated JPEG": truncated_jpeg,
    "annotation missing a field": annotation_missing_field,
    "NaN pose": nan_pose,
    "empty data folder": empty_data_folder,
}


def _run_train(root, work, ckpts, extra=(), resume_from=None, baseline=False):
    out = work / "run"
    if resume_from is not None:
        out.mkdir(parents=True)
        shutil.copy(resume_from, out / "last.pt")
    config = "configs/baseline-resnet50.yaml" if baseline else "configs/synthetic-small.yaml"
    tiny = [*TINY[:3], "model.arch=resnet18", *TINY[8:]] if baseline else TINY
    argv = [config, f"data.root={root}", f"train.out_dir={out}", *tiny, *extra]
    if resume_from is not None:
        argv.append("--resume")
    trainer, cls = (BaselineTrainer, BaselineConfig) if baseline else (Trainer, ExperimentConfig)
    return train_main(argv, "", trainer, cls)


def _run_evaluate(root, work, ckpts, checkpoint=None, extra=()):
    argv = ["--checkpoint", str(checkpoint or ckpts[0]), "--data", str(root), "--splits", "clean", "--out",
            str(work / "eval"), "--steps", "1", "--device", "cpu", *extra]  # fmt: skip
    return _script(SCRIPTS / "evaluate.py")(argv)


def _run_estimate(root, work, ckpts, image=None, checkpoint=None, extra=()):
    image = image or _one_image(root, "test-clean")
    argv = [str(image), "--checkpoint", str(checkpoint or ckpts[0]), "--out", str(work / "poses"), "--steps", "1",
            "--device", "cpu", "--distance", "120", *extra]  # fmt: skip
    return _script(SCRIPTS / "estimate_pose.py")(argv)


def _run_robustness(root, work, ckpts, suite=SUITE, plant=None):
    path = work / "suite.yaml"
    path.write_text(suite)
    if plant is not None:  # a checkpoint already in the method's run folder
        (work / "w" / "novum-cube-seed0").mkdir(parents=True)
        shutil.copy(plant, work / "w" / "novum-cube-seed0" / "last.pt")
    argv = [str(path), "--data", str(root), "--work", str(work / "w"), "--results", str(work / "r"),
            "--pose-steps", "1", "--device", "cpu"]  # fmt: skip
    return runpy.run_module("benchmarks.robustness", run_name="novum3d_test")["main"](argv)


def _run_make_synthetic(root, work, ckpts, extra=(), out=None):
    argv = ["--preset", "tiny", "--out", str(out or work / "synthetic"), "--classes", "car", *extra]
    return _script(SCRIPTS / "make_synthetic.py")(argv)


def _corrupt_manifest(root: Path) -> None:
    (root / "dataset.json").write_text('{"categories": ["car", ')  # cut off mid-write


def _after(damage, runner):
    """``runner`` on the data root once ``damage(root)`` has broken it."""

    def run(root, work, ckpts, **kwargs):
        damage(root)
        return runner(root, work, ckpts, **kwargs)

    return run


def _truncate(path: Path, work: Path) -> Path:
    out = work / "truncated.pt"
    out.write_bytes(path.read_bytes()[:2000])
    return out


def _foreign(work: Path) -> Path:
    out = work / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, out)
    return out


# (script, kind, split the data break touches, expected exit code)
DATA_CASES = [
    *[("train", kind, "train", 2) for kind in KINDS],
    *[("evaluate", kind, "test-clean", 2) for kind in KINDS],
    *[("estimate_pose", kind, "test-clean", 1) for kind in ("missing image", "corrupt image", "truncated JPEG")],
    *[
        ("robustness", kind, "test-clean", 2)
        for kind in ("annotation missing a field", "NaN pose", "empty data folder")
    ],
]
RUNNERS = {"train": _run_train, "evaluate": _run_evaluate, "estimate_pose": _run_estimate,
           "robustness": _run_robustness}  # fmt: skip


def _assert_one_error_line(capsys, code, expected_code, *names):
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == expected_code, err[-2000:]
    assert len(errors) == 1, err[-2000:]
    assert "Traceback" not in err
    for name in names:
        assert name in errors[0], errors[0]


@pytest.mark.parametrize(("script", "kind", "split", "code"), DATA_CASES, ids=[f"{c[0]}-{c[1]}" for c in DATA_CASES])
def test_script_reports_bad_data_in_one_line(pristine, tmp_path, capsys, script, kind, split, code):
    root = tmp_path / "data"
    shutil.copytree(pristine[0], root)
    names = KINDS[kind](root, split)
    if script == "estimate_pose":  # the image itself is the input
        image = root / split / "images" / "car" / names
        result = _run_estimate(root, tmp_path, pristine[1:], image=image)
    else:
        result = RUNNERS[script](root, tmp_path, pristine[1:])
    _assert_one_error_line(capsys, result, code, names)


def test_training_data_errors_in_loader_workers_stay_one_line(pristine, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(pristine[0], root)
    name = corrupt_image(root, "train")
    result = _run_train(root, tmp_path, pristine[1:], extra=["data.num_workers=1"])
    _assert_one_error_line(capsys, result, 2, name, "unreadable image")


OTHER_CASES = {
    # name: (runner, kwargs, expected code, what the error line must name)
    "train: unknown config key": (_run_train, {"extra": ["optim.learning_rate=0.1"]}, 2,
                                  ["synthetic-small.yaml.optim", "unknown key(s) ['learning_rate']"]),
    "train: wrong config type": (_run_train, {"extra": ["optim.epochs=two"]}, 2,
                                 ["synthetic-small.yaml.optim.epochs", "expected an integer"]),
    "train: unknown class": (_run_train, {"extra": ["data.classes=[car, spaceship]"]}, 2, ["spaceship"]),
    "train: truncated checkpoint": (_run_train, {"resume_from": "truncated"}, 2,
                                    ["last.pt", "unreadable checkpoint"]),
    "train: foreign checkpoint": (_run_train, {"resume_from": "foreign"}, 2, ["last.pt", "not a novum3d checkpoint"]),
    "train: baseline checkpoint": (_run_train, {"resume_from": "baseline"}, 2, ["last.pt", "a baseline checkpoint"]),
    "train_baseline: NOVUM checkpoint": (_run_train, {"resume_from": "novum", "baseline": True}, 2,
                                         ["last.pt", "a novum checkpoint"]),
    "train_baseline: unknown config key": (_run_train, {"baseline": True, "extra": ["model.depth=3"]}, 2,
                                           ["baseline-resnet50.yaml.model", "unknown key(s) ['depth']"]),
    "evaluate: truncated checkpoint": (_run_evaluate, {"checkpoint": "truncated"}, 2,
                                       ["truncated.pt", "unreadable checkpoint"]),
    "evaluate: foreign checkpoint": (_run_evaluate, {"checkpoint": "foreign"}, 2,
                                     ["foreign.pt", "not a novum3d checkpoint"]),
    "evaluate: baseline checkpoint": (_run_evaluate, {"checkpoint": "baseline"}, 2,
                                      ["last.pt", "a baseline classifier checkpoint, not NOVUM"]),
    "evaluate: unknown split": (_run_evaluate, {"extra": ["--splits", "sunny"]}, 2, ["--splits", "sunny"]),
    "estimate_pose: truncated checkpoint": (_run_estimate, {"checkpoint": "truncated"}, 2,
                                            ["truncated.pt", "unreadable checkpoint"]),
    "estimate_pose: foreign checkpoint": (_run_estimate, {"checkpoint": "foreign"}, 2,
                                          ["foreign.pt", "not a novum3d checkpoint"]),
    "estimate_pose: unknown class": (_run_estimate, {"extra": ["--class", "spaceship"]}, 2, ["--class", "spaceship"]),
    "estimate_pose: empty folder": (_run_estimate, {"image": "empty"}, 2, ["no images"]),
    "robustness: unknown suite key": (_run_robustness, {"suite": "methods: []\nmodels: []\n"}, 2,
                                      ["suite.yaml", "unknown key(s) ['models']"]),
    "robustness: truncated checkpoint": (_run_robustness, {"plant": "truncated"}, 2,
                                         ["last.pt", "unreadable checkpoint"]),
    "robustness: foreign checkpoint": (_run_robustness, {"plant": "foreign"}, 2,
                                       ["last.pt", "not a novum3d checkpoint"]),
    "evaluate: corrupt dataset.json": (_after(_corrupt_manifest, _run_evaluate), {}, 2,
                                       ["dataset.json", "not a readable dataset.json"]),
    "robustness: corrupt dataset.json": (_after(_corrupt_manifest, _run_robustness), {}, 2,
                                         ["dataset.json", "not a readable dataset.json"]),
    "make_synthetic: bad --counts": (_run_make_synthetic, {"extra": ["--counts", "train=lots"]}, 2,
                                     ["--counts", "expected e.g. train=40,val=4"]),
    "make_synthetic: unknown --counts key": (_run_make_synthetic, {"extra": ["--counts", "trian=4"]}, 2,
                                             ["--counts", "'trian=4'"]),
    "make_synthetic: unknown class": (_run_make_synthetic, {"extra": ["--classes", "car,unicorn"]}, 2,
                                      ["categories: unknown ['unicorn']"]),
    "make_synthetic: data set already there": (_run_make_synthetic, {"out": "data"}, 2,
                                               ["already holds a data set"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(OTHER_CASES))
def test_script_reports_bad_input_in_one_line(pristine, tmp_path, capsys, case):
    runner, kwargs, code, names = OTHER_CASES[case]
    root = tmp_path / "data"
    shutil.copytree(pristine[0], root)
    made = {
        "truncated": lambda: _truncate(pristine[1], tmp_path),
        "foreign": lambda: _foreign(tmp_path),
        "baseline": lambda: pristine[2],
        "novum": lambda: pristine[1],
        "empty": lambda: (tmp_path / "empty").mkdir() or tmp_path / "empty",
        "data": lambda: root,
    }
    kwargs = {k: made[v]() if isinstance(v, str) and v in made else v for k, v in kwargs.items()}
    result = runner(root, tmp_path, pristine[1:], **kwargs)
    _assert_one_error_line(capsys, result, code, *names)
