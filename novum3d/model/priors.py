"""Per-class pose priors from training annotations: where each class's distance, elevation and
in-plane rotation usually lie.

The pose estimator uses them to start each class at its own typical distance and, where a class's
poses reach beyond the default template grid, to extend that grid. They never shrink it: the
authors' grid (12 azimuths x elevations {-30, 0, 30, 60} x thetas {-30, 0, 30} degrees) stays the
floor, so poses outside the training range stay reachable.

Priors are plain data: :meth:`PosePriors.to_dict` gives only str / int / float / list / dict, so
they round-trip through JSON and through ``torch.save`` / ``torch.load(weights_only=True)`` of a
checkpoint dict.

Example:
    >>> records = [(0, 0.1, 0.2, 0.0, 20.0), (0, 2.0, 0.3, 0.05, 22.0), (1, 1.0, 0.1, -0.05, 32.0)]
    >>> priors = PosePriors.from_annotations(["bottle", "diningtable"], records)
    >>> priors.for_class("bottle").distance_median
    21.0
    >>> priors.for_class(1).count
    1
    >>> PosePriors.from_dict(priors.to_dict()) == priors
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

PRIORS_FORMAT = 1  # bump when the dict layout changes


@dataclass(frozen=True)
class ClassPosePrior:
    """One class's pose statistics. Angles in radians; ``*_low`` / ``*_high`` are percentiles
    (:attr:`PosePriors.low_percentile` / :attr:`PosePriors.high_percentile`)."""

    count: int
    distance_median: float
    distance_low: float
    distance_high: float
    elevation_low: float
    elevation_high: float
    theta_low: float
    theta_high: float

    @property
    def distance_range(self) -> tuple[float, float]:
        return self.distance_low, self.distance_high

    @property
    def elevation_range(self) -> tuple[float, float]:
        return self.elevation_low, self.elevation_high

    @property
    def theta_range(self) -> tuple[float, float]:
        return self.theta_low, self.theta_high

    def validate(self) -> None:
        values = asdict(self)
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"pose prior: non-finite {bad}")
        if self.count < 1 or not 0 < self.distance_low <= self.distance_median <= self.distance_high:
            raise ValueError(f"pose prior: need count >= 1 and 0 < distance_low <= median <= high, got {values}")
        if self.elevation_low > self.elevation_high or self.theta_low > self.theta_high:
            raise ValueError(f"pose prior: elevation and theta ranges must be ordered, got {values}")


def _wrap(angle: np.ndarray) -> np.ndarray:
    """To (-pi, pi]."""
    return math.pi - np.remainder(math.pi - angle, 2 * math.pi)


@dataclass
class PosePriors:
    """Pose priors of every class that had annotations (classes without any have none).

    Attributes:
        classes: class names, in the model's class order (index ``y`` is ``classes[y]``).
        per_class: name -> :class:`ClassPosePrior`.
        low_percentile, high_percentile: the percentiles the ranges were taken at.
    """

    classes: list[str]
    per_class: dict[str, ClassPosePrior] = field(default_factory=dict)
    low_percentile: float = 10.0
    high_percentile: float = 90.0

    @classmethod
    def from_annotations(
        cls,
        classes: Sequence[str],
        records: Iterable[tuple[int, float, float, float, float]],
        low_percentile: float = 10.0,
        high_percentile: float = 90.0,
    ) -> PosePriors:
        """Statistics of ``(class_index, azimuth, elevation, theta, distance)`` records (radians).

        Azimuth is not used (every azimuth is searched). Elevation and theta are wrapped to
        (-pi, pi] first. Raises ValueError on a class index out of range or a non-finite or
        non-positive distance.
        """
        if not 0 <= low_percentile <= 50 <= high_percentile <= 100:
            got = f"{low_percentile}, {high_percentile}"
            raise ValueError(f"percentiles: need 0 <= low <= 50 <= high <= 100, got {got}")
        rows: dict[int, list[tuple[float, float, float]]] = {}
        for i, rec in enumerate(records):
            y, _, elevation, theta, distance = rec
            y = int(y)
            if not 0 <= y < len(classes):
                raise ValueError(f"record {i}: class index {y} not in 0..{len(classes) - 1}")
            if not (math.isfinite(elevation) and math.isfinite(theta) and math.isfinite(distance)) or distance <= 0:
                raise ValueError(f"record {i}: need finite angles and distance > 0, got {tuple(rec)}")
            rows.setdefault(y, []).append((float(elevation), float(theta), float(distance)))
        per_class = {}
        for y, values in sorted(rows.items()):
            a = np.asarray(values, dtype=np.float64)
            el, th, d = _wrap(a[:, 0]), _wrap(a[:, 1]), a[:, 2]

            def pct(x: np.ndarray, q: float) -> float:
                return float(np.percentile(x, q))

            per_class[classes[y]] = ClassPosePrior(
                count=len(a),
                distance_median=float(np.median(d)),
                distance_low=pct(d, low_percentile),
                distance_high=pct(d, high_percentile),
                elevation_low=pct(el, low_percentile),
                elevation_high=pct(el, high_percentile),
                theta_low=pct(th, low_percentile),
                theta_high=pct(th, high_percentile),
            )
        return cls(list(classes), per_class, float(low_percentile), float(high_percentile))

    @classmethod
    def from_dataset(cls, dataset, classes: Sequence[str]) -> PosePriors:
        """Priors of a reader's annotations (anything with ``items`` holding ``category`` and
        ``annotation``, e.g. the training split); items of classes not in ``classes`` are left out."""
        index = {c: y for y, c in enumerate(classes)}
        records = [
            (index[it.category], it.annotation.azimuth, it.annotation.elevation, it.annotation.theta,
             it.annotation.distance)
            for it in dataset.items
            if it.category in index
        ]  # fmt: skip
        return cls.from_annotations(classes, records)

    def for_class(self, key: int | str) -> ClassPosePrior | None:
        """The prior of class ``key`` (index into :attr:`classes`, or name); None if it had no
        annotations or is unknown. This is what :meth:`PoseEstimator.estimate` takes as ``prior``."""
        if isinstance(key, bool):
            return None
        if isinstance(key, int) or (hasattr(key, "__index__") and not isinstance(key, str)):
            y = int(key)
            return self.per_class.get(self.classes[y]) if 0 <= y < len(self.classes) else None
        return self.per_class.get(key) if isinstance(key, str) else None

    def to_dict(self) -> dict:
        """Plain JSON-able dict (str, int, float, list, dict only)."""
        return {
            "format": PRIORS_FORMAT,
            "classes": list(self.classes),
            "low_percentile": float(self.low_percentile),
            "high_percentile": float(self.high_percentile),
            "per_class": {name: asdict(p) for name, p in self.per_class.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> PosePriors:
        """Inverse of :meth:`to_dict`; ValueError naming the key when the dict does not fit."""
        if not isinstance(data, dict):
            raise ValueError(f"pose priors: expected a dict, got {type(data).__name__}")
        if data.get("format") != PRIORS_FORMAT:
            raise ValueError(f"pose priors: format {data.get('format')!r} unknown (this code reads {PRIORS_FORMAT})")
        missing = [k for k in ("classes", "per_class", "low_percentile", "high_percentile") if k not in data]
        if missing:
            raise ValueError(f"pose priors: missing key(s) {missing}")
        classes = [str(c) for c in data["classes"]]
        names = set(ClassPosePrior.__dataclass_fields__)
        per_class = {}
        for name, values in data["per_class"].items():
            if name not in classes:
                raise ValueError(f"pose priors: per_class[{name!r}] is not one of classes {classes}")
            if not isinstance(values, dict) or set(values) != names:
                got = sorted(values) if isinstance(values, dict) else type(values).__name__
                raise ValueError(f"pose priors: per_class[{name!r}] needs keys {sorted(names)}, got {got}")
            prior = ClassPosePrior(count=int(values["count"]), **{k: float(values[k]) for k in names - {"count"}})
            prior.validate()
            per_class[name] = prior
        return cls(classes, per_class, float(data["low_percentile"]), float(data["high_percentile"]))
