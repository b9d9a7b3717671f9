"""Where the pose objective peaks along elevation, with every other angle at the truth.

    python -m benchmarks.elevation_profile --checkpoint runs/x/last.pt --data D [--split ood-pose]
        [--max-images 120] [--offsets=-45,-40,...,45] [--distance-factors 0.85,1,1.15]
        [--json out.json] [--benchmarks BENCHMARKS.md]
    python -m benchmarks.elevation_profile --plot LABEL=A.json[,B.json] [LABEL2=C.json ...] --out fig.png

Issue 11: on unseen poses the estimates are pulled into the training elevations, and even
refinement started at the truth drifts back towards them. This asks the objective directly. Under
the true class, each image's render-and-compare score (:meth:`PoseEstimator.score_poses`, the
estimator's own objective) is taken at the true azimuth and theta, at its true elevation moved by
each offset (default -45..+45 deg), the distance being the best of a few factors of the true one (the silhouette's size
changes with the elevation). Images are grouped by where their true elevation lies against the
training split's (below, inside, above). Per group it prints the mean score gain over the truth at
each offset, the share of images whose best offset points towards the training range, and that
best offset's mean. The gain at each image's best offset is split by cell: object cells (most of
the cell's pixels inside the object's mask) and background cells, so that one can see whether the
pull comes from the object or from around it. An unbiased objective peaks at offset 0 inside the
range; the ``inside`` group (on a clean split) is that control. Ties go to the truth. Unlike
``estimate``, the distance is not held within the class prior's.

``--plot`` draws the mean gain curves of earlier runs' ``--json`` files, one panel per band and one line
per label (a label's files, e.g. its unseen-pose and clean runs, are merged by band), so that models
compare at a glance.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from benchmarks.common import emit
from benchmarks.pose_error_parts import BANDS, band_of, training_elevation_range
from novum3d.cli import command
from novum3d.data.batch import batch_cameras, batch_pose, images_to_device
from novum3d.device import select_device
from novum3d.errors import ConfigError, DataError, MissingDataError
from novum3d.evaluation.report import blank_figure, plot_style, save_figure
from novum3d.evaluation.run import collate_with_ids, evenly_spaced, open_eval_splits
from novum3d.inference.checkpoint import load_model
from novum3d.inference.pose import PoseEstimator, pose_config
from novum3d.train.correspondence import occluded_cells

OFFSETS_DEG = tuple(range(-45, 50, 5))  # symmetric, so that neither direction is favoured by the sweep
DISTANCE_FACTORS = (0.85, 1.0, 1.15)


def profile_poses(truth: torch.Tensor, offsets_deg: tuple[float, ...], factors: tuple[float, ...]) -> torch.Tensor:
    """[B, O * F, 4] poses: the true ones [B, 4] (azimuth, elevation, theta, distance) with the elevation
    moved by each offset (degrees) and the distance scaled by each factor, offsets outermost."""
    off = torch.tensor(offsets_deg, dtype=truth.dtype).deg2rad()
    fac = torch.tensor(factors, dtype=truth.dtype)
    poses = truth[:, None, None, :].repeat(1, len(off), len(fac), 1)
    poses[..., 1] += off[None, :, None]
    poses[..., 3] *= fac[None, None, :]
    return poses.reshape(truth.shape[0], -1, 4)


def collate_with_masks(samples: list[dict], image_size: tuple[int, int]) -> dict:
    """The evaluation's :func:`collate_with_ids`; a split without object masks is an error."""
    batch = collate_with_ids(samples, image_size)
    if batch["mask"] is None:
        raise MissingDataError("the split has no object masks; regenerate it with scripts/make_synthetic.py")
    return batch


