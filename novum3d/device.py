"""Which device a process runs on, and whether its backbone is compiled there: one rule for the scripts,
the benchmarks and the trainer."""

from __future__ import annotations

import os

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


def resolve_compile(setting: str | bool, device: torch.device | str, field: str = "model.compile") -> bool:
    """Whether to torch.compile the backbone on ``device``: ``auto`` -> on CUDA only, ``on`` / ``off`` as asked.

    ``auto`` stays eager off CUDA: on a CPU inductor needs a C++ toolchain, compiles for minutes and was not
    measured to win; on an H100 the compiled backbone took full classification from 1,018 to 1,573 img/s.

    Args:
        setting: "auto", "on" or "off" (True / False, as YAML reads unquoted on / off, are "on" / "off").
        device: where the model runs; only its type matters, so no GPU is needed to ask about ``cuda``.
        field: where ``setting`` came from (``model.compile``, ``--compile``), for the error.

    Raises:
        ConfigError: another setting.
    """
    if isinstance(setting, bool):
        return setting
    if setting not in ("auto", "on", "off"):
        raise ConfigError(f"{field}: expected auto, on or off, got {setting!r}", field=field)
    if setting == "auto":
        return torch.device(device).type == "cuda"
    return setting == "on"


def main_process_threads(setting: int | None, device: torch.device, num_workers: int) -> int:
    """torch's CPU threads for a training process: ``setting`` when given; torch's current count when
    ``OMP_NUM_THREADS`` is set (torchrun sets it) or off CUDA or without loader workers; otherwise, on
    CUDA, the cores this process's share of the machine leaves its workers (at least 1).

    On CUDA the process itself computes little on the CPU, and its default of one thread per core
    competes with the decoding workers: small parallel CPU ops then wait for busy cores.
    """
    if setting is not None:
        return setting
    if os.environ.get("OMP_NUM_THREADS") or device.type != "cuda" or num_workers == 0:
        return torch.get_num_threads()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, share - num_workers)
