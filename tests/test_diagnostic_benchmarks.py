"""benchmarks.occluder_votes (cell kinds, vote shares by hand, the script on tiny data),
benchmarks.eval_throughput, pose_error_parts, pose_objective and pose_table."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from benchmarks.occluder_votes import KINDS, cell_kinds, cell_winners, interior, main
from novum3d.inference.checkpoint import load_model
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
    assert main(argv) == 0
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
    assert main([*argv[:5], "clean", *argv[6:]]) == 0
    assert json.loads(out.read_text())["votes"]["occluder"]["cells"] == 0
    capsys.readouterr()
    next((root / "test-occluded" / "occluders").rglob("*.png")).unlink()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no occluder mask" in err


def test_eval_throughput_prints_a_row_per_pass(checkpoint, capsys):  # noqa: F811
    from benchmarks.eval_throughput import main as throughput

    root, ckpt = checkpoint
    argv = ["--checkpoint", str(ckpt), "--data", str(root), "--pose-images", "2", "--workers", "0,1", "--device", "cpu"]
    assert throughput(argv) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "img/s" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| classify_split, pass 1", "| classify_split, pass 2",
                                                 "| evaluate_split (pose, full), 0 loader workers",
                                                 "| evaluate_split (pose, full), 1 loader workers"]  # fmt: skip
    assert all(float(r.split(" | ")[2].rstrip(" |").replace(",", "")) > 0 for r in rows)
    # Each protocol is timed alone; an unknown one is a usage error before anything loads.
    assert throughput([*argv[:7], "0", "--device", "cpu", "--protocols", "full,top2-classes"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| evaluate_split")]
    assert [r.split(" | ")[0] for r in rows] == ["| evaluate_split (pose, full), 0 loader workers",
                                                 "| evaluate_split (pose, top2-classes), 0 loader workers"]  # fmt: skip
    assert throughput([*argv, "--protocols", "full,fastest"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown ['fastest']" in err


# ---- benchmarks.pose_error_parts ----------------------------------------------------------------
def test_pose_error_parts_splits_the_error_by_angle_and_elevation_band():
    from benchmarks.pose_error_parts import error_parts

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
    from benchmarks.pose_error_parts import main as parts_main
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
    assert parts_main([str(cache), "--data", str(root), "--split", "ood-pose", "--protocols", "full",
                       "--benchmarks", str(out), "--plot", str(plot)]) == 0  # fmt: skip
    from PIL import Image

    assert Image.open(plot).size == (640, 480)
    text = capsys.readouterr().out
    assert out.read_text().strip() == text.strip()
    table = [line for line in text.splitlines() if line.startswith("| full |")]
    assert sum(int(line.split("|")[3]) for line in table) == len(items) == 2
    assert all(" -5.7 | 0.0 | 0.0 |" in line and "| 100.0 |" in line for line in table)
    assert parts_main([str(cache), "--data", str(root), "--split", "nope"]) == 2
    assert "unknown 'nope'" in capsys.readouterr().err


# ---- benchmarks.pose_objective -------------------------------------------------------------------
def test_pose_objective_tells_a_wrong_optimum_from_a_missed_one(tmp_path, capsys):
    from benchmarks.pose_objective import main as objective_main
    from benchmarks.pose_objective import objective_check

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
    assert objective_main([str(cache)]) == 0
    assert "| pooled | 5 | 20.0 | 80.0 | 3 | 66.7 | 33.3 | 0.0000 |" in capsys.readouterr().out
    old = tmp_path / "old.jsonl"  # a format-2 cache has no scores
    old.write_text(json.dumps({"key": {}}) + "\n" + json.dumps({"id": "a/1", "true-class": {"pose_error": 1.0}}) + "\n")
    assert objective_main([str(old)]) == 2
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
    assert objective_main([str(cache), "--threshold", "10"]) == 0
    assert "| pooled | 2 | 0.0 | 100.0 | 2 | 50.0 | 50.0 | 0.0250 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        objective_main([str(cache), "--threshold", "0"])
    assert "--threshold" in capsys.readouterr().err


def test_class_choice_bound_counts_only_misclassified_images_the_true_class_outscores(tmp_path, capsys):
    from benchmarks.pose_objective import class_choice_bound
    from benchmarks.pose_objective import main as objective_main

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
    assert objective_main([str(a), "--join", str(b), "--class-choice"]) == 0
    assert "| pooled | 4 | 3 | 66.7 | 25.0 | 50.0 |" in capsys.readouterr().out
    assert objective_main([str(a), "--class-choice"]) == 2  # no true-class protocol without --join
    assert "true-class" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        objective_main([str(a), "--join", str(b), str(b), "--class-choice"])
    assert "--join: one cache per positional cache" in capsys.readouterr().err


def test_switches_count_the_classes_one_protocol_changes_against_another(tmp_path, capsys):
    from benchmarks.pose_objective import class_switches
    from benchmarks.pose_objective import main as objective_main

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
    assert objective_main([str(cache), "--switches", "full,top2-classes"]) == 0
    assert "| pooled | 5 | 4 | 2 | 1 | 40.0 | 60.0 | 20.0 | 40.0 |" in capsys.readouterr().out
    assert objective_main([str(cache), "--switches", "full,reference"]) == 2  # no such protocol in the cache
    assert "'reference'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        objective_main([str(cache), "--switches", "full"])
    assert "--switches: expected BASE,OTHER" in capsys.readouterr().err


def test_pose_objective_distances_against_the_priors(tmp_path, capsys):
    from benchmarks.pose_objective import distance_check
    from benchmarks.pose_objective import main as objective_main

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
    assert objective_main([str(cache), "--distances"]) == 0
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
    assert objective_main([str(cache), "--distances", "--angle-margin", "5"]) == 0
    out = capsys.readouterr().out
    assert "(+5 deg)" in out and "| 75.0 | 25.0 | 25.0 | 0.0 |" in out, out
    bare = tmp_path / "bare.jsonl"  # a cache without priors says so, naming the file
    bare.write_text("\n".join([json.dumps({"key": {"format": 3}}), *(json.dumps(r) for r in rows)]) + "\n")
    assert objective_main([str(bare), "--distances"]) == 2
    err = capsys.readouterr().err
    assert "no pose priors" in err and str(bare) in err


def test_pose_table_pools_seeds_and_averages_the_asymmetric_classes(tmp_path, capsys):
    from benchmarks import pose_table

    def write(name, acc6, car, bottle):
        per_class = {"car": {"images": 2, "acc_pi_6": car}, "bus": {"images": 0},
                     "bottle": {"images": 2, "acc_pi_6": bottle}}  # fmt: skip
        clean = {"images": 4, "accuracy": 1.0, "acc_pi_6": acc6, "acc_pi_18": 0.25, "median_error_deg": 10.0,
                 "per_class": per_class}  # fmt: skip
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"by_protocol": {"full": {"clean": clean, "val": clean}}}))
        return folder

    folders = [write("m-seed0-max", 0.5, 1.0, 0.0), write("m-seed1-max", 0.75, 0.5, 1.0)]
    folders.append(write("m-seed0-mean", 1, 1, 1))
    assert pose_table.main([*map(str, folders), "--splits", "clean"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| m-")]
    # Seeds pooled by name; the asymmetric mean skips bottle (a solid of revolution) and classes without images.
    assert rows == [
        "| m-max | 2 | clean | full | 8 | 62.5 +- 12.5 | 25.0 +- 0.0 | 10.0 +- 0.0 | 75.0 +- 25.0 | 100.0 +- 0.0 |",
        "| m-mean | 1 | clean | full | 4 | 100.0 | 25.0 | 10.0 | 100.0 | 100.0 |",
    ]
    assert pose_table.main([str(tmp_path / "missing")]) == 2
    (tmp_path / "missing").mkdir()
    (tmp_path / "missing" / "results.json").write_text("[]")
    assert pose_table.main([str(tmp_path / "missing")]) == 2


def small_pose_run(out, *extra: str, steps: int = 1) -> list[str]:
    """``benchmarks.inference`` arguments for pose rows alone on two 96x96 oracle images with a few
    templates (the torch renderer is slow on a CPU), ``extra`` flags, and the table written to ``out``."""
    small = [f"steps={steps}", "azimuth_bins=4", "elevations_deg=[0.0]", "thetas_deg=[0.0]", "distance_factors=[1.0]",
             "prior_grid=false"]  # fmt: skip
    return ["--pose-only", "--pose-size", "96x96", "--pose-images", "2", "--pose-batch", "2",
            *(a for kv in small for a in ("--pose", kv)), *extra, "--out", str(out)]  # fmt: skip


def test_inference_benchmark_runs_pose_variants_in_the_same_run(tmp_path):
    """``--pose-variant`` adds each setting's rows to the same table (speed as ratios of one run)."""
    from benchmarks.inference import main as inference_main

    out = tmp_path / "bench.md"
    args = small_pose_run(out, "--pose-variant", "ranking=inliers,top_k=1", steps=2)
    assert inference_main(args) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| pose")]
    assert len(rows) == 6, rows  # 3 settings (prior at batch 2 and 1, no prior) x 2 estimators
    assert sum("(ranking=inliers,top_k=1)" in r for r in rows) == 3
    assert all("2 steps" in r and "12x12 (stride 8)" in r for r in rows), rows
    assert "--pose-variant ranking=inliers,top_k=1" in out.read_text()


