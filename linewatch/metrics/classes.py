"""Multi-class classification metrics (defect types): accuracy, good-vs-defective accuracy, per-class
precision and recall, and the confusion matrix (rows: true class, columns: predicted)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

GOOD = "good"


def multiclass_report(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """`labels` lists `good` first, then every other class seen in either list; a precision or recall with
    nothing to divide by is None."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    if not truth:
        raise ValueError("no labels to compare")
    labels = [GOOD, *sorted((set(truth) | set(predicted)) - {GOOD})]
    index = {label: i for i, label in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(truth, predicted, strict=True):
        confusion[index[t], index[p]] += 1
    hits = np.diag(confusion)
    columns, rows = confusion.sum(axis=0), confusion.sum(axis=1)
    per_class = {label: {"precision": float(hits[i] / columns[i]) if columns[i] else None,
                         "recall": float(hits[i] / rows[i]) if rows[i] else None}
                 for i, label in enumerate(labels)}
    binary = np.mean([(t == GOOD) == (p == GOOD) for t, p in zip(truth, predicted, strict=True)])
    return {"binary_accuracy": float(binary), "accuracy": float(hits.sum() / len(truth)), "labels": labels,
            "confusion": confusion.tolist(), "per_class": per_class}
