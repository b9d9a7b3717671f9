"""Checkpoint files: atomic writes that never lose the last good one, checked reads, content digests;
weights files (torch state_dicts, ``.safetensors``) read into plain state_dicts."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, TypeVar

import torch

from .config import from_mapping
from .errors import CheckpointError, ConfigError, WeightsError

CHECKPOINT = "last.pt"
PREVIOUS = "previous.pt"
KINDS = {"novum": "NOVUM", "baseline": "baseline classifier", "pretrain": "backbone pretraining"}
WEIGHTS_FIELDS = ("backbone_weights", "weights")  # model.*: the local file a run's weights started from

T = TypeVar("T")


def save_checkpoint(state: dict[str, Any], folder: str | Path) -> Path:
    """Write ``state`` to ``folder/last.pt``, keeping the one before as ``previous.pt``.

    The state goes to a temporary file first and is renamed into place only once complete, so
    a crash or a full disk mid-write leaves ``last.pt`` as it was; the partial file is removed
    and the failure raised as :class:`CheckpointError`.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp, last = folder / f"{CHECKPOINT}.tmp", folder / CHECKPOINT
    try:
        torch.save(state, tmp)
        with open(tmp, "rb") as fh:  # the bytes are on disk before the rename makes them the checkpoint
            os.fsync(fh.fileno())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        kept = f"; {last} is unchanged" if last.is_file() else ""
        raise CheckpointError(
            f"could not write the checkpoint ({exc.strerror or exc}){kept}; free disk space, then rerun with --resume",
            path=tmp,
        ) from exc
    if last.exists():
        os.replace(last, folder / PREVIOUS)
    os.replace(tmp, last)
    return last


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint; a missing, truncated or foreign file raises CheckpointError naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such checkpoint; train one with scripts/train.py", path=path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises several types for truncated zip archives
        previous = path.with_name(PREVIOUS)
        hint = f"; the one before it is {previous}" if previous.is_file() and previous != path else ""
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(f"unreadable checkpoint ({type(exc).__name__}: {first}){hint}", path=path) from exc
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError("not a novum3d checkpoint (no 'model' and 'config' entries)", path=path)
    return ckpt


def read_trained(path: str | Path, kind: str, config_cls: type[T]) -> tuple[dict[str, Any], T]:
    """A training checkpoint of ``kind`` (``novum`` or ``baseline``) and its typed config.

    A checkpoint of the other kind, or one whose config no longer loads, raises CheckpointError.
    """
    ckpt = load_checkpoint(path, "cpu")
    found = ckpt.get("kind", "novum")
    if found != kind:
        use = {"novum": "scripts/estimate_pose.py, scripts/evaluate.py", "baseline": "novum3d.baselines.load_baseline",
               "pretrain": "the .safetensors it exported, as model.weights or model.backbone_weights"}  # fmt: skip
        raise CheckpointError(
            f"a {KINDS.get(found, found)} checkpoint, not {KINDS[kind]}; load it with {use.get(found, 'its own tool')}",
            path=path,
        )
    config = ckpt["config"]
    if isinstance(config, dict) and isinstance(config.get("model"), dict):
        # The checkpoint holds the weights: the file training started from need not exist here (its name and
        # digest are in ckpt["provenance"]), and is not read again.
        config = {**config, "model": {**config["model"], **{k: None for k in WEIGHTS_FIELDS if k in config["model"]}}}
    try:
        cfg = from_mapping(config_cls, config, where=f"{path} (config)")
    except ConfigError as exc:
        raise CheckpointError(f"its config does not load with this version ({exc})", path=path) from exc
    return ckpt, cfg


def load_weights(model: torch.nn.Module, ckpt: dict[str, Any], path: str | Path) -> None:
    """``model.load_state_dict(ckpt["model"])``, a mismatch raised as CheckpointError naming the file."""
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"weights do not fit the model its config describes ({first})", path=path) from exc


def file_digest(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# Keys a whole-model file keeps its state_dict under (torchvision references and timm's trainer write these).
STATE_DICT_WRAPPERS = ("state_dict", "model")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a local weights file, by name: a torch ``state_dict`` (``.pt`` / ``.pth`` / ``.bin``, read
    with ``weights_only=True``; also one wrapped as ``{"state_dict": ...}`` or ``{"model": ...}``) or a
    ``.safetensors`` file. Nothing is downloaded; dtypes are kept (``load_state_dict`` casts to the model's).

    A missing or unreadable file, or one that holds anything but named tensors, raises :class:`WeightsError`
    naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError("weights file not found (weights are never downloaded)", path=path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated archives, pickles of more than tensors, bad safetensors headers, ...
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise WeightsError(f"unreadable weights file ({type(exc).__name__}: {first})", path=path) from exc
    for key in STATE_DICT_WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state:
        got = "an empty mapping" if isinstance(state, dict) else type(state).__name__
        raise WeightsError(f"expected a state_dict (names -> tensors), got {got}", path=path)
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise WeightsError(
                f"expected a state_dict (names -> tensors); entry {name!r} is {type(value).__name__}, not a tensor",
                path=path,
            )
    return state


def weights_provenance(path: str | Path | None) -> dict[str, str] | None:
    """``{"file": name, "sha256": hex}`` of a weights file, or None when there is none (random initialisation)."""
    if path is None:
        return None
    return {"file": Path(path).name, "sha256": file_digest(path)}
