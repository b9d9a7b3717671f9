"""Shared by the benchmarks: timing, the scene they render, and what becomes of results (``emit``: print,
and append to a Markdown file with ``--append``).

Every benchmark runs as a module from the repository root: ``python -m benchmarks.<name>``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.utils.benchmark import Timer
from torch.utils.benchmark.utils.timer import timer as synchronized_clock

from novum3d.evaluation.report import emit as emit  # the benchmarks print and append through it
from rendering import RasterOutput, cuboid_volume, pascal3d_intrinsics, pose_to_viewmat, rasterize_features


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_call(fn: Callable[[], object], min_time: float = 1.0, warmup: int = 1, number: int | None = None) -> float:
    """Seconds per call of ``fn`` through torch.utils.benchmark's Timer (which synchronises CUDA), after
    ``warmup`` calls (JIT, autotuning, allocator, caches), at the process's torch thread count (the
    Timer's own default is one thread).

    By default the median of ``blocked_autorange(min_run_time=min_time)``. With ``number``, exactly that
    many calls (their mean; ``Timer.timeit`` adds two untimed calls first): under torchrun every rank
    must run the same count of collective steps, which an adaptive count does not promise.
    """
    for _ in range(warmup):
        fn()
    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    if number is not None:
        return timer.timeit(number=number).mean
    return timer.blocked_autorange(min_run_time=min_time).median


def time_once(fn: Callable[[], object]) -> float:
    """Seconds of exactly one call of ``fn``, on the Timer's clock (synchronised with the GPU): for a
    pass that is itself the measurement and must not run twice."""
    start = synchronized_clock()
    fn()
    return synchronized_clock() - start


def rate(x: float) -> str:
    """A throughput for a table: thousands separators when large, 3 significant digits when small."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def cuboid_scene(batch=4, d=128, seed=0, dtype=torch.float32, width=100, height=80, device="cpu"):
    """The paper-sized scene: ~1100 cuboid Gaussians with unit features, random poses framing the
    object in 80x100 (a stride-8 map of a 640x800 image).

    Returns:
        (volume, features [N, d], viewmats [B, 4, 4], Ks [B, 3, 3], width, height).
    """
    g = torch.Generator().manual_seed(seed)
    vol = cuboid_volume((0.8, 1.8, 0.6), 1100).to(device, dtype)
    feats = torch.nn.functional.normalize(torch.randn(len(vol), d, generator=g), dim=-1).to(device, dtype)
    az = torch.rand(batch, generator=g) * 2 * math.pi
    el = (torch.rand(batch, generator=g) - 0.3) * 1.2
    th = (torch.rand(batch, generator=g) - 0.5) * 0.6
    dist = 9.0 + 3.0 * torch.rand(batch, generator=g)
    viewmats = pose_to_viewmat(az, el, th, dist).to(device, dtype)
    Ks = pascal3d_intrinsics(1.0, 3000.0, (400.0, 320.0), downsample=8).expand(batch, 3, 3)
    return vol, feats, viewmats, Ks.to(device, dtype).contiguous(), width, height


def render_both(
    batch=64, d=128, requires_grad=False, seed=0, with_visibility=False
) -> tuple[dict[str, RasterOutput], dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """The cuboid scene rendered on CUDA by the gsplat and the torch backends.

    Returns:
        ({backend: RasterOutput}, {backend: (d loss / d viewmats, d loss / d features)} when
        ``requires_grad``, for the loss ``sum(features * a fixed random target)``).
    """
    vol, feats, viewmats, Ks, w, h = cuboid_scene(batch=batch, d=d, device="cuda", seed=seed)
    outs, grads = {}, {}
    target = torch.randn(batch, h, w, d, device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    for backend in ("gsplat", "torch"):
        vm = viewmats.clone().requires_grad_(requires_grad)
        f = feats.clone().requires_grad_(requires_grad)
        out = rasterize_features(vol, f, vm, Ks, w, h, backend=backend, with_visibility=with_visibility)
        outs[backend] = out
        if requires_grad:
            loss = (out.features * target).sum()
            grads[backend] = torch.autograd.grad(loss, (vm, f))
    return outs, grads
