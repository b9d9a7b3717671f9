"""Evaluation reports: Markdown tables and PNG line plots (matplotlib, Agg canvas, one shared style)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def emit(text: str, append: str | Path | None = None) -> None:
    """Print a result table and, when ``append`` names a Markdown file, append it there (``--append``)."""
    print(text)
    if append:
        with open(append, "a") as fh:
            fh.write("\n" + text + "\n")


COLUMNS = [  # key, header, scale, format
    ("images", "images", 1, "{:d}"),
    ("accuracy", "accuracy %", 100, "{:.1f}"),
    ("acc_pi_6", "Acc@pi/6 %", 100, "{:.1f}"),
    ("acc_pi_18", "Acc@pi/18 %", 100, "{:.1f}"),
    ("median_error_deg", "median error deg", 1, "{:.1f}"),
    ("class_and_pose_right", "class and pose right %", 100, "{:.1f}"),
    ("ece", "ECE %", 100, "{:.1f}"),
    ("acc_pi_6_symmetric", "Acc@pi/6 sym. %", 100, "{:.1f}"),
    ("never_moved", "never moved from the truth %", 100, "{:.1f}"),  # the from-truth diagnosis only
    # NeMo's mean of the classes' medians, weighted by their images (evaluation.run.class_weighted_median)
    ("median_error_class_weighted_deg", "NeMo's class-weighted median deg", 1, "{:.1f}"),
]
OPTIONAL = ("never_moved", "median_error_class_weighted_deg")  # shown only where a split has them


def markdown_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per split; an :data:`OPTIONAL` column only when some split has its value (``never_moved``: one
    protocol)."""
    columns = [c for c in COLUMNS if c[0] not in OPTIONAL or any(c[0] in b for b in results.values())]
    head = "| split | " + " | ".join(c[1] for c in columns) + " |"
    rows = [head, "|" + "---|" * (len(columns) + 1)]
    for split, block in results.items():
        cells = [f.format(block[k] * scale) if k in block else "-" for k, _, scale, f in columns]
        rows.append(f"| {split} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


PLOT_DPI = 100  # pixels per inch of every figure: ``size`` arguments are pixels, fonts are points at this dpi

# The one look of every chart novum3d draws (matplotlib rcParams).
PLOT_STYLE: dict[str, Any] = {
    "figure.dpi": PLOT_DPI,
    "savefig.dpi": PLOT_DPI,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "0.85",
    "grid.linewidth": 0.8,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "lines.linewidth": 2.0,
    "lines.markersize": 6,
    "legend.fontsize": 9,
    "legend.framealpha": 0.9,
    "legend.edgecolor": "0.8",
}

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]


@contextmanager
def plot_style() -> Iterator[None]:
    """rcParams of ``PLOT_STYLE`` for the figures created and saved inside the block."""
    with matplotlib.rc_context(PLOT_STYLE):
        yield


def blank_figure(size: tuple[int, int]) -> Figure:
    """A figure of ``size`` (width, height) pixels without axes, on the Agg canvas (no display), for
    callers that lay out their own panels (``fig.subplots``).

    Call it inside ``plot_style()``; the figure belongs to no pyplot state, so nothing needs closing.
    """
    w, h = size
    fig = Figure(figsize=(w / PLOT_DPI, h / PLOT_DPI), dpi=PLOT_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def new_figure(size: tuple[int, int]) -> tuple[Figure, Axes]:
    """:func:`blank_figure` with one axes."""
    fig = blank_figure(size)
    return fig, fig.add_subplot()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG at its exact pixel size (no tight bounding box), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=PLOT_DPI)
    return path