def test_inference_benchmark_pose_rows_for_each_gaussian_count(tmp_path):
    """``--pose-gaussians`` times volumes of each size in the same run; a bad count is a usage error."""
    from benchmarks.inference import main as inference_main

    out = tmp_path / "bench.md"
    args = small_pose_run(out, "--pose-gaussians", "200,400")
    assert inference_main(args) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| pose")]
    counts = [int(r.split(" Gaussians")[0].rsplit(" ", 1)[-1]) for r in rows]
    assert len(rows) == 6 and len(set(counts)) == 2 and counts[:3] == [counts[0]] * 3, rows
    assert 150 < counts[0] < 250 and 350 < counts[3] < 450, counts  # the cuboid's lattice rounds the count
    with pytest.raises(SystemExit):
        inference_main(["--pose-gaussians", "0", "--out", ""])


def test_inference_benchmark_times_shallower_trunks_in_the_same_run(tmp_path):
    """``--trunk-depths`` adds a backbone row per depth; ``--stride 4`` gives every row stride-4 maps."""
    from benchmarks.inference import main as inference_main

    out = tmp_path / "bench.md"
    args = ["--classes-only", "--size", "64x64", "--batch", "2", "--stride", "4", "--trunk-depths", "4,2",
            "--min-time", "0.01", "--out", str(out)]  # fmt: skip
    assert inference_main(args) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| trunk + head")]
    assert len(rows) == 2 and "trunk to layer2" in rows[1] and "stride 4" in rows[0], rows
    assert "full classification" in out.read_text()
    with pytest.raises(SystemExit):
        inference_main(["--trunk-depths", "1", "--out", ""])


