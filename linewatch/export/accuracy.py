"""Accuracy of one engine on a list of samples: image AUROC, pixel AUROC and PRO, as `inspect-eval` defines them.

Used where an export is accepted on accuracy instead of parity (int8): the candidate and the fp32 network
are scored on the same samples through `linewatch.scoring`, and the metrics come from `linewatch.metrics`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.data import Sample, read_mask
from linewatch.engines import Engine
from linewatch.inspector import Inspector
from linewatch.metrics import auroc, pixel_auroc, pro_area, pro_curve
from linewatch.models.anomaly_map import resize_map
from linewatch.scoring import predict_groups


class NonFiniteScores(ValueError):
    """An engine gave NaN or infinite image scores: its network cannot be judged by AUROC, nor deployed."""


@dataclass(frozen=True)
class SplitScores:
    labels: np.ndarray  # (N,) 1 = defective
    scores: np.ndarray  # (N,) raw image scores
    map_peaks: np.ndarray  # (N,) max of each blurred map (what the map threshold is calibrated on)
    metrics: dict[str, float | None]  # image_auroc, pixel_auroc, pro (None where undefined)


def score_split(inspector: Inspector, engine: Engine, samples: list[Sample],
                step: Callable[[int], None] | None = None, batch_size: int = 8,
                scorers: list[tuple[list[Sample], Any]] | None = None) -> SplitScores:
    """Score `samples` with `engine`; pixel metrics at original resolution over good and masked images.

    `scorers` (the samples in groups, each with the detector that scores it: `calibration_scorers` for
    val-clean of a bundle whose memory holds its goods) replaces `samples`; by default the bundle's detector
    scores them all."""
    labels, scores, peaks = [], [], []
    masks: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    ordered: list[Sample] = []
    groups = scorers or [(samples, inspector.detector)]
    for batch, images, prediction in predict_groups(engine, groups, inspector.preprocessor, inspector.blur_sigma,
                                                    batch_size, step):
        ordered += batch
        for sample, image, score, small in zip(batch, images, prediction.scores, prediction.maps, strict=True):
            labels.append(sample.label)
            scores.append(float(score))
            peaks.append(float(small.max()))
            if sample.label == 0 or sample.mask is not None:
                shape = image.shape[:2]
                masks.append(np.zeros(shape, bool) if sample.mask is None else read_mask(sample.mask, shape))
                maps.append(resize_map(small, shape))
    bad = [Path(s.path).name for s, score in zip(ordered, scores, strict=True) if not np.isfinite(score)]
    if bad:
        raise NonFiniteScores(f"{len(bad)} of {len(scores)} images got NaN or infinite scores (first: {bad[0]})")
    label_array = np.array(labels, dtype=np.int64)
    both = 0 < label_array.sum() < len(label_array)
    has_pixels = any(m.any() for m in masks)
    metrics: dict[str, float | None] = {
        "image_auroc": auroc(label_array, np.array(scores)) if both else None,
        "pixel_auroc": pixel_auroc(masks, maps) if has_pixels else None,
        "pro": pro_area(*pro_curve(masks, maps)) if has_pixels else None,
    }
    return SplitScores(label_array, np.array(scores, dtype=np.float64), np.array(peaks, dtype=np.float64), metrics)
