"""Contact sheet of a few samples from each split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...volume_sheet import save_grid


def write_preview(splits: dict, path: str | Path, per_split: int = 4, size: int = 128) -> Path:
    """One row per split: ``per_split`` images (spread over classes), captioned split/class."""
    from PIL import Image

    images, labels = [], []
    for name, ds in splits.items():
        if len(ds) == 0:
            continue
        for k in np.linspace(0, len(ds) - 1, per_split).round().astype(int):
            s = ds[int(k)]
            img = (s["image"].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
            images.append(np.asarray(Image.fromarray(img).resize((size, size))))
            labels.append(f"{name}: {s['category']}")
    return save_grid(images, labels, path, columns=per_split)
