"""Defect-type classification by pretrained features: the nearest labelled val-clean defect.

Each image is described by pretrained EfficientNet-Lite0 features (the shared extractor, `layer2,layer3`,
ImageNet weights) averaged over its *predicted* defect region: the pixels of the detector's anomaly map
at or above the bundle's map threshold (the runtime's region definition), or the hottest 2% of the map
when no pixel reaches it. A test image the detector calls good is classified `good`; one it calls
defective gets the type of the most similar (cosine) val-clean defect, described the same way. So the
classifier needs no training and measures what the detector's regions say about the defect. (The bundle's own
classifier, compared by mask similarity and used by the runtime, is `linewatch.defect_types`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from linewatch.batches import iter_batches
from linewatch.data import Sample
from linewatch.features.preprocess import Preprocessor
from linewatch.metrics.classes import GOOD, multiclass_report

FEATURE_SIZE = (224, 224)
FALLBACK_TOP = 0.02
_EXTRACTORS: dict[str, Any] = {}


def extractor(weights: str = "default") -> Any:
    """The pretrained Lite0 extractor, built once per process (every bench cell reuses it)."""
    if weights not in _EXTRACTORS:
        from linewatch.features.extractor import FeatureConfig, build_extractor

        config = FeatureConfig("efficientnet_lite0", ("layer2", "layer3"), FEATURE_SIZE, aggregate=True)
        _EXTRACTORS[weights] = build_extractor(config, weights)[0]
    return _EXTRACTORS[weights]


def predicted_region(anomaly_map: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels at or above the map threshold, else the hottest `FALLBACK_TOP` of the map."""
    region = anomaly_map >= threshold
    if not region.any():
        region = anomaly_map >= np.quantile(anomaly_map, 1.0 - FALLBACK_TOP)
    return region


def region_features(samples: Sequence[Sample], maps: Sequence[np.ndarray], threshold: float,
                    weights: str = "default", batch_size: int = 8) -> np.ndarray:
    """(N, C) L2-normalised features pooled over each image's predicted region."""
    from linewatch.engines.torch_engine import run_network

    network = extractor(weights)
    by_rel = {s.rel: m for s, m in zip(samples, maps, strict=True)}
    out = []
    for batch in iter_batches(list(samples), Preprocessor(FEATURE_SIZE), batch_size):
        features = run_network(network, batch.inputs, "cpu", ("features",))["features"]
        height, width = features.shape[2:]
        for sample, grid in zip(batch.samples, features, strict=True):
            region = predicted_region(by_rel[sample.rel], threshold).astype(np.float32)
            weight = cv2.resize(region, (width, height), interpolation=cv2.INTER_AREA)
            if weight.sum() <= 0:
                weight = (weight == weight.max()).astype(np.float32)
            pooled = (grid * weight).sum(axis=(1, 2)) / weight.sum()
            out.append(pooled / max(float(np.linalg.norm(pooled)), 1e-12))
    return np.stack(out) if out else np.zeros((0, 0), np.float32)


def classify(test: Sequence[Sample], test_maps: Sequence[np.ndarray], test_defective: Sequence[bool],
             references: Sequence[Sample], reference_maps: Sequence[np.ndarray], map_threshold: float,
             weights: str = "default") -> dict[str, Any] | None:
    """The `defect_types_features` section of metrics.json, or None without two labelled defect types."""
    if len({s.defect for s in references}) < 2 or not any(s.label for s in test):
        return None
    ref = region_features(references, reference_maps, map_threshold, weights)
    query = region_features(test, test_maps, map_threshold, weights)
    nearest = np.argmax(query @ ref.T, axis=1)
    types = [references[i].defect for i in nearest]
    predicted = [t if called else GOOD for t, called in zip(types, test_defective, strict=True)]
    summary = multiclass_report([s.defect for s in test], predicted)
    defects = [(s.defect, t) for s, t in zip(test, types, strict=True) if s.label]
    summary["type_accuracy"] = sum(a == b for a, b in defects) / len(defects)
    summary["references"] = len(references)
    summary["method"] = "nearest val defect, Lite0 layer2+3 features pooled over the predicted region"
    return summary
