"""Backbone pretraining: supervised classification over the procedural corpus, with the baselines' trainer.

:class:`PretrainTrainer` is a :class:`~novum3d.baselines.BaselineTrainer` (so NOVUM's trainer: the same
DDP, AMP, compile, exact resume, atomic checkpoints, progress bar and logs) whose data is the corpus
(novum3d.data.pretraining), whose batches are augmented on the device (random resized crop, flip,
colour jitter), whose loss is label-smoothed cross-entropy and whose schedule is a linear warm-up
then a cosine, stepped every step (SGD with Nesterov momentum or AdamW; no weight decay on
BatchNorm parameters and biases). When the last epoch is done it writes the network's torchvision
``state_dict`` as safetensors (:func:`export_weights`), which ``model.weights`` (baselines) and
``model.backbone_weights`` (NOVUM's trunk; the ``fc.`` head is skipped) load unchanged.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..checkpoint import file_digest
from ..config import BaselineModelConfig, config_to_dict
from ..data.batch import images_to_device
from ..data.pretraining import CorpusConfig, CorpusDataset, ensure_corpus, read_corpus
from ..data.pretraining.augment import augment_batch, draw_params
from ..data.pretraining.dataset import collate_corpus
from ..errors import MissingDataError
from ..train.identity import training_identity
from .model import BaselineClassifier
from .pretrain_config import PretrainConfig
from .trainer import BaselineTrainer


class PretrainTrainer(BaselineTrainer):
    """Pretrain a torchvision ResNet on the corpus (config: :class:`PretrainConfig`)."""

    kind = "pretrain"
    cfg: PretrainConfig

    # ---- data ---------------------------------------------------------------------------
    def open_data(self) -> tuple[list[str], Dataset, Dataset]:
        root = Path(self.cfg.data.root)
        section = self.cfg.corpus
        if section is not None:
            corpus = CorpusConfig(section.categories, section.per_category, section.val_per_category, section.size,
                                  section.seed)  # fmt: skip
            if self.rank == 0:
                bar = None if self.quiet else lambda it, n: tqdm(it, total=n, unit="img", desc="corpus")
                ensure_corpus(root, corpus, section.workers, bar)
            else:  # rank 0 makes it; the others wait without a collective (rendering takes minutes)
                while not (root / "corpus.json").is_file() or not json.loads((root / "corpus.json").read_text()).get(
                    "complete"
                ):
                    time.sleep(5)
        train, val = CorpusDataset(root, "train"), CorpusDataset(root, "val")
        if len(val) == 0:
            raise MissingDataError("the corpus has no held-out images; make it with --val-per-category >= 1",
                                   path=root, field="data.root")  # fmt: skip
        # Read every file once now: a corpus changed since it was made fails before training (and the
        # reading warms the page cache for the first epoch).
        self._digests = train.digest(), val.digest()
        return train.classes, train, val

    def make_pose_priors(self, classes: list[str]) -> None:
        return None  # classification only

    def collate_fn(self):
        return collate_corpus

    def data_digests(self) -> tuple[str, str]:
        return self._digests

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            config = config_to_dict(self.cfg)
            if config.get("corpus"):
                config["corpus"].pop("workers")  # how fast the corpus was made, not what it holds
            config.pop("export")  # where the weights go
            self._identity = training_identity(config, *self.data_digests())
        return self._identity

    # ---- model and optimisation ---------------------------------------------------------
    def backbone_source(self) -> tuple[str, str | None]:
        return self.cfg.model.arch, None  # pretraining starts from random weights

    def compile_setting(self) -> str:
        return self.cfg.model.compile

    def build_model(self, classes: list[str]) -> torch.nn.Module:
        m = self.cfg.model
        model = BaselineClassifier(BaselineModelConfig(arch=m.arch, freeze_batchnorm=m.freeze_batchnorm), classes,
                                   tuple(self.cfg.data.image_size))  # fmt: skip
        if m.zero_init_residual:
            for block in model.backbone.modules():
                last = getattr(block, "bn3", None) or getattr(block, "bn2", None)
                if last is not None and hasattr(block, "conv1"):  # Bottleneck (bn3) or BasicBlock (bn2)
                    torch.nn.init.zeros_(last.weight)
        return model

    def steps_per_epoch(self) -> int:
        steps = len(self.train_loader(0))
        cap = self.cfg.train.max_steps_per_epoch
        return steps if cap is None else min(steps, cap)

    def build_optimizer(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        o = self.cfg.optim
        params = [p for p in self.model.backbone.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": o.weight_decay},
                  {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]  # fmt: skip
        fused = self.device.type == "cuda" or None
        if o.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, fused=fused)
        else:
            optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=(o.momentum, 0.999), fused=fused)
        per_epoch = self.steps_per_epoch()
        total, warmup = o.epochs * per_epoch, round(o.warmup_epochs * per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(step - warmup, total - warmup) / max(total - warmup, 1)))

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def on_epoch_end(self) -> None:
        pass  # the schedule steps with every optimiser step (train_step)

    def train_step(self, batch: dict[str, Any]):
        stats = super().train_step(batch)
        self.scheduler.step()
        return stats

    def augment(self, batch: dict[str, Any], images: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor, None]:
        """Random resized crop to ``data.image_size``, flip and colour jitter of [B, 3, H, W] images, with
        parameters drawn per (seed, step, place in the global batch)."""
        a, B = self.cfg.augment, images.shape[0]
        params = draw_params(self.cfg.train.seed, self.global_step, B * self.world, self.rank * B, B,
                             tuple(images.shape[-2:]), a.crop_scale, a.crop_ratio, a.flip,
                             (a.brightness, a.contrast, a.saturation, a.hue))  # fmt: skip
        out = augment_batch(images, params, tuple(self.cfg.data.image_size))
        if self.device.type == "cuda":
            out = out.contiguous(memory_format=torch.channels_last)
        return batch, out, None

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.cfg.optim.label_smoothing)

    # ---- held-out accuracy --------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Top-1 and top-5 accuracy on the corpus's held-out instances, whole images (rank 0's view). The
        last batch is padded to full size, so a compiled network sees one shape."""
        self.model.eval()
        size = max(1, self.cfg.optim.batch_size // self.world)
        loader = DataLoader(self.val_set, batch_size=size, num_workers=self.cfg.data.num_workers,
                            collate_fn=self.collate_fn())  # fmt: skip
        top1 = top5 = seen = 0
        for batch in loader:
            images, labels, n = batch["image"], batch["label"], len(batch["label"])
            if n < size:
                images = torch.cat([images, images[-1:].expand(size - n, -1, -1, -1)])
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.model.classify(images_to_device(images, self.device)).float()[:n].cpu()
            best = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += int((best[:, 0] == labels).sum())
            top5 += int((best == labels[:, None]).any(1).sum())
            seen += n
        self.model.train()
        return {"val_accuracy": top1 / max(seen, 1), "val_top5": top5 / max(seen, 1), "val_images": seen}

    # ---- the weights --------------------------------------------------------------------
    def weights_path(self) -> Path:
        w = self.cfg.export.weights
        return Path(w) if w else self.out / f"{self.cfg.model.arch}-pretrained.safetensors"

    def fit(self, until_epoch: int | None = None) -> list[dict[str, Any]]:
        """Train (:meth:`Trainer.fit`); once the last epoch is done, write the weights."""
        history = super().fit(until_epoch)
        if self.epoch >= self.cfg.optim.epochs and self.rank == 0:
            path, digest = self.export()
            if not self.quiet:
                print(f"weights: {path} (sha256 {digest})")
        return history

    def export(self) -> tuple[Path, str]:
        """Write the weights and their record (``<weights>.json``); returns (path, sha256)."""
        root = Path(self.cfg.data.root)
        manifest = read_corpus(root)
        last = next((h for h in reversed(self.history) if "val_accuracy" in h), {})
        record = {
            "format": "torchvision state_dict (safetensors)",
            "arch": self.cfg.model.arch,
            "dtype": self.cfg.export.dtype,
            "classes": len(self.model.classes),
            "corpus": {
                "root": str(root),
                "digests": manifest["digests"],
                "arguments": {k: manifest[k] for k in CorpusConfig.__dataclass_fields__},
            },
            "epochs": self.epoch,
            "val_top1": last.get("val_accuracy"),
            "val_top5": last.get("val_top5"),
            "config": config_to_dict(self.cfg),
            "torch": torch.__version__,
        }
        return export_weights(self.model.backbone, self.weights_path(), record,
                              getattr(torch, self.cfg.export.dtype))  # fmt: skip


def export_weights(
    net: torch.nn.Module, path: str | Path, record: dict[str, Any], dtype: torch.dtype = torch.float16
) -> tuple[Path, str]:
    """Write ``net.state_dict()`` (floating tensors in ``dtype``, integer ones as they are) to ``path`` as
    safetensors, atomically, and ``record`` plus the file's sha256 to ``path`` with a ``.json`` suffix.

    Returns:
        (path, sha256 hex of the file).
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in net.state_dict().items()}  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    # One metadata key: safetensors writes its metadata map in no fixed order, so two keys made the bytes vary.
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)
    digest = file_digest(path)
    info = {"weights": path.name, "sha256": digest, "parameters": int(sum(np.prod(t.shape) for t in tensors.values())),
            **record}  # fmt: skip
    path.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
    return path, digest
