"""Mask metrics and defect-type classification for `inspect-eval`, from any detector's maps and the bundle's
calibrated pixel threshold and classifier (`linewatch.defect_types`). Written to metrics.json as
`pixel_threshold`, `mask_metrics` and `defect_types` (None where the bundle has no calibration)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from linewatch.defect_types import DefectTypes
from linewatch.metrics.classes import multiclass_report
from linewatch.metrics.masks import mask_similarity, summarize


def mask_metrics(defect_types: DefectTypes | None, defects: Sequence[str], masks: Sequence[np.ndarray],
                 maps: Sequence[np.ndarray]) -> dict[str, Any] | None:
    """Per-image similarity of the binarised maps to their ground truth (original size), summarised."""
    if defect_types is None or not masks:
        return None
    rows = [(defect, mask_similarity(defect_types.binarise(amap), mask))
            for defect, mask, amap in zip(defects, masks, maps, strict=True)]
    return summarize(rows)


def defect_type_metrics(defect_types: DefectTypes | None, truth: Sequence[str], maps: Sequence[np.ndarray],
                        defective: Sequence[bool]) -> dict[str, Any] | None:
    """The classifier's report with the bundle's gate (the image verdict), plus the reference study's rule
    (good iff the binarised map is empty) under `mask_gate` for comparison."""
    if defect_types is None or not defect_types.can_classify or not truth:
        return None
    by_gate = {}
    for gate in ("verdict", "mask"):
        predicted = [defect_types.classify(amap, flag, gate)[0] for amap, flag in zip(maps, defective, strict=True)]
        by_gate[gate] = (predicted, multiclass_report(list(truth), predicted))
    predicted, report = by_gate["verdict"]
    mask_report = by_gate["mask"][1]
    return {**report, "gate": "verdict", "predicted": predicted,
            "mask_gate": {key: mask_report[key] for key in ("binary_accuracy", "accuracy", "confusion", "labels")}}
