"""Caches are keyed by everything that makes their content; interrupted and failed writes lose nothing."""

from __future__ import annotations

import errno
import json
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import novum3d.checkpoint
import novum3d.evaluation.run
from novum3d.checkpoint import load_checkpoint
from novum3d.data.pascal3d import Pascal3DPreprocessed
from novum3d.data.synthetic import generate
from novum3d.errors import CacheError, CheckpointError
from novum3d.evaluation.cache import RecordCache, evaluation_key, load_keyed, save_keyed
from novum3d.fingerprint import dataset_digest
from novum3d.train.trainer import Trainer
from tests.test_bad_input import SUITE, _rewrite_annotation
from tests.test_trainer import CLASSES, tiny_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tiny data and two checkpoints of one config (after epoch 1 and after epoch 2)."""
    root = tmp_path_factory.mktemp("cache") / "tiny"
    generate(root, "tiny", seed=0, categories=CLASSES)
    run = root.parent / "run"
    Trainer(tiny_config(root, run, **{"optim.epochs": 2, "train.max_steps_per_epoch": 1}), quiet=True).fit()
    return root, run / "previous.pt", run / "last.pt"


def _evaluate(argv):
    return runpy.run_path(str(ROOT / "scripts" / "evaluate.py"), run_name="novum3d_test")["main"](argv)


def _eval_args(ckpt, root, out, *extra):
    return ["--checkpoint", str(ckpt), "--data", str(root), "--splits", "clean,occluded-L1", "--out", str(out),
            "--steps", "1", "--device", "cpu", "--workers", "0", *extra]  # fmt: skip


def test_evaluating_another_checkpoint_into_the_same_out_stops_then_overwrites(trained, tmp_path, capsys):
    root, first, second = trained
    assert _evaluate(_eval_args(first, root, tmp_path / "x")) == 0
    capsys.readouterr()
    # The case: the same --out with another checkpoint used to print the first one's numbers again.
    assert _evaluate(_eval_args(second, root, tmp_path / "x")) == 2
    err = capsys.readouterr().err
    assert "clean.jsonl: cached results were made with another checkpoint" in err and "--overwrite" in err
    assert _evaluate(_eval_args(second, root, tmp_path / "x", "--overwrite")) == 0
    assert _evaluate(_eval_args(second, root, tmp_path / "fresh")) == 0
    overwritten = json.loads((tmp_path / "x" / "results.json").read_text())["splits"]
    fresh = json.loads((tmp_path / "fresh" / "results.json").read_text())["splits"]
    assert overwritten == fresh


def _key(ckpt, dataset, steps=1):
    return evaluation_key(ckpt, dataset, {"pose": {"steps": steps}})


def test_each_key_part_is_detected(trained, tmp_path, monkeypatch):
    root, first, second = trained
    data = tmp_path / "data"
    shutil.copytree(root, data)
    ds = Pascal3DPreprocessed(data / "test-clean", CLASSES)
    path = tmp_path / "c.jsonl"
    RecordCache(path, _key(first, ds)).add([{"id": "car/a", "v": 1}])
    assert RecordCache(path, _key(first, ds)).records == {"car/a": {"id": "car/a", "v": 1}}  # same inputs: reused

    def differ(key):
        with pytest.raises(CacheError) as info:
            RecordCache(path, key, hint="use --overwrite")
        assert "use --overwrite" in str(info.value)
        return str(info.value).split("made with another ")[1].split(";")[0]

    assert differ(_key(second, ds)) == "checkpoint"
    assert differ(_key(first, ds, steps=2)) == "settings.pose.steps"
    image = ds.items[0].image
    image.write_bytes(image.read_bytes()[:-1] + b"\0")  # one byte of one image
    assert differ(_key(first, Pascal3DPreprocessed(data / "test-clean", CLASSES))) == "data"
    shutil.copy(root / "test-clean" / image.relative_to(data / "test-clean"), image)
    ann = data / "test-clean" / "annotations" / "bus" / f"{ds.items[-1].name}.npz"
    _rewrite_annotation(ann, azimuth=0.123)  # one annotated angle
    assert differ(_key(first, Pascal3DPreprocessed(data / "test-clean", CLASSES))) == "data"
    monkeypatch.setattr("novum3d.evaluation.cache.code_digest", lambda: "another version of the code")
    assert differ(_key(first, ds)) == "code"
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"id": "car/a", "label": 0}) + "\n")  # a cache of the version before keys
    with pytest.raises(CacheError, match=r"old.jsonl: cached results were made with another format"):
        RecordCache(old, _key(first, ds))
    assert RecordCache(old, _key(first, ds), overwrite=True).records == {}  # discarded, recomputed


def test_digests_follow_content_not_location(trained, tmp_path):
    root = trained[0]
    shutil.copytree(root, tmp_path / "moved")
    a = Pascal3DPreprocessed(root / "test-clean", CLASSES)
    b = Pascal3DPreprocessed(tmp_path / "moved" / "test-clean", CLASSES)
    assert dataset_digest(a) == dataset_digest(b)
    assert dataset_digest(a) != dataset_digest(Pascal3DPreprocessed(root / "test-clean", CLASSES[:1]))
    save_keyed(tmp_path / "s.json", {"a": 1}, {"x": 2})
    assert load_keyed(tmp_path / "s.json", {"a": 1}) == ({"x": 2}, [])
    assert load_keyed(tmp_path / "s.json", {"a": 2}) == (None, ["a"])


def test_a_line_cut_off_by_a_crash_is_recomputed(trained, tmp_path):
    root, first, _ = trained
    ds = Pascal3DPreprocessed(root / "test-clean", CLASSES)
    path = tmp_path / "c.jsonl"
    cache = RecordCache(path, _key(first, ds))
    cache.add([{"id": "car/a", "v": 1}, {"id": "car/b", "v": 2}])
    path.write_text(path.read_text()[:-9])  # the process died while writing the last record
    assert list(RecordCache(path, _key(first, ds)).records) == ["car/a"]
    assert len(path.read_text().splitlines()) == 2  # key + the one whole record; the cut line is gone


def test_interrupted_evaluation_resumes_without_recomputing(trained, tmp_path, monkeypatch, capsys):
    root, first, _ = trained
    real = novum3d.evaluation.run.estimate_poses  # called once per batch and protocol (2 protocols)
    calls = []

    def estimate_then_interrupt(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the second image's first protocol
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(novum3d.evaluation.run, "estimate_poses", estimate_then_interrupt)
    args = _eval_args(first, root, tmp_path / "x", "--batch-size", "1")
    assert _evaluate(args) == 130
    assert "interrupted" in capsys.readouterr().err
    assert len((tmp_path / "x" / "cache" / "clean.jsonl").read_text().splitlines()) == 2  # key + first image
    calls.clear()
    monkeypatch.setattr(novum3d.evaluation.run, "estimate_poses", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert _evaluate(args) == 0
    assert len(calls) == 2 * (4 - 1)  # 2 clean + 2 occluded-L1 images, the first already done; 2 protocols
    monkeypatch.setattr(novum3d.evaluation.run, "estimate_poses", real)
    assert _evaluate(_eval_args(first, root, tmp_path / "fresh", "--batch-size", "1")) == 0
    resumed = json.loads((tmp_path / "x" / "results.json").read_text())["by_protocol"]
    assert resumed == json.loads((tmp_path / "fresh" / "results.json").read_text())["by_protocol"]


def test_a_checkpoint_write_that_fails_half_way_keeps_the_last_one(trained, tmp_path, monkeypatch):
    root = trained[0]
    cfg = tiny_config(root, tmp_path / "run", **{"optim.epochs": 2, "train.max_steps_per_epoch": 1})
    trainer = Trainer(cfg, quiet=True)
    trainer.fit(until_epoch=1)
    before = load_checkpoint(tmp_path / "run" / "last.pt")
    real_save = torch.save

    def disk_full(obj, path):
        real_save(obj, path)
        Path(path).write_bytes(Path(path).read_bytes()[:1000])  # half written when the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(novum3d.checkpoint.torch, "save", disk_full)
    with pytest.raises(CheckpointError, match=r"last.pt.tmp: could not write the checkpoint \(No space.*unchanged"):
        trainer.fit()
    monkeypatch.setattr(novum3d.checkpoint.torch, "save", real_save)
    assert not (tmp_path / "run" / "last.pt.tmp").exists()
    after = load_checkpoint(tmp_path / "run" / "last.pt")
    assert after["epoch"] == before["epoch"] == 1
    torch.testing.assert_close(after["model"], before["model"])
    resumed = Trainer(cfg, resume=True, quiet=True)
    assert resumed.epoch == 1 and resumed.fit()[-1]["epoch"] == 2


# ---- the robustness benchmark: checkpoints and evaluations belong to their data and config
def _robustness(argv):
    return runpy.run_module("benchmarks.robustness", run_name="novum3d_test")["main"](argv)


def _robust_args(tmp_path, data, *extra):
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.replace("train.max_steps_per_epoch=1", "train.max_steps_per_epoch=1, optim.epochs=2"))
    return [str(suite), "--data", str(data), "--work", str(tmp_path / "w"), "--results", str(tmp_path / "r"),
            "--device", "cpu", "--workers", "0", *extra]  # fmt: skip


def test_robustness_refuses_a_checkpoint_of_other_data_and_reevaluates_changed_splits(trained, tmp_path, capsys):
    root = trained[0]
    data = tmp_path / "data"
    shutil.copytree(root, data)
    assert _robustness(_robust_args(tmp_path, data)) == 0
    ckpt = tmp_path / "w" / "novum-cube-seed0" / "last.pt"
    stamp = ckpt.stat().st_mtime_ns
    capsys.readouterr()
    # Test data changed: the model is kept, its evaluation is redone.
    _rewrite_annotation(next((data / "test-clean" / "annotations" / "car").glob("*.npz")), azimuth=1.0)
    assert _robustness(_robust_args(tmp_path, data)) == 0
    assert "was made with another data.clean; evaluating again" in capsys.readouterr().err
    assert ckpt.stat().st_mtime_ns == stamp
    # Training data changed: the "finished" checkpoint is not reused silently.
    _rewrite_annotation(next((data / "train" / "annotations" / "car").glob("*.npz")), elevation=0.3)
    assert _robustness(_robust_args(tmp_path, data)) == 2
    err = capsys.readouterr().err
    assert "last.pt: made with another data.train" in err and "--retrain" in err
    assert _robustness(_robust_args(tmp_path, data, "--retrain")) == 0
    assert ckpt.stat().st_mtime_ns != stamp
    assert load_checkpoint(ckpt)["identity"]["data"]["train"] == dataset_digest(
        Pascal3DPreprocessed(data / "train", CLASSES)
    )


def test_robustness_resumes_a_run_killed_mid_epoch(trained, tmp_path, monkeypatch, capsys):
    root = trained[0]
    real = Trainer.train_step
    steps = []

    def step_then_die(self, batch):
        steps.append(1)
        if len(steps) == 2:  # the first step of epoch 2
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(Trainer, "train_step", step_then_die)
    assert _robustness(_robust_args(tmp_path, root)) == 130
    ckpt = tmp_path / "w" / "novum-cube-seed0" / "last.pt"
    assert load_checkpoint(ckpt)["epoch"] == 1
    steps.clear()
    monkeypatch.setattr(Trainer, "train_step", lambda self, batch: steps.append(1) or real(self, batch))
    assert _robustness(_robust_args(tmp_path, root)) == 0
    assert len(steps) == 1  # only epoch 2 was trained
    history = load_checkpoint(ckpt)["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert np.isfinite(history[-1]["loss"])


def test_robustness_evaluation_killed_mid_way_keeps_its_finished_splits(trained, tmp_path, monkeypatch):
    import novum3d.evaluation.suite as robustness

    root = trained[0]
    real = robustness.classify_split
    calls = []

    def classify_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # the third split: two are finished
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(robustness, "classify_split", classify_then_die)
    assert _robustness(_robust_args(tmp_path, root)) == 130
    run = tmp_path / "w" / "novum-cube-seed0"
    partial = run / "robustness-eval.partial.json"
    assert partial.is_file() and not (run / "robustness-eval.json").exists()

    counting = lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs)  # noqa: E731
    monkeypatch.setattr(robustness, "classify_split", counting)
    calls.clear()
    assert _robustness(_robust_args(tmp_path, root)) == 0
    resumed = len(calls)
    assert not partial.exists()
    saved = json.loads((run / "robustness-eval.json").read_text())

    (run / "robustness-eval.json").unlink()  # a fresh evaluation of the same checkpoint, for comparison
    calls.clear()
    assert _robustness(_robust_args(tmp_path, root)) == 0
    assert resumed == len(calls) - 2
    assert json.loads((run / "robustness-eval.json").read_text())["data"] == saved["data"]
