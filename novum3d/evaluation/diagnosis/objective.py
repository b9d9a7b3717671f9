"""When the pose search fails, does the objective prefer the wrong pose, or did the search miss a better one?

For the images where one protocol's pose is wrong and another's right (by default the full search under the
true class against refinement started at the ground truth), :func:`objective_check` counts how often the
wrong pose scores at least as high as the right one: then no search, however wide, would pick the right
pose. :func:`class_choice_bound` is what choosing the class by the pose score could gain,
:func:`class_switches` what one protocol's class choice changed against another's, :func:`distance_check`
where the failures' distances and angles lie against the class priors.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from ...errors import DataError

RIGHT = math.pi / 6  # Acc@pi/6's threshold, the default; --threshold 10 asks the same of Acc@pi/18


def is_case(
    row: dict[str, Any], estimate: str, reference: str, error: str = "pose_error", threshold: float = RIGHT
) -> bool:
    """Whether ``row``'s ``estimate`` pose is wrong (error >= ``threshold``, radians) and its ``reference``
    pose right."""
    return row[estimate][error] >= threshold > row[reference][error]


def objective_check(
    rows: list[dict[str, Any]], estimate: str, reference: str, error: str = "pose_error", threshold: float = RIGHT
) -> dict[str, float]:
    """Counts over ``rows`` (cache records) of where ``estimate`` fails and ``reference`` succeeds,
    by the records' ``error`` (``pose_error``, or ``pose_error_symmetric``) against ``threshold`` (radians).

    Returns:
        ``images`` (with both protocols and scores), ``estimate_right`` / ``reference_right`` (%),
        ``cases`` (estimate wrong, reference right), ``objective_prefers_wrong`` (% of the cases whose
        wrong pose scores at least the right one's), ``search_missed`` (% of the cases whose right pose
        scores higher) and ``median_score_gap`` (right minus wrong score over the cases; NaN when none).
    """
    both = [
        r
        for r in rows
        if r.get(estimate, {}).get("score") is not None and r.get(reference, {}).get("score") is not None
    ]
    if not both:
        raise DataError(f"no record has scores for both {estimate!r} and {reference!r}; evaluate with --diagnose "
                        "(caches of format 3 or later carry scores)")  # fmt: skip
    cases = [r for r in both if is_case(r, estimate, reference, error, threshold)]
    gaps = [r[reference]["score"] - r[estimate]["score"] for r in cases]
    prefers_wrong = sum(g <= 0 for g in gaps)
    return {
        "images": len(both),
        "estimate_right": 100 * statistics.fmean(r[estimate][error] < threshold for r in both),
        "reference_right": 100 * statistics.fmean(r[reference][error] < threshold for r in both),
        "cases": len(cases),
        "objective_prefers_wrong": 100 * prefers_wrong / len(cases) if cases else math.nan,
        "search_missed": 100 * (len(cases) - prefers_wrong) / len(cases) if cases else math.nan,
        "median_score_gap": statistics.median(gaps) if gaps else math.nan,
    }


def class_choice_bound(
    rows: list[dict[str, Any]], predicted: str = "full", true: str = "true-class", threshold: float = RIGHT
) -> dict[str, float]:
    """What choosing the class by the pose's render-and-compare score could gain, over ``rows``.

    Returns:
        ``images`` (with both protocols), ``misclassified`` (``predicted`` protocol's class wrong),
        ``true_scores_higher`` (% of those whose ``true`` protocol pose outscores the predicted class's),
        ``accuracy`` (``predicted``'s Acc %) and ``bound`` (Acc % when those images take the ``true`` pose:
        a perfect choice between the two, the true class always among the candidates).
    """
    rows = [r for r in rows if predicted in r and true in r]
    if not rows:
        raise DataError(f"no record holds both the {predicted!r} and the {true!r} protocol")
    wrong = [r for r in rows if r[predicted]["predicted"] != r["label"]]
    higher = [r for r in wrong if r[true]["score"] > r[predicted]["score"]]
    switched = {id(r) for r in higher}
    right = sum((r[true] if id(r) in switched else r[predicted])["pose_error"] < threshold for r in rows)
    return {
        "images": len(rows),
        "misclassified": len(wrong),
        "true_scores_higher": 100.0 * len(higher) / max(len(wrong), 1),
        "accuracy": 100.0 * sum(r[predicted]["pose_error"] < threshold for r in rows) / len(rows),
        "bound": 100.0 * right / len(rows),
    }


def class_switches(rows: list[dict[str, Any]], base: str, other: str, threshold: float = RIGHT) -> dict[str, float]:
    """Where protocol ``other`` gives another class than ``base`` over ``rows`` (records with both).

    Returns:
        ``images``, ``switched`` (other class), ``to_true`` / ``from_true`` (switches that make the
        class right / wrong), and each protocol's class accuracy and Acc % (``base_class``,
        ``other_class``, ``base_pose``, ``other_pose``).
    """
    rows = [r for r in rows if base in r and other in r]
    if not rows:
        raise DataError(f"no record holds both the {base!r} and the {other!r} protocol")
    n = len(rows)
    return {
        "images": n,
        "switched": sum(r[base]["predicted"] != r[other]["predicted"] for r in rows),
        "to_true": sum(r[other]["predicted"] == r["label"] != r[base]["predicted"] for r in rows),
        "from_true": sum(r[base]["predicted"] == r["label"] != r[other]["predicted"] for r in rows),
        **{f"{name}_class": 100.0 * sum(r[p]["predicted"] == r["label"] for r in rows) / n
           for name, p in (("base", base), ("other", other))},
        **{f"{name}_pose": 100.0 * sum(r[p]["pose_error"] < threshold for r in rows) / n
           for name, p in (("base", base), ("other", other))},
    }  # fmt: skip


def pooled_rows(per_cache: dict[str, list[dict[str, Any]]], check) -> list[tuple[str, dict[str, float]]]:
    """``check(rows)`` of each cache and of all pooled, labelled; a DataError names the cache."""
    out = []
    pooled = [r for records in per_cache.values() for r in records]
    for label, rows in [*per_cache.items(), ("pooled", pooled)]:
        try:
            out.append((label, check(rows)))
        except DataError as exc:
            raise DataError(str(exc), path=label) from None
    return out


def switches_table(per_cache: dict[str, list[dict[str, Any]]], base: str, other: str, threshold: float):
    """(title, Markdown lines) of :func:`class_switches` per cache and pooled."""
    lines = [
        f"| cache | images | other class | to the true class | away from it | class % {base} "
        f"| class % {other} | Acc % {base} | Acc % {other} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, c in pooled_rows(per_cache, lambda rows: class_switches(rows, base, other, threshold)):
        lines.append(
            f"| {label} | {c['images']} | {c['switched']} | {c['to_true']} | {c['from_true']} | {c['base_class']:.1f} "
            f"| {c['other_class']:.1f} | {c['base_pose']:.1f} | {c['other_pose']:.1f} |"
        )
    return f"Classes {other} changes against {base}", lines


def class_choice_table(per_cache: dict[str, list[dict[str, Any]]], threshold: float):
    """(title, Markdown lines) of :func:`class_choice_bound` per cache and pooled."""
    lines = [
        "| cache | images | misclassified | true class's pose scores higher % | Acc % | bound Acc % |",
        "|---|---|---|---|---|---|",
    ]
    for label, c in pooled_rows(per_cache, lambda rows: class_choice_bound(rows, threshold=threshold)):
        lines.append(
            f"| {label} | {c['images']} | {c['misclassified']} | {c['true_scores_higher']:.1f} | {c['accuracy']:.1f} "
            f"| {c['bound']:.1f} |"
        )
    return "Class chosen by the pose score: the bound", lines


def distance_check(
    rows: list[dict[str, Any]],
    priors: dict[str, Any],
    estimate: str,
    reference: str,
    error: str = "pose_error",
    threshold: float = RIGHT,
    angle_margin: float = 0.0,
) -> dict[str, float]:
    """Distances and angles of the cases of :func:`objective_check` (``estimate`` wrong, ``reference``
    right, by ``error`` against ``threshold``).

    Args:
        rows: cache records with ``label`` and, per protocol, ``pose_error`` and ``pose`` (``distance``,
            ``elevation``, ``theta``; radians).
        priors: a cache key's priors (``classes`` and ``per_class`` with ``distance_low`` / ``_high``,
            ``elevation_low`` / ``_high`` and ``theta_low`` / ``_high``).
        angle_margin: radians by which the prior's elevation and theta ranges are widened.

    Returns:
        ``cases``; ``ratio_q1`` / ``ratio_median`` / ``ratio_q3``: quartiles of the wrong pose's
        distance over the right one's; ``wrong_outside`` / ``right_outside``: % of the cases whose wrong
        (or right) distance lies outside the class prior's range; ``wrong_angles_outside`` /
        ``right_angles_outside``: the same for elevation or theta outside the widened ranges (NaN when
        there are no cases, or the priors have no angle ranges).
    """
    classes, per_class = priors.get("classes"), priors.get("per_class")
    if not classes or not per_class:
        raise DataError("the cache's key has no pose priors (settings.priors); evaluate a checkpoint with priors")
    ratios, outside, angles = [], {"wrong": 0, "right": 0}, {"wrong": 0, "right": 0}
    has_angles = True
    for r in rows:
        est, ref = r.get(estimate) or {}, r.get(reference) or {}
        if est.get("pose") is None or ref.get("pose") is None or not is_case(r, estimate, reference, error, threshold):
            continue
        prior = per_class.get(classes[r["label"]])
        if prior is None:
            continue
        d_est, d_ref = est["pose"]["distance"], ref["pose"]["distance"]
        ratios.append(d_est / d_ref)
        for name, pose in (("wrong", est["pose"]), ("right", ref["pose"])):
            outside[name] += not prior["distance_low"] <= pose["distance"] <= prior["distance_high"]
            if "elevation_low" not in prior or "theta_low" not in prior:
                has_angles = False
                continue
            angles[name] += not (
                prior["elevation_low"] - angle_margin <= pose["elevation"] <= prior["elevation_high"] + angle_margin
                and prior["theta_low"] - angle_margin <= pose["theta"] <= prior["theta_high"] + angle_margin
            )
    n = len(ratios)
    q = statistics.quantiles(ratios, n=4) if n > 1 else [math.nan] * 3
    return {
        "cases": n,
        "ratio_q1": q[0],
        "ratio_median": statistics.median(ratios) if ratios else math.nan,
        "ratio_q3": q[2],
        "wrong_outside": 100 * outside["wrong"] / n if n else math.nan,
        "right_outside": 100 * outside["right"] / n if n else math.nan,
        "wrong_angles_outside": 100 * angles["wrong"] / n if n and has_angles else math.nan,
        "right_angles_outside": 100 * angles["right"] / n if n and has_angles else math.nan,
    }
