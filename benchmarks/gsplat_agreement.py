"""How closely the gsplat backend matches the pure-PyTorch reference (needs CUDA).

Same scene as tests/test_rasterize_gpu.py (``benchmarks.common.cuboid_scene``): ~1100 cuboid
Gaussians, D=128, 80x100, random poses.
Prints max / mean absolute differences of features, alpha and depth, and the per-view cosine
between the two backends' gradients with respect to viewmats and features.

    python -m benchmarks.gsplat_agreement --views 256
"""

from __future__ import annotations

import argparse
import sys

import torch

from benchmarks.common import render_both


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--views", type=int, default=256)
    parser.add_argument("--grad-views", type=int, default=64)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs CUDA")
        return 1
    outs, _ = render_both(batch=args.views, seed=10)
    g, t = outs["gsplat"], outs["torch"]
    fd = (g.features - t.features).abs()
    ad = (g.alpha - t.alpha).abs()
    seen = (g.alpha > 0.5) & (t.alpha > 0.5)
    dd = (g.depth - t.depth).abs()[seen]
    print(f"{torch.cuda.get_device_name()}: {args.views} views, 80x100, D=128")
    frac = (fd > 1e-4).float().mean()
    print(f"features |diff|: max {fd.max():.2e}  mean {fd.mean():.2e}  share over 1e-4: {frac:.2e}")
    print(f"alpha    |diff|: max {ad.max():.2e}  mean {ad.mean():.2e}")
    print(f"depth    |diff| where alpha > 0.5: max {dd.max():.2e}  mean {dd.mean():.2e}")
    _, grads = render_both(batch=args.grad_views, requires_grad=True, seed=11)
    for name, a, b in zip(("viewmats", "features"), grads["gsplat"], grads["torch"], strict=True):
        cos = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)
        print(f"grad {name:8s} cosine per view: min {cos.min():.5f}  median {cos.median():.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