def test_inference_benchmark_draws_oracle_poses_at_the_asked_elevations(tmp_path):
    """``--pose-elevations`` moves the oracle's poses (not its prior) and names the range in each row;
    the default range leaves the oracle's draws as they were."""
    from benchmarks.inference import ORACLE_ELEVATIONS, oracle
    from benchmarks.inference import main as inference_main

    *_, truth = oracle(torch.device("cpu"), 64, size=(96, 96), elevations=(45.0, 75.0))
    el = torch.rad2deg(truth.elevation)
    assert el.min() >= 45 and el.max() <= 75 and el.max() - el.min() > 20
    *_, default = oracle(torch.device("cpu"), 64, size=(96, 96))
    *_, explicit = oracle(torch.device("cpu"), 64, size=(96, 96), elevations=(-8.0, 32.0))
    assert ORACLE_ELEVATIONS == (-8.0, 32.0) and torch.equal(default.elevation, explicit.elevation)
    assert torch.equal(default.azimuth, truth.azimuth)  # the same draws, only the elevations move
    assert torch.rad2deg(default.elevation).min() >= -8 and torch.rad2deg(default.elevation).max() <= 32
    out = tmp_path / "bench.md"
    args = small_pose_run(out, "--pose-elevations", "45,75")
    assert inference_main(args) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| pose")]
    assert len(rows) == 3 and all("poses at elevations 45..75 deg" in r for r in rows), rows
    for bad in ("75,45", "45", "-100,0"):
        with pytest.raises(SystemExit):
            inference_main(["--pose-elevations", bad, "--out", ""])


def test_elevation_profile_poses_and_bands():
    """The profile's poses move only the elevation and the distance; bands split at the training range."""
    from benchmarks.elevation_profile import band_of, object_cells, profile_poses

    truth = torch.tensor([[1.0, 0.2, 0.1, 5.0], [2.0, -0.3, 0.0, 6.0]])
    poses = profile_poses(truth, (-10.0, 0.0, 10.0), (0.9, 1.0))
    assert poses.shape == (2, 6, 4)
    assert torch.equal(poses[..., 0], truth[:, None, 0].expand(2, 6))
    assert torch.equal(poses[..., 2], truth[:, None, 2].expand(2, 6))
    torch.testing.assert_close(poses[0, 3], truth[0])  # offset 0, factor 1 (offsets outermost)
    torch.testing.assert_close(poses[1, 0, 1], truth[1, 1] - math.radians(10))
    torch.testing.assert_close(poses[1, 5, 3], truth[1, 3])
    torch.testing.assert_close(poses[1, 4, 3], 0.9 * truth[1, 3])
    low, high = math.radians(-5), math.radians(35)
    assert [band_of(math.radians(e), (low, high)) for e in (-20, 10, 60)] == ["below", "inside", "above"]
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)  # 2x2 cells of 4x4 pixels
    mask[0, :4, :3] = True  # 12 of cell (0, 0)'s 16 pixels: an object cell
    mask[1, :4, :2] = True  # 8 of 16: not more than half
    assert object_cells(mask, (2, 2)).tolist() == [[[True, False], [False, False]], [[False, False], [False, False]]]


