"""The trainer: one process, or one per GPU under torchrun (DistributedDataParallel).

What every rank must agree on is kept identical by construction: the backbone through DDP's
gradient all-reduce, the volume features through an all-reduced momentum update, and the
background bank through an all-gather before each FIFO write. The loss is normalised by the
global number of correspondences, so N ranks with B/N images each take the same step as one
process with B images.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from ..checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint, weights_provenance
from ..config import ExperimentConfig, config_to_dict
from ..data.augment import occlude_objects, roll_and_stretch, rotation_angles, stretch_factors, warp_about_principal
from ..data.batch import batch_cameras, batch_to_device, collate, images_to_device, prefetch_to_device
from ..device import main_process_threads, select_device
from ..distributed import all_gather_rows, all_reduce_sum, dist_info
from ..errors import CheckpointError
from ..fingerprint import dataset_digest
from ..model.backbone import compile_backbone, normalize_images
from ..model.calibration import expected_calibration_error, fit_temperature
from ..model.novum import NOVUM
from ..model.priors import PosePriors
from .correspondence import background_features, drop_occluded, find_correspondences, object_cells, occluded_cells
from .data import default_classes, open_split
from .identity import training_identity
from .loss import clutter_loss, contrastive_loss


@dataclass
class StepStats:
    loss: float
    correspondences: int
    images: int


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}  # noqa: NPY002
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    # The checkpoint may have been mapped to the GPU; generator states must be CPU ByteTensors.
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(state["numpy"])  # noqa: NPY002 (global state other code may use)
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def freeze_batchnorm(module: torch.nn.Module) -> None:
    """Every BatchNorm2d of ``module`` in eval mode (running statistics fixed) and without gradients;
    call again after ``module.train()``, which switches them back to training mode."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
            m.requires_grad_(False)


