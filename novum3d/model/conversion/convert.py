"""A released NOVUM / CAVE / NeMo checkpoint as a novum3d checkpoint that ``load_model`` reads like a trained one.

- Backbone: :func:`~.layout.map_backbone` (ResNet-50, the authors' U-Net decoder, their 1x1 projection).
- Volumes (``volume.kind: points``): one Gaussian per mesh vertex, in the mesh's order, carrying that vertex's
  memory row. NOVUM / CAVE: class ``c``'s vertex ``k`` is memory row ``c * max_n + k`` (``max_n`` the largest
  mesh's vertex count; GenIntel/NOVUM ``src/lib/helper.py`` L28-32, ``src/models/FeatureBank.py`` L141-143).
  NeMo: vertex ``k`` of the chosen mesh is row ``k`` of that mesh's tensor.
- Background bank: the rows after the vertices (the clutter bank, ``FeatureBank.clutter`` L137-139), in order.
- Memory rows are copied as they are: the authors' updates leave every row unit-norm (``F.normalize``,
  ``FeatureBank.py`` L216-267), and their inference uses them so.

The geometry goes into the checkpoint (the volumes' buffers), so loading it needs no PASCAL3D+.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from ...config import ExperimentConfig, config_to_dict
from ...data.pascal3d import Pascal3DPreprocessed
from ...errors import CheckpointError, ConfigError, DataError
from ..neural_volumes import NeuralVolumes
from ..priors import PosePriors
from .layout import map_backbone
from .meshes import LINEAR_COVERAGE, NUMBER_VERTICES, Mesh, mesh_from_cad, mesh_gaussians, read_off
from .source import SourceCheckpoint, read_source

# GenIntel/NOVUM config/defaults.yaml L27-38: the class order of the memory
AUTHORS_CLASSES = ["aeroplane", "bicycle", "boat", "bottle", "bus", "car",
                   "chair", "diningtable", "motorbike", "sofa", "train", "tvmonitor"]  # fmt: skip
BANK_SIZE = 2560  # num_noise 5 x max_group 512 (config/defaults.yaml L54-55; NeMo code/TrainNeMo.py L31-32)
IMAGE_SIZE = (640, 800)  # config/defaults.yaml L18-20: the preprocessed PASCAL3D+ images
SCALE_FACTOR = 0.6  # sigma = 0.6 x spacing, as novum3d's cuboid volumes (meshes.mesh_gaussians says why)


def converted_config(classes: list[str], feature_dim: int, bank_size: int, max_vertices: int,
                     image_size: tuple[int, int]) -> ExperimentConfig:  # fmt: skip
    """The config a converted model is described by: ResNet-50 + U-Net, ``points`` volumes, the authors' loss and
    bank settings (GenIntel/NOVUM config/defaults.yaml; for a user who fine-tunes it), preprocessed PASCAL3D+."""
    cfg = ExperimentConfig()
    cfg.model.backbone, cfg.model.decoder, cfg.model.feature_dim = "resnet50", "unet", feature_dim
    cfg.volume.kind, cfg.volume.num_gaussians, cfg.volume.scale_factor = "points", max_vertices, SCALE_FACTOR
    cfg.bank.size, cfg.bank.per_image, cfg.bank.background = bank_size, 5, "volume"
    cfg.loss.bank_weight, cfg.loss.clutter_weight = 0.005, 0.1
    cfg.data.layout, cfg.data.classes, cfg.data.image_size = "pascal3d", list(classes), tuple(image_size)
    return cfg


def memory_rows(source: SourceCheckpoint, meshes: dict[str, Mesh], bank_size: int,
                mesh_index: int = 1) -> tuple[dict[str, torch.Tensor], torch.Tensor]:  # fmt: skip
    """Each class's vertex features [n_c, D] and the background bank [bank_size, D] of the source's memory.

    A row count that does not fit the meshes (other CAD models, another vertex count or class list than training
    had) is a CheckpointError saying what it expected and which options to check.
    """
    counts = {c: len(m) for c, m in meshes.items()}
    if source.format == "nemo":
        (cls,) = meshes
        if not 1 <= mesh_index <= len(source.memory):
            raise CheckpointError(
                f"--mesh {mesh_index}: its memory holds {len(source.memory)} mesh(es), 1..{len(source.memory)}",
                path=source.path,
                field="--mesh",
            )
        memory = source.memory[mesh_index - 1]
        expected = counts[cls] + bank_size
        layout = f"{counts[cls]} vertices of mesh {mesh_index:02d} + {bank_size} bank rows"
    else:
        memory = source.memory
        max_n = max(counts.values())
        expected = len(meshes) * max_n + bank_size
        largest = max(counts, key=counts.get)
        layout = f"{len(meshes)} classes x {max_n} (the largest mesh, {largest}) + {bank_size} bank rows"
    if memory.shape[0] != expected:
        raise CheckpointError(
            f"memory has {memory.shape[0]} rows, the meshes give {layout} = {expected}: they are not the meshes it "
            "was trained with; check --pascal3d / --meshes (the CAD models), --classes, --mesh-vertices (the "
            "authors': 1000), --shape and --bank-size",
            path=source.path,
            field="memory",
        )
    if source.format == "nemo":
        return {cls: memory[: counts[cls]]}, memory[counts[cls] :]
    features = {c: memory[y * max_n : y * max_n + counts[c]] for y, c in enumerate(meshes)}
    return features, memory[len(meshes) * max_n :]


def convert(
    source: SourceCheckpoint,
    meshes: dict[str, Mesh],
    mesh_info: dict[str, Any],
    image_size: tuple[int, int] = IMAGE_SIZE,
    bank_size: int = BANK_SIZE,
    mesh_index: int = 1,
    priors: PosePriors | None = None,
) -> dict[str, Any]:
    """The novum3d checkpoint dict of ``source`` with the classes and vertices of ``meshes`` (class -> mesh, in the
    memory's class order). ``mesh_info`` (plain data: where the meshes came from) goes into the provenance;
    ``priors`` (from training annotations) into ``pose_priors``, else none (evaluation computes them from a
    training split it finds, or the estimator starts from its default distance)."""
    where = str(source.path)
    features, bank = memory_rows(source, meshes, bank_size, mesh_index)
    memory = source.memory[mesh_index - 1] if source.format == "nemo" else source.memory
    mapped = map_backbone(source.state, where)
    feature_dim = mapped.state["head.weight"].shape[0]
    if bank.shape[1] != feature_dim:
        raise CheckpointError(
            f"memory rows are {bank.shape[1]}-d, the backbone's features {feature_dim}-d: memory and state do not "
            "belong together",
            path=where,
            field="memory",
        )
    classes = list(meshes)
    volumes = NeuralVolumes({c: mesh_gaussians(m, SCALE_FACTOR) for c, m in meshes.items()}, feature_dim, bank_size)
    with torch.no_grad():
        volumes.features.zero_()
        for y, c in enumerate(classes):
            volumes.features[y, : len(meshes[c])] = features[c].float()
        volumes.bank.copy_(bank.float())
    state = {f"backbone.{k}": v for k, v in mapped.state.items()}
    state |= {f"volumes.{k}": v for k, v in volumes.state_dict().items()}
    cfg = converted_config(classes, feature_dim, bank_size, volumes.features.shape[1], image_size)
    provenance = {
        "source": "converted",
        "format": source.format,
        "file": source.path.name,
        "sha256": source.sha256,
        "bytes": source.size,
        "dropped": sorted(mapped.dropped),
        "folded": sorted(mapped.folded),  # conv biases, now in their BatchNorm's running mean
        "filled": dict(mapped.filled),
        "meshes": mesh_info
        | {
            "vertices": {c: len(m) for c, m in meshes.items()},
            "sha256": {c: m.digest() for c, m in meshes.items()},
        },
        "gaussians": f"isotropic, sigma = {SCALE_FACTOR} x sqrt(mesh area / distinct vertices)",
        "memory": {"rows": int(memory.shape[0]), "bank": bank_size}
        | ({"mesh": mesh_index, "meshes": len(source.memory)} if source.format == "nemo" else {}),
        "timestamp": source.extra.get("timestamp") if isinstance(source.extra.get("timestamp"), int) else None,
        "args": source.extra.get("args"),
    }
    return {
        "kind": "novum",
        "model": state,
        "config": config_to_dict(cfg),
        "classes": classes,
        "calibration": None,  # no validation split was seen: the default temperature
        "pose_priors": priors.to_dict() if priors is not None else None,
        "provenance": provenance,
    }


def save_converted(ckpt: dict[str, Any], out: str | Path) -> Path:
    """Write ``ckpt`` to ``out`` (through a temporary file renamed into place: never a half-written model)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        torch.save(ckpt, tmp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write the converted checkpoint ({exc.strerror or exc})", path=out) from exc
    os.replace(tmp, out)
    return out


def nemo_category(path: str | Path, given: str | None) -> str:
    """The class of a NeMo checkpoint: ``given`` (``--class``), else read off ``saved_model_{cate}_{epoch}.pth``
    (code/TrainNeMo.py L201)."""
    if given:
        return given
    match = re.fullmatch(r"saved_model_([A-Za-z]+)_\d+\.pth", Path(path).name)
    if match is None:
        raise ConfigError(
            f"{Path(path).name}: cannot tell its class from the name (NeMo writes saved_model_{{class}}_799.pth); "
            "give --class",
            field="--class",
        )
    return match[1]


def build_meshes(
    fmt: str,
    classes: list[str],
    pascal3d: str | Path | None = None,
    meshes_dir: str | Path | None = None,
    shape: str | None = None,
    number_vertices: int = NUMBER_VERTICES,
    mesh_index: int = 1,
    nemo_meshes: int = 1,
) -> tuple[dict[str, Mesh], dict[str, Any]]:
    """Each class's mesh, from the PASCAL3D+ CAD models (``pascal3d``: the builders of :mod:`.meshes`) or from the
    ``.off`` files the authors' scripts wrote (``meshes_dir``: ``<dir>/<class>/01.off``, NeMo's ``NN.off`` for mesh
    ``mesh_index``), and where they came from (plain data for the provenance).

    ``shape``: cuboid (NOVUM, NeMo; the default) or ellipsoid (CAVE's default). NeMo: one memory tensor means its
    ``single`` meshes (one cuboid over all CAD models, tools/CreateCuboidMesh.py L135-161), several its ``multi``
    ones (a cuboid per CAD model ``NN.off``, L113-134).
    """
    if (pascal3d is None) == (meshes_dir is None):
        raise ConfigError(
            "give one of --pascal3d ROOT (rebuild the meshes from CAD/) or --meshes DIR (their .off files)",
            field="--pascal3d",
        )
    shape = shape or ("ellipsoid" if fmt == "cave" else "cuboid")
    per_cad = fmt == "nemo" and nemo_meshes > 1
    meshes, info = {}, {}
    if meshes_dir is not None:
        name = f"{mesh_index:02d}.off" if fmt == "nemo" else "01.off"
        for c in classes:
            path = Path(meshes_dir) / c / name
            if not path.is_file():
                raise DataError(f"no mesh {name} for {c!r}; --meshes is the folder of <class>/{name} (e.g. "
                                "PASCAL3D+_release1.1/CAD_single)", path=path)  # fmt: skip
            meshes[c] = read_off(path)
        info = {"source": "off", "folder": str(meshes_dir), "file": name}
    else:
        for c in classes:
            if per_cad:
                count = len(list((Path(pascal3d) / "CAD" / c).glob("[0-9][0-9].off")))
                if count != nemo_meshes:
                    raise CheckpointError(f"its memory holds {nemo_meshes} meshes, CAD/{c} has {count} models: "
                                          "not the CAD models it was trained with", field="memory")  # fmt: skip
            meshes[c] = mesh_from_cad(pascal3d, c, shape, number_vertices, mesh_index if per_cad else None)
        builder = {"cuboid": "GenIntel/NOVUM src/lib/createCuboidMesh.py", "ellipsoid": "CAVE src/lib/createMesh.py"}
        info = {"source": "cad", "folder": str(pascal3d), "shape": shape, "builder": builder[shape],
                "number_vertices": number_vertices, "linear_coverage": LINEAR_COVERAGE,
                "cad_models": f"{mesh_index:02d}.off" if per_cad else "all"}  # fmt: skip
    return meshes, info


def priors_from(root: str | Path, classes: list[str]) -> PosePriors:
    """Pose priors of a preprocessed PASCAL3D+ training root (the layout scripts/prepare_pascal3d.py writes, the one
    evaluation reads), so their distances are the evaluated images' distances."""
    return PosePriors.from_dataset(Pascal3DPreprocessed(root, classes), classes)


def convert_release(
    fmt: str,
    path: str | Path,
    pascal3d: str | Path | None = None,
    meshes_dir: str | Path | None = None,
    classes: list[str] | None = None,
    shape: str | None = None,
    number_vertices: int = NUMBER_VERTICES,
    mesh_index: int = 1,
    bank_size: int = BANK_SIZE,
    image_size: tuple[int, int] = IMAGE_SIZE,
    priors_root: str | Path | None = None,
    allow_pickle: bool = False,
) -> dict[str, Any]:
    """:func:`convert` of a released file: read and check it, build its meshes, map it. ``classes``: the memory's
    class order (default: the authors' twelve; NeMo: the one class, from ``--class`` or the file name)."""
    source = read_source(path, fmt, allow_pickle)
    if fmt == "nemo":
        if classes is not None and len(classes) != 1:
            raise ConfigError(f"--class: a NeMo checkpoint holds one class, got {classes}", field="--class")
        classes = [nemo_category(path, classes[0] if classes else None)]
    classes = list(classes or AUTHORS_CLASSES)
    nemo_meshes = len(source.memory) if fmt == "nemo" else 1
    meshes, info = build_meshes(fmt, classes, pascal3d, meshes_dir, shape, number_vertices, mesh_index, nemo_meshes)
    priors = priors_from(priors_root, classes) if priors_root is not None else None
    return convert(source, meshes, info, image_size, bank_size, mesh_index, priors)
