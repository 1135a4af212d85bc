"""From a bundle (or a freshly fitted model) to predictions: features -> detector -> maps -> scores.

Evaluation, the export parity check and the runtime all score through `score_features`, so a raw
score means the same number everywhere; only the feature engine (torch, onnxruntime, TensorRT) varies.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from linewatch.bundle import BundleError, bundle_id, read_manifest
from linewatch.features.extractor import FeatureConfig, FeatureExtractor
from linewatch.features.preprocess import RESIZE_POLICY, Preprocessor
from linewatch.metrics.calibrate import ScoreNormalizer
from linewatch.models import load_detector
from linewatch.models.anomaly_map import anomaly_maps
from linewatch.models.base import Detector

EXTRACTOR_FILE = "extractor.safetensors"
FeatureFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Prediction:
    scores: np.ndarray  # (N,) raw image scores
    maps: np.ndarray  # (N, H, W) float32 anomaly maps at the model's input size


def score_features(
    detector: Detector, features: np.ndarray, image_size: tuple[int, int], sigma: float,
    timings: dict[str, float] | None = None,
) -> Prediction:
    """The one scoring path: patch scores, blurred maps at the input size, image scores.

    `timings`, when given, receives milliseconds for `score` (detector) and `maps` (map post-processing).
    """
    start = time.perf_counter()
    patch = detector.patch_scores(features)
    scored = time.perf_counter()
    maps = anomaly_maps(patch, image_size, sigma)
    scores = detector.image_scores(patch, maps, features).astype(np.float32)
    if timings is not None:
        timings["score"] = 1000 * (scored - start)
        timings["maps"] = 1000 * (time.perf_counter() - scored)
    return Prediction(scores=scores, maps=maps)


def torch_features(extractor: FeatureExtractor, device: str = "cpu") -> FeatureFn:
    """Wrap the extractor as numpy -> numpy, the same signature as the exported engines."""
    extractor = extractor.to(device).eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return extractor(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    return run


def save_extractor(extractor: FeatureExtractor, directory: Path) -> str:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in extractor.state_dict().items()}
    save_file(state, str(Path(directory) / EXTRACTOR_FILE))
    return EXTRACTOR_FILE


def load_extractor(directory: Path, config: FeatureConfig) -> FeatureExtractor:
    from safetensors.torch import load_file

    extractor = FeatureExtractor(config)
    extractor.load_state_dict(load_file(str(Path(directory) / EXTRACTOR_FILE)))
    return extractor.eval()


def check_resize_policy(manifest: dict[str, Any], directory: Path) -> None:
    """Refuse a bundle trained under another resize policy: its scores and threshold would not hold here."""
    policy = manifest.get("preprocess", {}).get("resize")
    if policy != RESIZE_POLICY:
        raise BundleError(
            f"{directory} was trained with resize policy {policy!r}, but this linewatch resizes with "
            f"{RESIZE_POLICY!r}: retrain it with inspect-train (then export-model)")


@dataclass
class Inspector:
    """A loaded model: preprocessing, the feature extractor, the detector, calibration."""

    manifest: dict[str, Any]
    features: FeatureConfig
    extractor: FeatureExtractor
    detector: Detector
    normalizer: ScoreNormalizer  # image scores: verdict threshold at 0.5
    map_normalizer: ScoreNormalizer  # anomaly maps: region threshold at 0.5
    blur_sigma: float

    @classmethod
    def from_bundle(cls, directory: Path, device: str = "cpu") -> Inspector:
        manifest = read_manifest(directory)
        check_resize_policy(manifest, directory)
        config = FeatureConfig.from_dict(manifest["features"])
        return cls(
            manifest=manifest,
            features=config,
            extractor=load_extractor(directory, config),
            detector=load_detector(Path(directory), manifest["detector"], device=device),
            normalizer=ScoreNormalizer.from_dict(manifest["calibration"]),
            map_normalizer=ScoreNormalizer.from_dict(manifest["calibration"]["map"]),
            blur_sigma=float(manifest["postprocess"]["blur_sigma"]),
        )

    @property
    def model_id(self) -> str:
        return bundle_id(self.manifest)

    @property
    def preprocessor(self) -> Preprocessor:
        return Preprocessor(self.features.image_size)

    def score(self, features: np.ndarray, timings: dict[str, float] | None = None) -> Prediction:
        return score_features(self.detector, features, self.features.image_size, self.blur_sigma, timings)
