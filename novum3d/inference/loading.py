"""Load a trained NOVUM model from a training checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import load_weights, read_trained
from ..config import ExperimentConfig
from ..errors import CheckpointError
from ..model.backbone import compile_backbone
from ..model.neural_volumes import NeuralVolumes
from ..model.novum import NOVUM
from ..model.priors import PosePriors


def load_model(
    path: str | Path, device: torch.device | str = "cpu", compile: str | None = None
) -> tuple[NOVUM, ExperimentConfig]:
    """Rebuild the model a checkpoint was trained with and load its weights, volumes and bank.

    ``compile`` (auto / on / off, see ``novum3d.device.resolve_compile``) says whether the backbone is
    torch.compiled on ``device``; None means auto (compiled on CUDA only). The checkpoint's own
    ``model.compile`` is not used: it said how training ran, on its machine, and "on" from a GPU run
    would compile on a CPU here (minutes, and a C++ toolchain).
    """
    ckpt, cfg = read_trained(path, "novum", ExperimentConfig)
    cfg.model.backbone_weights = None  # the checkpoint holds the weights
    geometry = None
    if cfg.volume.kind == "points":  # the Gaussians sit at points the checkpoint holds (a converted model)
        try:
            geometry = NeuralVolumes.stored_geometry(ckpt["model"], ckpt["classes"])
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"its volumes' geometry does not load ({exc})", path=path) from exc
    model = NOVUM(cfg, ckpt["classes"], geometry)
    load_weights(model, ckpt, path)
    model.provenance = ckpt.get("provenance")  # where the weights came from (a converted release, ...), if recorded
    if ckpt.get("calibration"):
        model.class_temperature = float(ckpt["calibration"]["temperature"])
    if ckpt.get("pose_priors"):
        try:
            model.pose_priors = PosePriors.from_dict(ckpt["pose_priors"])
        except ValueError as exc:
            raise CheckpointError(f"its pose priors do not load ({exc})", path=path) from exc
    model = model.to(device).eval()
    compile_backbone(model.backbone, "auto" if compile is None else compile, device, field="compile")
    return model, cfg
