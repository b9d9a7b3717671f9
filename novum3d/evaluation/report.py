"""Evaluation reports: Markdown tables and simple PNG plots (drawn with PIL, no plotting library)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

COLUMNS = [  # key, header, scale, format
    ("images", "images", 1, "{:d}"),
    ("accuracy", "accuracy %", 100, "{:.1f}"),
    ("acc_pi_6", "Acc@pi/6 %", 100, "{:.1f}"),
    ("acc_pi_18", "Acc@pi/18 %", 100, "{:.1f}"),
    ("median_error_deg", "median error deg", 1, "{:.1f}"),
    ("class_and_pose_right", "class and pose right %", 100, "{:.1f}"),
]


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per split."""
    head = "| split | " + " | ".join(c[1] for c in COLUMNS) + " |"
    rows = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for split, block in results.items():
        cells = [f.format(block[k] * scale) if k in block else "-" for k, _, scale, f in COLUMNS]
        rows.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    title: str,
    xlabel: str,
    ylabel: str,
    xticks: Sequence[tuple[float, str]] | None = None,
    ylim: tuple[float, float] = (0.0, 1.0),
    size: tuple[int, int] = (640, 420),
) -> Path:
    """Lines (x, y) per series on white, with axes, ticks, a legend and a title."""
    w, h = size
    left, right, top, bottom = 60, 20, 30, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    xs_all = [x for xs, _ in series.values() for x in xs]
    x0, x1 = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    x1 = x1 if x1 > x0 else x0 + 1

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (w - left - right),
            h - bottom - (y - ylim[0]) / (ylim[1] - ylim[0]) * (h - top - bottom),
        )

    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for k in range(6):
        y = ylim[0] + k * (ylim[1] - ylim[0]) / 5
        _, py = px(x0, y)
        d.line([left - 4, py, left, py], fill="black")
        d.text((4, py - 6), f"{y:.2f}", fill="black")
    for x, label in xticks or [(x0, f"{x0:g}"), (x1, f"{x1:g}")]:
        qx, _ = px(x, ylim[0])
        d.line([qx, h - bottom, qx, h - bottom + 4], fill="black")
        d.text((qx - 10, h - bottom + 6), label, fill="black")
    d.text((w // 2 - 40, h - 18), xlabel, fill="black")
    d.text((4, 8), f"{title}   ({ylabel})", fill="black")
    palette = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
               (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]  # fmt: skip
    for i, (name, (xs, ys)) in enumerate(series.items()):
        color = palette[i % len(palette)]
        pts = [px(x, y) for x, y in zip(xs, ys, strict=True)]
        if len(pts) > 1:
            d.line(pts, fill=color, width=2)
        for p in pts if len(pts) < 12 else []:
            d.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=color)
        d.text((w - right - 150, top + 6 + 14 * i), f"- {name}", fill=color)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def error_cdf(errors_by_split: dict[str, Sequence[float]], path: str | Path) -> Path:
    """Cumulative pose-error curves (fraction of images with error below x degrees)."""
    series = {}
    for split, errs in errors_by_split.items():
        if len(errs) == 0:
            continue
        deg = np.sort(np.degrees(np.asarray(errs)))
        grid = np.linspace(0, 180, 91)
        series[split] = (grid.tolist(), (np.searchsorted(deg, grid, side="right") / len(deg)).tolist())
    ticks = [(0, "0"), (30, "30"), (60, "60"), (90, "90"), (180, "180")]
    return line_plot(series, path, "cumulative pose error", "error (degrees)", "fraction of images", ticks)


def accuracy_vs_occlusion(results: dict[str, dict[str, Any]], path: str | Path) -> Path | None:
    """Classification accuracy and Acc@pi/6 at occlusion levels 0 (clean) to 3."""
    names = ["clean", "occluded-L1", "occluded-L2", "occluded-L3"]
    have = [(i, n) for i, n in enumerate(names) if n in results and results[n].get("images")]
    if len(have) < 2:
        return None
    xs = [i for i, _ in have]
    series = {
        "accuracy": (xs, [results[n]["accuracy"] for _, n in have]),
        "Acc@pi/6": (xs, [results[n]["acc_pi_6"] for _, n in have]),
    }
    ticks = [(i, "clean" if i == 0 else f"L{i}") for i, _ in have]
    return line_plot(series, path, "accuracy vs occlusion", "occlusion level", "accuracy", ticks)