def _tensorboard_writer(path: Path):
    """A TensorBoard writer when the optional ``tensorboard`` package is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))


AUGMENT_STREAM = (1,)  # spawn key of the occlusion augmentation's seeds; background cells use the root stream ()
ROTATION_STREAM = (2,)  # the rotation augmentation's
STRETCH_STREAM = (3,)  # the vertical stretch's


class Trainer:
    """Train NOVUM on the configured data; ``fit()`` runs the epochs, checkpointing each one."""

    def __init__(self, cfg: ExperimentConfig, resume: bool = False, quiet: bool = False):
        self.cfg = cfg
        self.rank, self.world, local_rank = dist_info()
        self.quiet = quiet or self.rank != 0
        self.device = select_device(cfg.train.device, index=local_rank, field="train.device")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.amp = cfg.train.amp and self.device.type == "cuda"
        torch.set_num_threads(main_process_threads(cfg.train.cpu_threads, self.device, cfg.data.num_workers))
        self.out = Path(cfg.train.out_dir)
        torch.manual_seed(cfg.train.seed)
        np.random.seed(cfg.train.seed)  # noqa: NPY002
        random.seed(cfg.train.seed)

        classes, self.train_set, self.val_set = self.open_data()
        if cfg.train.val_max_images is not None and len(self.val_set) > cfg.train.val_max_images:
            step = len(self.val_set) / cfg.train.val_max_images
            self.val_set = Subset(self.val_set, [int(i * step) for i in range(cfg.train.val_max_images)])

        self.pose_priors = self.make_pose_priors(classes)
        self.model = self.build_model(classes).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        if cfg.model.freeze_batchnorm:
            freeze_batchnorm(self.model.backbone)
        # Compile the inner module, then wrap it in DDP: the order torch's "Where to apply torch.compile?"
        # gives (docs.pytorch.org/docs/stable/compile/programming_model.where_to_apply_compile.html), as
        # compile handles the DDP wrapper itself badly; DDP's bucket-sized graph breaks still apply.
        # In place, so checkpoints keep the eager model's keys.
        self.compiled = compile_backbone(self.model.backbone, self.compile_setting(), self.device)
        self.backbone = self.model.backbone
        if self.world > 1:
            self.backbone = DistributedDataParallel(
                self.model.backbone, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self._loader: DataLoader | None = None
        self._sampler: DistributedSampler | None = None
        self.optimizer, self.scheduler = self.build_optimizer()
        self.epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self._identity: dict[str, Any] | None = None
        self._provenance: dict[str, Any] | None = None
        self.calibration: dict[str, Any] | None = None  # softmax temperature fitted on validation
        self.tensorboard = _tensorboard_writer(self.out / "tensorboard") if self.rank == 0 else None
        if resume:
            self.resume(self.out / CHECKPOINT)

    # ---- what the model is (a subclass trains another kind) -----------------------------
    kind = "novum"

    def categories_source(self) -> str:
        return self.cfg.volume.categories

    def compile_setting(self) -> str:
        """``model.compile``: whether the backbone is torch.compiled (auto: on CUDA)."""
        return self.cfg.model.compile

    def build_model(self, classes: list[str]) -> torch.nn.Module:
        model = NOVUM(self.cfg, classes)
        self.neighbors = model.volumes.neighbor_mask(self.cfg.loss.neighbor_radius).to(self.device)
        return model

    def open_data(self) -> tuple[list[str], Dataset, Dataset]:
        """(classes, training set, validation set) of ``data``."""
        classes = default_classes(self.cfg.data, self.categories_source())
        return classes, open_split(self.cfg.data, "train", classes), open_split(self.cfg.data, "val", classes)

    def make_pose_priors(self, classes: list[str]) -> PosePriors | None:
        """Per-class distance, elevation and theta ranges of the training poses: the pose estimator's
        starting points, saved in every checkpoint."""
        return PosePriors.from_dataset(self.train_set, classes)

    def build_optimizer(self) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """Adam over the backbone's trainable parameters and a cosine schedule stepped once an epoch."""
        optimizer = torch.optim.Adam(
            [p for p in self.model.backbone.parameters() if p.requires_grad],
            lr=self.cfg.optim.lr,
            weight_decay=self.cfg.optim.weight_decay,
            fused=self.device.type == "cuda" or None,  # one kernel for the whole update instead of a few per group
        )
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.cfg.optim.epochs)

    def on_epoch_end(self) -> None:
        """After each epoch's steps: the schedule advances by one epoch."""
        self.scheduler.step()

    def collate_fn(self):
        """How the loaders stack samples into batches."""
        return partial(collate, image_size=self.cfg.data.image_size)

    def data_digests(self) -> tuple[str, str]:
        """Digests of the training and validation data, for :meth:`identity`."""
        return dataset_digest(self.train_set), dataset_digest(self.val_set)

    # ---- data -------------------------------------------------------------------------
    def train_loader(self, epoch: int) -> DataLoader:
        """The training loader, ordered for ``epoch``; the order depends only on (seed, epoch)."""
        if self._loader is None:
            per_rank = max(1, self.cfg.optim.batch_size // self.world)
            self._sampler = DistributedSampler(
                self.train_set, num_replicas=self.world, rank=self.rank, shuffle=True, seed=self.cfg.train.seed
            )
            self._loader = DataLoader(
                self.train_set,
                batch_size=per_rank,
                sampler=self._sampler,
                num_workers=self.cfg.data.num_workers,
                collate_fn=self.collate_fn(),
                drop_last=len(self.train_set) >= per_rank * self.world,
                pin_memory=self.device.type == "cuda",
                # Workers outlive epochs: starting 12 of them each epoch cost more than the epoch's
                # decoding on a short run (measured on an H100 machine).
                persistent_workers=self.cfg.data.num_workers > 0,
            )
        self._sampler.set_epoch(epoch)
        return self._loader

    def epoch_batches(self, epoch: int):
        """The batches of ``epoch`` as :meth:`train_step` takes them: on CUDA, images, labels, masks and
        boxes are already on their way to the GPU, one batch ahead on a side stream."""
        return prefetch_to_device(self.train_loader(epoch), self.device)

    # ---- one step ---------------------------------------------------------------------
    def train_mode(self) -> None:
        """The backbone in training mode, its BatchNorm layers frozen if the config says so."""
        self.backbone.train()
        if self.cfg.model.freeze_batchnorm:
            freeze_batchnorm(self.model.backbone)

    @contextlib.contextmanager
    def step_flags(self):
        """Within a training step on CUDA: cuDNN picks convolution algorithms by timing them
        (``train.cudnn_benchmark``; the shapes are fixed), and float32 products (the loss's
        P x 128 x 15,760 at batch 32, 2 ms of a 102 ms step on an H100) run in TF32. Restored after
        the step, so validation and evaluation in the same process keep torch's settings."""
        if self.device.type != "cuda":
            yield
            return
        before = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.benchmark = self.cfg.train.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = before

    def train_step(self, batch: dict[str, Any]) -> StepStats:
        """One optimiser step on ``batch``: its images, labels, masks and boxes go to the device once
        here (a prefetched batch is there already), so the step's parts read them in place."""
        with self.step_flags():
            return self._train_step(batch_to_device(batch, self.device))

    def _train_step(self, batch: dict[str, Any]) -> StepStats:
        cfg, vols = self.cfg, self.model.volumes
        self.train_mode()
        batch, images, occluders = self.augment(batch, images_to_device(batch["image"], self.device))
        labels = batch["label"]
        viewmats, Ks = batch_cameras(batch, self.model.stride, self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            maps = self.backbone(normalize_images(images))
        maps = maps.float()
        corr = find_correspondences(vols, maps, labels, viewmats, Ks)
        occupied = self.occupied_cells(batch, corr, maps)
        if occluders is not None:  # no Gaussian learns an occluder; occluded cells may feed the bank
            occluded = occluded_cells(occluders, maps.shape[-2:])
            corr, occupied = drop_occluded(corr, occluded), occupied & ~occluded
        local = contrastive_loss(
            corr.features,
            corr.class_ids,
            corr.gauss_ids,
            vols.features,
            vols.valid,
            self.neighbors,
            vols.bank,
            cfg.loss,
        )
        count = torch.full((1,), float(len(corr.batch_ids)), device=self.device)  # a fill, not a waiting copy
        total = all_reduce_sum(count.clone())
        # Sum over this rank's correspondences / global count, times world: DDP's gradient mean
        # then equals the gradient of the global mean loss.
        loss = local * count[0] * self.world / total[0].clamp(min=1)
        bg = background_features(maps, occupied, cfg.bank.per_image, self.cell_seeds(images.shape[0]))
        clutter = clutter_loss(bg, vols.features, vols.valid) if cfg.loss.clutter_weight > 0 else None
        if clutter is not None:  # each rank's mean; DDP averages the gradients of equal-sized ranks
            loss = loss + cfg.loss.clutter_weight * clutter
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        vols.momentum_update(
            corr.class_ids, corr.gauss_ids, corr.features.detach(), cfg.optim.volume_momentum, reduce=all_reduce_sum
        )
        vols.enqueue_background(all_gather_rows(bg.detach()))
        self.global_step += 1
        global_loss = all_reduce_sum((local.detach() * count).clone())[0] / total[0].clamp(min=1)
        if clutter is not None:
            global_loss = global_loss + cfg.loss.clutter_weight * all_reduce_sum(clutter.detach().clone()) / self.world
        return StepStats(float(global_loss), int(total.item()), images.shape[0] * self.world)

    def occupied_cells(self, batch: dict[str, Any], corr, maps: torch.Tensor) -> torch.Tensor:
        """[B, h, w] bool: cells background features must not come from (``bank.background``): where the
        volume projects ("volume"), or the object's mask or box ("mask")."""
        if self.cfg.bank.background == "volume":
            return corr.covered
        return object_cells(batch["mask"], batch["bbox"], batch["image"].shape[-2:], maps.shape[-2:])

    def cell_seeds(self, batch_size: int, stream: tuple[int, ...] = ()) -> list[int]:
        """One seed per image from (seed, step, place in the global batch): N ranks draw what one process would.
        ``stream`` (a SeedSequence spawn key) gives another use its own independent seeds."""
        first, seed, step = self.rank * batch_size, self.cfg.train.seed, self.global_step
        sequences = [np.random.SeedSequence([seed, step, first + b], spawn_key=stream) for b in range(batch_size)]
        return [int(s.generate_state(1)[0]) for s in sequences]

    def augment(
        self, batch: dict[str, Any], images: torch.Tensor
    ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor | None]:
        """Training-time augmentation (``augment``; data.augment) of the batch's [B, 3, H, W] images on the
        device (its masks and boxes as :meth:`train_step` moved them): (batch, images, occluder masks
        [B, H, W] bool or None when occlusion is off).

        First the camera's roll and the rows' stretch, one resampling: images, masks and boxes turn
        about the principal point and the batch's theta changes by the same angle; then the rows
        stretch about it and the batch's ``pixel_aspect`` (fy's factor, read by ``batch_cameras``)
        takes the same factor. So the cameras built from the batch stay exact. Then the occluders,
        drawn on the warped masks. Seeds per (seed, step, global image index), one stream per
        augmentation; the occluders' fill comes from the next image of this rank's batch, so under
        DDP it differs from one process's for each rank's last image."""
        aug, B = self.cfg.augment, images.shape[0]
        if aug.rotation_degrees > 0 or aug.vertical_stretch > 1:
            angles, stretch = torch.zeros(B, dtype=torch.float64), torch.ones(B, dtype=torch.float64)
            if aug.rotation_degrees > 0:
                angles = rotation_angles(self.cell_seeds(B, stream=ROTATION_STREAM), aug.rotation_degrees)
                theta = batch["theta"] + angles.to(batch["theta"].dtype)
                batch = {**batch, "theta": torch.atan2(torch.sin(theta), torch.cos(theta))}  # back into (-pi, pi]
            if aug.vertical_stretch > 1:
                stretch = stretch_factors(self.cell_seeds(B, stream=STRETCH_STREAM), aug.vertical_stretch)
                batch = {**batch, "pixel_aspect": stretch}
            # A shrunk image mirrored at its border would copy the object into the background:
            # the stretch pads with the border's pixels instead.
            padding = "border" if aug.vertical_stretch > 1 else "reflection"
            images, masks, boxes = warp_about_principal(images, batch["mask"], batch["bbox"], batch["principal"],
                                                        roll_and_stretch(angles, stretch), padding)  # fmt: skip
            batch = {**batch, "image": images, "mask": masks, "bbox": boxes}
        if aug.occlusion_probability == 0:
            return batch, images, None
        seeds = self.cell_seeds(images.shape[0], stream=AUGMENT_STREAM)
        images, occluders = occlude_objects(images, batch["mask"], batch["bbox"], seeds, aug.occlusion_probability,
                                            aug.occluded_fraction)  # fmt: skip
        return batch, images, occluders

    # ---- validation -------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Classification accuracy on the validation split (rank 0's view), and the softmax temperature
        fitted on it (``self.calibration``, saved in checkpoints) with the calibration error it leaves."""
        self.model.eval()
        loader = DataLoader(
            self.val_set,
            batch_size=max(1, self.cfg.optim.batch_size),
            num_workers=self.cfg.data.num_workers,
            collate_fn=self.collate_fn(),
        )
        scores, labels = [], []
        for batch in loader:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                scores.append(self.model.classify(images_to_device(batch["image"], self.device)).float().cpu())
            labels.append(batch["label"])
        self.model.train()
        scores, labels = torch.cat(scores), torch.cat(labels)
        temperature = fit_temperature(scores, labels)
        probs = torch.softmax(scores / temperature, dim=1)
        correct = probs.argmax(1) == labels
        self.calibration = {"temperature": temperature, "fitted_on": "val", "images": len(labels)}
        return {
            "val_accuracy": float(correct.float().mean()) if len(labels) else 0.0,
            "val_images": len(labels),
            "val_ece": expected_calibration_error(probs.amax(1), correct),
            "temperature": temperature,
        }

    # ---- checkpoints ------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "rng": _rng_state(),
            "config": config_to_dict(self.cfg),
            "classes": self.model.classes,
            "history": self.history,
            "identity": self.identity(),
            "calibration": self.calibration,
            "pose_priors": self.pose_priors.to_dict() if self.pose_priors is not None else None,
            "provenance": self.provenance(),
        }

    def backbone_source(self) -> tuple[str, str | None]:
        """(backbone name, its weights file or None): ``model.backbone`` and ``model.backbone_weights``."""
        return self.cfg.model.backbone, self.cfg.model.backbone_weights

    def provenance(self) -> dict[str, Any]:
        """Where the weights come from, saved in every checkpoint: ``{"source": "trained", "backbone": name,
        "backbone_weights": {"file", "sha256"} or None}`` (a plain dict; readers ignore keys they do not know)."""
        if self._provenance is None:
            name, weights = self.backbone_source()
            self._provenance = {"source": "trained", "backbone": name, "backbone_weights": weights_provenance(weights)}
        return self._provenance

    def identity(self) -> dict[str, Any]:
        """What makes this run what it is: the config (less bookkeeping) and digests of its data.

        Stored in every checkpoint, so a caller can refuse to reuse a run made from other inputs.
        """
        if self._identity is None:
            self._identity = training_identity(config_to_dict(self.cfg), *self.data_digests())
        return self._identity

    def save(self) -> Path:
        """Write then rename: a crash or a full disk mid-write leaves the last good checkpoint in place."""
        if self.rank != 0:
            return self.out / CHECKPOINT
        return save_checkpoint(self.state(), self.out)

    def resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path, self.device)
        if ckpt.get("kind", "novum") != self.kind:
            raise CheckpointError(f"{path}: a {ckpt.get('kind')} checkpoint; this run trains a {self.kind} model")
        if ckpt["classes"] != self.model.classes:
            raise CheckpointError(f"{path}: trained on classes {ckpt['classes']}, config has {self.model.classes}")
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise CheckpointError(f"{path}: does not match this config's model ({exc})") from exc
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.epoch, self.global_step = ckpt["epoch"], ckpt["global_step"]
        self.history = ckpt.get("history", [])
        self.calibration = ckpt.get("calibration")
        _set_rng_state(ckpt["rng"])

    # ---- the loop ---------------------------------------------------------------------
    def fit(self, until_epoch: int | None = None) -> list[dict[str, Any]]:
        """Train until ``optim.epochs`` (or ``until_epoch``), checkpointing after every epoch."""
        cfg = self.cfg
        last_epoch = min(cfg.optim.epochs, until_epoch or cfg.optim.epochs)
        log_path = self.out / "metrics.jsonl"
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(config_to_dict(cfg), indent=2))
        while self.epoch < last_epoch:
            loader = self.train_loader(self.epoch)
            steps = (
                len(loader)
                if cfg.train.max_steps_per_epoch is None
                else min(len(loader), cfg.train.max_steps_per_epoch)
            )
            desc = f"epoch {self.epoch + 1}/{cfg.optim.epochs}"
            # A context manager, so an error mid-epoch closes the bar and the message starts on a line of its own.
            with tqdm(total=steps, desc=desc, disable=self.quiet, unit="step") as bar:
                start, images, losses = time.perf_counter(), 0, []
                for i, batch in enumerate(self.epoch_batches(self.epoch)):
                    if i >= steps:
                        break
                    stats = self.train_step(batch)
                    if not math.isfinite(stats.loss):
                        raise FloatingPointError(f"loss became {stats.loss} at step {self.global_step}")
                    images += stats.images
                    losses.append(stats.loss)
                    rate = images / (time.perf_counter() - start)
                    bar.set_postfix(loss=f"{stats.loss:.3f}", img_s=f"{rate:.1f}")
                    bar.update()
                    if self.rank == 0 and self.global_step % cfg.train.log_every == 0:
                        with log_path.open("a") as fh:
                            fh.write(json.dumps({"step": self.global_step, "loss": stats.loss, "img_s": rate}) + "\n")
                        if self.tensorboard is not None:
                            self.tensorboard.add_scalar("train/loss", stats.loss, self.global_step)
                            self.tensorboard.add_scalar("train/images_per_s", rate, self.global_step)
            self.on_epoch_end()
            self.epoch += 1
            record = {
                "epoch": self.epoch,
                "loss": float(np.mean(losses)) if losses else float("nan"),
                "images_per_s": images / max(time.perf_counter() - start, 1e-9),
                "seconds": time.perf_counter() - start,
            }
            if self.epoch % cfg.train.val_every == 0 or self.epoch == cfg.optim.epochs:
                record |= self.validate()
            self.history.append(record)
            if self.rank == 0:
                with log_path.open("a") as fh:
                    fh.write(json.dumps(record) + "\n")
                if self.tensorboard is not None and "val_accuracy" in record:
                    self.tensorboard.add_scalar("val/accuracy", record["val_accuracy"], self.epoch)
                    self.tensorboard.flush()
                if not self.quiet:
                    tqdm.write(json.dumps(record))
            self.save()
        return self.history
