import json
import math
import subprocess
import sys

from PIL import Image

from novum3d.evaluation.metrics import pose_errors, summarize
from novum3d.evaluation.report import markdown_table
from tests.test_estimate_pose_script import checkpoint  # noqa: F401  (module fixture)


def test_summaries_by_hand():
    records = [
        {"label": 0, "predicted": 0, "pose_error": 0.1},
        {"label": 0, "predicted": 1, "pose_error": 0.2},
        {"label": 1, "predicted": 1, "pose_error": 1.0},
        {"label": 1, "predicted": 1, "pose_error": 0.01},
    ]
    s = summarize(records, ["a", "b"])
    assert s["accuracy"] == 0.75 and s["acc_pi_6"] == 0.75 and s["acc_pi_18"] == 0.5  # 0.1, 0.01 < pi/18
    assert math.isclose(s["median_error_deg"], math.degrees(0.15))
    assert s["class_and_pose_right"] == 0.5 and s["confusion"] == [[1, 1], [0, 2]]
    assert s["per_class"]["b"]["accuracy"] == 1.0 and s["per_class"]["a"]["images"] == 2
    assert "| x | 4 | 75.0 | 75.0 | 50.0 | 8.6 | 50.0 |" in markdown_table({"x": s})


def test_pose_errors_on_known_rotations():
    gt = {"azimuth": [0.3, 1.0], "elevation": [0.2, 0.0], "theta": [0.0, 0.0]}
    pred = {"azimuth": [0.3, 1.0 + math.pi / 4], "elevation": [0.2, 0.0], "theta": [0.0, 0.0]}
    err = pose_errors(pred, gt)
    assert err[0] < 1e-6 and math.isclose(float(err[1]), math.pi / 4, rel_tol=1e-6)


def test_evaluate_script_writes_reports_and_resumes(checkpoint, tmp_path):  # noqa: F811
    root, ckpt = checkpoint
    splits = "clean,occluded-L1,occluded-L2,occluded-L3,ood-pose"
    args = [sys.executable, "scripts/evaluate.py", "--checkpoint", str(ckpt), "--data", str(root),
            "--splits", splits, "--out", str(tmp_path), "--steps", "2"]  # fmt: skip
    run = subprocess.run(args, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    report = json.loads((tmp_path / "results.json").read_text())
    assert set(report["splits"]) == {"clean", "occluded-L1", "occluded-L2", "occluded-L3", "ood-pose"}
    assert report["splits"]["clean"]["images"] == 2 and "| occluded-L2 | 2 |" in (tmp_path / "results.md").read_text()
    assert Image.open(tmp_path / "accuracy_vs_occlusion.png").size == (640, 420)
    assert Image.open(tmp_path / "pose_error_cdf.png").size == (640, 420)
    cached = (tmp_path / "cache" / "clean.jsonl").read_text().splitlines()
    assert len(cached) == 1 + 2 and "key" in json.loads(cached[0])  # the key, then one record per image
    again = subprocess.run(args, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and (tmp_path / "cache" / "clean.jsonl").read_text().splitlines() == cached
    assert json.loads((tmp_path / "results.json").read_text())["splits"] == report["splits"]
    bad = subprocess.run([*args[:-4], "--splits", "sunny"], capture_output=True, text=True, check=False)
    assert bad.returncode == 2 and "unknown ['sunny']" in bad.stderr
