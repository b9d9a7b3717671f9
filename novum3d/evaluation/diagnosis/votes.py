"""Where NOVUM's class votes go under occlusion: occluder, visible-object and background cells.

NOVUM classifies by letting every feature cell vote for the class whose Gaussians it matches best,
unless the clutter bank matches it better (then it votes for no class). Robustness to occlusion
rests on occluder cells going to the bank. On a synthetic occluded split (whose occluder masks are
stored beside the images), :func:`measure` counts, for each kind of cell, the share won by the true
class, by another class and by the bank, and the accuracy when the occluder cells (an oracle) or
everything but the visible object are kept from voting. A cell is an occluder / visible-object /
background cell when that kind covers most of its pixels. On an unoccluded split (clean) every
object cell is visible: the reference for the same model.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ...data.batch import collate, images_to_device
from ...errors import MissingDataError
from ...model.matching import background_scores

KINDS = ("occluder", "visible object", "background", "visible object, no occluder cell among its 8 neighbours")


class WithOccluders(Dataset):
    """A synthetic occluded split's samples with their occluder mask ``"occluder"`` [H, W] bool."""

    def __init__(self, split: Dataset, require: bool = True):
        self.split = split
        base = split.dataset if isinstance(split, torch.utils.data.Subset) else split
        idx = split.indices if isinstance(split, torch.utils.data.Subset) else range(len(split))
        self.paths = []
        for i in idx:
            item = base.items[i]
            # <root>/test-occluded/images/<subset>/<name>.JPEG -> <root>/test-occluded/occluders/<subset>/<name>.png
            path = item.image.parent.parent.parent / "occluders" / item.image.parent.name / f"{item.name}.png"
            if not path.is_file():
                if require:
                    raise MissingDataError(
                        f"{path}: no occluder mask; regenerate the data with scripts/make_synthetic.py"
                    )
                path = None  # an unoccluded split: no occluder cells
            self.paths.append(path)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict:
        sample = self.split[i]
        if "mask" not in sample:
            raise MissingDataError(f"{sample['category']}/{sample['name']}: no object mask")
        if self.paths[i] is None:
            sample["occluder"] = torch.zeros_like(sample["mask"])
        else:
            with Image.open(self.paths[i]) as m:
                sample["occluder"] = torch.from_numpy(np.asarray(m.convert("L")) > 0)
        return sample


def collate_with_occluders(samples: list[dict], image_size: tuple[int, int]) -> dict:
    batch = collate(samples, image_size)
    batch["occluder"] = torch.stack([s["occluder"] for s in samples])
    return batch


def cell_kinds(object_mask: Tensor, occluder: Tensor, shape: tuple[int, int]) -> Tensor:
    """[B, h, w] index into KINDS: the kind covering most pixels of each feature cell.

    Args:
        object_mask: [B, H, W] bool, the whole object's silhouette; occluder: [B, H, W] bool.
    """
    visible = object_mask & ~occluder
    background = ~object_mask & ~occluder
    shares = torch.stack([occluder, visible, background], 1).float()  # [B, 3, H, W]
    return F.adaptive_avg_pool2d(shares, shape).argmax(1)


def interior(kinds: Tensor) -> Tensor:
    """[B, h, w] bool: visible-object cells with no occluder cell among their 8 neighbours (their
    features are the least likely to mix in the occluder through a cell's own footprint)."""
    near = F.max_pool2d((kinds == 0).float()[:, None], 3, stride=1, padding=1)[:, 0] > 0
    return (kinds == 1) & ~near


@torch.no_grad()
def cell_winners(model, maps: Tensor) -> Tensor:
    """[B, h, w]: the class whose best Gaussian each cell matches best, or Y when the bank wins."""
    v = model.volumes
    feats = maps.float()
    per_class = torch.einsum("bdhw,ykd->bykhw", feats, v.features.float())
    per_class = per_class.masked_fill(~v.valid[None, :, :, None, None], -2.0).amax(2)  # [B, Y, h, w]
    # An empty bank scores -1, which no unit feature's best class score falls below: the bank never wins.
    bank = background_scores(feats, v.bank.float())[:, None]  # [B, 1, h, w]
    return torch.cat([per_class, bank], 1).argmax(1)


@torch.inference_mode()
def measure(model, loader, device: torch.device, progress=None) -> dict:
    """Vote shares per cell kind and accuracies under three masks (see the module docstring)."""
    Y = len(model.classes)
    wins = torch.zeros(len(KINDS), 3, dtype=torch.long)  # [kind, (true class, other class, bank)]
    correct = {"all cells": 0, "occluder cells removed": 0, "visible object only": 0}
    total = 0
    for batch in progress(loader) if progress else loader:
        images = images_to_device(batch["image"], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            maps = model(images)
        maps = maps.float()
        kinds = cell_kinds(batch["mask"].to(device), batch["occluder"].to(device), tuple(maps.shape[-2:]))
        labels = batch["label"].to(device)
        winner = cell_winners(model, maps)
        outcome = torch.where(winner == Y, 2, torch.where(winner == labels[:, None, None], 0, 1))
        inner = interior(kinds)
        for k in range(len(KINDS)):
            sel = inner if k == 3 else kinds == k
            wins[k] += torch.bincount(outcome[sel], minlength=3).cpu()
        masks = {"all cells": None, "occluder cells removed": kinds != 0, "visible object only": kinds == 1}
        for name, mask in masks.items():
            correct[name] += int((model.score_maps(maps, mask).argmax(1) == labels).sum())
        total += len(labels)
    shares = {KINDS[k]: {"cells": int(wins[k].sum()),
                         **{o: float(wins[k, j]) / max(int(wins[k].sum()), 1) * 100
                            for j, o in enumerate(("true class", "other class", "bank"))}}
              for k in range(len(KINDS))}  # fmt: skip
    return {"images": total, "votes": shares, "accuracy": {k: v / max(total, 1) * 100 for k, v in correct.items()}}


def table(result: dict) -> str:
    lines = ["| cells | cells counted | won by the true class % | by another class % | by the bank % |",
             "|---|---|---|---|---|"]  # fmt: skip
    for kind, v in result["votes"].items():
        lines.append(f"| {kind} | {v['cells']} | {v['true class']:.1f} | {v['other class']:.1f} | {v['bank']:.1f} |")
    lines += ["", "| cells that vote | accuracy % |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in result["accuracy"].items()]
    return "\n".join(lines)
