"""Rendering speed: views/s of rasterize_features per backend, forward and forward+backward.

Scene: one cuboid volume of ~1100 Gaussians, D=128 unit features, 80x100 (a stride-8
feature map of a 640x800 image), random poses. Prints a table with the device named;
``--append FILE`` appends it to a Markdown file.

    python -m benchmarks.render                      # all backends usable here
    python -m benchmarks.render --batches 1,144 --backends torch
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys

import torch

from benchmarks.common import cuboid_scene, emit, time_call
from novum3d.device import select_device
from rendering import rasterize_features
from rendering.backends import gsplat_available


def measure(backend: str, batch: int, device: str, backward: bool, args, with_depth: bool = False) -> float:
    vol, feats, viewmats, Ks, w, h = cuboid_scene(batch, device=device)
    viewmats.requires_grad_(backward)
    feats.requires_grad_(backward)

    def run():
        with torch.set_grad_enabled(backward):
            out = rasterize_features(vol, feats, viewmats, Ks, w, h, backend=backend, with_depth=with_depth)
            if backward:
                out.features.sum().backward()

    seconds = time_call(run, args.min_time)
    return batch / seconds


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,144,1024")
    parser.add_argument("--backends", default="auto", help="comma list of gsplat,torch; auto = all usable")
    parser.add_argument("--torch-max-batch-backward", type=int, default=144,
                        help="skip torch forward+backward above this batch (time)")  # fmt: skip
    parser.add_argument("--torch-max-batch", type=int, default=1024)
    parser.add_argument("--min-time", type=float, default=1.0, help="blocked_autorange min_run_time per cell, s")
    parser.add_argument("--append", default="", metavar="FILE", help="also append the table to this Markdown file")
    args = parser.parse_args()

    device = select_device().type
    backends = ["gsplat", "torch"] if args.backends == "auto" else args.backends.split(",")
    if "gsplat" in backends and not (device == "cuda" and gsplat_available()):
        print("gsplat backend not usable here (needs CUDA and its extension); skipping it")
        backends.remove("gsplat")
    batches = [int(b) for b in args.batches.split(",")]

    modes = [("fwd", False, False), ("fwd+depth", False, True), ("fwd+bwd", True, False)]
    rows = []
    for batch in batches:
        cells = {}
        for backend in backends:
            for label, backward, depth in modes:
                limit = args.torch_max_batch_backward if backward else args.torch_max_batch
                if backend == "torch" and batch > limit:
                    cells[backend, label] = None
                    continue
                rate = measure(backend, batch, device, backward, args, with_depth=depth)
                cells[backend, label] = rate
                print(f"  {backend:6s} B={batch:5d} {label:9s} {rate:10.1f} views/s", flush=True)
        rows.append((batch, cells))

    def fmt(v):
        return "skipped" if v is None else f"{v:,.0f}"

    both = "gsplat" in backends and "torch" in backends
    header = ["B"] + [f"{b} {m[0]} (views/s)" for b in backends for m in modes]
    if both:
        header += [f"gsplat/torch {m[0]}" for m in modes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for batch, cells in rows:
        vals = [str(batch)] + [fmt(cells[b, m[0]]) for b in backends for m in modes]
        if both:
            for label, _, _ in modes:
                g, t = cells["gsplat", label], cells["torch", label]
                vals.append("-" if g is None or t is None else f"{g / t:.0f}x")
        lines.append("| " + " | ".join(vals) + " |")
    table = "\n".join(lines)
    gsplat_version = "-"
    try:
        import gsplat

        gsplat_version = gsplat.__version__
    except ImportError:
        pass
    title = (
        f"### Rendering speed, {device_name(device)} ({datetime.date.today().isoformat()})\n\n"
        f"N=1100 cuboid Gaussians, D=128, 80x100, random poses; median of torch.utils.benchmark's "
        f"blocked_autorange after a warm-up; "
        f"fwd renders features + alpha, fwd+depth also expected depth, fwd+bwd backpropagates "
        f"into features and viewmats. "
        f"torch {torch.__version__}, gsplat {gsplat_version}. "
        f"Command: `python -m benchmarks.render --batches {args.batches} --backends {args.backends}`\n"
    )
    emit(title + "\n" + table, args.append)
    return 0


if __name__ == "__main__":
    sys.exit(main())
