"""The benchmarks' own options on tiny inputs: eval_throughput's rows and protocols, and the inference
benchmark's pose variants, volume sizes, trunk depths and oracle elevations."""

from __future__ import annotations

import pytest
import torch

from tests.test_estimate_pose_script import checkpoint  # noqa: F401  (module fixture: tiny data, car and bus)


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


def small_pose_run(out, *extra: str, steps: int = 1) -> list[str]:
    """``benchmarks.inference`` arguments for pose rows alone on two 96x96 oracle images with a few
    templates (the torch renderer is slow on a CPU), ``extra`` flags, and the table written to ``out``."""
    small = [f"steps={steps}", "azimuth_bins=4", "elevations_deg=[0.0]", "thetas_deg=[0.0]", "distance_factors=[1.0]",
             "prior_grid=false"]  # fmt: skip
    return ["--pose-only", "--pose-size", "96x96", "--pose-images", "2", "--pose-batch", "2",
            *(a for kv in small for a in ("--pose", kv)), *extra, "--append", str(out)]  # fmt: skip


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
        inference_main(
            [
                "--pose-gaussians",
                "0",
            ]
        )


def test_inference_benchmark_times_shallower_trunks_in_the_same_run(tmp_path):
    """``--trunk-depths`` adds a backbone row per depth; ``--stride 4`` gives every row stride-4 maps."""
    from benchmarks.inference import main as inference_main

    out = tmp_path / "bench.md"
    args = ["--classes-only", "--size", "64x64", "--batch", "2", "--stride", "4", "--trunk-depths", "4,2",
            "--min-time", "0.01", "--append", str(out)]  # fmt: skip
    assert inference_main(args) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| trunk + head")]
    assert len(rows) == 2 and "trunk to layer2" in rows[1] and "stride 4" in rows[0], rows
    assert "full classification" in out.read_text()
    with pytest.raises(SystemExit):
        inference_main(
            [
                "--trunk-depths",
                "1",
            ]
        )


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
            inference_main(
                [
                    "--pose-elevations",
                    bad,
                ]
            )
