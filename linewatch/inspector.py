"""A loaded bundle: preprocessing, the detector's scorer, calibration, and its network (built only when asked).

The runtime with an ONNX or TensorRT engine never touches `network`, so it builds no PyTorch model;
evaluation and the export parity check use `reference_engine()` (the network in eager PyTorch).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.bundle import BundleError, bundle_id, read_manifest
from linewatch.defect_types import DefectTypes
from linewatch.engines.base import NetworkIO
from linewatch.features.align import Aligner
from linewatch.features.preprocess import LEGACY_RESIZE_POLICY, RESIZE_POLICY, Preprocessor
from linewatch.metrics.calibrate import ScoreNormalizer
from linewatch.models.base import Detector
from linewatch.models.registry import load_detector
from linewatch.scoring import Prediction, feature_grid, score_outputs


def check_resize_policy(manifest: dict[str, Any], directory: Path) -> bool:
    """Whether the bundle's frames turn grey before resizing (the current policy) or after it (legacy); refuse a
    bundle trained under any other resize policy: its scores and threshold would not hold here."""
    policy = manifest.get("preprocess", {}).get("resize")
    if policy not in (RESIZE_POLICY, LEGACY_RESIZE_POLICY):
        raise BundleError(
            f"{directory} was trained with resize policy {policy!r}, but this linewatch resizes with "
            f"{RESIZE_POLICY!r}: retrain it with inspect-train (then export-model)")
    return policy == RESIZE_POLICY


@dataclass
class Inspector:
    """A loaded model: network contract, scorer, calibration; the PyTorch network is loaded lazily."""

    directory: Path
    manifest: dict[str, Any]
    io: NetworkIO
    detector: Detector
    normalizer: ScoreNormalizer  # image scores: verdict threshold at 0.5
    map_normalizer: ScoreNormalizer  # anomaly maps: region threshold at 0.5
    blur_sigma: float
    preprocessor: Preprocessor
    defect_types: DefectTypes | None = None  # pixel threshold and defect-type classifier, when calibrated
    _network: Any = field(default=None, repr=False)

    @classmethod
    def from_bundle(cls, directory: Path, device: str = "cpu", precision: str = "fp32") -> Inspector:
        """`precision` int8 takes the calibration `export-model --int8` redid on the int8 network's scores."""
        directory = Path(directory)
        manifest = read_manifest(directory)
        grey_first = check_resize_policy(manifest, directory)
        calibration = manifest["calibration"]
        if precision == "int8":
            calibration = manifest.get("export", {}).get("onnx_int8", {}).get("calibration")
            if calibration is None:
                raise BundleError(f"{directory} has no int8 network: run export-model {directory} --format onnx --int8")
        io = NetworkIO.from_section(manifest["network"])
        align = manifest["preprocess"].get("align")
        aligner = Aligner.load(directory, align) if align else None
        return cls(
            directory=directory,
            manifest=manifest,
            io=io,
            detector=load_detector(directory, manifest["detector"], device=device),
            normalizer=ScoreNormalizer.from_dict(calibration),
            map_normalizer=ScoreNormalizer.from_dict(calibration["map"]),
            blur_sigma=float(manifest["postprocess"]["blur_sigma"]),
            preprocessor=Preprocessor(io.size, io.channels, aligner, grey_first,
                                      manifest["preprocess"].get("intensity", "none")),
            defect_types=DefectTypes.load(directory, manifest.get("masks")),
        )

    def check_streamable(self) -> None:
        """Refuse a bundle whose scorer cannot run outside PyTorch (export, runtime), saying why and what to do."""
        problem = getattr(self.detector, "stream_problem", None)
        if problem:
            raise BundleError(f"{self.directory}: {problem}")

    def defect_fields(self, amap: np.ndarray, raw_score: float) -> dict[str, Any]:
        """The verdict's optional `defect_type` / `defect_similarity`: the most similar calibrated defect type
        of a defective frame's map (at the model size); null for good frames or without a classifier."""
        classifier = self.defect_types
        if classifier is None or not classifier.can_classify or raw_score < self.normalizer.threshold:
            return {"defect_type": None, "defect_similarity": None}
        label, similarity = classifier.defect_type(amap)
        return {"defect_type": label, "defect_similarity": round(float(similarity), 4)}

    @property
    def network(self) -> Any:
        """The bundle's PyTorch network (eval mode, CPU), built on first use."""
        if self._network is None:
            from linewatch.models.network import load_network

            self._network = load_network(self.directory, self.manifest)
        return self._network

    def reference_engine(self, device: str = "cpu") -> Any:
        """The network in eager PyTorch: what exports are checked against and what evaluation runs."""
        from linewatch.engines.torch_engine import TorchEngine

        return TorchEngine(self.network, self.io, device)

    @cached_property
    def model_id(self) -> str:
        """The bundle's id: hashed once, not for every verdict that carries it."""
        return bundle_id(self.manifest)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.io.size

    def score(self, outputs: dict[str, np.ndarray], timings: dict[str, float] | None = None,
              warps: Sequence[np.ndarray | None] = ()) -> Prediction:
        """Scores and maps of a batch; `warps` (the frames' alignments) leave out what they brought in.
        `timings` gets `score_outputs`'s and `unseen`: ms for finding what the warps brought in, alignment's work."""
        start = time.perf_counter()
        unseen = self.preprocessor.unseen(warps, feature_grid(outputs))
        if timings is not None:
            timings["unseen"] = 1000 * (time.perf_counter() - start)
        return score_outputs(self.detector, outputs, self.io.size, self.blur_sigma, timings, unseen)
