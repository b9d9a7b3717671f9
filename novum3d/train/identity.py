"""A training run's identity: the settings that decide what it learns, and its data's digests.

A resumed run, a cached evaluation and a pretrained backbone are matched by it; settings added later
leave it unchanged at their defaults, so older runs still match.
"""

from __future__ import annotations

from typing import Any

# Settings that say where and how fast a run goes, not what it learns.
# model.compile is one: compiled and eager runs learn the same (and older identities lack it).
BOOKKEEPING = {("train", "out_dir"), ("data", "root"), ("data", "val_root"), ("data", "num_workers"),
               ("train", "log_every"), ("train", "val_every"), ("model", "compile"),
               ("train", "cudnn_benchmark"), ("train", "cpu_threads")}  # fmt: skip


def training_identity(config: dict[str, Any], train_digest: str, val_digest: str) -> dict[str, Any]:
    """``{"config": config without BOOKKEEPING, "data": {"train": ..., "val": ...}}``."""
    kept = {section: {k: v for k, v in values.items() if (section, k) not in BOOKKEEPING}
            for section, values in config.items() if isinstance(values, dict)}  # fmt: skip
    kept |= {k: v for k, v in config.items() if not isinstance(v, dict)}
    # Augmentation off (the default) leaves the identity as before the section existed, and rotation
    # or stretch off leaves it as before that field existed: older runs still match.
    augment = kept.get("augment", {})
    if not augment.get("rotation_degrees"):
        augment.pop("rotation_degrees", None)
    if augment.get("vertical_stretch", 1.0) == 1.0:  # off, as before the field existed
        augment.pop("vertical_stretch", None)
    if not augment.get("occlusion_probability") and not {"rotation_degrees", "vertical_stretch"} & augment.keys():
        kept.pop("augment", None)
    if kept.get("model", {}).get("stride") == 8:  # the default stride, as before the field existed
        kept["model"].pop("stride")
    if kept.get("model", {}).get("trunk_depth") == 4:  # likewise the whole trunk
        kept["model"].pop("trunk_depth")
    for key, default in (("freeze_trunk", False), ("backbone_kwargs", {}), ("arch_kwargs", {})):  # likewise
        if key in kept.get("model", {}) and kept["model"][key] == default:
            kept["model"].pop(key)
    return {"config": kept, "data": {"train": train_digest, "val": val_digest}}
