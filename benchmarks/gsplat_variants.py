"""Which way of calling gsplat 1.5.3 renders 128-d feature maps fastest (needs CUDA).

Times ``gsplat.rasterization`` alone at B views of ~1100 cuboid Gaussians, 80x100, D=128,
over channel chunking (gsplat's per-pixel register array grows with the chunk), depth as an
extra channel or not, packed or dense intermediates, and shared [N, D] vs per-view
[B, N, D] features. Prints views/s per variant; the rendering backend uses the winner.

    python -m benchmarks.gsplat_variants --batch 1024
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks.common import cuboid_scene, time_call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--min-time", type=float, default=1.0)
    args = parser.parse_args()
    from gsplat import rasterization

    vol, feats, viewmats, Ks, _, _ = cuboid_scene(args.batch, device="cuda")
    per_view = feats.expand(args.batch, -1, -1).contiguous()
    print(f"{torch.cuda.get_device_name()}, B={args.batch}, N={len(vol)}, D=128, 80x100")
    cols = ("mode", "chunk", "packed", "colors", "fwd views/s", "fwd+bwd views/s")
    print("{:7s} {:>5s} {:>6s} {:>8s} {:>12s} {:>16s}".format(*cols))
    for mode in ("RGB", "RGB+D"):
        for chunk in (32, 64, 128, 129):
            if mode == "RGB" and chunk == 129:
                continue
            for packed in (False, True):
                for name, colors in (("shared", feats), ("per-view", per_view)):
                    if mode == "RGB+D" and name == "shared":
                        continue  # gsplat concatenates depth per view: needs [B, N, D]
                    rates = []
                    for backward in (False, True):
                        vm = viewmats.clone().requires_grad_(backward)
                        col = colors.detach().clone().requires_grad_(backward)

                        def run(vm=vm, col=col, backward=backward, chunk=chunk, packed=packed, mode=mode):
                            with torch.set_grad_enabled(backward):
                                out, alpha, _ = rasterization(
                                    vol.means, vol.quats, vol.scales, vol.opacities, col, vm, Ks, 100, 80,
                                    packed=packed, render_mode=mode, channel_chunk=chunk,
                                )  # fmt: skip
                                if backward:
                                    (out.sum() + alpha.sum()).backward()

                        rates.append(args.batch / time_call(run, args.min_time))
                    print(f"{mode:7s} {chunk:5d} {packed!s:>6s} {name:>8s} {rates[0]:12,.0f} {rates[1]:16,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
