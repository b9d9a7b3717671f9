import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from novum3d.data.synthetic import generate
from novum3d.inference.loading import load_model
from novum3d.train.trainer import Trainer
from tests.helpers import run_script
from tests.test_trainer import tiny_config


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("pose") / "tiny"
    generate(root, "tiny", seed=0, categories=["car", "bus"])
    out = root.parent / "run"
    cfg = tiny_config(root, out, **{"optim.epochs": 1, "train.max_steps_per_epoch": 1})
    Trainer(cfg, quiet=True).fit()
    return root, out / "last.pt"


def run(*args):
    return subprocess.run(
        [sys.executable, "scripts/estimate_pose.py", *args], capture_output=True, text=True, check=False
    )


def test_estimates_poses_writes_json_and_pictures_and_reports_bad_images(checkpoint, tmp_path):
    root, ckpt = checkpoint
    images = sorted((root / "test-clean" / "images" / "car").glob("*.JPEG"))
    gray = tmp_path / "gray.png"
    Image.open(images[0]).convert("L").save(gray)
    (tmp_path / "notes.JPEG").write_text("not an image")
    Image.new("RGB", (20, 20)).save(tmp_path / "tiny.png")
    out = tmp_path / "out"
    bad = [str(tmp_path / name) for name in ("missing.jpg", "notes.JPEG", "tiny.png")]
    result = run(
        str(images[0]), str(gray), *bad,
        "--checkpoint", str(ckpt), "--out", str(out), "--visualize", "--steps", "3", "--distance", "120",
        "--compile", "off",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "missing.jpg: image file not found" in result.stderr
    assert "notes.JPEG: unreadable image" in result.stderr
    assert "tiny.png: image is 20x20" in result.stderr
    for name in (images[0].stem, "gray"):
        rec = json.loads((out / f"{name}.json").read_text())
        assert rec["class"] in ("car", "bus") and set(rec["class_scores"]) == {"car", "bus"}
        assert abs(sum(rec["class_probabilities"].values()) - 1) < 1e-3
        assert set(rec["pose_degrees"]) == {"azimuth", "elevation", "theta"} and rec["distance"] > 0
        assert Image.open(out / f"{name}.png").size == (128, 64 + 18)


def test_bad_checkpoint_and_class_are_clear_errors(checkpoint, tmp_path, capsys):
    root, ckpt = checkpoint
    image = next((root / "test-clean" / "images" / "car").glob("*.JPEG"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(ckpt.read_bytes()[:500])
    code, err = run_script("estimate_pose.py", [str(image), "--checkpoint", str(bad)], capsys)
    assert code == 2 and "unreadable checkpoint" in err
    code, err = run_script("estimate_pose.py", [str(image), "--checkpoint", str(ckpt), "--class", "sofa"], capsys)
    assert code == 2 and "not one of the model's classes" in err


def test_pose_settings_pass_through_and_bad_ones_are_clear_errors(checkpoint, tmp_path, capsys):
    root, ckpt = checkpoint
    image = next((root / "test-clean" / "images" / "car").glob("*.JPEG"))
    common = [str(image), "--checkpoint", str(ckpt), "--out", str(tmp_path), "--steps", "2", "--compile", "off"]

    def run(*args):
        return run_script("estimate_pose.py", list(args), capsys)

    code, err = run(*common, "--pose", "ranking=inliers", "--pose", "top_k=1")
    assert code == 0, err
    assert json.loads((tmp_path / f"{image.stem}.json").read_text())["distance"] > 0
    assert run(*common)[0] == 0
    one = json.loads((tmp_path / f"{image.stem}.json").read_text())  # --class-candidates 1, the default
    code, err = run(*common, "--class-candidates", "2")
    assert code == 0, err
    two = json.loads((tmp_path / f"{image.stem}.json").read_text())  # the pose under both classes, the better kept
    assert two["pose_score"] >= one["pose_score"] - 1e-5 and (
        two["class"] == one["class"] or two["pose_score"] > one["pose_score"]
    )
    code, err = run(*common, "--class-candidates", "0")
    assert code == 2 and "--class-candidates: expected >= 1, got 0" in err, err
    code, err = run(*common, "--pose", "ranking=votes")
    assert code == 2 and "ranking" in err and "votes" in err, err
    code, err = run(*common, "--pose", "nonsense=1")
    assert code == 2 and "--pose: unknown key(s) ['nonsense']" in err, err


def test_the_script_keeps_the_backbone_eager_unless_asked(checkpoint, tmp_path, monkeypatch):
    # Compiling pays only over many images of one size; this script runs images one at a time.
    import runpy

    import novum3d.inference.loading as checkpoints

    root, ckpt = checkpoint
    image = next((root / "test-clean" / "images" / "car").glob("*.JPEG"))
    real, asked = checkpoints.load_model, []

    def spy(path, device="cpu", compile=None):
        asked.append(compile)
        return real(path, device, compile="off")  # never compile on the test machine

    monkeypatch.setattr(checkpoints, "load_model", spy)
    main = runpy.run_path("scripts/estimate_pose.py", run_name="novum3d_test")["main"]
    common = [str(image), "--checkpoint", str(ckpt), "--out", str(tmp_path), "--steps", "1", "--distance", "120"]
    assert main(common) == 0
    assert main([*common, "--compile", "auto"]) == 0
    assert asked == ["off", "auto"]


def test_a_stride_4_model_trains_and_estimates_poses_from_its_checkpoint(checkpoint, tmp_path, monkeypatch):
    import runpy

    import novum3d.inference.pipeline as pipeline

    root, _ = checkpoint
    cfg = tiny_config(root, tmp_path / "run", **{"model.stride": 4, "optim.epochs": 1, "train.max_steps_per_epoch": 1})
    Trainer(cfg, quiet=True).fit()
    model, loaded = load_model(tmp_path / "run" / "last.pt", compile="off")
    assert loaded.model.stride == 4 and model.stride == 4
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 16, 16, 16)
    # The script's map intrinsics follow the model's stride: the principal point is the map's centre.
    real, seen = pipeline.predict_by_class, []

    def spy(model, batches, *args, **kwargs):
        def watched():
            for images, K_map, mask, tags in batches:
                seen.append((tuple(model(images).shape[-2:]), K_map.clone()))
                yield images, K_map, mask, tags

        return real(model, watched(), *args, **kwargs)

    monkeypatch.setattr(pipeline, "predict_by_class", spy)
    main = runpy.run_path("scripts/estimate_pose.py", run_name="novum3d_test")["main"]
    image = next((root / "test-clean" / "images" / "car").glob("*.JPEG"))
    out = tmp_path / "out"
    assert main([str(image), "--checkpoint", str(tmp_path / "run" / "last.pt"), "--out", str(out), "--steps", "3"]) == 0
    (h, w), K = seen[0]
    assert (h, w) == (16, 16) and float(K[..., 0, 2]) == w / 2 and float(K[..., 1, 2]) == h / 2
    rec = json.loads((out / f"{image.stem}.json").read_text())
    assert rec["class"] in ("car", "bus") and rec["distance"] > 0


def test_a_checkpoint_from_before_the_stride_option_loads_at_stride_8(checkpoint, tmp_path):
    _, ckpt = checkpoint
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    del state["config"]["model"]["stride"]
    assert not any(".lateral1." in k or ".fuse1." in k for k in state["model"])
    torch.save(state, tmp_path / "old.pt")
    model, cfg = load_model(tmp_path / "old.pt", compile="off")
    assert cfg.model.stride == 8 and model.stride == 8
    assert model(torch.rand(1, 3, 64, 64)).shape[-2:] == (8, 8)


def test_a_folder_of_mixed_sizes_runs_in_batches_and_a_second_run_reads_its_templates(checkpoint, tmp_path, capsys):
    import runpy

    root, ckpt = checkpoint
    folder = tmp_path / "photos"
    folder.mkdir()
    sources = sorted(root.glob("*/images/*/*.JPEG"))[:3]
    for src, size in zip(sources, [(64, 64), (120, 80), (70, 150)], strict=True):
        Image.open(src).resize(size).save(folder / f"{src.stem}_{size[0]}x{size[1]}.png")
    (folder / "broken.png").write_text("not an image")
    main = runpy.run_path("scripts/estimate_pose.py", run_name="novum3d_test")["main"]
    out, cache = tmp_path / "out", tmp_path / "templates"
    common = [str(folder), "--checkpoint", str(ckpt), "--out", str(out), "--steps", "1", "--batch", "2",
              "--workers", "0", "--template-cache", str(cache)]  # fmt: skip
    assert main(common) == 1  # the broken file
    first = capsys.readouterr()
    lines = [json.loads(line) for line in (out / "summary.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and next(r for r in lines if "error" in r)["image"].endswith("broken.png")
    records = {Path(r["image"]).name: r for r in lines if "error" not in r}
    assert len(records) == 3 and all(len(line.split(": ")) >= 2 for line in first.out.splitlines())
    for name, rec in records.items():
        w, h = (int(v) for v in name.rsplit("_", 1)[1].removesuffix(".png").split("x"))
        assert rec["camera"] == {"focal": 1.0, "viewport": 3000.0, "principal": [w / 2, h / 2], "image_size": [w, h]}
        assert rec["input"]["size"] == [64, 64] and rec["seconds"] > 0
        assert json.loads((out / f"{Path(name).stem}.json").read_text()) == rec
    assert "templates rendered for 0 views" not in first.err and list(cache.glob("*.pt"))
    assert main(common) == 1
    second = capsys.readouterr()
    assert "templates rendered for 0 views" in second.err, second.err
    again = {Path(r["image"]).name: r for r in map(json.loads, (out / "summary.jsonl").read_text().splitlines())}
    for name, rec in records.items():
        assert again[name]["pose_radians"] == pytest.approx(rec["pose_radians"], abs=1e-5)
    assert main([*common[:-2], "--template-cache", "off", "--size", "50"]) == 2
    assert "--size: expected HEIGHT WIDTH" in capsys.readouterr().err


def test_the_benchmarks_photo_path_equals_evaluation_at_the_training_size(checkpoint, tmp_path):
    """At the training size the letterbox is the identity and one focal serves all images: the command's
    path (the benchmark's accuracy) gives evaluate.py's "full" protocol records."""
    from benchmarks.estimate_pose import photo_records, write_photographs
    from novum3d.evaluation.cache import RecordCache
    from novum3d.evaluation.run import evaluate_split, open_eval_splits
    from novum3d.inference.photos import centred_intrinsics
    from novum3d.inference.pose import PoseConfig, PoseEstimator

    root, ckpt = checkpoint
    model, cfg = load_model(ckpt, compile="off")
    split = open_eval_splits(root, "synthetic", model.classes)["clean"]
    size = tuple(cfg.data.image_size)
    cfg_pose = PoseConfig(steps=3, backend="torch")
    reference = float(centred_intrinsics(1.0, 3000.0, size, downsample=model.stride)[0, 0, 0])
    ours = photo_records(model, split.items, PoseEstimator(cfg_pose, reference_focal=reference), size, batch=3)
    cache = RecordCache(tmp_path / "records.jsonl", {"test": 1})
    theirs = evaluate_split(model, split, PoseEstimator(cfg_pose), cache, size, protocols=("full",))
    assert [r["id"] for r in ours] == [r["id"] for r in theirs] and len(ours) >= 2
    for a, b in zip(ours, theirs, strict=True):
        assert a["predicted"] == b["full"]["predicted"]
        assert a["pose_error"] == pytest.approx(b["full"]["pose_error"], abs=1e-4)
    (tmp_path / "photos").mkdir()
    paths = write_photographs(tmp_path / "photos", 7)
    sizes = [Image.open(p).size for p in paths]
    assert len(sizes) == 7 and len(set(sizes)) >= 5 and min(min(s) for s in sizes) >= 64


def test_the_warm_up_runs_the_whole_path_on_a_blank_batch(checkpoint):
    # The command does this on CUDA only; the path is the same on the CPU.
    from novum3d.inference.photos import warm_up
    from novum3d.inference.pose import PoseConfig, PoseEstimator

    _, ckpt = checkpoint
    model, _ = load_model(ckpt, compile="off")
    est = PoseEstimator(PoseConfig(steps=2, azimuth_bins=4, backend="torch"), reference_focal=46.875)
    masks = []
    score_maps = model.score_maps
    model.score_maps = lambda maps, pixel_mask=None: masks.append(pixel_mask) or score_maps(maps, pixel_mask)
    warm_up(model, est, (64, 64), 2, 1.0, 3000.0, label=1)
    # Filling the input and letterboxed, at the batch and alone: each variant of the class scorer is ready.
    assert [None if m is None else tuple(m.shape) for m in masks] == [None, None, (2, 8, 8), (1, 8, 8)]
    assert 0 < int(masks[2].sum()) < 2 * 8 * 8 and torch.equal(masks[3][0], masks[2][0])
    assert est.rendered["template"] > 0 and est.rendered["forward_backward"] == 2 * (2 * 2 * 3)
    assert [key[0] for key in est._templates] == ["bus"]
