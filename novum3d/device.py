"""Which device a process runs on: one rule for the scripts, the benchmarks and the trainer."""

from __future__ import annotations

import torch

from .errors import ConfigError


def select_device(name: str = "auto", index: int | None = None, field: str = "--device") -> torch.device:
    """``auto`` -> CUDA when there is a device, else the CPU; ``cpu`` / ``cuda`` as asked.

    Args:
        name: "auto", "cpu" or "cuda".
        index: the CUDA device (a torchrun process's local rank); None: the current one.
        field: where ``name`` came from (``--device``, ``train.device``), for the error.

    Raises:
        ConfigError: ``cuda`` where there is no CUDA device, or another name.
    """
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"{field}: expected auto, cpu or cuda, got {name!r}", field=field)
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{field} cuda: no CUDA device here; use {field} cpu or auto", field=field)
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", index) if index is not None else torch.device("cuda")
