"""The robustness benchmark: methods x splits accuracy tables shaped like NOVUM's, over seeds.

A suite YAML names the methods (NOVUM variants and baseline classifiers), each a training config
plus overrides, and the overrides every method shares (so all get the same data and budget).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import BaselineConfig, ExperimentConfig, load_config, load_experiment
from ..data.batch import box_cells, collate, images_to_device
from ..model.novum import NOVUM
from .metrics import protocol_records, summary_block
from .report import line_plot

OCCLUSION = ["clean", "occluded-L1", "occluded-L2", "occluded-L3"]


@dataclass
class SuiteMethod:
    name: str  # row label in the tables
    kind: Literal["novum", "baseline"]
    config: str  # a training config (configs/*.yaml)
    overrides: list[str] = field(default_factory=list)
    pose: bool = False  # also estimate poses (NOVUM only) for the Acc@pi/6 table

    def validate(self) -> None:
        if self.pose and self.kind != "novum":
            raise ValueError(f"{self.name}: pose is estimated for NOVUM methods only")

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")


@dataclass
class RobustnessSuite:
    methods: list[SuiteMethod]
    common: list[str] = field(default_factory=list)  # overrides applied to every method

    def validate(self) -> None:
        if not self.methods:
            raise ValueError("methods: at least one method is needed")
        slugs = [m.slug for m in self.methods]
        if len(set(slugs)) != len(slugs):
            raise ValueError(f"methods: names must differ (after lower-casing): {slugs}")


def load_suite(path: str | Path) -> RobustnessSuite:
    """Read a suite YAML; errors name the file and the key."""
    return load_config(RobustnessSuite, path)


def method_config(
    method: SuiteMethod, suite: RobustnessSuite, extra: list[str], seed: int, out_dir: Path
) -> ExperimentConfig | BaselineConfig:
    """The training config of one method and seed: its YAML + common + method + extra overrides."""
    overrides = [*suite.common, *method.overrides, *extra, f"train.seed={seed}", f"train.out_dir={out_dir}"]
    cls = ExperimentConfig if method.kind == "novum" else BaselineConfig
    return load_experiment(method.config, overrides, cls=cls)


@torch.no_grad()
def classify_split(
    model: torch.nn.Module,
    dataset: Dataset,
    image_size: tuple[int, int],
    batch_size: int = 64,
    num_workers: int = 0,
) -> list[dict[str, Any]]:
    """``{"label", "full": {"predicted"}}`` per image by ``model.classify`` (bf16 on CUDA); a NOVUM
    model also gets ``"reference": {"predicted"}`` from the cells inside the ground-truth box."""
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=partial(collate, image_size=image_size))  # fmt: skip
    boxed = isinstance(model, NOVUM)
    records = []
    for batch in loader:
        images = images_to_device(batch["image"], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            if boxed:
                maps = model(images)
                full = model.score_maps(maps).argmax(1).cpu()
                mask = box_cells(batch["bbox"].to(device), image_size, maps.shape[-2:])
                box = model.score_maps(maps, mask).argmax(1).cpu()
            else:
                full = model.classify(images).argmax(1).cpu()
        for i, y in enumerate(batch["label"].tolist()):
            rec = {"label": y, "full": {"predicted": int(full[i])}}
            if boxed:
                rec["reference"] = {"predicted": int(box[i])}
            records.append(rec)
    return records


def split_summary(records: list[dict[str, Any]], protocol: str = "full") -> dict[str, float]:
    """:func:`~novum3d.evaluation.metrics.summary_block` of one split under one protocol (images alone
    when the records have no such protocol: baselines get no box)."""
    if records and protocol not in records[0]:
        return {"images": len(records)}
    return summary_block(protocol_records(records, protocol))


def table_columns(per_split: dict[str, dict[str, float]], key: str = "accuracy", combine=np.mean) -> dict[str, float]:
    """Per-split values -> the table's columns.

    clean and L1..L3 as they are; ``corrupted`` = ``combine`` (mean) over the corrupted-* splits;
    each ood-* split, then ``OOD mean`` = ``combine`` over them (pass ``np.sum`` for image counts).
    Splits without the key are left out.
    """
    value = {s: b[key] for s, b in per_split.items() if key in b}
    cols: dict[str, float] = {}
    for name in OCCLUSION:
        if name in value:
            cols["clean" if name == "clean" else name.replace("occluded-", "")] = value[name]
    corrupted = [v for s, v in value.items() if s.startswith("corrupted-")]
    if corrupted:
        cols["corrupted"] = float(combine(corrupted))
    ood = {s.removeprefix("ood-"): v for s, v in sorted(value.items()) if s.startswith("ood-")}
    cols |= {f"OOD {k}": v for k, v in ood.items()}
    if ood:
        cols["OOD mean"] = float(combine(list(ood.values())))
    return cols


def markdown_rows(rows: dict[str, list[dict[str, float]]]) -> str:
    """Methods x columns in percent; with several seeds, ``mean +- std`` (population std)."""
    columns: list[str] = []
    for seeds in rows.values():
        for cols in seeds:
            columns += [c for c in cols if c not in columns]
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, seeds in rows.items():
        cells = []
        for c in columns:
            cells.append(seed_cell([100 * s[c] for s in seeds if c in s]))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def row_name(method: str, protocol: str) -> str:
    """The table row of a method under a protocol: the name alone for the full image."""
    return method if protocol == "full" else f"{method}, GT box"


def margin_rows(rows: dict[str, list[dict[str, float]]], novum: str, baseline: str) -> str:
    """Markdown rows ``margin: <NOVUM row> - <baseline>`` (per seed, then mean +- std), for the NOVUM
    method's full-image and GT-box rows that exist; "" when the baseline is missing."""
    lines = []
    for protocol in ("full", "reference"):
        name = row_name(novum, protocol)
        if name in rows and baseline in rows:
            margin = [{c: a[c] - b[c] for c in a if c in b} for a, b in zip(rows[name], rows[baseline], strict=True)]
            lines.append(markdown_rows({f"margin: {name} - {baseline}": margin}).splitlines()[-1])
    return "\n".join(lines)


def seed_cell(values: list[float]) -> str:
    """A table cell of one figure over seeds: ``-`` for none, the value for one, else ``mean +- std``
    (population std), one decimal."""
    if not values:
        return "-"
    if len(values) == 1:
        return _percent(values[0])
    return f"{_percent(np.mean(values))} +- {_percent(np.std(values))}"


def _percent(x: float) -> str:
    return f"{round(float(x), 1) + 0.0:.1f}"  # + 0.0 turns a rounded -0.0 into 0.0


def occlusion_plot(rows: dict[str, list[dict[str, float]]], path: str | Path) -> Path | None:
    """Accuracy (mean over seeds) against occlusion level, one line per method."""
    levels = ["clean", "L1", "L2", "L3"]
    series = {}
    for name, seeds in rows.items():
        have = [i for i, lvl in enumerate(levels) if all(lvl in s for s in seeds)]
        if len(have) >= 2:
            series[name] = (have, [float(np.mean([s[levels[i]] for s in seeds])) for i in have])
    if not series:
        return None
    ticks = [(i, lvl) for i, lvl in enumerate(levels)]
    return line_plot(series, path, "classification accuracy vs occlusion", "occlusion level", "accuracy", ticks,
                     size=(720, 440))  # fmt: skip
