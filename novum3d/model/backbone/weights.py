"""Local weights files into networks: the trunk's keys must all be there; a mismatch names the first keys."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from torch import Tensor, nn

from ...checkpoint import read_state_dict
from ...errors import WeightsError


def load_weights_except_head(net: nn.Module, path: str | Path, head: str | Iterable[str]) -> None:
    """Load a local state_dict (``novum3d.checkpoint.read_state_dict``: torch or safetensors, any float dtype,
    cast to the network's) into ``net``, leaving out the keys under ``head`` (a prefix or several: the
    classifier, which may be absent or of another task). Every other key of ``net`` must be in the file."""
    load_state(net, read_state_dict(path), path, skip=(head,) if isinstance(head, str) else tuple(head))


def load_state(
    net: nn.Module,
    state: dict[str, Tensor],
    path: str | Path,
    skip: tuple[str, ...] = (),
    rename: Callable[[str], str | None] | None = None,
) -> None:
    """``net.load_state_dict(state)`` less the keys starting with a prefix in ``skip``; ``rename`` maps a file's
    key to ``net``'s (None: the key belongs to a part of the network ``net`` leaves out, and is ignored).

    Raises :class:`WeightsError` naming ``path`` when a shape differs or a key of ``net`` is missing, or a key
    of the file has no place in ``net``; the message gives the first missing and unexpected keys.
    """
    skip = tuple(p for p in skip if p)
    kept, ignored = {}, []
    for key, value in state.items():
        if skip and key.startswith(skip):
            continue
        name = rename(key) if rename is not None else key
        if name is None:
            ignored.append(key)
        else:
            kept[name] = value
    try:
        missing, unexpected = net.load_state_dict(kept, strict=False)
    except RuntimeError as exc:  # shape mismatches: weights of another architecture or size
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise WeightsError(f"not a matching {type(net).__name__} state_dict ({first})", path=path) from exc
    missing = [k for k in missing if not (skip and k.startswith(skip))]
    if missing or unexpected:
        extra = unexpected or ignored
        raise WeightsError(
            f"not a matching {type(net).__name__} state_dict ({len(missing)} missing, first {missing[:3]}; "
            f"{len(extra)} unexpected, first {extra[:3]})",
            path=path,
        )
