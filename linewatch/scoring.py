"""The one scoring path: network outputs -> patch scores -> maps at the input size -> image scores.

Training (calibration), evaluation, the export parity check and the runtime all score through
`score_outputs`, so a raw score means the same number everywhere; only the engine that produced the
network outputs (torch, onnxruntime, TensorRT) varies.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from linewatch.batches import Batch, iter_batches
from linewatch.data import Sample
from linewatch.features.preprocess import Preprocessor
from linewatch.models.anomaly_map import anomaly_maps
from linewatch.models.base import Detector, PatchScores

NetworkFn = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Prediction:
    scores: np.ndarray  # (N,) raw image scores
    maps: np.ndarray  # (N, H, W) float32 anomaly maps at the model's input size


def score_outputs(
    detector: Detector, outputs: dict[str, np.ndarray], image_size: tuple[int, int], sigma: float,
    timings: dict[str, float] | None = None, unseen: Sequence[np.ndarray | None] | None = None,
) -> Prediction:
    """Patch scores, blurred maps at the input size, image scores.

    `timings`, when given, receives milliseconds for `score` (what the image scores need: the patch and image
    scores, and the maps when the detector reads its image score off them: `Detector.scores_from_maps`) and
    `maps` (the maps otherwise: post-processing).
    `unseen` (per image, input pixels an alignment filled from outside the frame: `Preprocessor.unseen`)
    leaves those patches out (`leave_out`).
    """
    start = time.perf_counter()
    patch = detector.patch_scores(outputs)
    patch = patch if isinstance(patch, PatchScores) else PatchScores(patch, patch)
    if unseen is not None:
        left = leave_out(patch.map, unseen)
        patch = PatchScores(left, left if patch.image is patch.map else leave_out(patch.image, unseen))
    scored = time.perf_counter()
    maps = anomaly_maps(patch.map, image_size, sigma)
    mapped = time.perf_counter()
    scores = detector.image_scores(patch.image, maps, outputs).astype(np.float32)
    if timings is not None:
        map_ms, from_maps = 1000 * (mapped - scored), detector.scores_from_maps
        # `image_scores` is scoring (PatchCore's re-weighting searches the bank again); so is the map, when the
        # image score is read off it.
        timings["score"] = 1000 * (time.perf_counter() - start) - (0.0 if from_maps else map_ms)
        timings["maps"] = 0.0 if from_maps else map_ms
    return Prediction(scores=scores, maps=maps)


def feature_grid(outputs: dict[str, np.ndarray]) -> tuple[int, int] | None:
    """The patch grid of a feature extractor's outputs (rows, columns), or None for other networks."""
    features = outputs.get("features")
    return None if features is None or features.ndim != 4 else (int(features.shape[2]), int(features.shape[3]))


def leave_out(patch_scores: np.ndarray, unseen: Sequence[np.ndarray | None]) -> np.ndarray:
    """Patch scores with every patch that overlaps an image's `unseen` pixels (or cells: masks at the patch grid
    pass through) set to the median of its other patches: neither the image score (a maximum) nor the map's
    regions can come from padding."""
    patch_scores = np.array(patch_scores, dtype=np.float32)
    for scores, mask in zip(patch_scores, unseen, strict=True):
        if mask is None:
            continue
        grid = mask if mask.shape == scores.shape else (
            cv2.resize(mask.astype(np.float32), scores.shape[::-1], interpolation=cv2.INTER_AREA) > 0)
        if not grid.all():
            scores[grid] = np.median(scores[~grid])
    return patch_scores


def predict_groups(
    network: NetworkFn, groups: Sequence[tuple[Sequence[Sample], Detector]], preprocessor: Preprocessor,
    sigma: float, batch_size: int, step: Callable[[int], None] | None = None,
) -> Iterator[tuple[list[Sample], list[np.ndarray], Prediction]]:
    """`predict_samples` over groups of samples, each scored by its own detector (val-clean as calibration
    scores it: `models.components.feature_memory.calibration_scorers`)."""
    for samples, detector in groups:
        yield from predict_samples(network, detector, samples, preprocessor, sigma, batch_size, step)


def predict_samples(
    network: NetworkFn, detector: Detector, samples: Sequence[Sample], preprocessor: Preprocessor, sigma: float,
    batch_size: int, step: Callable[[int], None] | None = None, timings: dict[str, float] | None = None,
) -> Iterator[tuple[list[Sample], list[np.ndarray], Prediction]]:
    """Score samples batch by batch (original images come along for full-resolution metrics).

    `timings`, when given, accumulates `inference`: ms spent in the network and scoring (not decoding).
    Maps come back in each frame's own geometry: an aligned input's map is warped back (`restore`).
    """
    for batch in iter_batches(samples, preprocessor, batch_size):
        start = time.perf_counter()
        prediction = score_batch(detector, network(batch.inputs), batch, preprocessor, sigma)
        if timings is not None:
            timings["inference"] = timings.get("inference", 0.0) + 1000 * (time.perf_counter() - start)
        yield batch.samples, batch.images, prediction
        if step:
            step(len(batch.samples))


def score_batch(detector: Detector, outputs: dict[str, np.ndarray], batch: Batch, preprocessor: Preprocessor,
                sigma: float) -> Prediction:
    """`score_outputs` for a batch `iter_batches` made: its alignment's unseen pixels left out, its maps warped
    back onto each frame (`restore`). Training's map choice scores one batch's outputs with several detectors."""
    unseen = preprocessor.unseen(batch.warps, feature_grid(outputs))
    prediction = score_outputs(detector, outputs, preprocessor.size, sigma, unseen=unseen)
    if any(warp is not None for warp in batch.warps):
        maps = np.stack([preprocessor.restore(m, w) for m, w in zip(prediction.maps, batch.warps, strict=True)])
        prediction = Prediction(prediction.scores, maps)
    return prediction
