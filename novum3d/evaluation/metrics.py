"""Classification and 3D pose metrics over per-image records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rendering import rotation_error, rotation_from_pose


def pose_errors(pred: dict[str, Any], gt: dict[str, Any]) -> torch.Tensor:
    """Geodesic rotation errors (radians) between predicted and annotated (azimuth, elevation, theta)."""
    r_pred = rotation_from_pose(pred["azimuth"], pred["elevation"], pred["theta"]).double()
    r_gt = rotation_from_pose(gt["azimuth"], gt["elevation"], gt["theta"]).double()
    return rotation_error(r_pred, r_gt)


def _block(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    if not records:
        return {"images": 0}
    correct = np.array([r["predicted"] == r["label"] for r in records])
    err = np.array([r["pose_error"] for r in records])
    return {
        "images": len(records),
        "accuracy": float(correct.mean()),
        "acc_pi_6": float((err < math.pi / 6).mean()),
        "acc_pi_18": float((err < math.pi / 18).mean()),
        "median_error_deg": float(np.degrees(np.median(err))),
        "class_and_pose_right": float((correct & (err < math.pi / 6)).mean()),
    }


def summarize(records: Sequence[dict[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    """Totals, per-class blocks and the confusion matrix (rows: truth, columns: prediction).

    Each record holds ``label``, ``predicted`` (class indices) and ``pose_error`` (radians,
    for the pose estimated under the predicted class).
    """
    out = _block(records)
    out["per_class"] = {c: _block([r for r in records if r["label"] == y]) for y, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=int)
    for r in records:
        confusion[r["label"], r["predicted"]] += 1
    out["confusion"] = confusion.tolist()
    return out
