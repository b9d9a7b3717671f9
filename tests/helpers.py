"""Scenes shared by the rendering tests (the paper-sized cuboid scene is benchmarks.common.cuboid_scene),
and a script's ``main`` run in the test's process."""

import math
import runpy
from pathlib import Path

import torch

from rendering import pascal3d_intrinsics, pose_to_viewmat


def random_scene(n=6, batch=2, d=4, dtype=torch.float64, seed=0, width=12, height=10):
    """A few anisotropic Gaussians near the origin, seen by ``batch`` cameras at distance ~4."""
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g, dtype=dtype) - 0.5) * 1.2
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=dtype), dim=-1)
    scales = 0.08 + 0.15 * torch.rand(n, 3, generator=g, dtype=dtype)
    opacities = 0.3 + 0.6 * torch.rand(n, generator=g, dtype=dtype)
    feats = torch.randn(batch, n, d, generator=g, dtype=dtype)
    az = torch.rand(batch, generator=g, dtype=dtype) * 2 * math.pi
    el = (torch.rand(batch, generator=g, dtype=dtype) - 0.5) * 1.0
    th = (torch.rand(batch, generator=g, dtype=dtype) - 0.5) * 0.5
    viewmats = pose_to_viewmat(az, el, th, torch.full((batch,), 4.0, dtype=dtype))
    Ks = pascal3d_intrinsics(
        torch.full((batch,), 1.0, dtype=dtype), 3000.0 / 300.0, torch.tensor([width / 2, height / 2])
    ).to(dtype)
    return means, quats, scales, opacities, feats, viewmats, Ks, width, height


ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, argv: list[str], capsys) -> tuple[int, str]:
    """``scripts/<script>``'s ``main(argv)`` in this process (no interpreter start): (exit code, stderr)."""
    main = runpy.run_path(str(ROOT / "scripts" / script), run_name="novum3d_test")["main"]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    return code, capsys.readouterr().err
