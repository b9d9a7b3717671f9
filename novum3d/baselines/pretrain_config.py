"""The typed config of backbone pretraining on the procedural corpus (configs/pretrain.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..config import TrainConfig


@dataclass
class PretrainModelConfig:
    arch: Literal["resnet50", "resnet18"] = "resnet50"
    # torch.compile the network (novum3d.device.resolve_compile): auto = on CUDA. YAML's on / off are accepted.
    compile: Literal["auto", "on", "off"] | bool = "auto"
    freeze_batchnorm: bool = False
    # Each residual block's last BatchNorm starts at zero (torchvision's zero_init_residual): every block
    # starts as the identity, which short schedules train better from (Goyal et al., 2017, section 5.1).
    zero_init_residual: bool = True

    def validate(self) -> None:
        if isinstance(self.compile, bool):
            self.compile = "on" if self.compile else "off"


@dataclass
class PretrainDataConfig:
    root: str = "data/pretraining"  # the corpus (scripts/make_pretraining.py, or made from ``corpus``)
    image_size: tuple[int, int] = (160, 160)  # training crops are resized to this (height, width)
    num_workers: int = 8

    def validate(self) -> None:
        if min(self.image_size) < 16:
            raise ValueError(f"image_size: must be at least 16x16, got {self.image_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers: must be >= 0, got {self.num_workers}")


@dataclass
class CorpusSection:
    """Arguments of scripts/make_pretraining.py: the corpus is made (or finished) at ``data.root`` before
    training when it is not complete there; one made with other arguments is an error."""

    categories: int = 1000
    per_category: int = 100
    val_per_category: int = 10
    size: int = 160
    seed: int = 0
    workers: int = 16  # processes that render it (the bytes do not depend on it)

    def validate(self) -> None:
        if self.val_per_category < 1:
            raise ValueError("val_per_category: pretraining measures held-out accuracy; must be >= 1")
        if self.workers < 1:
            raise ValueError(f"workers: must be >= 1, got {self.workers}")


@dataclass
class PretrainOptimConfig:
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.2  # the peak, after warm-up
    momentum: float = 0.9  # sgd (nesterov if set); adamw's beta1
    nesterov: bool = True
    weight_decay: float = 5e-5  # not on BatchNorm parameters and biases
    epochs: int = 10
    batch_size: int = 256  # global: split over DDP ranks
    warmup_epochs: float = 1.0  # linear warm-up from lr / steps, then cosine to 0 at the last step
    label_smoothing: float = 0.1

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size: must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError("lr: must be > 0; weight_decay: must be >= 0")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError(f"warmup_epochs: must lie in [0, epochs), got {self.warmup_epochs}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing: must lie in [0, 1), got {self.label_smoothing}")


@dataclass
class PretrainAugmentConfig:
    """Random resized crop (area share ``crop_scale``, aspect ``crop_ratio``), horizontal flip, colour jitter
    (novum3d.data.pretraining.augment). Objects fill 25-50% of a corpus image's side, so crops keep a
    quarter of the area at least (ImageNet's 0.08 would often crop background alone)."""

    crop_scale: tuple[float, float] = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 4 / 3)
    flip: float = 0.5
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.05

    def validate(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale: expected 0 < low <= high <= 1, got {list(self.crop_scale)}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValueError(f"crop_ratio: expected 0 < low <= high, got {list(self.crop_ratio)}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip: must be a probability, got {self.flip}")
        if not all(0 <= x < 1 for x in (self.brightness, self.contrast, self.saturation)) or not 0 <= self.hue <= 0.5:
            raise ValueError("brightness, contrast, saturation: must lie in [0, 1); hue in [0, 0.5]")


@dataclass
class ExportConfig:
    weights: str | None = None  # default: <train.out_dir>/<arch>-pretrained.safetensors
    dtype: Literal["float16", "float32"] = "float16"


@dataclass
class PretrainConfig:
    """Supervised classification over the corpus, the way ImageNet weights are made."""

    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    # None first: config._check_value tries a union's options in order, and a section accepts null as {}.
    corpus: None | CorpusSection = None  # noqa: RUF036
    optim: PretrainOptimConfig = field(default_factory=PretrainOptimConfig)
    augment: PretrainAugmentConfig = field(default_factory=PretrainAugmentConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/pretrain"))
    export: ExportConfig = field(default_factory=ExportConfig)
