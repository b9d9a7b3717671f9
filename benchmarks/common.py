"""Shared by the benchmark scripts: timing barriers and what to do with results (print, append to BENCHMARKS.md)."""

from __future__ import annotations

import torch


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def emit(text: str, path: str | None) -> None:
    """Print ``text`` and, unless ``path`` is empty, append it to that Markdown file."""
    print(text)
    if path:
        with open(path, "a") as fh:
            fh.write("\n" + text + "\n")


def rate(x: float) -> str:
    """A throughput for a table: thousands separators when large, 3 significant digits when small."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"
