"""The per-image records ``scripts/evaluate.py`` caches (``OUT/cache/<split>.jsonl``), read for diagnosis."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import DataError


def read_cache(path: Path) -> list[dict[str, Any]]:
    """The image rows of an evaluation cache (its first line is the key of the inputs)."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise DataError("empty evaluation cache; rerun scripts/evaluate.py", path=path)
    rows = [json.loads(line) for line in lines[1:]]
    return [r for r in rows if "id" in r]


def joined(rows: list[dict[str, Any]], more: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with the protocols of ``more``'s records of the same image id added."""
    extra = {r["id"]: r for r in more}
    return [{**extra.get(r["id"], {}), **r} for r in rows]


def cache_priors(path: Path) -> dict[str, Any]:
    """The pose priors a cache's key recorded (``settings.priors``), or ``{}`` for none."""
    with open(path) as fh:
        key = json.loads(fh.readline() or "{}").get("key", {})
    return (key.get("settings") or {}).get("priors") or {}
