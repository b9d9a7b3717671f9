"""Train a baseline classifier with NOVUM's trainer: same data order, checkpoints, logs and DDP."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..data.batch import images_to_device
from ..distributed import all_reduce_sum
from ..model.backbone import normalize_images
from ..train.trainer import StepStats, Trainer
from .model import BaselineClassifier


class BaselineTrainer(Trainer):
    """Cross-entropy training of a torchvision classifier (config: :class:`BaselineConfig`)."""

    kind = "baseline"

    def categories_source(self) -> str:
        return self.cfg.categories

    def compile_setting(self) -> str:
        # Eager: the baselines' configs have no model.compile and their compiled speed was never measured.
        return "off"

    def backbone_source(self) -> tuple[str, str | None]:
        return self.cfg.model.arch, self.cfg.model.weights

    def build_model(self, classes: list[str]) -> torch.nn.Module:
        return BaselineClassifier(self.cfg.model, classes, tuple(self.cfg.data.image_size))

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of logits [B, Y] (float) against labels [B]."""
        return F.cross_entropy(logits, labels)

    def _train_step(self, batch: dict[str, Any]) -> StepStats:
        self.train_mode()
        _, images, _ = self.augment(batch, images_to_device(batch["image"], self.device))  # as NOVUM's
        labels = batch["label"]
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.backbone(normalize_images(images))
        loss = self.classification_loss(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.global_step += 1
        mean = all_reduce_sum(loss.detach().reshape(1).clone())[0] / self.world
        return StepStats(float(mean), images.shape[0] * self.world, images.shape[0] * self.world)
