"""Cached backbone outputs for `--tune`, and one candidate's fit on train-clean and score on val-clean.

Backbone stage outputs of train-clean and val-clean are extracted once per (backbone, input size) and
kept in memory; each candidate turns them into features with `FeatureExtractor.head` (the code the
exported network runs), fits with its detector's `FeatureSearch.fit` and scores val-clean through the
shared `score_outputs`, so a candidate's numbers are the ones `inspect-train` would produce.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import torch

from linewatch.batches import Transform, iter_batches
from linewatch.data import Sample, read_mask
from linewatch.features.align import margin_for
from linewatch.features.extractor import FeatureConfig, FeatureExtractor, build_extractor
from linewatch.features.preprocess import Preprocessor
from linewatch.metrics import auroc, pixel_auroc, pro_area, pro_curve
from linewatch.models.components.feature_memory import FeatureSearch, memory_transforms, preprocessor_for
from linewatch.scoring import feature_grid, score_outputs
from linewatch.train.blur import DEFAULT_SIGMA


@dataclass
class StageCache:
    """Backbone outputs (per layer, all images stacked) of train-clean and val-clean at one input size."""

    backbone: str
    size: tuple[int, int]
    train: dict[str, torch.Tensor]
    val: dict[str, torch.Tensor]
    val_labels: np.ndarray
    val_masks: list[np.ndarray | None]  # at the input size; None for a defect without a mask
    preprocess: Preprocessor  # with the group's aligner, whose val warps bring maps back onto the frames
    val_warps: list[np.ndarray | None]
    seconds: float  # building the backbone and extracting (and the alignment reference)
    ms_per_image: float  # decoding, preprocessing and the backbone, per image

    def release(self) -> None:
        self.train.clear()
        self.val.clear()


def _stages(extractor: FeatureExtractor, samples: Sequence[Sample], preprocess: Preprocessor, batch_size: int,
            on_batch: Callable[[Any], None], step: Callable[[int], None] | None,
            transform: Transform | None = None) -> dict[str, torch.Tensor]:
    outputs: dict[str, list[torch.Tensor]] = {layer: [] for layer in extractor.config.layers}
    for batch in iter_batches(samples, preprocess, batch_size, transform=transform):
        with torch.inference_mode():
            maps = extractor.stages(torch.from_numpy(batch.inputs))
        for layer, tensor in zip(extractor.config.layers, maps, strict=True):
            outputs[layer].append(tensor.clone())
        on_batch(batch)
        if step:
            step(len(batch.samples))
    return {layer: torch.cat(parts) for layer, parts in outputs.items()}


def extract(backbone: str, size: tuple[int, int], layers: tuple[str, ...], train: Sequence[Sample],
            val: Sequence[Sample], options: dict[str, Any], step: Callable[[int], None] | None = None) -> StageCache:
    """Run the pretrained backbone once over train-clean (and its `--photometric-copies`) and val-clean,
    keeping every stage in `layers`."""
    start = time.perf_counter()
    torch.manual_seed(options["seed"])
    config = FeatureConfig(backbone=backbone, layers=layers, image_size=size, seed=options["seed"])
    extractor, _ = build_extractor(config, options["weights"])
    preprocess = preprocessor_for(options, train, size, layers)
    masks: list[np.ndarray | None] = []
    warps: list[np.ndarray | None] = []

    def keep_masks(batch: Any) -> None:
        warps.extend(batch.warps)
        for sample, image in zip(batch.samples, batch.images, strict=True):
            if not sample.label:
                masks.append(np.zeros(size, bool))
            elif sample.mask is None:
                masks.append(None)
            else:
                full = read_mask(sample.mask, image.shape[:2]).astype(np.uint8)
                masks.append(cv2.resize(full, (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0)

    batch_size = options["batch_size"]
    built = time.perf_counter()
    parts = [_stages(extractor, train, preprocess, batch_size, lambda _: None, step, transform)
             for transform in memory_transforms(options)]
    train_maps = {layer: torch.cat([part[layer] for part in parts]) for layer in parts[0]}
    val_maps = _stages(extractor, val, preprocess, batch_size, keep_masks, step)
    labels = np.array([s.label for s in val])
    end = time.perf_counter()
    return StageCache(backbone, size, train_maps, val_maps, labels, masks, preprocess, warps, end - start,
                      1000 * (end - built) / (len(train) * len(parts) + len(val)))


def _features(head: FeatureExtractor, maps: dict[str, torch.Tensor], batch: int) -> Iterator[np.ndarray]:
    count = len(next(iter(maps.values())))
    for start in range(0, count, batch):
        with torch.inference_mode():
            yield head.head([maps[layer][start : start + batch] for layer in head.config.layers]).numpy()


@dataclass
class Scored:
    """One candidate fitted on the cached train outputs, with its scores and maps of the cached val outputs."""

    scores: np.ndarray
    maps: list[np.ndarray]
    fit_s: float
    seconds: float
    score_ms: float  # scoring + maps, per image
    feature_dims: int


def fit_and_score(search: FeatureSearch, options: dict[str, Any], cache: StageCache) -> Scored:
    """Fit one candidate on the cached train-clean outputs and score every cached val image."""
    start = time.perf_counter()
    config = search.config(options)
    torch.manual_seed(options["seed"])
    head = FeatureExtractor(config).eval()  # only its seeded projection / channel subset is used
    batch = options["batch_size"]
    detector = search.fit(options, _features(head, cache.train, batch), None)
    fitted = time.perf_counter()
    preprocess = cache.preprocess
    if preprocess.align is not None:  # the margin the candidate's own layers give (`margin_for`)
        preprocess = replace(preprocess, align=replace(preprocess.align, margin=margin_for(config.layers)))
    scores, maps, score_ms = [], [], 0.0
    sigma = DEFAULT_SIGMA if options["blur_sigma"] is None else options["blur_sigma"]  # the final fit chooses
    for features in _features(head, cache.val, batch):
        timings: dict[str, float] = {}
        warps = cache.val_warps[len(maps) : len(maps) + len(features)]
        outputs = {"features": features}
        prediction = score_outputs(detector, outputs, config.image_size, sigma, timings,
                                   preprocess.unseen(warps, feature_grid(outputs)))
        score_ms += timings["score"] + timings["maps"]
        scores.append(prediction.scores)
        maps.extend(preprocess.restore(m, w) for m, w in zip(prediction.maps, warps, strict=True))
    return Scored(np.concatenate(scores), maps, fitted - start, time.perf_counter() - start,
                  score_ms / len(cache.val_labels), config.out_dims)


def metrics(labels: np.ndarray, scores: np.ndarray, masks: Sequence[np.ndarray | None],
            maps: Sequence[np.ndarray]) -> dict[str, float | None]:
    """Image AUROC; pixel AUROC and PRO over the images with a mask (at the input size)."""
    pairs = [(m, a) for m, a in zip(masks, maps, strict=True) if m is not None]
    has_pixels = any(m.any() for m, _ in pairs)
    pixel = pro = None
    if has_pixels:
        pixel = pixel_auroc([m for m, _ in pairs], [a for _, a in pairs])
        pro = pro_area(*pro_curve([m for m, _ in pairs], [a for _, a in pairs]))
    return {"image_auroc": auroc(labels, scores), "pixel_auroc": pixel, "pro": pro}


def evaluate(search: FeatureSearch, options: dict[str, Any], cache: StageCache) -> dict[str, Any]:
    """Fit one candidate on train-clean, score val-clean; its val metrics, seconds and scoring cost."""
    scored = fit_and_score(search, options, cache)
    return {**metrics(cache.val_labels, scored.scores, cache.val_masks, scored.maps),
            "fit_s": round(scored.fit_s, 2), "seconds": round(scored.seconds, 2),
            "score_ms": round(scored.score_ms, 2), "feature_dims": scored.feature_dims}


def layers_needed(search: FeatureSearch, options: dict[str, Any], layer_sets: Sequence[tuple[str, ...]]) -> tuple[
        str, ...]:
    """Every stage any candidate of one (backbone, size) group reads, shallow to deep."""
    from linewatch.features.catalog import LAYER_STRIDES

    wanted = {layer for layers in layer_sets for layer in search.config({**options, "layers": layers}).layers}
    return tuple(sorted(wanted, key=lambda layer: LAYER_STRIDES[layer]))
