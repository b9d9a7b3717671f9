"""Reading the pretraining corpus: its manifest, and a split as a torch Dataset of (image, label)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ...errors import DataError, MissingDataError
from .generate import FORMAT, MANIFEST, SPLITS, CorpusConfig, plan_jobs, split_digest

MAKE = "python scripts/make_pretraining.py --out {root} --workers 16"


def read_corpus(root: str | Path) -> dict[str, Any]:
    """The manifest of a complete corpus under ``root``; a missing, foreign or unfinished one is an error."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise MissingDataError(f"no pretraining corpus here ({MANIFEST}); make one with `{MAKE.format(root=root)}`",
                               path=root, field="data.root")  # fmt: skip
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc})", path=path) from exc
    if manifest.get("format") != FORMAT:
        raise DataError(f"format {manifest.get('format')!r}, expected {FORMAT!r}", path=path)
    if not manifest.get("complete"):
        raise MissingDataError("an unfinished corpus; rerun make_pretraining.py with its arguments to finish it",
                               path=root, field="data.root")  # fmt: skip
    return manifest


def corpus_config(manifest: dict[str, Any]) -> CorpusConfig:
    return CorpusConfig(**{k: manifest[k] for k in CorpusConfig.__dataclass_fields__})


class CorpusDataset(Dataset):
    """One split (``train`` or ``val``) of a corpus: {"image": uint8 [3, H, W], "label", "category", "name"}.

    Labels are category indices in the manifest's order (``classes``).
    """

    def __init__(self, root: str | Path, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.manifest = read_corpus(self.root)
        self.classes: list[str] = list(self.manifest["category_names"])
        jobs = [j for j in plan_jobs(corpus_config(self.manifest)) if j.split == split]
        self.items: list[tuple[str, int]] = [(j.path, j.category) for j in jobs]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path, label = self.items[i]
        try:
            with Image.open(self.root / path) as img:
                array = np.asarray(img.convert("RGB"))
        except OSError as exc:
            raise DataError(f"unreadable image ({exc}); rerun make_pretraining.py to rewrite it",
                            path=self.root / path) from exc  # fmt: skip
        image = torch.from_numpy(array.copy()).permute(2, 0, 1)
        return {"image": image, "label": label, "category": self.classes[label], "name": Path(path).stem}

    def digest(self) -> str:
        """sha256 of the split's files as they are now (the manifest's ``digests`` entry when unchanged);
        files changed since the corpus was made are an error."""
        entries = []
        for path, _ in self.items:
            try:
                entries.append((path, hashlib.sha256((self.root / path).read_bytes()).hexdigest()))
            except FileNotFoundError as exc:
                raise DataError("missing; rerun make_pretraining.py with the corpus's arguments",
                                path=self.root / path) from exc  # fmt: skip
        digest = split_digest(entries)
        if digest != self.manifest["digests"][self.split]:
            raise DataError(f"the {self.split} images differ from the ones corpus.json records; make the corpus again",
                            path=self.root)  # fmt: skip
        return digest


def collate_corpus(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples: {"image": uint8 [B, 3, H, W], "label": int64 [B]}."""
    return {"image": torch.stack([s["image"] for s in samples]), "label": torch.tensor([s["label"] for s in samples])}