def test_elevation_profile_best_offset_takes_each_offsets_own_best_distance():
    """The truth's term is taken at the truth's best distance factor, the best offset's at its own; ties go
    to the truth."""
    from benchmarks.elevation_profile import best_offset_gains

    cells = torch.zeros(2, 3, 2, 1, 2)  # 2 images, offsets (-10, 0, 10), 2 factors, 1x2 cells
    cells[0, 1, 0] = torch.tensor([0.4, 0.0])  # truth: factor 0 best (mean 0.2)
    cells[0, 1, 1] = torch.tensor([0.0, 0.2])  # (mean 0.1)
    cells[0, 2, 1] = torch.tensor([0.1, 0.5])  # offset +10: factor 1 best (mean 0.3)
    cells[1, 0, 0] = torch.tensor([0.3, 0.1])  # image 1: offset -10 ties the truth (mean 0.2 each)
    cells[1, 1, 1] = torch.tensor([0.2, 0.2])
    per_offset, best, gain = best_offset_gains(cells, zero=1)
    torch.testing.assert_close(per_offset, torch.tensor([[0.0, 0.2, 0.3], [0.2, 0.2, 0.0]]))
    assert best.tolist() == [2, 1]
    torch.testing.assert_close(gain[0], torch.tensor([[0.1 - 0.4, 0.5 - 0.0]]))
    torch.testing.assert_close(gain[1], torch.zeros(1, 2))


def test_elevation_profile_summary_counts_each_band_its_own_way():
    """Towards the training range means a lower offset above it, a higher one below it, any but 0 inside."""
    from benchmarks.elevation_profile import summary

    def rec(band, best, edge=False):
        return {"band": band, "true_elevation_deg": 0.0, "gain": [0.0, 0.0, 0.0], "best_offset_deg": best,
                "at_edge": edge, "gain_object_cells": 0.002, "gain_background_cells": 0.001}  # fmt: skip

    records = [rec("above", -10.0, True), rec("above", 10.0, True), rec("above", 0.0), rec("above", -10.0, True),
               rec("below", 10.0), rec("below", -10.0), rec("inside", 0.0), rec("inside", 10.0)]  # fmt: skip
    s = summary(records, (-10.0, 0.0, 10.0))
    assert s["above"]["pulled_pct"] == 50.0 and s["above"]["at_edge_pct"] == 75.0
    assert s["above"]["best_offset_deg"] == -2.5
    assert s["below"]["pulled_pct"] == 50.0 and s["inside"]["pulled_pct"] == 50.0
    assert s["below"]["gain_object_cells"] == pytest.approx(0.002)


