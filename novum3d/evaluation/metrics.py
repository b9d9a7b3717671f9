"""Classification and 3D pose metrics over per-image records."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from rendering import Pose, rotation_error, rotation_from_pose

PoseLike = Pose | Mapping[str, Any]


def _rotations(pose: PoseLike) -> torch.Tensor:
    """[B, 3, 3] float64 rotations of a :class:`~rendering.Pose` (or of a mapping with its three angles:
    distance plays no part in the rotation, so a record of angles alone will do)."""
    if isinstance(pose, Pose):
        return pose.rotation().double()
    return rotation_from_pose(pose["azimuth"], pose["elevation"], pose["theta"]).double()


def pose_errors(pred: PoseLike, gt: PoseLike) -> torch.Tensor:
    """Geodesic rotation errors (radians) between predicted and annotated poses (their azimuth, elevation, theta)."""
    return rotation_error(_rotations(pred), _rotations(gt))


Symmetry = Literal["none", "two-fold", "continuous"]

# Which PASCAL3D+ classes look the same after a rotation about their vertical (CAD z) axis, in
# reality (and in the synthetic meshes, novum3d/data/synthetic/meshes_v2.py: SYMMETRIC). Pose
# errors under these symmetries are reported beside the plain PASCAL3D+ metric, never instead.
PASCAL3D_SYMMETRY: dict[str, Symmetry] = {
    "aeroplane": "none",  # nose and tail differ
    "bicycle": "none",  # front wheel with fork and handlebar, rear wheel with chain and saddle behind
    "boat": "none",  # bow and stern differ
    "bottle": "continuous",  # a solid of revolution about its axis (labels aside, which PASCAL3D+ ignores)
    "bus": "none",  # driver's end and rear differ
    "car": "none",  # bonnet and boot differ
    "chair": "none",  # the back rest is on one side
    "diningtable": "two-fold",  # a rectangular top on four corner legs: half a turn about z gives the same table
    "motorbike": "none",  # front fork and handlebar vs rear
    "sofa": "none",  # the back rest is on one side
    "train": "none",  # PASCAL3D+ annotates the leading car, whose front differs from its back
    "tvmonitor": "none",  # screen at the front
}


def symmetry_of(category: str) -> Symmetry:
    """The symmetry of a PASCAL3D+ class name (:data:`PASCAL3D_SYMMETRY`); "none" for other names."""
    return PASCAL3D_SYMMETRY.get(category, "none")


def _rot_z(phi: torch.Tensor) -> torch.Tensor:
    c, s, z, o = torch.cos(phi), torch.sin(phi), torch.zeros_like(phi), torch.ones_like(phi)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*phi.shape, 3, 3)


def rotation_error_symmetric(r_pred: torch.Tensor, r_gt: torch.Tensor, symmetry: Sequence[str]) -> torch.Tensor:
    """BOP-style error: ``min over S in G of angle(R_pred, R_gt S)`` for the object's symmetry group G.

    ``R`` maps the object (CAD) frame to the camera, so an object symmetry ``S`` (a rotation about
    the object's z axis) acts on the right.

    - "none": the plain geodesic angle.
    - "two-fold": G = {I, Rz(pi)} (pose with azimuth + pi).
    - "continuous": G = {Rz(phi)}. The set {R_gt Rz(phi)} is exactly the set of rotations taking
      the object's z axis to ``z_gt = R_gt e_z``; every rotation moves any vector by at most its
      angle, and the minimal rotation taking ``z_pred`` to ``z_gt`` (about their cross product)
      belongs to the set, so the minimum is the angle between ``z_pred = R_pred e_z`` and ``z_gt``
      (the third columns). Theta matters through them: it tilts the axis in the image.

    Args:
        r_pred, r_gt: [B, 3, 3]; symmetry: B entries of "none", "two-fold", "continuous".

    Returns:
        [B] radians in [0, pi] (continuous: [0, pi] too, pi for an upside-down axis).
    """
    unknown = sorted(set(symmetry) - {"none", "two-fold", "continuous"})
    if unknown:
        raise ValueError(f"symmetry: expected 'none', 'two-fold' or 'continuous', got {unknown}")
    if len(symmetry) != r_pred.shape[0]:
        raise ValueError(f"symmetry: {len(symmetry)} entries for {r_pred.shape[0]} poses")
    plain = rotation_error(r_pred, r_gt)
    flipped = rotation_error(r_pred, r_gt @ _rot_z(torch.full(plain.shape, math.pi, dtype=r_gt.dtype)))
    zp, zg = r_pred[..., :, 2], r_gt[..., :, 2]
    axis = torch.atan2(torch.linalg.cross(zp, zg).norm(dim=-1), (zp * zg).sum(-1))
    kind = torch.tensor([{"none": 0, "two-fold": 1, "continuous": 2}[s] for s in symmetry])
    return torch.where(kind == 2, axis, torch.where(kind == 1, torch.minimum(plain, flipped), plain))


def pose_errors_symmetric(pred: PoseLike, gt: PoseLike, symmetry: Symmetry | Sequence[Symmetry]) -> torch.Tensor:
    """Rotation errors (radians) under each object's symmetry: :func:`rotation_error_symmetric` of
    the poses' rotations. ``symmetry`` is one value for all poses or one per pose (the class of each
    image, e.g. ``[symmetry_of(classes[y]) for y in labels]``). :func:`pose_errors` (no symmetry,
    PASCAL3D+'s metric) stays the headline number; report this one beside it.
    """
    r_pred, r_gt = torch.broadcast_tensors(_rotations(pred), _rotations(gt))
    if isinstance(symmetry, str):
        symmetry = [symmetry] * r_pred.shape[0]
    return rotation_error_symmetric(r_pred, r_gt, list(symmetry))


def summary_block(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Images and accuracy of records ``{"label", "predicted"}``; when every record also holds
    ``pose_error`` (radians), Acc@pi/6, Acc@pi/18, the median error in degrees and the share with
    class and pose right; with ``pose_error_symmetric`` too, the symmetric ones beside them."""
    if not records:
        return {"images": 0}
    correct = np.array([r["predicted"] == r["label"] for r in records])
    out = {"images": len(records), "accuracy": float(correct.mean())}
    if not all("pose_error" in r for r in records):
        return out
    err = np.array([r["pose_error"] for r in records])
    return (
        out
        | {
            "acc_pi_6": float((err < math.pi / 6).mean()),
            "acc_pi_18": float((err < math.pi / 18).mean()),
            "median_error_deg": float(np.degrees(np.median(err))),
            "class_and_pose_right": float((correct & (err < math.pi / 6)).mean()),
        }
        | _symmetric_block(records)
    )


def protocol_records(records: Sequence[dict[str, Any]], protocol: str) -> list[dict[str, Any]]:
    """Evaluation records ``{"label", <protocol>: {...}}`` as flat ``{"label", ...}`` records of one protocol."""
    return [{"label": r["label"]} | r[protocol] for r in records]


def _symmetric_block(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Beside the plain metrics, when every record has ``pose_error_symmetric`` (radians)."""
    if not all("pose_error_symmetric" in r for r in records):
        return {}
    err = np.array([r["pose_error_symmetric"] for r in records])
    return {
        "acc_pi_6_symmetric": float((err < math.pi / 6).mean()),
        "acc_pi_18_symmetric": float((err < math.pi / 18).mean()),
        "median_error_symmetric_deg": float(np.degrees(np.median(err))),
    }


def summarize(records: Sequence[dict[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    """Totals, per-class blocks and the confusion matrix (rows: truth, columns: prediction).

    Each record holds ``label``, ``predicted`` (class indices) and ``pose_error`` (radians,
    for the pose estimated under the predicted class); when every record also holds
    ``pose_error_symmetric`` (:func:`pose_errors_symmetric`), the blocks add ``acc_pi_6_symmetric``,
    ``acc_pi_18_symmetric`` and ``median_error_symmetric_deg`` beside the plain ones.
    """
    out = summary_block(records)
    out["per_class"] = {c: summary_block([r for r in records if r["label"] == y]) for y, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    for r in records:
        confusion[r["label"], r["predicted"]] += 1
    out["confusion"] = confusion.tolist()
    return out
