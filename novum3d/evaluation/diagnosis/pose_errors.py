"""Which angle a pose estimate gets wrong, by where the true elevation lies against the training poses.

Images are grouped by their true elevation: below, inside or above the training split's elevation range.
For each protocol and group: the images, Acc@pi/6, the mean signed elevation error (predicted minus true:
negative means the estimate lies lower), the median absolute azimuth and theta errors, and the mean true
and predicted elevations. :func:`elevation_plot` draws predicted against true elevation with the training
range shaded: estimates pulled into that range lie in the band instead of on the diagonal.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from ...errors import DataError
from ..report import new_figure, plot_style, save_figure

BANDS = ("below", "inside", "above")


def band_of(elevation: float, train_range: tuple[float, float]) -> str:
    """``below``, ``inside`` or ``above`` the training elevations (radians)."""
    return "below" if elevation < train_range[0] else "above" if elevation > train_range[1] else "inside"


def training_elevation_range(splits: dict[str, Any], data: str | Path) -> tuple[float, float]:
    """(lowest, highest) elevation of the training split's annotations, radians."""
    if "train" not in splits:
        raise DataError("no train split, whose elevations define the bands", path=data)
    elevations = [it.annotation.elevation for it in splits["train"].items]
    return min(elevations), max(elevations)


def wrap_deg(angle: float) -> float:
    """An angle difference in radians, wrapped to [-180, 180) degrees."""
    return math.degrees((angle + math.pi) % (2 * math.pi) - math.pi)


def error_parts(
    rows: list[dict[str, Any]], truth: dict[str, dict[str, float]], train_range: tuple[float, float], protocol: str
) -> dict[str, dict[str, float]]:
    """Per elevation band (:data:`BANDS`): images, Acc@pi/6 % and the angle errors of ``protocol``.

    Args:
        rows: cache rows (``id`` and, per protocol, ``pose`` and ``pose_error`` in radians).
        truth: image id -> annotated ``azimuth``, ``elevation``, ``theta`` (radians).
        train_range: (lowest, highest) training elevation, radians.
    """
    groups: dict[str, list[tuple[float, ...]]] = {band: [] for band in BANDS}
    for row in rows:
        result = row.get(protocol)
        if result is None or result.get("pose") is None or row["id"] not in truth:
            continue
        true, pose = truth[row["id"]], result["pose"]
        band = band_of(true["elevation"], train_range)
        groups[band].append((
            float(result["pose_error"] < math.pi / 6),
            math.degrees(pose["elevation"] - true["elevation"]),
            abs(wrap_deg(pose["azimuth"] - true["azimuth"])),
            abs(wrap_deg(pose["theta"] - true["theta"])),
            math.degrees(true["elevation"]),
            math.degrees(pose["elevation"]),
        ))  # fmt: skip
    out = {}
    for band, values in groups.items():
        if not values:
            continue
        cols = list(zip(*values, strict=True))
        out[band] = {
            "images": len(values),
            "acc_pi_6": 100 * statistics.fmean(cols[0]),
            "elevation_error_deg": statistics.fmean(cols[1]),
            "median_abs_azimuth_error_deg": statistics.median(cols[2]),
            "median_abs_theta_error_deg": statistics.median(cols[3]),
            "true_elevation_deg": statistics.fmean(cols[4]),
            "predicted_elevation_deg": statistics.fmean(cols[5]),
        }
    return out


def elevation_pairs(
    rows: list[dict[str, Any]], truth: dict[str, dict[str, float]], protocol: str
) -> tuple[list[float], list[float]]:
    """(true, predicted) elevations in degrees of the rows with a ``protocol`` pose and a known truth."""
    pairs = [(truth[r["id"]]["elevation"], r[protocol]["pose"]["elevation"]) for r in rows
             if r["id"] in truth and (r.get(protocol) or {}).get("pose") is not None]  # fmt: skip
    return [math.degrees(t) for t, _ in pairs], [math.degrees(p) for _, p in pairs]


def elevation_plot(
    rows: list[dict[str, Any]],
    truth: dict[str, dict[str, float]],
    train_range: tuple[float, float],
    protocols: list[str],
    path: str | Path,
    title: str,
) -> Path:
    """Predicted against true elevation per protocol (a 640x480 PNG), the training range shaded."""
    low, high = (math.degrees(x) for x in train_range)
    with plot_style():
        fig, ax = new_figure((640, 480))
        ax.axhspan(low, high, color="0.85", zorder=0, label="training elevations")
        ax.plot([-90, 90], [-90, 90], color="0.4", linestyle="--", linewidth=1, label="predicted = true")
        for protocol in protocols:
            xs, ys = elevation_pairs(rows, truth, protocol)
            ax.scatter(xs, ys, s=10, alpha=0.6, label=protocol)
        ax.set_xlim(-45, 85)
        ax.set_ylim(-45, 85)
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.set_xlabel("true elevation (degrees)")
        ax.set_ylabel("predicted elevation (degrees)")
        ax.legend(loc="upper left", markerscale=2)
        return save_figure(fig, path)


def markdown(parts: dict[str, dict[str, dict[str, float]]], train_range: tuple[float, float]) -> str:
    low, high = (math.degrees(x) for x in train_range)
    lines = [
        f"Training elevations span {low:.1f} to {high:.1f} deg. Elevation error: predicted minus true.",
        "",
        "| protocol | true elevation | images | Acc@pi/6 % | elevation error deg | median abs azimuth error deg "
        "| median abs theta error deg | mean true elevation deg | mean predicted elevation deg |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for protocol, bands in parts.items():
        for band, m in bands.items():
            lines.append(
                f"| {protocol} | {band} | {m['images']} | {m['acc_pi_6']:.1f} | {m['elevation_error_deg']:+.1f} "
                f"| {m['median_abs_azimuth_error_deg']:.1f} | {m['median_abs_theta_error_deg']:.1f} "
                f"| {m['true_elevation_deg']:.1f} | {m['predicted_elevation_deg']:.1f} |"
            )
    return "\n".join(lines)
