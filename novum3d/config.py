"""Typed configs: dataclasses filled from YAML mappings, validated on load."""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml

from .errors import ConfigError

T = TypeVar("T")

# YAML 1.1 (PyYAML) reads a float only with a dot: `1e-3` and `3e4` stay strings. A config or an
# override written so means the number, so a float field takes strings of this form as well.
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class BackboneName:
    """``Annotated[str, BackboneName(names)]``: one of ``names`` or ``timm:<model name>`` (the optional timm
    extra builds those; whether timm knows the name is checked when the network is built)."""

    names: tuple[str, ...]

    def check(self, value: str, where: str) -> str:
        if value in self.names or (value.startswith(TIMM_PREFIX) and value[len(TIMM_PREFIX) :].strip()):
            return value
        raise ConfigError(f"{where}: expected one of {list(self.names)} or 'timm:<model name>', got {value!r}")


TIMM_PREFIX = "timm:"


def _check_value(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin is Annotated:
        base, *extras = typing.get_args(hint)
        value = _check_value(value, base, where)
        for extra in extras:
            if isinstance(extra, BackboneName):
                value = extra.check(value, where)
        return value
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{where}: expected a mapping of names to values, got {type(value).__name__} {value!r}")
        return value
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: expected one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_value(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_check_value(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
        item = args[0] if args else Any
        checked = [_check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(checked) if origin is tuple else checked
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where)
    if hint is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if hint in (str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_mapping(cls: type[T], data: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from a mapping; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(names)}")
    kwargs = {k: _check_value(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return obj


def load_yaml(path: str | Path) -> Any:
    """Read a YAML file; a missing or malformed file raises ConfigError naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc


def load_config(cls: type[T], path: str | Path) -> T:
    """Load dataclass ``cls`` from a YAML file, errors naming the file and the key."""
    return from_mapping(cls, load_yaml(path), where=str(path))


@dataclass
class VolumeConfig:
    """How each category's neural object volume is built."""

    # "points": Gaussians at given points that the checkpoint itself holds (a converted model's mesh vertices,
    # scripts/convert_checkpoint.py); such a volume is loaded, never built from the categories file.
    kind: Literal["cuboid", "sphere", "single", "points"] = "cuboid"
    num_gaussians: int = 1100
    scale_factor: float = 0.6
    opacity: float = 1.0
    categories: str = "pascal3d"  # built-in name or a path to a categories YAML

    def validate(self) -> None:
        if self.num_gaussians < 1:
            raise ValueError(f"num_gaussians: must be >= 1, got {self.num_gaussians}")
        if not self.scale_factor > 0:
            raise ValueError(f"scale_factor: must be > 0, got {self.scale_factor}")
        if not 0 < self.opacity <= 1:
            raise ValueError(f"opacity: must lie in (0, 1], got {self.opacity}")


@dataclass
class ModelConfig:
    # torchvision "resnet50" / "resnet18", or "timm:<model name>" (pip install -e ".[timm]"): ConvNeXt and other
    # CNNs feed their stride 4-32 stages to the decoder; ViTs (DINOv2 /14 and its registers variants included)
    # four blocks at 1/4, 1/2, 3/4 and the end of their depth (novum3d.model.backbone says how).
    backbone: Annotated[str, BackboneName(("resnet50", "resnet18"))] = "resnet50"
    feature_dim: int = 128
    # A local weights file for the backbone's trunk: a torchvision or timm state_dict (.pt / .pth, optionally
    # under "state_dict" or "model") or a .safetensors file; never downloaded. Checkpoints record its sha256.
    backbone_weights: str | None = None
    # Keyword arguments for timm.create_model (timm backbones only), e.g. {depth: 4, embed_dim: 96} for a small
    # ViT; pretrained, features_only, num_classes and dynamic_img_size are novum3d's to set.
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    # Train the decoder, the 1x1 head and the volumes only: the trunk gets no gradients and stays in eval mode
    # (BatchNorm statistics, dropout), as the authors train on a frozen DINOv2 (GenIntel/NOVUM src/models/dpt.py).
    freeze_trunk: bool = False
    freeze_batchnorm: bool = False  # keep BatchNorm statistics fixed (fine-tuning, tiny batches)
    # Upsampling layers: "fpn" (256-channel lateral fusion, light) or "unet" (the authors' DoubleConv/Up
    # stack at the trunk's widths, GenIntel/NOVUM src/models/KeypointRepresentationNet.py L44-55) for CNNs;
    # "dpt" (the authors' DINOv2 head, GenIntel/NOVUM src/models/dpt.py) or "fpn" for ViTs. "auto": "fpn",
    # and "dpt" for a timm ViT (a ResNet's config stores "fpn", as before the option).
    decoder: Literal["auto", "fpn", "unet", "dpt"] = "auto"
    # Feature-map stride: 8, the authors' (GenIntel/NOVUM config/defaults.yaml L58 down_sample_rate), or 4
    # (fpn or dpt; a departure for small images: 32x32 cells at 256x256, where the authors' 640x800 give 80x100).
    stride: int = 8
    # The deepest ResNet stage used (fpn only; a departure): 4 (layer4) is the authors'; 3 or 2 give cells that
    # see less of the image (novum3d.model.backbone.FeatureBackbone says why).
    trunk_depth: int = 4
    # torch.compile the backbone (novum3d.device.resolve_compile): "auto" = on CUDA, where full classification
    # went from 1,018 to 1,573 img/s (H100, 640x800, batch 64, bf16; benchmarks.inference), eager elsewhere (on a CPU
    # inductor needs a C++ toolchain and a long warm-up); "on" / "off" force it. Results are close, not
    # identical (fused kernels reorder bf16 sums).
    # YAML reads unquoted on / off as true / false, so those are accepted and stored as "on" / "off".
    compile: Literal["auto", "on", "off"] | bool = "auto"

    @property
    def is_timm(self) -> bool:
        return self.backbone.startswith(TIMM_PREFIX)

    def validate(self) -> None:
        if isinstance(self.compile, bool):
            self.compile = "on" if self.compile else "off"
        if self.decoder == "auto" and not self.is_timm:
            self.decoder = "fpn"  # what a ResNet always had: its runs keep their identity
        if self.feature_dim < 1:
            raise ValueError(f"feature_dim: must be >= 1, got {self.feature_dim}")
        if self.stride not in (8, 4):
            raise ValueError(f"stride: expected 8 or 4, got {self.stride}")
        if self.stride == 4 and self.decoder == "unet":
            raise ValueError("stride: 4 needs decoder 'fpn' or 'dpt' (the U-Net decoder ends at stride 8)")
        if self.trunk_depth not in (4, 3, 2):
            raise ValueError(f"trunk_depth: expected 4, 3 or 2, got {self.trunk_depth}")
        if self.trunk_depth != 4 and (self.decoder != "fpn" or self.is_timm):
            raise ValueError(
                "trunk_depth: 3 or 2 needs a ResNet backbone and decoder 'fpn' (the U-Net decoder starts at layer4)"
            )
        if self.decoder == "dpt" and not self.is_timm:
            raise ValueError("decoder: 'dpt' reads a ViT's blocks; use it with backbone 'timm:<a ViT>'")
        if self.backbone_kwargs and not self.is_timm:
            raise ValueError(f"backbone_kwargs: only timm backbones take them, got {self.backbone_kwargs}")
        reserved = sorted(set(self.backbone_kwargs) & set(RESERVED_TIMM_KWARGS))
        if reserved:
            raise ValueError(f"backbone_kwargs: {reserved} are set by novum3d (weights load from backbone_weights)")
        if self.backbone_weights is not None and not Path(self.backbone_weights).is_file():
            raise ValueError(f"backbone_weights: no such file {self.backbone_weights!r} (weights are never downloaded)")


# timm.create_model arguments novum3d sets itself: weights are never downloaded, and the network's form
# (feature stages, no classifier, any image size) is what the backbone needs.
RESERVED_TIMM_KWARGS = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "features_only",
                        "num_classes", "dynamic_img_size", "dynamic_img_pad", "out_indices")  # fmt: skip


@dataclass
class LossConfig:
    temperature: float = 0.07
    neighbor_radius: float = 2.0  # same-class Gaussians closer than this many spacings are not negatives
    same_class_negatives: bool = True
    other_class_negatives: bool = True
    background_negatives: bool = True
    # Each bank logit is offset by log(bank_weight): the bank's terms in the softmax denominator are
    # weighted by it. The authors use 0.005 (`weight_noise`, GenIntel/NOVUM FeatureBank.py L75-82).
    bank_weight: float = 1.0
    # clutter_weight * mean(f_bg . C) over background features (with gradient into the backbone) and
    # all Gaussians: clutter and occluders learn to look unlike every object part. The authors use 0.1
    # (GenIntel/NOVUM train.py L193-196, FeatureBank.py L186-189).
    clutter_weight: float = 0.0

    def validate(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature: must be > 0, got {self.temperature}")
        if self.neighbor_radius < 0:
            raise ValueError(f"neighbor_radius: must be >= 0, got {self.neighbor_radius}")
        if not 0 < self.bank_weight <= 1:
            raise ValueError(f"bank_weight: must lie in (0, 1], got {self.bank_weight}")
        if self.clutter_weight < 0:
            raise ValueError(f"clutter_weight: must be >= 0, got {self.clutter_weight}")


@dataclass
class BankConfig:
    size: int = 2560
    per_image: int = 32  # background features sampled from each training image (the authors: 5)
    # Where background cells come from: "mask" = off the object's mask (or box); "volume" = cells where
    # no Gaussian of the class volume projects at the annotated pose, as the authors sample them
    # (GenIntel/NOVUM KeypointRepresentationNet.py L92-100). "volume" never takes a cell that is also a
    # positive of the contrastive loss; "mask" does for thin classes whose cuboid covers background.
    background: Literal["mask", "volume"] = "mask"

    def validate(self) -> None:
        if self.size < 0 or self.per_image < 0:
            raise ValueError("size and per_image: must be >= 0")


@dataclass
class DataConfig:
    root: str = "data/synthetic-small"
    layout: Literal["synthetic", "pascal3d"] = "synthetic"
    val_root: str | None = None  # pascal3d layout: the preprocessed validation root
    classes: list[str] | None = None  # default: the categories file's classes
    image_size: tuple[int, int] = (256, 256)  # height, width every image must have
    num_workers: int = 2

    def validate(self) -> None:
        if min(self.image_size) < 32:
            raise ValueError(f"image_size: must be at least 32x32, got {self.image_size}")


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 1e-4
    epochs: int = 10
    batch_size: int = 16
    volume_momentum: float = 0.9

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size: must be >= 1")
        if not 0 <= self.volume_momentum < 1:
            raise ValueError(f"volume_momentum: must lie in [0, 1), got {self.volume_momentum}")


@dataclass
class TrainConfig:
    out_dir: str = "runs/default"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    val_every: int = 1  # epochs
    log_every: int = 10  # steps
    max_steps_per_epoch: int | None = None
    val_max_images: int | None = None  # cap on validation images (quick checks)
    # cuDNN times its convolution algorithms for each new input shape and keeps the fastest (training
    # shapes are fixed). Off: its heuristic choice, for bitwise-repeatable runs.
    cudnn_benchmark: bool = True
    # torch's CPU threads in the training process (None: on CUDA with loader workers, the cores the
    # workers leave; see novum3d.device.main_process_threads).
    cpu_threads: int | None = None

    def validate(self) -> None:
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads: must be >= 1 (or null for auto), got {self.cpu_threads}")


@dataclass
class AugmentConfig:
    """Training-time augmentation (novum3d.data.augment); validation and evaluation are never augmented.

    Occlusion augmentation pastes occluders over the object of a share of the training images, filled
    with another training image's background (NOVUM also drops the correspondences they hide). A
    departure from the authors' code, which trains without it (GenIntel/NOVUM src/train.py): off (0)
    by default.

    Rotation augmentation rolls the camera about its optical axis: each training image is rotated
    about its principal point by an angle drawn uniformly from [-rotation_degrees, rotation_degrees]
    and its pose's theta changed by the same angle, which is exact for a pinhole camera. Also a
    departure from the authors: off (0) by default.

    Vertical stretch scales each training image's rows about its principal point by a factor drawn
    log-uniformly from [1 / vertical_stretch, vertical_stretch], and the camera's fy by the same
    factor: exactly the image a camera with non-square pixels takes. It imitates one part of the
    foreshortening an elevation change brings (sides shorten and tops lengthen as the camera rises;
    one factor per image cannot do both at once), so that features may hold on views above or
    below the training elevations. A departure too: off (1).
    """

    occlusion_probability: float = 0.0  # share of training images that get occluders; 0 = off
    # Fraction of the object's mask (its box when there is no mask) hidden, drawn uniformly per image.
    occluded_fraction: tuple[float, float] = (0.2, 0.7)
    rotation_degrees: float = 0.0  # largest in-plane rotation, degrees; 0 = off
    vertical_stretch: float = 1.0  # largest factor on the rows (and 1 / it the smallest); 1 = off

    def validate(self) -> None:
        if not 1 <= self.vertical_stretch <= 4:
            raise ValueError(f"vertical_stretch: must lie in [1, 4] (1 = off), got {self.vertical_stretch}")
        if not 0 <= self.rotation_degrees <= 180:
            raise ValueError(f"rotation_degrees: must lie in [0, 180], got {self.rotation_degrees}")
        if not 0 <= self.occlusion_probability <= 1:
            raise ValueError(f"occlusion_probability: must lie in [0, 1], got {self.occlusion_probability}")
        low, high = self.occluded_fraction
        if not 0 <= low <= high <= 1:
            raise ValueError(f"occluded_fraction: expected [low, high] with 0 <= low <= high <= 1, got [{low}, {high}]")


@dataclass
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class BaselineModelConfig:
    """A standard classifier (torchvision, or timm with the timm extra), the baseline NOVUM is compared against."""

    # torchvision classifiers, or "timm:<model name>" (pip install -e ".[timm]"), its class head sized to the data.
    arch: Annotated[str, BackboneName(("resnet50", "resnet18", "convnext_tiny", "vit_b_16"))] = "resnet50"
    # Local weights: a torchvision or timm state_dict or a .safetensors file (the classifier head is left out);
    # never downloaded.
    weights: str | None = None
    freeze_batchnorm: bool = False
    # Keyword arguments for timm.create_model (timm archs only), as model.backbone_kwargs for NOVUM.
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.arch_kwargs and not self.arch.startswith(TIMM_PREFIX):
            raise ValueError(f"arch_kwargs: only timm archs take them, got {self.arch_kwargs}")
        reserved = sorted(set(self.arch_kwargs) & set(RESERVED_TIMM_KWARGS))
        if reserved:
            raise ValueError(f"arch_kwargs: {reserved} are set by novum3d (weights load from model.weights)")
        if self.weights is not None and not Path(self.weights).is_file():
            raise ValueError(f"weights: no such file {self.weights!r} (weights are never downloaded)")


@dataclass
class BaselineConfig:
    """A baseline classifier's experiment: the same data, optim, train and augment sections as NOVUM's."""

    model: BaselineModelConfig = field(default_factory=BaselineModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    categories: str = "pascal3d"  # where the class list comes from when data.classes is unset


def apply_overrides(data: dict, overrides: list[str], where: str = "command line") -> dict:
    """Apply ``a.b=value`` overrides (values parsed as YAML) to a nested mapping, in place."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{where}: override {item!r} is not of the form key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where}: override {item!r}: value is not valid YAML ({exc})") from exc
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{where}: override {key!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


def load_experiment(path: str | Path, overrides: list[str] | None = None, cls: type[T] = ExperimentConfig) -> T:
    """Load an experiment YAML (``cls``: ExperimentConfig or BaselineConfig), apply ``key=value``
    overrides, validate; errors name the file and the key."""
    data = load_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    apply_overrides(data, overrides or [])
    return from_mapping(cls, data, where=str(path))


def config_to_dict(cfg: Any) -> dict:
    """Plain-data form of a config dataclass (for checkpoints and YAML)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))
