"""``scripts/diagnose.py``: where a model's pose errors and class votes come from.

    python scripts/diagnose.py pose-errors OUT/cache/ood-pose.jsonl [more caches] --data D --split ood-pose
        [--protocols templates-only,true-class,from-truth] [--plot elevations.png] [--append FILE]
    python scripts/diagnose.py objective OUT/cache/occluded-L3.jsonl [more caches] [--estimate true-class]
        [--reference from-truth] [--symmetric] [--threshold 30] [--distances] [--class-choice]
        [--switches BASE,OTHER] [--join CACHES] [--append FILE]
    python scripts/diagnose.py votes --checkpoint runs/x/last.pt --data D [--split occluded-L3]
        [--max-images 600] [--json out.json] [--append FILE]

``pose-errors`` and ``objective`` read the per-image caches of ``scripts/evaluate.py`` (``--diagnose`` adds the
``templates-only``, ``true-class`` and ``from-truth`` protocols they compare); several caches (one per training
seed) pool their images. ``votes`` runs the model on a synthetic split whose occluder masks lie beside the
images. Each prints a Markdown table; ``--append FILE`` also appends it to FILE.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from functools import partial
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader
from tqdm import tqdm

from ...cli import command
from ...device import select_device
from ...errors import DataError, MissingDataError
from ...inference.loading import load_model
from ..report import emit
from ..run import evenly_spaced, open_eval_splits
from . import objective, pose_errors, votes
from .records import cache_priors, joined, read_cache


def _pose_errors(args: argparse.Namespace, command_line: str) -> int:
    splits = open_eval_splits(args.data, "synthetic", [])
    if args.split not in splits:
        raise DataError(f"--split: unknown {args.split!r}; this data set has {sorted(splits)}", path=args.data)
    truth = {
        f"{it.category}/{it.name}": {"azimuth": it.annotation.azimuth, "elevation": it.annotation.elevation,
                                     "theta": it.annotation.theta}
        for it in splits[args.split].items
    }  # fmt: skip
    train_range = pose_errors.training_elevation_range(splits, args.data)
    rows = [row for path in args.caches for row in read_cache(path)]
    protocols = args.protocols.split(",")
    parts = {p: pose_errors.error_parts(rows, truth, train_range, p) for p in protocols}
    if args.plot:
        pose_errors.elevation_plot(rows, truth, train_range, protocols, args.plot, f"elevation on {args.split}")
    table = pose_errors.markdown(parts, train_range)
    emit(f"### Pose errors by angle, split {args.split}\n\nCommand: `{command_line}`\n\n{table}", args.append)
    return 0


def _objective(args: argparse.Namespace, command_line: str, error_exit) -> int:
    if args.join and len(args.join) != len(args.caches):
        error_exit(f"--join: one cache per positional cache ({len(args.caches)}), got {len(args.join)}")
    if not 0 < args.threshold <= 180:
        error_exit(f"--threshold: degrees in (0, 180], got {args.threshold}")
    if not 0 <= args.angle_margin <= 180:
        error_exit(f"--angle-margin: degrees in [0, 180], got {args.angle_margin}")
    pair = args.switches.split(",") if args.switches else None
    if pair is not None and (len(pair) != 2 or not all(pair)):
        error_exit(f"--switches: expected BASE,OTHER (two protocols), got {args.switches!r}")
    threshold = math.radians(args.threshold)
    error = "pose_error_symmetric" if args.symmetric else "pose_error"
    per_cache = {p.as_posix(): read_cache(p) for p in args.caches}
    for p, other in zip(args.caches, args.join, strict=False):
        per_cache[p.as_posix()] = joined(per_cache[p.as_posix()], read_cache(other))
    if pair is not None or args.class_choice:
        if pair is not None:
            title, lines = objective.switches_table(per_cache, pair[0], pair[1], threshold)
        else:
            title, lines = objective.class_choice_table(per_cache, threshold)
        emit(f"### {title}\n\nCommand: `{command_line}`\n\n" + "\n".join(lines), args.append)
        return 0
    pooled = [r for rows in per_cache.values() for r in rows]
    lines = [
        f"| cache | images | {args.estimate} right % | {args.reference} right % | cases | objective prefers "
        "the wrong pose % | search missed the right one % | median score gap |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def check(rows: list[dict[str, Any]]) -> dict[str, float]:
        return objective.objective_check(rows, args.estimate, args.reference, error, threshold)

    for label, c in objective.pooled_rows(per_cache, check):
        lines.append(
            f"| {label} | {c['images']} | {c['estimate_right']:.1f} | {c['reference_right']:.1f} | {c['cases']} "
            f"| {c['objective_prefers_wrong']:.1f} | {c['search_missed']:.1f} | {c['median_score_gap']:.4f} |"
        )
    if args.distances:
        try:
            d = objective.distance_check(
                pooled, cache_priors(args.caches[0]), args.estimate, args.reference, error, threshold,
                math.radians(args.angle_margin),
            )  # fmt: skip
        except DataError as exc:
            raise DataError(str(exc), path=args.caches[0]) from None
        lines += [
            "",
            "| pooled cases | wrong / right distance: quartile 1 | median | quartile 3 | wrong distance outside "
            "the class prior % | right distance outside it % | wrong elevation or theta outside the prior "
            f"(+{args.angle_margin:g} deg) % | right elevation or theta outside it % |",
            "|---|---|---|---|---|---|---|---|",
            f"| {d['cases']} | {d['ratio_q1']:.2f} | {d['ratio_median']:.2f} | {d['ratio_q3']:.2f} "
            f"| {d['wrong_outside']:.1f} | {d['right_outside']:.1f} | {d['wrong_angles_outside']:.1f} "
            f"| {d['right_angles_outside']:.1f} |",
        ]
    emit(f"### Pose objective against search\n\nCommand: `{command_line}`\n\n" + "\n".join(lines), args.append)
    return 0


def _votes(args: argparse.Namespace, command_line: str) -> int:
    device = select_device(args.device)
    model, cfg = load_model(args.checkpoint, device, compile="off")
    splits = open_eval_splits(Path(args.data), "synthetic", model.classes)
    if args.split not in splits:
        raise MissingDataError(f"{args.data}: no split {args.split!r}; it has {sorted(splits)}", field="--split")
    size = tuple(cfg.data.image_size)
    ds = votes.WithOccluders(
        evenly_spaced(splits[args.split], args.max_images), require=args.split.startswith("occluded")
    )
    loader = DataLoader(
        ds,
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=partial(votes.collate_with_occluders, image_size=size),
    )
    result = votes.measure(model, loader, device, progress=lambda it: tqdm(it, desc=args.split, unit="batch"))
    result |= {"checkpoint": args.checkpoint, "data": args.data, "split": args.split}
    header = f"### Class votes by cell, split {args.split}, {result['images']} images\n\nCommand: `{command_line}`"
    emit(f"{header}\n\n{votes.table(result)}", args.append)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="diagnose.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="tool", required=True)
    a = sub.add_parser("pose-errors", help="which angle is wrong, by elevation band against the training poses")
    a.add_argument("caches", nargs="+", type=Path, help="OUT/cache/<split>.jsonl files of scripts/evaluate.py")
    a.add_argument("--data", required=True, help="the synthetic data set the caches were evaluated on")
    a.add_argument("--split", required=True, help="the split the caches hold, e.g. ood-pose")
    a.add_argument("--protocols", default="templates-only,true-class,from-truth")
    a.add_argument("--plot", default="", help="write predicted against true elevation to this PNG")
    b = sub.add_parser("objective", help="does the objective prefer the wrong pose, or did the search miss")
    b.add_argument("caches", nargs="+", type=Path, help="OUT/cache/<split>.jsonl files of evaluate.py --diagnose")
    b.add_argument("--estimate", default="true-class", help="the protocol whose failures are examined")
    b.add_argument("--reference", default="from-truth", help="the protocol that gets those images right")
    b.add_argument("--symmetric", action="store_true", help="right and wrong by the symmetry-aware error")
    b.add_argument("--distances", action="store_true", help="also the failures' distances against the priors")
    b.add_argument("--threshold", type=float, default=30.0, help="degrees below which an error is right")
    b.add_argument("--angle-margin", type=float, default=0.0, help="degrees: --distances widens the angle ranges")
    b.add_argument("--class-choice", action="store_true", help="the top2-classes bound (full against true-class)")
    b.add_argument("--switches", default="", metavar="BASE,OTHER", help="where OTHER's class differs from BASE's")
    b.add_argument("--join", nargs="+", type=Path, default=[], help="caches joined to the positional ones")
    c = sub.add_parser("votes", help="who wins each feature cell's vote: occluders, visible object, background")
    c.add_argument("--checkpoint", required=True)
    c.add_argument("--data", required=True, help="a synthetic data set with occluded splits")
    c.add_argument("--split", default="occluded-L3")
    c.add_argument("--max-images", type=int, default=None, help="evenly spaced subset")
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--workers", type=int, default=4)
    c.add_argument("--json", default=None, help="also write the result here")
    c.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    for s in (a, b, c):
        s.add_argument("--append", default="", metavar="FILE", help="also append the table to this Markdown file")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Run one diagnosis; the exit code (2 with one error line for bad input)."""
    p = parser()
    args = p.parse_args(argv)
    command_line = "python scripts/diagnose.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.tool == "pose-errors":
        return _pose_errors(args, command_line)
    if args.tool == "objective":
        return _objective(args, command_line, p.error)
    return _votes(args, command_line)
