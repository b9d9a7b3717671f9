"""Result caches keyed by everything that made them, so a result is never reused for other inputs.

A key is a JSON mapping: the cache format, digests of the checkpoint, the data and the code, and
the settings. A cache whose key differs from the current one is either an error naming the parts
that differ and the flag that overwrites (``overwrite=False``), or discarded and recomputed
(``overwrite=True``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..checkpoint import file_digest
from ..errors import CacheError
from ..fingerprint import CACHE_FORMAT, code_digest, compare_keys, dataset_digest


def evaluation_key(checkpoint: str | Path, dataset: Any, settings: dict[str, Any]) -> dict[str, Any]:
    """The key of one model's results on one split: format, checkpoint, data, code and settings."""
    return {
        "format": CACHE_FORMAT,
        "checkpoint": file_digest(checkpoint),
        "data": dataset_digest(dataset),
        "code": code_digest(),
        "settings": json.loads(json.dumps(settings)),
    }


def _mismatch(path: Path, differ: list[str], hint: str) -> CacheError:
    return CacheError(f"cached results were made with another {', '.join(differ)}; {hint}", path=path)


class RecordCache:
    """Per-image records in JSON lines behind a header line holding the key.

    Records are appended (and flushed) as they are computed, so an interrupted run keeps them;
    a last line cut off by the interruption is dropped on the next open.

    Args:
        path: the ``.jsonl`` file.
        key: what made the records (:func:`evaluation_key`).
        overwrite: discard a cache made with another key instead of raising :class:`CacheError`.
        hint: the fix the error names (e.g. "rerun with --overwrite, or choose another --out").
    """

    def __init__(self, path: str | Path, key: dict[str, Any], overwrite: bool = False, hint: str = ""):
        self.path = Path(path)
        self.key = json.loads(json.dumps(key))
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            lines = self.path.read_text().splitlines()
            try:
                header = json.loads(lines[0]) if lines else {}
            except json.JSONDecodeError:
                header = {}
            saved = header.get("key") if isinstance(header, dict) else None
            differ = ["format (no key: an older version)"] if saved is None else compare_keys(saved, self.key)
            if differ and not overwrite:
                raise _mismatch(self.path, differ, hint or "delete it to recompute")
            if not differ:
                for i, line in enumerate(lines[1:], start=1):
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError:
                        if i == len(lines) - 1:  # cut off mid-write: recompute that image
                            break
                        raise CacheError(f"line {i + 1} is not JSON; delete the file", path=self.path) from None
                    self.records[rec["id"]] = rec
        self._rewrite()

    def _rewrite(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        lines = [json.dumps({"key": self.key})] + [json.dumps(r) for r in self.records.values()]
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.path)

    def __contains__(self, ident: str) -> bool:
        return ident in self.records

    def add(self, records: list[dict[str, Any]]) -> None:
        """Append records (each with an ``id``) and flush them to disk."""
        with self.path.open("a") as fh:
            for rec in records:
                self.records[rec["id"]] = rec
                fh.write(json.dumps(rec) + "\n")
            fh.flush()


def load_keyed(path: str | Path, key: dict[str, Any]) -> tuple[Any | None, list[str]]:
    """``(data, [])`` when ``path`` holds data saved under ``key``; ``(None, parts that differ)`` otherwise."""
    path = Path(path)
    if not path.is_file():
        return None, []
    try:
        saved = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None, ["file (not JSON)"]
    if not isinstance(saved, dict) or "key" not in saved:
        return None, ["format (no key: an older version)"]
    differ = compare_keys(saved["key"], json.loads(json.dumps(key)))
    return (None, differ) if differ else (saved["data"], [])


def save_keyed(path: str | Path, key: dict[str, Any], data: Any) -> None:
    """Write ``{"key": key, "data": data}`` (written then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"key": key, "data": data}, indent=2))
    tmp.replace(path)
