"""Robustness benchmark: NOVUM, its ablations and standard classifiers on every test split.

    python -m benchmarks.robustness configs/robustness.yaml --data data/synthetic-robust \\
        [--seeds 0,1] [--work runs/robustness] [--max-per-split N] [--append FILE] [key.sub=value ...]
    python -m benchmarks.robustness --merge A/robustness.json B/robustness.json [--json pooled.json]

Every method of the suite is trained (skipped when its checkpoint has finished; resumed when it
stopped midway) on the data set's train split with the suite's shared budget, then evaluated on
clean, occluded L1-L3, corrupted (mean over corruptions) and OOD (per nuisance and mean). NOVUM
methods with ``pose: true`` also get render-and-compare poses (Acc@pi/6). Writes
<results>/robustness.json, robustness.md and accuracy_vs_occlusion.png and prints the tables with the
commands that reproduce them and the device (``--append FILE`` also appends them there). ``--merge`` pools the
``robustness.json`` of separate runs (other seeds, or methods run in separate processes) into mean +- std.
Trailing key.sub=value overrides apply to every method (e.g. data.num_workers=14).
Evaluation is kept split by split: a run killed mid-evaluation recomputes one split at most.
Several processes sharing one machine (one per method) must share its cores too: give each
``--threads`` (cores / processes). Measured on an H100 host with 16 cores: five evaluations at
torch's default of 16 threads each classified 10 img/s each; at 2 threads each, 320-366 img/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.common import emit, rate
from novum3d.baselines import BaselineTrainer, load_baseline
from novum3d.checkpoint import file_digest, load_checkpoint
from novum3d.cli import command
from novum3d.data.synthetic import open_splits
from novum3d.data.synthetic.splits import read_manifest
from novum3d.device import resolve_compile, select_device
from novum3d.errors import CheckpointError, Novum3DError
from novum3d.evaluation.cache import RecordCache, evaluation_key, load_keyed, save_keyed
from novum3d.evaluation.run import (
    ensure_pose_priors,
    evaluate_split,
    evenly_spaced,
    initial_distance,
    protocol_summary,
)
from novum3d.evaluation.suite import (
    SuiteMethod,
    classify_split,
    load_suite,
    margin_rows,
    markdown_rows,
    method_config,
    occlusion_plot,
    row_name,
    split_summary,
    table_columns,
)
from novum3d.fingerprint import CACHE_FORMAT, code_digest, compare_keys, dataset_digest
from novum3d.inference.loading import load_model
from novum3d.inference.pose import PoseConfig, PoseEstimator
from novum3d.train.trainer import Trainer


def train_if_needed(method: SuiteMethod, cfg, out_dir: Path, retrain: bool = False) -> dict:
    """Train unless out_dir/last.pt is a finished run of this very config and data; returns its history summary.

    An unfinished run of the same config and data is resumed. A checkpoint made from another config
    or other data stops the benchmark with the parts that differ, unless ``retrain`` (--retrain).
    """
    last = out_dir / "last.pt"
    trainer = (Trainer if method.kind == "novum" else BaselineTrainer)(cfg)
    if last.is_file():
        ckpt = load_checkpoint(last)
        saved = ckpt.get("identity")
        differ = (
            ["identity (a checkpoint of an older version)"]
            if saved is None
            else compare_keys(saved, trainer.identity())
        )
        if differ and not retrain:
            raise CheckpointError(
                f"made with another {', '.join(differ)} than method {method.name!r} has now; "
                "rerun with --retrain to train it again, or use another --work",
                path=last,
            )
        if not differ:
            trainer.resume(last)
    if trainer.epoch < cfg.optim.epochs:
        trainer.fit()
    history = trainer.history
    return {
        "epochs": len(history),
        "train_seconds": sum(h["seconds"] for h in history),
        "images_per_s": history[-1]["images_per_s"],
        "val_accuracy": history[-1].get("val_accuracy"),
    }


def evaluate_method(method, out_dir: Path, splits: dict, names: list[str], args, device, distance: float) -> dict:
    """Per-split summaries, cached in out_dir/robustness-eval.json under a key of the checkpoint's and
    every split's contents, the code and the settings; a cache of other inputs is recomputed.

    Every method classifies the same images (``--max-per-split``). On a pose split the pose is
    estimated on its own evenly spaced subset (``--pose-max-per-split``, ``pose_images``): there the
    pose metrics, ``per_class``, ``confusion`` and ``ece`` describe that subset, while ``images`` and
    ``accuracy`` are the classification over all the split's evaluated images. Until this change
    a pose method also classified its pose splits on the pose subset only, so its clean, L3 and
    OOD-pose columns counted fewer images than the baselines'.
    """
    last = out_dir / "last.pt"
    pose = PoseConfig(steps=args.pose_steps, distance=distance) if method.pose else None
    pose_splits = [n for n in names if pose and (args.pose_splits is None or n in args.pose_splits.split(","))]
    subsets = {n: evenly_spaced(splits[n], args.max_per_split) for n in names}
    pose_limit = min(v for v in (args.max_per_split, args.pose_max_per_split, 10**9) if v)
    pose_subsets = {n: evenly_spaced(splits[n], pose_limit) for n in pose_splits}
    compiled = method.kind == "novum" and resolve_compile(args.compile or "auto", device)  # baselines stay eager
    settings = {"pose": dataclasses.asdict(pose) if pose else None, "pose_splits": pose_splits,
                "protocols": ["full", "reference"], "compiled": compiled}  # fmt: skip
    key = {"format": CACHE_FORMAT, "checkpoint": file_digest(last), "code": code_digest(), "settings": settings,
           "data": {name: dataset_digest(ds) for name, ds in subsets.items()}
           | {f"{name} (pose)": dataset_digest(ds) for name, ds in pose_subsets.items()}}  # fmt: skip
    cache = out_dir / "robustness-eval.json"
    saved, differ = load_keyed(cache, key)
    if saved is not None:
        return saved
    if differ:
        tqdm.write(
            f"{method.name}: {cache} was made with another {', '.join(differ)}; evaluating again", file=sys.stderr
        )
    # Splits finished before an interruption, under the same key: a killed run loses one split at most.
    partial = out_dir / "robustness-eval.partial.json"
    done, _ = load_keyed(partial, key)
    if method.kind == "novum":
        model, cfg = load_model(last, device, compile=args.compile)
        ensure_pose_priors(model, splits)
    else:
        model, cfg = load_baseline(last, device)
    estimator = PoseEstimator(pose) if pose else None
    size = tuple(cfg.data.image_size)
    protocols = ("full", "reference") if method.kind == "novum" else ("full",)  # baselines get no box
    results: dict[str, dict] = done if done is not None else {p: {} for p in protocols}
    workers = args.workers
    for name in tqdm(names, desc=method.name, unit="split"):
        if all(name in results[p] for p in protocols):
            continue
        ds = subsets[name]
        records = classify_split(model, ds, size, args.batch_size, num_workers=workers)
        for protocol in protocols:
            results[protocol][name] = split_summary(records, protocol)
        if name in pose_splits:
            pose_ds = pose_subsets[name]
            records_cache = RecordCache(out_dir / "eval-cache" / f"{name}.jsonl",
                                        evaluation_key(last, pose_ds, settings | {"image_size": list(size)}),
                                        overwrite=True)  # fmt: skip
            posed = evaluate_split(model, pose_ds, estimator, records_cache, size, args.batch_size, num_workers=workers)
            for protocol in protocols:  # per class, Acc@pi/18, median error and ECE too, on the pose subset
                summary = protocol_summary(posed, model.classes, protocol)
                classified = results[protocol][name]
                results[protocol][name] = summary | {"pose_images": summary["images"]} | classified
        save_keyed(partial, key, results)
    save_keyed(cache, key, results)
    partial.unlink(missing_ok=True)
    return results


POSE_CAPTION = "Pose Acc@pi/6 (%): full image under the predicted class; GT box under the ground-truth class:"


def pose_counts(per_split: dict[str, dict]) -> str:
    """The line under the pose table: on how many images of each column the poses were estimated."""
    for runs in per_split.values():
        counts = table_columns(runs["full"], "pose_images", combine=np.sum)
        if counts:
            return (
                "Pose images per column: "
                + ", ".join(f"{c} {int(n)}" for c, n in counts.items() if c != "OOD mean")
                + "."
            )
    return ""


def data_command(root: Path, manifest: dict) -> str:
    spec = manifest["preset_spec"]
    counts = ",".join(f"{k}={spec[k]}" for k in ("train", "val", "test", "corrupted"))
    preset = manifest["preset"] if manifest["preset"] != "custom" else "small"
    version = manifest.get("version", 1)  # data sets from before version 2 have no field
    return (f"python scripts/make_synthetic.py --preset {preset} --counts {counts} --seed {manifest['seed']} "
            f"--version {version} --out {root} --workers 16")  # fmt: skip


def augmentation_note(suite, extra: list[str], seed: int, work: Path) -> str:
    """What the report says of augmentation: none, or which methods paste occluders (how often),
    rotate images and stretch their rows (by up to how much)."""
    occluded, rotated, stretched = [], [], []
    for method in suite.methods:
        cfg = method_config(method, suite, extra, seed, work / "x")
        augment = getattr(cfg, "augment", None)
        if getattr(augment, "occlusion_probability", 0.0) > 0:
            occluded.append(f"{method.name} {augment.occlusion_probability:g}")
        if getattr(augment, "rotation_degrees", 0.0) > 0:
            rotated.append(f"{method.name} {augment.rotation_degrees:g}")
        if getattr(augment, "vertical_stretch", 1.0) > 1:
            stretched.append(f"{method.name} {augment.vertical_stretch:g}")
    parts = []
    if occluded:
        parts.append("occlusion augmentation (share of images) for " + ", ".join(occluded))
    if rotated:
        parts.append("rotation augmentation (largest angle, degrees) for " + ", ".join(rotated))
    if stretched:
        parts.append("vertical stretch (largest factor) for " + ", ".join(stretched))
    if not parts:
        return "no augmentation"
    return "; ".join(parts) + "; none for the others"


def merge(reports: list[dict]) -> tuple[dict, dict, list[int]]:
    """Pool the rows of several reports (other seeds, or other methods of one seed).

    Raises Novum3DError when one row would get the same seed twice."""
    rows: dict[str, list[dict]] = {}
    pose: dict[str, list[dict]] = {}
    row_seeds: dict[str, list[int]] = {}
    for report in reports:
        for name, runs in report["columns"].items():
            rows.setdefault(name, []).extend(runs)
            row_seeds.setdefault(name, []).extend(report["seeds"])
        for name, runs in report["pose_columns"].items():
            pose.setdefault(name, []).extend(runs)
    for name, seeds in row_seeds.items():
        if len(set(seeds)) != len(seeds):
            raise Novum3DError(f"seeds repeat across the reports for {name!r} ({seeds}); merge runs of different seeds")
    return rows, pose, sorted({s for seeds in row_seeds.values() for s in seeds})


def merge_main(args) -> int:
    """``--merge``: the tables of several reports pooled by row."""
    reports = [json.loads(Path(p).read_text()) for p in args.merge]
    rows, pose, seeds = merge(reports)
    table = markdown_rows(rows)
    margins = margin_rows(rows, args.novum, args.baseline)
    table += "\n" + margins if margins else ""
    text = "\n".join(
        [
            f"### Robustness, seeds {', '.join(map(str, seeds))} pooled (mean +- population std over seeds)",
            "",
            f"Command: `python -m benchmarks.robustness --merge {' '.join(args.merge)}`",
            "",
            "Classification accuracy (%):",
            "",
            table,
            "",
            *(["Pose Acc@pi/6 (%):", "", markdown_rows(pose)] if pose else []),
        ]
    )
    emit(text, args.append)
    if args.json:
        merged = {"reports": args.merge, "seeds": seeds, "columns": rows, "pose_columns": pose}
        Path(args.json).write_text(json.dumps(merged, indent=2))
    return 0


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", nargs="?", help="suite YAML, e.g. configs/robustness.yaml")
    parser.add_argument("overrides", nargs="*", help="key.sub=value for every method")
    parser.add_argument("--data", help="a synthetic data set (scripts/make_synthetic.py)")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON", help="pool these robustness.json files")
    parser.add_argument("--novum", default="NOVUM (cube)", help="--merge: the NOVUM method of the margin row")
    parser.add_argument("--baseline", default="ResNet-50", help="--merge: the baseline of the margin row")
    parser.add_argument("--json", default="", help="--merge: write the pooled rows (per seed) to this JSON file")
    parser.add_argument("--seeds", default="0", help="comma list of training seeds")
    parser.add_argument("--methods", default=None, help="comma list of method slugs to run (default: all)")
    parser.add_argument("--work", default="runs/robustness", help="checkpoints and caches, one folder per run")
    parser.add_argument("--results", default="outputs/robustness", help="JSON, Markdown and the plot")
    parser.add_argument("--max-per-split", type=int, default=None, help="evenly spaced subset of each test split")
    parser.add_argument("--pose-steps", type=int, default=30)
    parser.add_argument("--pose-splits", default=None, help="comma list of splits that get poses (default: all)")
    parser.add_argument("--pose-max-per-split", type=int, default=None, help="evenly spaced subset of each pose split")
    parser.add_argument("--batch-size", type=int, default=64, help="evaluation batch")
    parser.add_argument("--append", default="", metavar="FILE", help="also append the tables to this Markdown file")
    parser.add_argument("--retrain", action="store_true", help="retrain methods whose checkpoint has other inputs")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--compile",
        default=None,
        choices=["auto", "on", "off"],
        help="NOVUM methods' model.compile in training and evaluation (default: each config's in training, auto "
        "in evaluation; auto = on CUDA); baselines stay eager",
    )
    parser.add_argument("--workers", type=int, default=4, help="DataLoader workers of the evaluation")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, all cores)")
    args = parser.parse_intermixed_args(argv)
    if args.merge:
        return merge_main(args)
    if not args.suite or not args.data:
        parser.error("a suite YAML and --data are needed (or --merge with robustness.json files)")
    if args.threads is not None:
        if args.threads < 1:
            raise Novum3DError(f"--threads: expected at least 1, got {args.threads}", field="--threads")
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    data, work, results_dir = Path(args.data), Path(args.work), Path(args.results)
    seeds = [int(s) for s in args.seeds.split(",")]
    extra = [f"data.root={data}", f"train.device={device.type}", *args.overrides]
    if args.threads is not None:  # the trainer would otherwise pick its own count (train.cpu_threads: auto)
        extra.append(f"train.cpu_threads={args.threads}")
    suite = load_suite(args.suite)
    if args.methods:
        wanted = args.methods.split(",")
        unknown = [w for w in wanted if w not in [m.slug for m in suite.methods]]
        if unknown:
            raise Novum3DError(f"--methods: unknown {unknown}; the suite has {[m.slug for m in suite.methods]}")
        suite.methods = [m for m in suite.methods if m.slug in wanted]
    manifest = read_manifest(data / "dataset.json") if (data / "dataset.json").is_file() else None
    splits = open_splits(data)
    names = [s for s in splits if s not in ("train", "val")]
    distance = initial_distance(splits, names[0])
    rows: dict[str, list[dict]] = {}  # table row -> one column dict per seed
    pose_rows: dict[str, list[dict]] = {}
    training: dict[str, list[dict]] = {m.name: [] for m in suite.methods}
    per_split: dict[str, dict] = {}
    start = time.perf_counter()
    for seed in seeds:
        for method in suite.methods:
            out_dir = work / f"{method.slug}-seed{seed}"
            # Baseline configs have no model.compile, so it cannot ride with the overrides every method gets.
            own = [f"model.compile={args.compile}"] if args.compile and method.kind == "novum" else []
            cfg = method_config(method, suite, [*extra, *own], seed, out_dir)
            training[method.name].append(train_if_needed(method, cfg, out_dir, args.retrain))
            res = evaluate_method(method, out_dir, splits, names, args, device, distance)
            per_split[f"{method.name} / seed {seed}"] = res
            for protocol, per_protocol in res.items():
                row = row_name(method.name, protocol)
                rows.setdefault(row, []).append(table_columns(per_protocol))
                if method.pose:
                    pose_rows.setdefault(row, []).append(table_columns(per_protocol, "acc_pi_6"))
    minutes = (time.perf_counter() - start) / 60

    novum = next((m.name for m in suite.methods if m.kind == "novum"), None)
    baseline = next((m.name for m in suite.methods if m.kind == "baseline"), None)
    table = markdown_rows(rows)
    if novum and baseline:
        table += "\n" + margin_rows(rows, novum, baseline)
    pose_table = markdown_rows(pose_rows) if pose_rows else ""
    counts = table_columns(next(iter(per_split.values()))["full"], "images", combine=np.sum)
    first_cfg = method_config(suite.methods[0], suite, extra, seeds[0], work / "x")
    train_lines = ["| method | epochs | train img/s | train min | val accuracy |", "|---|---|---|---|---|"]
    for name, runs in training.items():
        val = [r["val_accuracy"] for r in runs if r["val_accuracy"] is not None]
        train_lines.append(
            f"| {name} | {runs[0]['epochs']} | {rate(sum(r['images_per_s'] for r in runs) / len(runs))} | "
            f"{sum(r['train_seconds'] for r in runs) / len(runs) / 60:.1f} | "
            + (f"{100 * sum(val) / len(val):.1f}%" if val else "-")
            + " |"
        )
    results_dir.mkdir(parents=True, exist_ok=True)
    plot = occlusion_plot(rows, results_dir / "accuracy_vs_occlusion.png")
    report = {"suite": args.suite, "data": str(data), "manifest": manifest, "seeds": seeds, "columns": rows,
              "pose_columns": pose_rows, "training": training, "per_split": per_split}  # fmt: skip
    (results_dir / "robustness.json").write_text(json.dumps(report, indent=2))
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    train_images = manifest["counts"].get("train", "?") if manifest else "?"
    command = "python -m benchmarks.robustness " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    text = "\n".join(
        [
            f"### Robustness, {device_name} ({datetime.date.today().isoformat()})",
            "",
            "Commands:",
            "",
            "```bash",
            data_command(data, manifest) if manifest else f"# data: {data}",
            command,
            "```",
            "",
            f"Data: {train_images} training images, {first_cfg.data.image_size[0]}x{first_cfg.data.image_size[1]} px; "
            "test images per column: "
            + ", ".join(f"{c} {int(n)}" for c, n in counts.items() if c != "OOD mean")
            + ". Budget shared by every method: "
            f"epochs {first_cfg.optim.epochs}, batch {first_cfg.optim.batch_size}, Adam lr {first_cfg.optim.lr:g}, "
            f"{augmentation_note(suite, extra, seeds[0], work)}, random initialisation. "
            f"Seeds: {', '.join(map(str, seeds))}. "
            f"Wall time {minutes:.1f} min.",
            "",
            'Classification accuracy (%). Rows named "GT box" use the authors\' protocol: only the feature cells '
            "inside the ground-truth box classify, and the pose is estimated under the ground-truth class. "
            "Baselines get no box: they classify the whole image.",
            "",
            table,
            "",
            *([POSE_CAPTION, "", pose_table, "", pose_counts(per_split), ""] if pose_table else []),
            "Training:",
            "",
            *train_lines,
        ]
    )
    (results_dir / "robustness.md").write_text(text + "\n")
    emit(text, args.append)
    print(f"written to {results_dir}/ (robustness.json, robustness.md" + (", the plot)" if plot else ")"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