def object_cells(masks: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """[B, h, w] bool: feature cells more than half covered by the object masks [B, H, W] (the trainer's
    rule for occluder cells, :func:`~novum3d.train.correspondence.occluded_cells`, on the object's mask)."""
    return occluded_cells(masks, shape)


def best_offset_gains(cells: torch.Tensor, zero: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each image's best offset from per-cell scores [n, O, F, h, w] (offsets x distance factors).

    Returns:
        per_offset [n, O]: each offset's score at its best distance factor; best [n]: the offset with the
        highest (the truth's index ``zero`` wins ties); gain [n, h, w]: per cell, the best offset's term
        minus the truth's, each at its own best factor.
    """
    score = cells.mean(dim=(-2, -1))  # [n, O, F]
    best_factor = score.argmax(-1)  # [n, O]
    per_offset = score.gather(-1, best_factor[..., None])[..., 0]
    best = per_offset.argmax(-1)
    tie = per_offset.gather(-1, best[:, None])[:, 0] <= per_offset[:, zero]
    best = torch.where(tie, torch.full_like(best, zero), best)
    rows = torch.arange(cells.shape[0], device=cells.device)
    gain = cells[rows, best, best_factor[rows, best]] - cells[rows, zero, best_factor[rows, zero]]
    return per_offset, best, gain


@torch.no_grad()
def measure(model, estimator: PoseEstimator, loader, train_range, offsets, factors, device, progress=None):
    """One record per image: its band, the score gain over the truth at each offset, the best offset,
    and the best offset's gain on object and background cells (each a share of all cells' mean)."""
    records = []
    v = model.volumes
    zero = offsets.index(0)
    for batch in progress(loader) if progress else loader:
        _, Ks = batch_cameras(batch, model.stride, device)
        maps = model(images_to_device(batch["image"], device))
        truth = batch_pose(batch).as_tensor().to(torch.float32)
        poses = profile_poses(truth, offsets, factors).to(device)
        inside = object_cells(batch["mask"].to(device), maps.shape[-2:])
        labels = batch["label"].to(device)
        for y in labels.unique().tolist():
            idx = torch.nonzero(labels == y)[:, 0]
            k = v.count(y)
            cells = estimator.score_poses(maps[idx], v.volume(y), v.features[y, :k], v.bank, Ks[idx], poses[idx],
                                          per_cell=True)  # fmt: skip
            n, _, h, w = cells.shape
            per_offset, best, gain = best_offset_gains(cells.view(n, len(offsets), len(factors), h, w), zero)
            obj = inside[idx]
            for j, i in enumerate(idx.tolist()):
                records.append({
                    "id": batch["ids"][i],
                    "band": band_of(float(truth[i, 1]), train_range),
                    "true_elevation_deg": math.degrees(float(truth[i, 1])),
                    "gain": [float(g) for g in (per_offset[j] - per_offset[j, zero])],
                    "best_offset_deg": float(offsets[int(best[j])]),
                    "at_edge": int(best[j]) in (0, len(offsets) - 1),
                    "gain_object_cells": float(gain[j][obj[j]].sum() / (h * w)),
                    "gain_background_cells": float(gain[j][~obj[j]].sum() / (h * w)),
                })  # fmt: skip
    return records


def summary(records: list[dict], offsets: tuple[float, ...]) -> dict[str, dict]:
    """Per band: images, mean gain per offset, mean best offset, share pulled towards the range
    (best offset < 0 above it, > 0 below it, != 0 inside), share whose best offset is the sweep's
    first or last (so that a mean near the edge is a bound), and the split of the best offset's gain."""
    out = {}
    for band in BANDS:
        rs = [r for r in records if r["band"] == band]
        if not rs:
            continue
        toward = {"above": lambda o: o < 0, "below": lambda o: o > 0, "inside": lambda o: o != 0}[band]
        out[band] = {
            "images": len(rs),
            "true_elevation_deg": statistics.fmean(r["true_elevation_deg"] for r in rs),
            "mean_gain": [statistics.fmean(r["gain"][i] for r in rs) for i in range(len(offsets))],
            "best_offset_deg": statistics.fmean(r["best_offset_deg"] for r in rs),
            "pulled_pct": 100 * statistics.fmean(float(toward(r["best_offset_deg"])) for r in rs),
            "at_edge_pct": 100 * statistics.fmean(float(r["at_edge"]) for r in rs),
            "gain_object_cells": statistics.fmean(r["gain_object_cells"] for r in rs),
            "gain_background_cells": statistics.fmean(r["gain_background_cells"] for r in rs),
        }
    return out


def markdown(summ: dict[str, dict], offsets: tuple[float, ...], train_range: tuple[float, float]) -> str:
    low, high = (math.degrees(x) for x in train_range)
    lines = [
        f"Training elevations span {low:.1f} to {high:.1f} deg. Score gain over the truth (x 1000), true "
        "azimuth and theta, best of the distance factors:",
        "",
        "| true elevation | images | mean true elevation deg | " + " | ".join(f"{o:+g}" for o in offsets) + " |",
        "|---|---|---|" + "---|" * len(offsets),
    ]
    for band, s in summ.items():
        gains = " | ".join(f"{1000 * g:+.1f}" for g in s["mean_gain"])
        lines.append(f"| {band} | {s['images']} | {s['true_elevation_deg']:.1f} | {gains} |")
    lines += [
        "",
        "| true elevation | best offset, mean deg | towards the training range % (inside: not 0) "
        "| at the sweep's edge % | best offset's gain x 1000: object cells | background cells |",
        "|---|---|---|---|---|---|",
    ]
    for band, s in summ.items():
        lines.append(
            f"| {band} | {s['best_offset_deg']:+.1f} | {s['pulled_pct']:.1f} | {s['at_edge_pct']:.1f} "
            f"| {1000 * s['gain_object_cells']:+.2f} "
            f"| {1000 * s['gain_background_cells']:+.2f} |"
        )
    return "\n".join(lines)


def load_profiles(specs: list[str]) -> tuple[tuple[float, ...], dict[str, dict[str, list[float]]]]:
    """``LABEL=A.json[,B.json]`` specs -> (offsets, {label: {band: mean gain per offset}}). Files written
    before the offsets were saved in them are read at the default sweep if their lengths match it."""
    offsets, curves = None, {}
    for spec in specs:
        label, sep, paths = spec.partition("=")
        if not sep or not label or not paths:
            raise ConfigError(f"--plot: expected LABEL=A.json[,B.json], got {spec!r}", field="--plot")
        bands = curves.setdefault(label, {})
        for path in paths.split(","):
            try:
                data = json.loads(Path(path).read_text())
                summ = data["summary"]
            except (OSError, ValueError, KeyError) as exc:
                raise DataError(f"not an elevation profile's --json file ({exc})", path=path) from None
            these = tuple(float(o) for o in data.get("offsets", OFFSETS_DEG))
            for band, s in summ.items():
                if len(these) != len(s["mean_gain"]) or (offsets is not None and these != offsets):
                    raise DataError("its sweep differs from the other files'; plot one sweep at a time", path=path)
                offsets = these
                bands[band] = s["mean_gain"]
    return offsets, curves


def plot_profiles(offsets: tuple[float, ...], curves: dict[str, dict[str, list[float]]], path: str | Path) -> Path:
    """One panel per band (below, inside, above the training elevations), mean score gain over the
    truth (x 1000) against the elevation offset, a line per label; each panel its own y scale."""
    bands = [b for b in BANDS if any(b in c for c in curves.values())]
    with plot_style():
        fig = blank_figure((330 * len(bands), 340))
        axes = fig.subplots(1, len(bands), squeeze=False)[0]
        for ax, band in zip(axes, bands, strict=True):
            for label, c in curves.items():
                if band in c:
                    ax.plot(offsets, [1000 * g for g in c[band]], label=label, marker="o", markersize=3)
            ax.axvline(0, color="0.4", linewidth=1)
            ax.set_title({"below": "views from below", "inside": "inside (control)", "above": "views from above"}[band])
            ax.set_xlabel("elevation offset from the truth (deg)")
        axes[0].set_ylabel("score gain over the truth (x 1000)")
        axes[0].legend(loc="best")
        return save_figure(fig, path)


def number_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plot", nargs="+", metavar="LABEL=A.json[,B.json]", help="draw earlier runs' curves")
    parser.add_argument("--out", default="elevation-profile.png", help="--plot: the PNG to write")
    parser.add_argument("--checkpoint")
    parser.add_argument("--data", help="a synthetic data set")
    parser.add_argument("--split", default="ood-pose")
    parser.add_argument("--max-images", type=int, default=None, help="evenly spaced subset")
    parser.add_argument("--offsets", type=number_list, default=OFFSETS_DEG, help="elevation offsets, deg (with 0)")
    parser.add_argument("--distance-factors", type=number_list, default=DISTANCE_FACTORS)
    parser.add_argument("--pose", action="append", default=[], help="key=value: a PoseConfig field (the objective's)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--json", default=None, help="also write every image's record here")
    parser.add_argument("--benchmarks", default="", help="append the tables to this file")
    args = parser.parse_args(argv)
    if args.plot:
        print(f"written: {plot_profiles(*load_profiles(args.plot), args.out)}")
        return 0
    if not (args.checkpoint and args.data):
        parser.error("--checkpoint and --data are required (unless --plot)")
    if 0 not in args.offsets:
        parser.error("--offsets: must include 0 (the truth)")
    if min(args.distance_factors) <= 0:
        parser.error("--distance-factors: must be > 0")
    device = select_device(args.device)
    model, cfg = load_model(args.checkpoint, device, compile="off")
    splits = open_eval_splits(Path(args.data), "synthetic", model.classes)
    if args.split not in splits:
        raise MissingDataError(f"{args.data}: no split {args.split!r}; it has {sorted(splits)}", field="--split")
    train_range = training_elevation_range(splits, args.data)
    ds = evenly_spaced(splits[args.split], args.max_images)
    size = tuple(cfg.data.image_size)
    loader = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers,
                        collate_fn=partial(collate_with_masks, image_size=size))  # fmt: skip
    estimator = PoseEstimator(pose_config({}, args.pose))
    records = measure(model, estimator, loader, train_range, args.offsets, args.distance_factors, device,
                      progress=lambda it: tqdm(it, desc=args.split, unit="batch"))  # fmt: skip
    summ = summary(records, args.offsets)
    command_line = "python -m benchmarks.elevation_profile " + " ".join(sys.argv[1:] if argv is None else argv)
    emit(
        f"### The objective along elevation, split {args.split}\n\nCommand: `{command_line}`\n\n"
        f"{markdown(summ, args.offsets, train_range)}",
        args.benchmarks or None,
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"offsets": args.offsets, "summary": summ, "records": records}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
