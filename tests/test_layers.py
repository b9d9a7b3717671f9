"""Imports point one way: a lower layer never loads a higher one (docs/architecture.md draws them).

Every module of ``rendering``, ``novum3d`` and ``benchmarks`` is imported in a fresh interpreter,
lowest layer first, and the project modules each import brought into ``sys.modules`` are recorded.
Importing in layer order makes the diff sufficient: the first module to load a higher layer's
module is a lower-or-equal layer's, so it is caught. Siblings (``train`` and ``inference``) must not
load each other either; one interpreter per sibling imports that sibling first in its layer, so
each is checked before the other is loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A module may load modules of lower layers and of its own group; groups of one layer
# are siblings and load nothing of each other.
LAYERS: list[dict[str, tuple[str, ...]]] = [
    {"rendering": ("rendering",)},
    {
        "core": (
            "novum3d",  # the package itself (its __init__)
            "novum3d.errors",
            "novum3d.config",
            "novum3d.categories",
            "novum3d.volume_sheet",
            "novum3d.fingerprint",
            "novum3d.distributed",
            "novum3d.cli",
            "novum3d.device",
            "novum3d.checkpoint",
        )
    },
    {"data": ("novum3d.data",)},
    {"model": ("novum3d.model",)},
    {"train": ("novum3d.train",), "inference": ("novum3d.inference",)},
    # Baselines train with the trainer (a Trainer subclass) and load like the NOVUM loader.
    {"baselines": ("novum3d.baselines",)},
    {"evaluation": ("novum3d.evaluation",)},
    # Front ends: may load the whole library, never the tests.
    {"benchmarks": ("benchmarks",)},
]
PROJECT = ("rendering", "novum3d", "benchmarks", "tests", "scripts")


def group_of(module: str) -> tuple[int, str] | None:
    """(layer index, group) of a module: the group whose longest prefix names it."""
    best, length = None, -1
    for index, layer in enumerate(LAYERS):
        for group, prefixes in layer.items():
            for p in prefixes:
                if (module == p or module.startswith(p + ".")) and len(p) > length:
                    best, length = (index, group), len(p)
    return best


def modules() -> list[str]:
    """Every module under the layered packages, by file (nothing is imported to find them)."""
    out = []
    for package in ("rendering", "novum3d", "benchmarks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


PROBE = """
import importlib, json, sys
project = tuple(sys.argv[1].split(","))
loaded = {}
for name in json.loads(sys.stdin.read()):
    before = set(sys.modules)
    importlib.import_module(name)
    loaded[name] = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in project)
print(json.dumps(loaded))
"""


def violations(order: list[str]) -> list[str]:
    """Import ``order`` in one fresh interpreter; each module that loads a higher layer or a sibling."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(PROJECT)],
        input=json.dumps(order),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = []
    for name, loaded in json.loads(result.stdout.splitlines()[-1]).items():
        layer, group = group_of(name)
        for other in loaded:
            where = group_of(other)
            if where is None:
                found.append(f"{name} loads {other}, which belongs to no layer (tests? scripts?)")
                continue
            o_layer, o_group = where
            if o_layer > layer or (o_layer == layer and o_group != group):
                found.append(f"{name} ({group}) loads {other} ({o_group})")
    return found


def import_order(first: str) -> list[str]:
    """Every module, layers lowest first, group ``first`` first within its layer."""

    def key(name: str) -> tuple[int, int, str]:
        layer, group = group_of(name)
        return layer, 0 if group == first else 1, name

    return sorted(modules(), key=key)


SIBLINGS = [group for layer in LAYERS if len(layer) > 1 for group in layer]


def test_every_module_belongs_to_a_layer():
    assert [m for m in modules() if group_of(m) is None] == []


@pytest.mark.parametrize("first", SIBLINGS)
def test_lower_layers_never_load_higher_ones(first):
    assert violations(import_order(first)) == []
