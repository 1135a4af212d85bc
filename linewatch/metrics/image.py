"""Image-level metrics: ROC/PR curves, AUROC, average precision and threshold selection.

Implemented in numpy so the runtime does not need scikit-learn; results match
``sklearn.metrics.roc_auc_score`` and ``average_precision_score`` (tie-aware).
Convention everywhere: anomalous/defective = positive, ``score >= threshold`` = flagged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def trapezoid(y: ArrayLike, x: ArrayLike) -> float:
    """Trapezoid rule; local because ``np.trapz``/``np.trapezoid`` differ across numpy versions."""
    y = np.asarray(y, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) * 0.5))


def _validate(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return (bool labels, float64 scores) after checking shape, label values and finiteness."""
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if y.size == 0:
        raise ValueError("labels and scores are empty")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be binary (0 = good, 1 = defective)")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinity")
    return y.astype(bool), s


def _require_both_classes(y: np.ndarray, metric: str) -> None:
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        present = "defective" if n_pos else "good"
        raise ValueError(f"{metric} needs both good and defective samples; only {present} samples given")


def _cumulative_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, thresholds) for every distinct score, thresholds descending; ties form one step."""
    order = np.argsort(s, kind="stable")[::-1]
    s_sorted = s[order]
    y_sorted = y[order]
    ends = np.append(np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1)
    tp = np.cumsum(y_sorted, dtype=np.int64)[ends]
    fp = ends + 1 - tp
    return tp, fp, s_sorted[ends]


def roc_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points, one per distinct score (descending thresholds) plus a leading (0, 0) at +inf."""
    y, s = _validate(labels, scores)
    _require_both_classes(y, "ROC curve")
    tp, fp, thresholds = _cumulative_counts(y, s)
    fpr = np.concatenate(([0.0], fp / (y.size - y.sum())))
    tpr = np.concatenate(([0.0], tp / y.sum()))
    return fpr, tpr, np.concatenate(([np.inf], thresholds))


def auroc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve; ties count half, as in the Mann-Whitney statistic."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return trapezoid(tpr, fpr)


def pr_curve(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score, thresholds descending (recall non-decreasing).

    Unlike scikit-learn there is no sentinel point: entry i is exactly ``score >= thresholds[i]``.
    """
    y, s = _validate(labels, scores)
    _require_both_classes(y, "PR curve")
    tp, fp, thresholds = _cumulative_counts(y, s)
    return tp / (tp + fp), tp / y.sum(), thresholds


def auprc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Average precision (step-wise sum of precision x recall increment), as scikit-learn computes it."""
    precision, recall, _ = pr_curve(labels, scores)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _f1(tp: np.ndarray | int, fp: np.ndarray | int, fn: np.ndarray | int) -> np.ndarray:
    """F1 from counts; one formula shared so a reported F1 is reproducible bit for bit."""
    tp, fp, fn = (np.asarray(v, dtype=np.int64) for v in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def best_f1_threshold(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """(threshold, F1) maximising F1; the threshold is an observed score (the highest if F1 ties)."""
    y, s = _validate(labels, scores)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("F1 needs at least one defective sample")
    tp, fp, thresholds = _cumulative_counts(y, s)
    f1 = _f1(tp, fp, n_pos - tp)
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])


def threshold_at_fpr(labels: ArrayLike, scores: ArrayLike, fpr: float) -> float:
    """Lowest observed score whose false-positive rate on the good samples is <= ``fpr``.

    Thresholds are restricted to observed scores so the value is reproducible from the data;
    if even the highest score is too permissive, the next float above it is returned.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    y, s = _validate(labels, scores)
    n_neg = int(y.size - y.sum())
    if n_neg == 0:
        raise ValueError("threshold_at_fpr needs at least one good sample")
    _, fp, thresholds = _cumulative_counts(y, s)
    ok = np.flatnonzero(fp / n_neg <= fpr)
    if ok.size == 0:
        return float(np.nextafter(thresholds[0], np.inf))
    return float(thresholds[ok[-1]])


def classification_report(labels: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, Any]:
    """Confusion counts and derived rates for ``score >= threshold`` = defective."""
    y, s = _validate(labels, scores)
    pred = s >= threshold
    tp = int(np.sum(pred & y))
    fp = int(np.sum(pred & ~y))
    fn = int(np.sum(~pred & y))
    tn = int(y.size - tp - fp - fn)
    return {
        "f1": float(_f1(tp, fp, fn)),
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "accuracy": (tp + tn) / y.size,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }
