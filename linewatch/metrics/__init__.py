"""Anomaly-detection metrics (image and pixel level) and score calibration, without scikit-learn."""

from __future__ import annotations

from linewatch.metrics.calibrate import ScoreNormalizer, calibrate
from linewatch.metrics.image import (
    auprc,
    auroc,
    best_f1_threshold,
    classification_report,
    pr_curve,
    roc_curve,
    threshold_at_fpr,
    trapezoid,
)
from linewatch.metrics.pixel import pixel_auroc, pro_area, pro_curve, pro_score

__all__ = [
    "ScoreNormalizer",
    "auprc",
    "auroc",
    "best_f1_threshold",
    "calibrate",
    "classification_report",
    "pixel_auroc",
    "pr_curve",
    "pro_area",
    "pro_curve",
    "pro_score",
    "roc_curve",
    "threshold_at_fpr",
    "trapezoid",
]
