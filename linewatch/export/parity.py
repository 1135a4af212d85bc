"""Parity between an exported engine and the PyTorch extractor, measured on features and on image scores.

Both feature sets are scored by the bundle's own detector through `score_features`, so the check covers
exactly what the runtime will publish. The contract (DESIGN.md): image scores within 1e-3 relative on FP32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.data import DataError, Splits, is_image_file, read_image, scan_category
from linewatch.errors import LinewatchError
from linewatch.inspector import Inspector
from linewatch.runtime.engines import FeatureEngine, TorchEngine

FP32_TOLERANCE = 1e-3
FP16_TOLERANCE = 2e-2  # FP16 kernels move features by ~1e-3 relative; beyond 2e-2 something else is wrong
MAX_IMAGES = 8
NOISE_SEED = 0


@dataclass(frozen=True)
class ParitySamples:
    """Preprocessed inputs, where they came from, and a warning when they are not real images."""

    inputs: np.ndarray
    source: str
    warning: str | None = None


def _spread(items: list[Any], limit: int) -> list[Any]:
    """Up to `limit` items spread over the list, so good and defective validation images both appear."""
    if len(items) <= limit or limit < 2:
        return items[:limit]
    return [items[round(i * (len(items) - 1) / (limit - 1))] for i in range(limit)]


def _training_images(bundle: Path, manifest: dict[str, Any], limit: int) -> tuple[list[Path], str]:
    """Validation then training images of the bundle's split; ([], reason) when they are not available."""
    data = manifest.get("training", {}).get("data")
    splits_file = bundle / "splits.json"
    if not data or not Path(data).is_dir():
        return [], f"training data folder {data or '(not recorded)'} not found"
    if not splits_file.is_file():
        return [], f"{splits_file} not found"
    try:
        splits = Splits.load(splits_file, scan_category(data))
    except DataError as exc:
        return [], str(exc)
    chosen = _spread(splits.val + splits.train, limit)
    return [s.path for s in chosen], f"training data {data} (val+train split)"


def parity_samples(
    bundle: Path, manifest: dict[str, Any], image_size: tuple[int, int], images_dir: Path | None = None,
    limit: int = MAX_IMAGES,
) -> ParitySamples:
    """Images for the check: `images_dir` when given, else the bundle's training data, else seeded noise."""
    from linewatch.features.preprocess import Preprocessor

    preprocess = Preprocessor(tuple(image_size))
    if images_dir is not None:
        files = sorted(p for p in Path(images_dir).iterdir() if p.is_file() and is_image_file(p))
        if not files:
            raise DataError(f"--images {images_dir}: no image files in this folder")
        chosen = _spread(files, limit)
        inputs = preprocess.batch([read_image(p) for p in chosen])
        return ParitySamples(inputs, f"{len(chosen)} images from {images_dir}")
    files, reason = _training_images(Path(bundle), manifest, limit)
    if files:
        inputs = preprocess.batch([read_image(p) for p in files])
        return ParitySamples(inputs, f"{len(files)} images from {reason}")
    noise = np.random.default_rng(NOISE_SEED).integers(0, 256, (limit, *image_size, 3), dtype=np.uint8)
    warning = (f"no real images for the parity check ({reason}; no --images given): using {limit} "
               f"deterministic random-noise images instead; pass --images DIR for a meaningful check")
    source = f"{limit} random-noise images (seed {NOISE_SEED})"
    return ParitySamples(preprocess.batch(list(noise)), source, warning)


@dataclass(frozen=True)
class ParityReport:
    """Largest differences from the reference; relative = abs / |reference| (per image for scores)."""

    candidate: str
    reference: str
    images: int
    source: str
    feature_max_abs: float
    feature_max_rel: float
    score_max_abs: float
    score_max_rel: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.score_max_rel <= self.tolerance)  # NaN fails

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def table(self) -> str:
        rows = [
            f"parity: {self.candidate}",
            f"    vs: {self.reference}",
            f"    on: {self.source}",
            f"  {'':14}{'max abs':>12}{'max rel':>12}",
            f"  {'features':14}{self.feature_max_abs:12.3e}{self.feature_max_rel:12.3e}",
            f"  {'image scores':14}{self.score_max_abs:12.3e}{self.score_max_rel:12.3e}"
            f"   (limit {self.tolerance:.0e} relative)",
            f"  {'PASS' if self.passed else 'FAIL'}",
        ]
        return "\n".join(rows)


class ParityError(LinewatchError, ValueError):
    """An export's image scores differ from PyTorch's beyond the tolerance; the file was not installed."""

    def __init__(self, report: ParityReport, filename: str) -> None:
        super().__init__(
            f"parity check failed: image scores differ by up to {report.score_max_rel:.3g} relative "
            f"(limit {report.tolerance:.0e}); {filename} was not written to the bundle"
        )
        self.report = report


def check_parity(
    inspector: Inspector, candidate: FeatureEngine, samples: ParitySamples, tolerance: float = FP32_TOLERANCE,
    reference: FeatureEngine | None = None,
) -> ParityReport:
    """Run `samples` through `candidate` and the reference (PyTorch, CPU); score both with the detector."""
    reference = reference or TorchEngine(inspector.extractor, device="cpu")
    expected, got = reference(samples.inputs), candidate(samples.inputs)
    if got.shape != expected.shape:
        raise ValueError(f"{candidate.describe()} returned features {got.shape}, PyTorch {expected.shape}")
    feature_abs = float(np.max(np.abs(got - expected)))
    expected_scores, got_scores = inspector.score(expected).scores, inspector.score(got).scores
    score_abs = np.abs(got_scores.astype(np.float64) - expected_scores)
    score_rel = score_abs / np.maximum(np.abs(expected_scores.astype(np.float64)), np.finfo(np.float32).tiny)
    return ParityReport(
        candidate=candidate.describe(),
        reference=reference.describe(),
        images=len(samples.inputs),
        source=samples.source,
        feature_max_abs=feature_abs,
        feature_max_rel=feature_abs / max(float(np.max(np.abs(expected))), np.finfo(np.float32).tiny),
        score_max_abs=float(np.max(score_abs)),
        score_max_rel=float(np.max(score_rel)),
        tolerance=tolerance,
    )
