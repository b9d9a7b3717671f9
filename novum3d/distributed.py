"""torch.distributed helpers: identical results on every rank, and no-ops in a single process."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F


def dist_info() -> tuple[int, int, int]:
    """(rank, world size, local rank); (0, 1, 0) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
    return 0, 1, 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over ranks, in place (returned for chaining); unchanged in a single process."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate [n_r, D] tensors of all ranks, in rank order (n_r may differ)."""
    if not (dist.is_available() and dist.is_initialized()):
        return t
    world = dist.get_world_size()
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = int(max(s.item() for s in sizes))
    padded = F.pad(t, (0, 0, 0, longest - t.shape[0]))
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(s.item())] for p, s in zip(parts, sizes, strict=True)])