def test_elevation_profile_script_scores_each_offset_against_the_truth(checkpoint, tmp_path, capsys):  # noqa: F811
    """Each image's record is what score_poses gives at its poses: per offset the best distance factor's score
    minus the truth's, the best offset the largest gain (ties to the truth), and that gain split by the object
    mask's cells; the tables name every band present; a sweep without the truth is a usage error."""
    from benchmarks.elevation_profile import collate_with_masks, object_cells, profile_poses
    from benchmarks.elevation_profile import main as profile_main
    from novum3d.data.batch import batch_cameras, batch_pose
    from novum3d.evaluation.run import evenly_spaced, open_eval_splits
    from novum3d.inference.pose import PoseEstimator, pose_config

    root, ckpt = checkpoint
    out = tmp_path / "profile.json"
    offsets, factors = (-20.0, 0.0, 20.0), (0.9, 1.0, 1.1)
    argv = ["--checkpoint", str(ckpt), "--data", str(root), "--split", "clean", "--max-images", "4",
            "--offsets=-20,0,20", "--distance-factors", "0.9,1.0,1.1", "--device", "cpu", "--workers", "0",
            "--json", str(out), "--pose", "backend=torch", "--pose", "clutter=none"]  # fmt: skip
    assert profile_main(argv) == 0  # clutter=none: every rendered cell counts, so the tiny model's gains are not 0
    result = json.loads(out.read_text())
    records = result["records"]
    assert result["offsets"] == list(offsets)  # saved, for --plot
    assert len(records) >= 2 and len({r["id"] for r in records}) == len(records)
    assert any(abs(g) > 0 for r in records for g in r["gain"])
    text = capsys.readouterr().out
    assert all(f"| {band} |" in text for band in result["summary"])

    model, cfg = load_model(ckpt, "cpu")
    ds = evenly_spaced(open_eval_splits(root, "synthetic", model.classes)["clean"], 4)
    batch = collate_with_masks([ds[i] for i in range(len(ds))], tuple(cfg.data.image_size))
    with torch.no_grad():
        maps = model(batch["image"])
    _, Ks = batch_cameras(batch, model.stride, torch.device("cpu"))
    est = PoseEstimator(pose_config({}, ["backend=torch", "clutter=none"]))
    v = model.volumes
    for b, r in enumerate(records):
        assert r["id"] == batch["ids"][b]
        y = int(batch["label"][b])
        poses = profile_poses(batch_pose(batch).as_tensor()[b : b + 1].float(), offsets, factors)
        cells = est.score_poses(maps[b : b + 1], v.volume(y), v.features[y, : v.count(y)], v.bank, Ks[b : b + 1],
                                poses, per_cell=True)[0].view(3, 3, *maps.shape[-2:])  # fmt: skip
        score = cells.mean(dim=(-2, -1))  # [offset, factor]
        best_per_offset = score.max(-1).values
        torch.testing.assert_close(torch.tensor(r["gain"]), best_per_offset - best_per_offset[1], atol=1e-5, rtol=0)
        o = offsets.index(r["best_offset_deg"])
        assert r["gain"][o] == max(r["gain"]) and (o == 1 or r["gain"][o] > 0)
        gain = cells[o, score[o].argmax()] - cells[1, score[1].argmax()]
        obj = object_cells(batch["mask"][b : b + 1], maps.shape[-2:])[0]
        h, w = obj.shape
        assert r["gain_object_cells"] == pytest.approx(float(gain[obj].sum() / (h * w)), abs=1e-6)
        assert r["gain_background_cells"] == pytest.approx(float(gain[~obj].sum() / (h * w)), abs=1e-6)
    with pytest.raises(SystemExit) as exc:  # without the truth's offset there is nothing to compare with
        profile_main([*argv, "--offsets=-20,20"])
    assert exc.value.code == 2


def test_elevation_profile_plot_draws_each_label_per_band(tmp_path, capsys):
    """--plot merges a label's files by band, reads the sweep saved in a file (or the default sweep for
    files that predate it), draws one panel per band present, and refuses files of different sweeps,
    files that are not profiles, and malformed specs, each with one error line."""
    from PIL import Image

    from benchmarks.elevation_profile import OFFSETS_DEG, load_profiles
    from benchmarks.elevation_profile import main as profile_main

    def write(name, summary, offsets=None):
        path = tmp_path / name
        data = {"summary": summary, "records": []} | ({"offsets": offsets} if offsets else {})
        path.write_text(json.dumps(data))
        return str(path)

    n = len(OFFSETS_DEG)
    unseen = write("a-ood.json", {"above": {"mean_gain": [0.001] * n}, "below": {"mean_gain": [0.002] * n}})
    clean = write("a-clean.json", {"inside": {"mean_gain": [-0.003] * n}}, offsets=list(OFFSETS_DEG))
    other = write("b-ood.json", {"above": {"mean_gain": [0.004] * n}})
    offsets, curves = load_profiles([f"A={unseen},{clean}", f"B={other}"])
    assert offsets == tuple(float(o) for o in OFFSETS_DEG)
    assert sorted(curves["A"]) == ["above", "below", "inside"] and list(curves["B"]) == ["above"]
    assert curves["B"]["above"][0] == 0.004
    png = tmp_path / "fig.png"
    assert profile_main(["--plot", f"A={unseen},{clean}", f"B={other}", "--out", str(png)]) == 0
    assert Image.open(png).size == (3 * 330, 340)  # three bands, three panels
    assert profile_main(["--plot", f"B={other}", "--out", str(png)]) == 0
    assert Image.open(png).size == (330, 340)
    capsys.readouterr()
    short = write("short.json", {"above": {"mean_gain": [0.0, 0.1, 0.0]}}, offsets=[-5, 0, 5])
    for spec, message in [(f"A={unseen},{short}", "sweep differs"), (f"A={tmp_path / 'none.json'}", "not an elevation"),
                          (unseen, "expected LABEL=")]:  # fmt: skip
        assert profile_main(["--plot", spec, "--out", str(png)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err
    with pytest.raises(SystemExit):  # neither --plot nor a checkpoint
        profile_main(["--data", str(tmp_path)])
