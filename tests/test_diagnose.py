"""scripts/diagnose.py: the votes per cell kind (by hand and on tiny data), the pose error by angle and
elevation band, and whether the objective or the search fails (novum3d.evaluation.diagnosis)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from novum3d.evaluation.diagnosis.command import main as diagnose
from novum3d.evaluation.diagnosis.objective import class_choice_bound, class_switches, distance_check, objective_check
from novum3d.evaluation.diagnosis.pose_errors import error_parts
from novum3d.evaluation.diagnosis.votes import KINDS, cell_kinds, cell_winners, interior
from novum3d.inference.loading import load_model
from tests.test_estimate_pose_script import checkpoint  # noqa: F401  (module fixture: tiny data, car and bus)


def test_cell_kinds_take_the_majority_of_each_cell():
    obj = torch.zeros(1, 16, 16, dtype=torch.bool)
    occ = torch.zeros_like(obj)
    obj[0, :8, :] = True  # top half: object
    occ[0, :8, :6] = True  # its left part (6 of 8 columns of the first cell) hidden
    kinds = cell_kinds(obj, occ, (2, 2))
    assert kinds.tolist() == [[[0, 1], [2, 2]]]  # occluder, visible object / background, background
    assert KINDS[0] == "occluder" and KINDS[1] == "visible object" and KINDS[2] == "background"


def test_interior_cells_have_no_occluder_neighbour():
    kinds = torch.full((1, 5, 5), 1)
    kinds[0, 0, 0] = 0  # one occluder cell in a corner
    inner = interior(kinds)
    assert not inner[0, :2, :2].any()  # the occluder and its neighbours
    assert inner[0, 2:, :].all() and inner[0, :, 2:].all()


def test_cell_winners_are_the_best_class_or_the_bank():
    class V:  # two classes of two Gaussians in 2-d, one bank vector
        features = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.6, 0.8]]])
        valid = torch.tensor([[True, True], [True, False]])  # class 1's second Gaussian is padding
        bank = torch.tensor([[0.0, -1.0]])

    model = type("M", (), {"volumes": V})()
    cells = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])  # 4 cells
    maps = F.normalize(cells, dim=-1).T.reshape(1, 2, 2, 2)
    # [1,0] -> class 0; [-1,0] -> class 1; [.6,.8] -> class 0 (its [0,1] scores .8; class 1's match is padding);
    # [0,-1] -> the bank (index Y = 2)
    assert cell_winners(model, maps).flatten().tolist() == [0, 1, 0, 2]


def test_script_counts_every_cell_and_its_accuracies_are_consistent(checkpoint, tmp_path, capsys):  # noqa: F811
    root, ckpt = checkpoint
    out = tmp_path / "votes.json"
    argv = ["--checkpoint", str(ckpt), "--data", str(root), "--split", "occluded-L3", "--workers", "0",
            "--device", "cpu", "--json", str(out)]  # fmt: skip
    assert diagnose(["votes", *argv]) == 0
    result = json.loads(out.read_text())
    model, cfg = load_model(ckpt, "cpu")
    h, w = (s // model.stride for s in cfg.data.image_size)
    counted = sum(result["votes"][k]["cells"] for k in KINDS[:3])
    assert counted == result["images"] * h * w  # every cell is one of the three kinds
    assert result["votes"]["occluder"]["cells"] > 0
    for kind in KINDS:
        v = result["votes"][kind]
        if v["cells"]:
            assert v["true class"] + v["other class"] + v["bank"] == pytest.approx(100.0)
    assert "| occluder |" in capsys.readouterr().out
    # A clean split has no occluder masks and no occluder cells; an occluded split without them is an error.
    assert diagnose(["votes", *argv[:5], "clean", *argv[6:]]) == 0
    assert json.loads(out.read_text())["votes"]["occluder"]["cells"] == 0
    capsys.readouterr()
    next((root / "test-occluded" / "occluders").rglob("*.png")).unlink()
    assert diagnose(["votes", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no occluder mask" in err


# ---- pose-errors -------------------------------------------------------------------------------
def test_pose_error_parts_splits_the_error_by_angle_and_elevation_band():
    truth = {
        "a/1": {"azimuth": 0.1, "elevation": 1.0, "theta": 0.0},  # above a training range of [0, 0.6]
        "a/2": {"azimuth": 6.2, "elevation": 0.3, "theta": 0.2},  # inside
        "a/3": {"azimuth": 3.0, "elevation": -0.4, "theta": -0.1},  # below
    }

    def row(image, elevation, azimuth, theta, error):
        return {"id": image, "p": {"pose": {"azimuth": azimuth, "elevation": elevation, "theta": theta},
                                   "pose_error": error}}  # fmt: skip

    rows = [
        row("a/1", 0.5, 0.3, 0.05, 0.6),  # 0.5 rad lower: a miss
        row("a/2", 0.3, 0.05, 0.2, 0.1),  # azimuth across 0: 0.05 - 6.2 + 2 pi = 0.133 rad off
        row("a/3", -0.2, 3.0, -0.1, 0.2),
        {"id": "a/9", "p": {"pose": None, "pose_error": None}},  # no truth, no pose: left out
    ]
    parts = error_parts(rows, truth, (0.0, 0.6), "p")
    assert set(parts) == {"above", "inside", "below"}
    above, inside, below = parts["above"], parts["inside"], parts["below"]
    assert above["images"] == 1 and above["acc_pi_6"] == 0.0
    assert above["elevation_error_deg"] == pytest.approx(-28.648, abs=1e-3)  # -0.5 rad
    assert above["median_abs_azimuth_error_deg"] == pytest.approx(11.459, abs=1e-3)
    assert above["median_abs_theta_error_deg"] == pytest.approx(2.865, abs=1e-3)
    assert inside["acc_pi_6"] == 100.0
    assert inside["median_abs_azimuth_error_deg"] == pytest.approx(math.degrees(0.05 - 6.2 + 2 * math.pi), abs=1e-3)
    assert below["elevation_error_deg"] == pytest.approx(11.459, abs=1e-3) and below["true_elevation_deg"] < 0


def test_pose_error_parts_script_reads_caches_and_annotations(tmp_path, capsys):
    from novum3d.data.synthetic import generate
    from novum3d.evaluation.run import open_eval_splits

    root = tmp_path / "tiny"
    generate(root, "tiny", seed=0, categories=["car", "bus"])
    items = open_eval_splits(root, "synthetic", [])["ood-pose"].items
    cache = tmp_path / "ood-pose.jsonl"
    lines = [json.dumps({"format": 2})]
    for it in items:  # every estimate 0.1 rad too low, azimuth and theta right
        a = it.annotation
        pose = {"azimuth": a.azimuth, "elevation": a.elevation - 0.1, "theta": a.theta, "distance": a.distance}
        lines.append(json.dumps({"id": f"{it.category}/{it.name}", "full": {"pose": pose, "pose_error": 0.1}}))
    cache.write_text("\n".join(lines) + "\n")
    out = tmp_path / "B.md"
    plot = tmp_path / "elevation.png"
    assert diagnose(["pose-errors", str(cache), "--data", str(root), "--split", "ood-pose", "--protocols", "full",
                       "--append", str(out), "--plot", str(plot)]) == 0  # fmt: skip
    from PIL import Image

    assert Image.open(plot).size == (640, 480)
    text = capsys.readouterr().out
    assert out.read_text().strip() == text.strip()
    table = [line for line in text.splitlines() if line.startswith("| full |")]
    assert sum(int(line.split("|")[3]) for line in table) == len(items) == 2
    assert all(" -5.7 | 0.0 | 0.0 |" in line and "| 100.0 |" in line for line in table)
    assert diagnose(["pose-errors", str(cache), "--data", str(root), "--split", "nope"]) == 2
    assert "unknown 'nope'" in capsys.readouterr().err


# ---- objective ---------------------------------------------------------------------------------
def test_pose_objective_tells_a_wrong_optimum_from_a_missed_one(tmp_path, capsys):

    def row(image, est_error, est_score, ref_error, ref_score):
        return {"id": image, "true-class": {"pose_error": est_error, "score": est_score},
                "from-truth": {"pose_error": ref_error, "score": ref_score}}  # fmt: skip

    rows = [
        row("a/1", 2.0, 0.50, 0.1, 0.40),  # wrong pose scores higher: the objective prefers it
        row("a/2", 2.0, 0.30, 0.1, 0.45),  # right pose scores higher: the search missed it
        row("a/3", 1.0, 0.30, 0.1, 0.30),  # a tie counts as the objective's preference
        row("a/4", 0.1, 0.60, 0.1, 0.60),  # both right: not a case
        row("a/5", 2.0, 0.20, 1.5, 0.25),  # both wrong: not a case
        {"id": "a/6", "true-class": {"pose_error": 2.0, "score": None}},  # no scores: left out
    ]
    c = objective_check(rows, "true-class", "from-truth")
    assert c["images"] == 5 and c["cases"] == 3
    assert c["estimate_right"] == 20.0 and c["reference_right"] == 80.0
    assert c["objective_prefers_wrong"] == pytest.approx(200 / 3) and c["search_missed"] == pytest.approx(100 / 3)
    assert c["median_score_gap"] == pytest.approx(0.0)
    cache = tmp_path / "val.jsonl"
    cache.write_text("\n".join([json.dumps({"key": {"format": 3}}), *(json.dumps(r) for r in rows)]) + "\n")
    assert diagnose(["objective", str(cache)]) == 0
    assert "| pooled | 5 | 20.0 | 80.0 | 3 | 66.7 | 33.3 | 0.0000 |" in capsys.readouterr().out
    old = tmp_path / "old.jsonl"  # a format-2 cache has no scores
    old.write_text(json.dumps({"key": {}}) + "\n" + json.dumps({"id": "a/1", "true-class": {"pose_error": 1.0}}) + "\n")
    assert diagnose(["objective", str(old)]) == 2
    err = capsys.readouterr().err
    assert "no record has scores" in err and str(old) in err  # names the cache
    # --symmetric: a twin pose of a symmetric class is right, so it is not a case.
    for r in rows[:5]:
        for p in ("true-class", "from-truth"):
            r[p]["pose_error_symmetric"] = r[p]["pose_error"]
    rows[0]["true-class"]["pose_error_symmetric"] = 0.05
    assert objective_check(rows[:5], "true-class", "from-truth", "pose_error_symmetric")["cases"] == 2
    # --threshold 10 (Acc@pi/18): a 0.3 rad (17 deg) search error against a 0.1 rad one from the truth
    # is a case there and not at pi/6; a threshold outside (0, 180] degrees is a usage error.
    near = [row("b/1", 0.3, 0.50, 0.1, 0.40), row("b/2", 0.3, 0.30, 0.1, 0.45)]
    assert objective_check(near, "true-class", "from-truth")["cases"] == 0
    c = objective_check(near, "true-class", "from-truth", threshold=math.radians(10))
    assert c["cases"] == 2 and c["objective_prefers_wrong"] == 50.0 and c["reference_right"] == 100.0
    cache.write_text("\n".join([json.dumps({"key": {"format": 3}}), *(json.dumps(r) for r in near)]) + "\n")
    assert diagnose(["objective", str(cache), "--threshold", "10"]) == 0
    assert "| pooled | 2 | 0.0 | 100.0 | 2 | 50.0 | 50.0 | 0.0250 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        diagnose(["objective", str(cache), "--threshold", "0"])
    assert "--threshold" in capsys.readouterr().err


def test_class_choice_bound_counts_only_misclassified_images_the_true_class_outscores(tmp_path, capsys):

    def full(image, label, predicted, error, score):
        return {"id": image, "label": label, "full": {"predicted": predicted, "pose_error": error, "score": score}}

    def true(image, error, score):
        return {"id": image, "true-class": {"pose_error": error, "score": score}}

    rows = [full("a/1", 0, 1, 2.0, 0.40), full("a/2", 0, 1, 2.0, 0.40), full("a/3", 0, 0, 0.1, 0.50),
            full("a/4", 1, 0, 2.0, 0.40)]  # fmt: skip
    truths = [true("a/1", 0.1, 0.45),  # misclassified, the true class outscores it and is right: gained
              true("a/2", 0.1, 0.35),  # misclassified, the predicted class scores higher: kept
              true("a/3", 2.0, 0.90),  # classified right: never switched, whatever the scores
              true("a/4", 2.0, 0.45)]  # switched, but its pose is wrong too  # fmt: skip
    c = class_choice_bound([{**t, **r} for r, t in zip(rows, truths, strict=True)])
    assert c == {"images": 4, "misclassified": 3, "true_scores_higher": pytest.approx(200 / 3), "accuracy": 25.0,
                 "bound": 50.0}  # fmt: skip
    a, b = tmp_path / "full.jsonl", tmp_path / "true.jsonl"
    for path, recs in ((a, rows), (b, truths)):
        path.write_text("\n".join([json.dumps({"key": {"format": 3}}), *(json.dumps(r) for r in recs)]) + "\n")
    assert diagnose(["objective", str(a), "--join", str(b), "--class-choice"]) == 0
    assert "| pooled | 4 | 3 | 66.7 | 25.0 | 50.0 |" in capsys.readouterr().out
    assert diagnose(["objective", str(a), "--class-choice"]) == 2  # no true-class protocol without --join
    assert "true-class" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        diagnose(["objective", str(a), "--join", str(b), str(b), "--class-choice"])
    assert "--join: one cache per positional cache" in capsys.readouterr().err


def test_switches_count_the_classes_one_protocol_changes_against_another(tmp_path, capsys):

    def row(image, label, base_class, base_error, other_class, other_error):
        return {"id": image, "label": label, "full": {"predicted": base_class, "pose_error": base_error},
                "top2-classes": {"predicted": other_class, "pose_error": other_error}}  # fmt: skip

    rows = [row("a/1", 0, 1, 2.0, 0, 0.1),  # switched to the true class, pose right
            row("a/2", 0, 1, 2.0, 0, 0.1),  # the same
            row("a/3", 0, 0, 0.1, 1, 2.0),  # switched away from it
            row("a/4", 0, 1, 2.0, 2, 2.0),  # switched between two wrong classes
            row("a/5", 1, 1, 2.0, 1, 2.0)]  # kept  # fmt: skip
    c = class_switches(rows, "full", "top2-classes")
    assert c == {"images": 5, "switched": 4, "to_true": 2, "from_true": 1, "base_class": 40.0, "other_class": 60.0,
                 "base_pose": 20.0, "other_pose": 40.0}  # fmt: skip
    cache = tmp_path / "l3.jsonl"
    cache.write_text("\n".join([json.dumps({"key": {"format": 3}}), *(json.dumps(r) for r in rows)]) + "\n")
    assert diagnose(["objective", str(cache), "--switches", "full,top2-classes"]) == 0
    assert "| pooled | 5 | 4 | 2 | 1 | 40.0 | 60.0 | 20.0 | 40.0 |" in capsys.readouterr().out
    assert diagnose(["objective", str(cache), "--switches", "full,reference"]) == 2  # no such protocol in the cache
    assert "'reference'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        diagnose(["objective", str(cache), "--switches", "full"])
    assert "--switches: expected BASE,OTHER" in capsys.readouterr().err


def test_pose_objective_distances_against_the_priors(tmp_path, capsys):

    def row(image, label, est_error, est_d, ref_error, ref_d):
        return {"id": image, "label": label,
                "true-class": {"pose_error": est_error, "score": 0.5, "pose": {"distance": est_d}},
                "from-truth": {"pose_error": ref_error, "score": 0.4, "pose": {"distance": ref_d}}}  # fmt: skip

    car, bus = {"distance_low": 9.0, "distance_high": 11.0}, {"distance_low": 18.0, "distance_high": 22.0}
    priors = {"classes": ["car", "bus"], "per_class": {"car": car, "bus": bus}}
    rows = [
        row("a/1", 0, 2.0, 8.0, 0.1, 10.0),  # nearer, outside the car's prior; the right one inside
        row("a/2", 0, 2.0, 10.0, 0.1, 10.0),  # same distance, both inside
        row("a/3", 1, 2.0, 16.0, 0.1, 17.0),  # bus: both nearer than its prior
        row("a/4", 1, 2.0, 30.0, 0.1, 20.0),  # farther, outside
        row("a/5", 0, 0.1, 5.0, 0.1, 10.0),  # both right: not a case
    ]
    d = distance_check(rows, priors, "true-class", "from-truth")
    assert d["cases"] == 4
    assert d["wrong_outside"] == 75.0 and d["right_outside"] == 25.0
    assert d["ratio_median"] == pytest.approx((16 / 17 + 1.0) / 2)
    assert d["ratio_q1"] <= d["ratio_median"] <= d["ratio_q3"]
    # By the symmetry-aware error (--symmetric), a twin pose right by symmetry is not a case.
    for r in rows:
        for p in ("true-class", "from-truth"):
            r[p]["pose_error_symmetric"] = r[p]["pose_error"]
    rows[0]["true-class"]["pose_error_symmetric"] = 0.05
    assert distance_check(rows, priors, "true-class", "from-truth", "pose_error_symmetric")["cases"] == 3
    cache = tmp_path / "L3.jsonl"
    key = {"key": {"format": 3, "settings": {"priors": priors}}}
    cache.write_text("\n".join([json.dumps(key), *(json.dumps(r) for r in rows)]) + "\n")
    assert diagnose(["objective", str(cache), "--distances"]) == 0
    out = capsys.readouterr().out
    assert "| 4 | 0.84 | 0.97 | 1.38 | " in out and "| 75.0 | 25.0 | nan | nan |" in out, out  # no angle ranges
    # Elevation and theta against the prior's ranges, widened by --angle-margin.
    for prior in (car, bus):
        prior.update(elevation_low=0.0, elevation_high=0.5, theta_low=-0.1, theta_high=0.1)
    for r in rows:
        for p in ("true-class", "from-truth"):
            r[p]["pose"].update(elevation=0.2, theta=0.0)
    rows[0]["true-class"]["pose"]["elevation"] = 0.7  # 11.5 deg above the range
    rows[1]["true-class"]["pose"]["theta"] = 0.15  # 2.9 deg beyond it
    rows[2]["from-truth"]["pose"]["theta"] = -0.12  # the right pose 1.1 deg beyond it
    d = distance_check(rows, priors, "true-class", "from-truth")
    assert d["wrong_angles_outside"] == 50.0 and d["right_angles_outside"] == 25.0
    d = distance_check(rows, priors, "true-class", "from-truth", angle_margin=math.radians(5))
    assert d["wrong_angles_outside"] == 25.0 and d["right_angles_outside"] == 0.0
    cache.write_text("\n".join([json.dumps(key), *(json.dumps(r) for r in rows)]) + "\n")
    assert diagnose(["objective", str(cache), "--distances", "--angle-margin", "5"]) == 0
    out = capsys.readouterr().out
    assert "(+5 deg)" in out and "| 75.0 | 25.0 | 25.0 | 0.0 |" in out, out
    bare = tmp_path / "bare.jsonl"  # a cache without priors says so, naming the file
    bare.write_text("\n".join([json.dumps({"key": {"format": 3}}), *(json.dumps(r) for r in rows)]) + "\n")
    assert diagnose(["objective", str(bare), "--distances"]) == 2
    err = capsys.readouterr().err
    assert "no pose priors" in err and str(bare) in err
