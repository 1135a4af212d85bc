"""PNG plots for an evaluation report: ROC, PR, score histogram, PRO curve, threshold study, defect-type
confusion matrix and an example grid.

Uses the non-interactive Agg backend so reports render on headless CI and line PCs. Every plot is
written with the numbers it draws beside it (`roc.png` + `roc.json`), so a report can be checked,
re-plotted or compared without reading pixels.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from numpy.typing import ArrayLike

from linewatch.metrics.image import auprc, auroc, classification_report, pr_curve, roc_curve, trapezoid
from linewatch.overlay import overlay_heatmap

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402


@dataclass(frozen=True)
class ExampleItem:
    """One row of the example grid; ``mask`` is None for images without ground truth."""

    title: str
    image: np.ndarray
    mask: np.ndarray | None
    anomaly_map: np.ndarray
    score: float


DPI = 100


def _plain(value: Any) -> Any:
    """numpy arrays and scalars as JSON lists and numbers (non-finite numbers as null)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not np.isfinite(value) else value


def plot_data_path(path: str | Path) -> Path:
    """Where the numbers drawn in the plot at ``path`` are written: the same name with ``.json``."""
    return Path(path).with_suffix(".json")


@contextmanager
def _figure(
    path: str | Path, nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (5.0, 4.0),
    data: dict[str, Any] | None = None,
) -> Iterator[Any]:
    """Yield a grid of axes, then save to ``path`` (``data``, when given, beside it) and always close the figure.

    The bench's figures pass no data: they draw its results.json, which is their record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    try:
        yield axes
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
        if data is not None:
            plot_data_path(path).write_text(json.dumps(_plain(data), indent=1) + "\n")
    finally:
        plt.close(fig)


def plot_roc(labels: ArrayLike, scores: ArrayLike, path: str | Path) -> Path:
    """Image-level ROC curve with its AUROC in the title."""
    fpr, tpr, _ = roc_curve(labels, scores)
    area = trapezoid(tpr, fpr)
    with _figure(path, data={"fpr": fpr, "tpr": tpr, "auroc": area}) as axes:
        ax = axes[0, 0]
        ax.plot(fpr, tpr, lw=2)
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false-positive rate", ylabel="true-positive rate")
        ax.set_title(f"ROC (AUROC = {area:.4f})")
    return Path(path)


def plot_pr(labels: ArrayLike, scores: ArrayLike, path: str | Path) -> Path:
    """Precision-recall curve drawn as the steps average precision integrates, AP in the title."""
    precision, recall, _ = pr_curve(labels, scores)
    prevalence = float(np.mean(np.asarray(labels) == 1))
    ap = auprc(labels, scores)
    data = {"recall": recall, "precision": precision, "ap": ap, "prevalence": prevalence}
    with _figure(path, data=data) as axes:
        ax = axes[0, 0]
        ax.step(np.append(0.0, recall), np.append(precision[0], precision), where="pre", lw=2)
        ax.axhline(prevalence, ls="--", color="grey", lw=1, label=f"chance ({prevalence:.2f})")
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        ax.set_title(f"Precision-recall (AP = {ap:.4f})")
        ax.legend(loc="lower left")
    return Path(path)


def plot_score_histogram(labels: ArrayLike, scores: ArrayLike, threshold: float, path: str | Path,
                         title: str = "Score distribution") -> Path:
    """Good vs defective score histograms on shared bins with the decision threshold marked."""
    y = np.asarray(labels).ravel() == 1
    s = np.asarray(scores, dtype=np.float64).ravel()
    bins = np.histogram_bin_edges(np.append(s, threshold), bins=40)
    area = auroc(y, s) if 0 < y.sum() < y.size else None
    data = {"bins": bins, "good": np.histogram(s[~y], bins)[0], "defective": np.histogram(s[y], bins)[0],
            "threshold": threshold, "auroc": area}
    with _figure(path, figsize=(6.0, 4.0), data=data) as axes:
        ax = axes[0, 0]
        ax.hist(s[~y], bins=bins, alpha=0.6, color="tab:green", label=f"good (n={int((~y).sum())})")
        ax.hist(s[y], bins=bins, alpha=0.6, color="tab:red", label=f"defective (n={int(y.sum())})")
        ax.axvline(threshold, color="black", ls="--", lw=1.5, label=f"threshold = {threshold:.4g}")
        ax.set(xlabel="anomaly score", ylabel="images")
        ax.set_title(title if area is None else f"{title} (AUROC = {area:.4f})")
        ax.legend()
    return Path(path)


def plot_threshold_study(labels: ArrayLike, scores: ArrayLike, threshold: float, path: str | Path) -> dict[str, Any]:
    """Precision, recall and F1 as the threshold moves over every observed score, the chosen one marked.

    The plotted values are written beside the PNG as JSON (as every plot's are) and returned.
    """
    precision, recall, thresholds = pr_curve(labels, scores)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    chosen = classification_report(labels, scores, threshold)
    data = {"thresholds": thresholds.tolist(), "precision": precision.tolist(), "recall": recall.tolist(),
            "f1": f1.tolist(), "threshold": float(threshold),
            "at_threshold": {k: chosen[k] for k in ("precision", "recall", "f1")}}
    with _figure(path, figsize=(6.0, 4.0), data=data) as axes:
        ax = axes[0, 0]
        ax.plot(thresholds, precision, label="precision", drawstyle="steps-post")
        ax.plot(thresholds, recall, label="recall", drawstyle="steps-post")
        ax.plot(thresholds, f1, label="F1", lw=2, drawstyle="steps-post")
        ax.axvline(threshold, color="black", ls="--", lw=1.2, label=f"threshold = {threshold:.4g}")
        ax.set(xlabel="threshold on the raw score", ylabel="value", ylim=(0, 1.02))
        ax.set_title(f"Threshold study (F1 at threshold = {chosen['f1']:.3f})")
        ax.legend(loc="lower left", fontsize=8)
    return data


def plot_pro(fpr: np.ndarray, pro: np.ndarray, path: str | Path, fpr_limit: float = 0.3) -> Path:
    """PRO curve as returned by ``pro_curve`` (ending at ``fpr_limit``), normalized area in the title."""
    fpr = np.asarray(fpr, dtype=np.float64)
    pro = np.asarray(pro, dtype=np.float64)
    keep = fpr <= fpr_limit
    score = trapezoid(pro[keep], fpr[keep]) / fpr_limit
    with _figure(path, data={"fpr": fpr[keep], "pro": pro[keep], "fpr_limit": fpr_limit, "pro_score": score}) as axes:
        ax = axes[0, 0]
        ax.plot(fpr[keep], pro[keep], lw=2)
        ax.set(xlim=(0, fpr_limit), ylim=(0, 1.02), xlabel="pixel false-positive rate")
        ax.set_ylabel("per-region overlap")
        ax.set_title(f"PRO curve (PRO@{fpr_limit:g} = {score:.4f})")
    return Path(path)


def draw_confusion(ax: Any, labels: Sequence[str], confusion: Sequence[Sequence[int]],
                   fontsize: float | None = None) -> Any:
    """A confusion matrix on `ax` (rows: true class, columns: predicted) with the counts in the cells."""
    matrix = np.asarray(confusion)
    image = ax.imshow(matrix, cmap="Blues")
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticks(ticks, labels, fontsize=fontsize)
    ax.set(xlabel="predicted", ylabel="true")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            ax.text(col, row, str(count), ha="center", va="center", fontsize=fontsize,
                    color="white" if count > matrix.max() / 2 else "black")
    return image


def plot_confusion(labels: Sequence[str], confusion: Sequence[Sequence[int]], path: str | Path,
                   title: str = "") -> Path:
    """One classifier's confusion matrix with a colour bar."""
    side = 1.2 + 0.9 * len(labels)
    with _figure(path, figsize=(side + 1.5, side)) as axes:
        ax = axes[0, 0]
        ax.figure.colorbar(draw_confusion(ax, labels, confusion), ax=ax, fraction=0.046)
        ax.set_title(title or "confusion matrix", fontsize=9)
    return Path(path)


def plot_examples(
    items: Sequence[ExampleItem],
    path: str | Path,
    max_items: int = 12,
    vmax: float | None = None,
    vmin: float | None = None,
) -> Path:
    """Grid, one row per example: image | ground truth | heatmap overlay.

    Colours share one ``vmin``/``vmax`` (default: min/max over all items' maps) so rows compare.
    """
    if not items:
        raise ValueError("plot_examples needs at least one item")
    vmax = max(float(np.max(item.anomaly_map)) for item in items) if vmax is None else vmax
    vmin = min(float(np.min(item.anomaly_map)) for item in items) if vmin is None else vmin
    shown = list(items)[:max_items]
    data = {"vmin": vmin, "vmax": vmax, "items": [
        {"title": item.title, "score": item.score, "has_mask": item.mask is not None,
         "map_min": float(np.min(item.anomaly_map)), "map_max": float(np.max(item.anomaly_map))} for item in shown]}
    with _figure(path, len(shown), 3, figsize=(9.0, 3.0 * len(shown)), data=data) as axes:
        for row, item in zip(axes, shown, strict=True):
            row[0].imshow(item.image)
            row[0].set_title(item.title, fontsize=9)
            if item.mask is None:
                row[1].text(0.5, 0.5, "no mask", ha="center", va="center", transform=row[1].transAxes)
            else:
                row[1].imshow(item.mask, cmap="gray", vmin=0, vmax=1)
            row[1].set_title("ground truth", fontsize=9)
            row[2].imshow(overlay_heatmap(item.image, item.anomaly_map, vmin, vmax))
            row[2].set_title(f"score = {item.score:.4g}", fontsize=9)
            for ax in row:
                ax.axis("off")
    return Path(path)
