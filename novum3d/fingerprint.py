"""Digests of what determines a result: data, code and settings. Caches are keyed by them.

A cached result (per-image evaluation records, robustness summaries, a "finished" training run)
may be reused only when every input that made it is the same; :func:`compare_keys` names the
parts that differ, so the error can say what changed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from pathlib import Path
from typing import Any

CACHE_FORMAT = 3  # bump when a cache's record layout changes (3: records carry the pose score)

_PACKAGES = ("novum3d", "rendering")


def _update_file(h: Any, path: Path) -> None:
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)


def dataset_digest(dataset: Any) -> str:
    """sha256 over a reader's items, in order: names, annotations and the bytes of images and masks.

    ``dataset`` is any reader with ``items`` (``Pascal3DPreprocessed``, an evaluation subset);
    a ``torch.utils.data.Subset`` of one is followed to its items.
    """
    items = getattr(dataset, "items", None)
    if items is None and hasattr(dataset, "dataset") and hasattr(dataset, "indices"):
        inner = getattr(dataset.dataset, "items", None)
        items = None if inner is None else [inner[i] for i in dataset.indices]
    if items is None:
        raise TypeError(f"dataset_digest: {type(dataset).__name__} has no items to digest")
    h = hashlib.sha256()
    for item in items:
        ann = dataclasses.asdict(item.annotation)
        h.update(json.dumps([item.category, item.name, ann], sort_keys=True).encode())
        _update_file(h, item.image)
        if getattr(item, "mask", None) is not None:
            _update_file(h, item.mask)
    return h.hexdigest()


@functools.cache
def code_digest() -> str:
    """sha256 of the Python sources of ``novum3d`` and ``rendering`` (what computes every result)."""
    h = hashlib.sha256()
    top = Path(__file__).resolve().parents[1]
    for package in _PACKAGES:
        for path in sorted((top / package).rglob("*.py")):
            h.update(str(path.relative_to(top)).encode())
            _update_file(h, path)
    return h.hexdigest()


def compare_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names of the parts of two cache keys that differ (nested dicts compared part by part)."""
    differ = []
    for name in sorted(set(saved) | set(current)):
        a, b = saved.get(name), current.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            differ += [f"{name}.{sub}" for sub in compare_keys(a, b)]
        elif a != b:
            differ.append(name)
    return differ
