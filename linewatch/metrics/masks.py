"""Binary defect masks against ground truth, for every detector's anomaly maps.

- A pixel threshold turns a map into a mask. It is calibrated on val-clean: the threshold of maximum pixel
  F1 over all pixels of val-clean's images with ground truth (good images count with empty masks), or
  `3sigma`: mean + 3 standard deviations of the good validation images' pixels (no masks needed; the
  MVTec AD 2 convention).
- Per image: SSIM of the two masks (as 0/1 images), IoU, Dice, pixel accuracy, and their weighted
  combination (SSIM 10 %, IoU 40 %, Dice 40 %, pixel accuracy 10 %), as in the reference GAN study.
  Two empty masks agree perfectly (IoU = Dice = 1).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from linewatch.metrics.classes import GOOD
from linewatch.metrics.image import best_f1_threshold
from linewatch.metrics.ssim import ssim

WEIGHTS = {"ssim": 0.1, "iou": 0.4, "dice": 0.4, "pixel_accuracy": 0.1}
KEYS = (*WEIGHTS, "combined")
PIXEL_METHODS = ("f1", "3sigma")


def mask_similarity(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """SSIM, IoU, Dice, pixel accuracy and their weighted combination of two same-sized boolean masks."""
    p = np.asarray(predicted).astype(bool)
    t = np.asarray(truth).astype(bool)
    if p.shape != t.shape:
        raise ValueError(f"mask shapes differ: predicted {p.shape}, ground truth {t.shape}")
    return similarity_from_counts(int(np.count_nonzero(p & t)), int(np.count_nonzero(p)), int(np.count_nonzero(t)),
                                  p.size, ssim(p.astype(np.float32), t.astype(np.float32)))


def similarity_from_counts(inter: int, predicted: int, truth: int, pixels: int, ssim_value: float) -> dict[str, float]:
    """The similarities from pixel counts (intersection, each mask's area, image size) and the masks' SSIM."""
    values = similarities_from_counts(np.array([inter]), predicted, np.array([truth]), pixels, np.array([ssim_value]))
    return {key: float(value[0]) for key, value in values.items()}


def similarities_from_counts(inter: np.ndarray, predicted: float, truth: np.ndarray, pixels: int,
                             ssim_values: np.ndarray) -> dict[str, np.ndarray]:
    """The similarities of one predicted mask to K masks at once (counts and SSIM as arrays of K); two empty
    masks agree perfectly."""
    inter = np.asarray(inter, np.float64)
    union = predicted + np.asarray(truth, np.float64) - inter
    both = predicted + np.asarray(truth, np.float64)
    values = {
        "ssim": np.asarray(ssim_values, np.float64),
        "iou": np.divide(inter, union, out=np.ones_like(union), where=union > 0),
        "dice": np.divide(2 * inter, both, out=np.ones_like(both), where=both > 0),
        "pixel_accuracy": 1.0 - (union - inter) / pixels,
    }
    values["combined"] = combined(values)
    return values


def combined(values: dict[str, Any]) -> Any:
    """The reference study's weighted similarity (floats, or arrays of K)."""
    return sum(weight * values[key] for key, weight in WEIGHTS.items())


def pixel_threshold(maps: Sequence[np.ndarray], masks: Sequence[np.ndarray | None],
                    method: str = "f1") -> tuple[float, dict[str, float]]:
    """(threshold, facts) from val-clean maps and their masks (None: no ground truth, e.g. an unmasked defect).

    `f1` needs defect pixels and falls back to `3sigma` without them; `3sigma` needs good images (all-empty
    masks). Raises ValueError when neither is possible.
    """
    if method not in PIXEL_METHODS:
        raise ValueError(f"pixel threshold method {method!r} is not one of {', '.join(PIXEL_METHODS)}")
    known = [(np.asarray(m, np.float32), np.asarray(t, bool)) for m, t in zip(maps, masks, strict=True)
             if t is not None]
    if method == "f1" and any(t.any() for _, t in known):
        scores = np.concatenate([m.ravel() for m, _ in known])
        labels = np.concatenate([t.ravel() for _, t in known])
        threshold, f1 = best_f1_threshold(labels, scores)
        return threshold, {"method": "f1", "pixel_f1": f1, "pixels": int(labels.size)}
    good = [m.ravel() for m, t in known if not t.any()]
    if not good:
        raise ValueError("no validation image with ground truth: a pixel threshold needs good images or masks")
    pixels = np.concatenate(good).astype(np.float64)
    return float(pixels.mean() + 3 * pixels.std()), {"method": "3sigma", "pixels": int(pixels.size)}


def summarize(rows: Sequence[tuple[str, dict[str, float]]]) -> dict[str, object]:
    """Means of per-image similarities: overall over the defective images, and per defect type (including
    `good`, where they measure false alarms); the overall values are None without defective images."""
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for defect, values in rows:
        groups[defect].append(values)
    per_defect = {defect: _mean(items) for defect, items in sorted(groups.items())}
    defective = [values for defect, values in rows if defect != GOOD]
    overall = _mean(defective) if defective else dict.fromkeys(KEYS)
    return {**overall, "images": len(defective), "per_defect": per_defect}


def _mean(items: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([item[key] for item in items])) for key in KEYS}