def _legend_below(fig: Figure, n: int) -> None:
    """A legend under the axes in as few rows as fit the figure's width, entries balanced over rows."""
    renderer = fig.canvas.get_renderer()
    fits = 1
    for ncols in range(n, 1, -1):
        legend = fig.legend(loc="outside lower center", ncols=ncols)
        width = legend.get_window_extent(renderer).width
        legend.remove()
        if width <= 0.95 * fig.bbox.width:
            fits = ncols
            break
    rows = math.ceil(n / fits)
    fig.legend(loc="outside lower center", ncols=math.ceil(n / rows))


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
    """Lines (x, y) per series, with a title, labelled axes, gridlines and a legend, as a PNG of
    ``size`` (width, height) pixels. ``xticks`` are (position, label) pairs; series of fewer than
    12 points are drawn with markers (one shape per series, so overlapping lines stay apart)."""
    with plot_style():
        fig, ax = new_figure(size)
        dense = False
        for i, (name, (xs, ys)) in enumerate(series.items()):
            few = len(xs) < 12
            dense |= not few
            ax.plot(xs, ys, label=name, marker=_MARKERS[i % len(_MARKERS)] if few else None)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        pad = 0.03 * (ylim[1] - ylim[0])  # points on the limits stay whole
        ax.set_ylim(ylim[0] - pad, ylim[1] + pad)
        ax.set_yticks(np.linspace(ylim[0], ylim[1], 6))
        if xticks:
            ax.set_xticks([x for x, _ in xticks], [label for _, label in xticks])
        ax.margins(x=0.0 if dense else 0.06)
        if 0 < len(series) <= 3:
            ax.legend(loc="best")
        elif series:  # more would cover the lines: below the axes
            _legend_below(fig, len(series))
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")
        return save_figure(fig, path)


def error_cdf(errors_by_split: dict[str, Sequence[float]], path: str | Path) -> Path:
    """Cumulative pose-error curves (fraction of images with error below x degrees)."""
    series = {}
    for split, errs in errors_by_split.items():
        if len(errs) == 0:
            continue
        deg = np.sort(np.degrees(np.asarray(errs)))
        grid = np.linspace(0, 180, 361)  # every 0.5 degrees: the steps of a few images stay upright
        series[split] = (grid.tolist(), (np.searchsorted(deg, grid, side="right") / len(deg)).tolist())
    ticks = [(d, f"{d}") for d in (0, 10, 30, 60, 90, 120, 150, 180)]  # gridlines at the Acc@pi/18 and pi/6 limits
    return line_plot(series, path, "cumulative pose error", "error (degrees)", "fraction of images", ticks)


def accuracy_vs_occlusion(results: dict[str, dict[str, dict[str, Any]]], path: str | Path) -> Path | None:
    """Classification accuracy and Acc@pi/6 at occlusion levels 0 (clean) to 3, per protocol.

    Args:
        results: ``{protocol label: {split: summary}}``; a label may be "" for a single protocol.
    """
    names = ["clean", "occluded-L1", "occluded-L2", "occluded-L3"]
    series, ticks = {}, []
    for label, per_split in results.items():
        have = [(i, n) for i, n in enumerate(names) if n in per_split and per_split[n].get("images")]
        if len(have) < 2:
            continue
        xs = [i for i, _ in have]
        suffix = f" ({label})" if label else ""
        series[f"accuracy{suffix}"] = (xs, [per_split[n]["accuracy"] for _, n in have])
        series[f"Acc@pi/6{suffix}"] = (xs, [per_split[n]["acc_pi_6"] for _, n in have])
        ticks = sorted({*ticks, *((i, "clean" if i == 0 else f"L{i}") for i, _ in have)})
    if not series:
        return None
    return line_plot(series, path, "accuracy vs occlusion", "occlusion level", "accuracy", ticks)


def write_evaluation(out: str | Path, report: dict[str, Any], errors: dict[str, Sequence[float]]) -> str:
    """Write an evaluation's results.json, results.md (one table per protocol), accuracy_vs_occlusion.png
    and pose_error_cdf.png under ``out``; returns the tables.

    Args:
        report: ``{"checkpoint", "data", "protocols": {name: description}, "by_protocol": {name: {split:
            summary}}, ...}`` (written as it is).
        errors: pose errors (radians) per split, for the CDF.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2))
    results, described = report["by_protocol"], report["protocols"]
    tables = "\n\n".join(
        f"Protocol `{p}`: {description}.\n\n{markdown_table(results[p])}" for p, description in described.items()
    )
    (out / "results.md").write_text(f"Evaluation of `{report['checkpoint']}` on `{report['data']}`\n\n{tables}\n")
    labels = {p: p if len(described) > 1 else "" for p in described}
    accuracy_vs_occlusion({labels[p]: results[p] for p in described}, out / "accuracy_vs_occlusion.png")
    error_cdf(errors, out / "pose_error_cdf.png")
    return tables
