"""Training: scan the category, split it, extract features, fit the detector, calibrate, write the bundle."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from linewatch.batches import iter_batches
from linewatch.bundle import write_manifest
from linewatch.data import Sample, make_splits, scan_category
from linewatch.features.extractor import FeatureConfig, build_extractor
from linewatch.features.preprocess import RESIZE_POLICY, Preprocessor
from linewatch.inspector import Prediction, save_extractor, score_features, torch_features
from linewatch.metrics.calibrate import calibrate
from linewatch.models.base import Detector
from linewatch.progress import Bars
from linewatch.resources import peak_rss_mb
from linewatch.train.options import DEFAULT_LAYERS, DEFAULT_PADIM_DIMS, DEFAULT_PADIM_DIMS_OTHER

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    bundle: Path
    manifest: dict[str, Any]
    seconds: float
    peak_rss_mb: float


def feature_config(options: dict[str, Any]) -> FeatureConfig:
    """Model-specific feature defaults: PatchCore aggregates 3x3 neighbourhoods, PaDiM subsamples channels."""
    model = options["model"]
    padim_dims = None
    if model == "padim":
        padim_dims = options["padim_dims"] or DEFAULT_PADIM_DIMS.get(options["backbone"], DEFAULT_PADIM_DIMS_OTHER)
    return FeatureConfig(
        backbone=options["backbone"],
        layers=tuple(options["layers"] or DEFAULT_LAYERS[model]),
        image_size=(options["image_size"], options["image_size"]),
        aggregate=model == "patchcore",
        projection_dims=options["projection_dims"],
        channel_subset=padim_dims,
        seed=options["seed"],
    )


def _fit_detector(options: dict[str, Any], features: Iterator[np.ndarray], bars: Bars) -> Detector:
    if options["model"] == "patchcore":
        from linewatch.models.patchcore.model import PatchCore, PatchCoreParams

        params = PatchCoreParams(
            coreset_ratio=options["coreset_ratio"], coreset_dims=options["coreset_dims"], k=options["knn"],
            index=options["index"], reweight=options["reweight"], seed=options["seed"],
        )
        return PatchCore.fit(features, params, progress=bars, device=options["device"])
    from linewatch.models.padim.model import Padim, PadimParams

    return Padim.fit(features, PadimParams(epsilon=options["padim_epsilon"]), progress=bars, device=options["device"])


def predict_samples(
    feature_fn, detector: Detector, samples: list[Sample], config: FeatureConfig, sigma: float,
    batch_size: int, bars: Bars, desc: str,
) -> Iterator[tuple[list[Sample], list[np.ndarray], Prediction]]:
    """Score samples batch by batch (original images come along for full-resolution metrics)."""
    step = bars(len(samples), desc)
    for batch in iter_batches(samples, Preprocessor(config.image_size), batch_size):
        yield batch.samples, batch.images, score_features(detector, feature_fn(batch.inputs), config.image_size, sigma)
        step(len(batch.samples))


def train(options: dict[str, Any], progress: bool = True) -> TrainResult:
    """Fit on train-clean, calibrate on val-clean, write a validated bundle to `options['out']`."""
    start = time.perf_counter()
    bars = Bars(progress)
    category = scan_category(options["data"])
    splits = make_splits(category, seed=options["seed"])
    out = Path(options["out"])
    out.mkdir(parents=True, exist_ok=True)
    splits.to_json(out / "splits.json")
    config = feature_config(options)
    torch.manual_seed(options["seed"])
    extractor, weights = build_extractor(config, options["weights"])
    feature_fn = torch_features(extractor)

    step = bars(len(splits.train), "features")

    def train_features() -> Iterator[np.ndarray]:
        for batch in iter_batches(splits.train, Preprocessor(config.image_size), options["batch_size"]):
            yield feature_fn(batch.inputs)
            step(len(batch.samples))

    fit_start = time.perf_counter()
    detector = _fit_detector(options, train_features(), bars)
    fit_seconds = time.perf_counter() - fit_start

    labels, scores, map_peaks = [], [], []
    for samples, _, prediction in predict_samples(
        feature_fn, detector, splits.val, config, options["blur_sigma"], options["batch_size"], bars, "calibrate"
    ):
        labels += [s.label for s in samples]
        scores += prediction.scores.tolist()
        map_peaks += prediction.maps.reshape(len(samples), -1).max(axis=1).tolist()
    bars.close()
    method = options["threshold_method"] if any(labels) else "fpr"
    normalizer = calibrate(np.array(labels), np.array(scores), method=method, target_fpr=options["target_fpr"])
    # Regions and heatmaps live on the blurred map, whose peak differs from the image score: calibrate it too.
    map_normalizer = calibrate(np.array(labels), np.array(map_peaks), method=method, target_fpr=options["target_fpr"])

    detector_section, detector_files = detector.save(out)
    files = [save_extractor(extractor, out), *detector_files, "splits.json"]
    seconds = time.perf_counter() - start
    manifest = {
        "detector": detector_section,
        "features": {**config.to_dict(), "out_dims": config.out_dims, "feature_size": list(config.feature_size),
                     "weights": weights.source, "weights_sha256": weights.sha256},
        "preprocess": {"input": "RGB uint8", "resize": RESIZE_POLICY, "layout": "NCHW float32 0..255",
                       "normalization": "inside the extractor (mean/std buffers)"},
        "postprocess": {"blur_sigma": options["blur_sigma"], "map_size": list(config.image_size)},
        "calibration": {**normalizer.to_dict(), "method": method, "target_fpr": options["target_fpr"],
                        "val_images": len(labels), "val_defective": int(sum(labels)), "map": map_normalizer.to_dict()},
        "training": {"data": str(Path(options["data"]).resolve()), "category": category.name,
                     "train_images": len(splits.train), "seed": options["seed"], "seconds": round(seconds, 2),
                     "fit_seconds": round(fit_seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
                     "torch": torch.__version__},
    }
    manifest = write_manifest(out, manifest, files)
    return TrainResult(out, manifest, seconds, peak_rss_mb())
