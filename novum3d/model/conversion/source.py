"""Reading a released checkpoint: which format it is, checked before anything is converted.

Formats (``FORMATS``), by the code that writes them:

- ``novum``: GenIntel/NOVUM ``src/train.py`` ``save_checkpoint`` (L111-113, L216-225):
  ``{"state": DataParallel(NetE2E).state_dict(), "memory": Tensor [Y * max_n + 2560, 128], "timestamp", "args"}``.
- ``cave``: the same file from the same training code with ellipsoid meshes; phamleyennhi/CAVE publishes no
  training script, only the NOVUM modules it loads (``src/models``) and that checkpoint's name
  (``config/defaults.yaml`` L60, ``classification_saved_model_199.pth``, NOVUM's naming).
- ``nemo``: Angtian/NeMo ``code/TrainNeMo.py`` L130-132, L198-201: ``{"state", "memory": [Tensor [n_i + 2560,
  128] per sub-type mesh], "timestamp", "args"}``, one file per category (``saved_model_{cate}_799.pth``).

``args`` is a pickled ``argparse.Namespace``. Files are unpickled with ``weights_only=True`` and that one class
allowed, so a file cannot run code; ``allow_pickle`` lifts that, for files the user trusts.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ...checkpoint import file_digest
from ...errors import CheckpointError
from .layout import strip_data_parallel

FORMATS = ("novum", "cave", "nemo")
RELEASES = {  # where each file is published (nothing is downloaded: the user fetches it)
    "novum": "https://github.com/GenIntel/NOVUM/releases/tag/v1.0.0 (classification_saved_model_199.pth)",
    "cave": "https://github.com/phamleyennhi/CAVE/releases/tag/v1.0.0",
    "nemo": "Angtian/NeMo's README (one saved_model_{category}_799.pth per category)",
}


@dataclass
class SourceCheckpoint:
    """A released checkpoint, read and checked for its format."""

    path: Path
    format: str
    state: dict[str, Tensor]  # DataParallel's ``module.`` stripped
    memory: Tensor | list[Tensor]
    sha256: str
    size: int  # bytes
    extra: dict[str, Any]  # timestamp, args (as strings), other top-level keys


def read_source(path: str | Path, fmt: str, allow_pickle: bool = False) -> SourceCheckpoint:
    """Read ``path`` as a ``fmt`` checkpoint (:data:`FORMATS`); a missing, truncated, foreign or other-format file
    is a one-line CheckpointError saying what to do."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt: one of {FORMATS}, got {fmt!r}")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no such file; download it from {RELEASES[fmt]} (nothing is downloaded)", path=path)
    raw = _load(path, allow_pickle)
    if not isinstance(raw, dict):
        raise CheckpointError(f"not a {fmt} checkpoint: a {type(raw).__name__}, expected a dict", path=path)
    if "model" in raw and "config" in raw:
        raise CheckpointError(
            "already a novum3d checkpoint: evaluate it as it is (scripts/evaluate.py --checkpoint)", path=path
        )
    missing = [k for k in ("state", "memory") if k not in raw]
    if missing or not isinstance(raw["state"], dict):
        writer = "Angtian/NeMo code/TrainNeMo.py" if fmt == "nemo" else "GenIntel/NOVUM src/train.py"
        raise CheckpointError(
            f"not a {fmt} checkpoint: expected 'state' (a state dict) and 'memory', as {writer} saves them; "
            f"found keys {sorted(map(str, raw))[:8]}",
            path=path,
        )
    memory = raw["memory"]
    if fmt == "nemo" and isinstance(memory, Tensor):
        raise CheckpointError(
            "its memory is one tensor, as NOVUM and CAVE save it, not NeMo's list of one per mesh: "
            "convert it with `convert_checkpoint.py novum` (or `cave`)",
            path=path,
        )
    if fmt != "nemo" and isinstance(memory, list | tuple):
        raise CheckpointError(
            f"its memory is a list of {len(memory)} tensors, as NeMo saves one per mesh: "
            "convert it with `convert_checkpoint.py nemo`",
            path=path,
        )
    tensors = list(memory) if isinstance(memory, list | tuple) else [memory]
    if not tensors or not all(isinstance(t, Tensor) and t.dim() == 2 for t in tensors):
        raise CheckpointError("memory: expected 2-D tensors [rows, feature dim]", path=path, field="memory")
    bad = [k for k, v in raw["state"].items() if not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"state: {bad[0]!r} is not a tensor", path=path, field=bad[0])
    extra = {"timestamp": raw.get("timestamp"), "keys": sorted(map(str, raw))}
    if isinstance(raw.get("args"), argparse.Namespace):
        extra["args"] = {k: str(v) for k, v in sorted(vars(raw["args"]).items())}
    return SourceCheckpoint(
        path=path,
        format=fmt,
        state=strip_data_parallel(raw["state"]),
        memory=[t.detach() for t in tensors] if fmt == "nemo" else tensors[0].detach(),
        sha256=file_digest(path),
        size=os.path.getsize(path),
        extra=extra,
    )


def _load(path: Path, allow_pickle: bool) -> Any:
    try:
        if allow_pickle:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip errors for truncated files, UnpicklingError for foreign objects
        text = " ".join(str(exc).split())
        if "weights_only" in text or "Unsupported global" in text:
            found = text.split("GLOBAL ", 1)[1].split(" ", 1)[0] if "GLOBAL " in text else "an object"
            raise CheckpointError(
                f"holds a pickled {found}, which could run code when loaded; if you trust the file, rerun with "
                "--allow-pickle",
                path=path,
            ) from exc
        raise CheckpointError(
            f"unreadable ({type(exc).__name__}: {text[:120]}): a truncated or corrupted download? "
            "Fetch it again and compare its sha256",
            path=path,
        ) from exc
