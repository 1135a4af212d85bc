"""Parity between an exported engine and the PyTorch network, per named output and on image scores.

Both engines' outputs are scored by the bundle's own detector through `linewatch.scoring`, so the check
covers exactly what the runtime will publish. The contract (DESIGN.md): image scores within 1e-3
relative on FP32.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.data import DataError, Splits, is_image_file, read_image, scan_category
from linewatch.engines import Engine
from linewatch.errors import LinewatchError
from linewatch.features.preprocess import Preprocessor
from linewatch.inspector import Inspector

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
    bundle: Path, manifest: dict[str, Any], preprocess: Preprocessor, images_dir: Path | None = None,
    limit: int = MAX_IMAGES,
) -> ParitySamples:
    """Images for the check: `images_dir` when given, else the bundle's training data, else seeded noise."""
    image_size = preprocess.size
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
    """Largest differences from the reference per network output and on image scores.

    Output relative = max abs / max |reference|; score relative = abs / |reference| per image. Each output
    carries its `limit`: the tolerance, or a looser one its network section declares (`parity_tolerance`).
    """

    candidate: str
    reference: str
    images: int
    source: str
    outputs: dict[str, dict[str, float]]
    score_max_abs: float
    score_max_rel: float
    tolerance: float

    @property
    def passed(self) -> bool:
        """Image scores and every output within the tolerance (NaN fails)."""
        outputs_ok = all(bool(d["max_rel"] <= d["limit"]) for d in self.outputs.values())
        return bool(self.score_max_rel <= self.tolerance) and outputs_ok

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def table(self) -> str:
        rows = [
            f"parity: {self.candidate}",
            f"    vs: {self.reference}",
            f"    on: {self.source}",
            f"  {'':16}{'max abs':>12}{'max rel':>12}",
            *(f"  {name[:16]:16}{d['max_abs']:12.3e}{d['max_rel']:12.3e}"
              + (f"   (limit {d['limit']:.0e})" if d["limit"] != self.tolerance else "")
              for name, d in self.outputs.items()),
            f"  {'image scores':16}{self.score_max_abs:12.3e}{self.score_max_rel:12.3e}"
            f"   (limit {self.tolerance:.0e} relative)",
            f"  {'PASS' if self.passed else 'FAIL'}",
        ]
        return "\n".join(rows)


class ParityError(LinewatchError, ValueError):
    """An export's image scores differ from PyTorch's beyond the tolerance; the file was not installed."""

    def __init__(self, report: ParityReport, filename: str) -> None:
        worst = max(report.outputs.items(), key=lambda item: item[1]["max_rel"] / item[1]["limit"])
        super().__init__(
            f"parity check failed: image scores differ by up to {report.score_max_rel:.3g} relative "
            f"(limit {report.tolerance:.0e}) and output {worst[0]!r} by {worst[1]['max_rel']:.3g} "
            f"(limit {worst[1]['limit']:.0e}); "
            f"{filename} was not written to the bundle"
        )
        self.report = report


def _difference(expected: np.ndarray, got: np.ndarray) -> dict[str, float]:
    tiny = np.finfo(np.float32).tiny
    max_abs = float(np.max(np.abs(got.astype(np.float64) - expected))) if expected.size else 0.0
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    return {"max_abs": max_abs, "max_rel": max_abs / max(scale, tiny)}


def check_parity(
    inspector: Inspector, candidate: Engine, samples: ParitySamples, tolerance: float = FP32_TOLERANCE,
    reference: Engine | None = None,
) -> ParityReport:
    """Run `samples` through `candidate` and the reference (PyTorch, CPU); score both with the detector."""
    reference = reference or inspector.reference_engine("cpu")
    expected, got = reference(samples.inputs), candidate(samples.inputs)
    for name in inspector.io.outputs:
        if got[name].shape != expected[name].shape:
            raise ValueError(f"{candidate.describe()} returned {name} {got[name].shape}, "
                             f"PyTorch {expected[name].shape}")
    expected_scores = inspector.score(expected).scores.astype(np.float64)
    got_scores = inspector.score(got).scores.astype(np.float64)
    score_abs = np.abs(got_scores - expected_scores)
    score_rel = score_abs / np.maximum(np.abs(expected_scores), np.finfo(np.float32).tiny)
    declared = inspector.manifest["network"].get("parity_tolerance", {})
    return ParityReport(
        candidate=candidate.describe(),
        reference=reference.describe(),
        images=len(samples.inputs),
        source=samples.source,
        outputs={name: {**_difference(expected[name], got[name]), "limit": max(tolerance, declared.get(name, 0.0))}
                 for name in inspector.io.outputs},
        score_max_abs=float(np.max(score_abs)),
        score_max_rel=float(np.max(score_rel)),
        tolerance=tolerance,
    )
