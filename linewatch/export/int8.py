"""Static int8 (QDQ) quantisation of the bundle's ONNX network, accepted on accuracy rather than parity.

int8 features differ from fp32 ones by design, so the 1e-3 parity contract cannot hold; what matters is
whether defects are still found. The quantiser calibrates activation ranges on the bundle's training
images (through the bundle's own preprocessing); the result is then scored on val-clean next to the fp32
network and refused when image AUROC drops by more than the tolerance (default 0.005). Because int8
moves raw scores, the threshold and map normalisation are re-calibrated on the same val-clean scores
with the bundle's own method and stored with the export: `--precision int8` publishes verdicts on them.
The fp32 `network.onnx` stays the default; `network.int8.onnx` is a second, explicitly chosen file.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.config import ConfigError
from linewatch.data import DataError, Sample, Splits, read_image, scan_category
from linewatch.engines import INT8_FILE, ONNX_FILE, exported_file
from linewatch.engines.onnxruntime_engine import OnnxRuntimeEngine
from linewatch.errors import LinewatchError
from linewatch.export.accuracy import NonFiniteScores, SplitScores, score_split
from linewatch.export.onnx_export import record_export
from linewatch.inspector import Inspector
from linewatch.models.components.feature_memory import calibration_scorers
from linewatch.progress import Bars

log = logging.getLogger(__name__)

DEFAULT_MAX_AUROC_LOSS = 0.005
DEFAULT_CALIBRATION_IMAGES = 64
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
_CALIBRATION_BATCH = 8


class AccuracyError(LinewatchError, ValueError):
    """The int8 network loses more image AUROC than allowed; nothing was written to the bundle."""


@dataclass(frozen=True)
class Int8Report:
    """fp32 vs int8 metrics on val-clean and the verdict of the check."""

    fp32: dict[str, float | None]
    int8: dict[str, float | None]
    max_auroc_loss: float
    images: int
    defective: int

    @property
    def auroc_loss(self) -> float:
        return float(self.fp32["image_auroc"] or 0.0) - float(self.int8["image_auroc"] or 0.0)

    @property
    def passed(self) -> bool:
        return self.auroc_loss <= self.max_auroc_loss

    def to_dict(self) -> dict[str, Any]:
        return {"fp32": self.fp32, "int8": self.int8, "image_auroc_loss": round(self.auroc_loss, 6),
                "max_image_auroc_loss": self.max_auroc_loss, "val_images": self.images,
                "val_defective": self.defective, "passed": self.passed}

    def table(self) -> str:
        def cell(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        rows = [f"int8 accuracy check on val-clean ({self.images} images, {self.defective} defective):",
                f"  {'':14}{'fp32':>10}{'int8':>10}"]
        rows += [f"  {key:14}{cell(self.fp32[key]):>10}{cell(self.int8[key]):>10}"
                 for key in ("image_auroc", "pixel_auroc", "pro")]
        verdict = "PASS" if self.passed else "FAIL"
        rows.append(f"  image AUROC loss {self.auroc_loss:.4f} (limit {self.max_auroc_loss:g}): {verdict}")
        return "\n".join(rows)


def bundle_splits(inspector: Inspector) -> Splits:
    """The bundle's seeded splits over its training data folder, or a DataError saying what is missing."""
    data = inspector.manifest.get("training", {}).get("data")
    splits_file = inspector.directory / "splits.json"
    if not data or not Path(data).is_dir():
        raise DataError(f"int8 export needs the bundle's training data ({data or 'not recorded'}): its images "
                        f"calibrate the quantiser and its val-clean split checks accuracy")
    if not splits_file.is_file():
        raise DataError(f"{splits_file} not found: int8 export needs the bundle's splits")
    return Splits.load(splits_file, scan_category(data))


class TrainingImages:
    """onnxruntime's CalibrationDataReader protocol (`get_next`) over preprocessed training images."""

    def __init__(self, inspector: Inspector, samples: list[Sample], limit: int) -> None:
        self.input_name = inspector.io.input_name
        self.preprocess = inspector.preprocessor
        step = max(1, len(samples) // max(1, limit))
        self.samples = samples[::step][:limit]
        self._batches = self._iter()

    def _iter(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self.samples), _CALIBRATION_BATCH):
            chunk = self.samples[start : start + _CALIBRATION_BATCH]
            yield {self.input_name: self.preprocess.batch([read_image(s.path) for s in chunk])}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = self._iter()


def _quiet_quantiser(record: logging.LogRecord) -> bool:
    """onnxruntime's quantiser logs a line per rescaled weight on the root logger at INFO: keep its warnings only."""
    return record.levelno >= logging.WARNING or "quantization" not in record.pathname


def quantize(fp32_path: Path, int8_path: Path, reader: TrainingImages, method: str = "minmax") -> dict[str, Any]:
    """Shape inference + graph pre-processing, then static QDQ quantisation (u8 activations, s8 per-channel weights)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"calibration method {method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    handlers = [] if log.isEnabledFor(logging.DEBUG) else logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(_quiet_quantiser)
    try:
        with tempfile.TemporaryDirectory(prefix="linewatch-int8-") as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(str(prepared), str(int8_path), reader, quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                            calibrate_method=methods[method])
    finally:
        for handler in handlers:
            handler.removeFilter(_quiet_quantiser)
    return {"format": "QDQ", "activations": "uint8", "weights": "int8 per channel", "calibration_method": method,
            "calibration_images": len(reader.samples)}


def _recalibrated(inspector: Inspector, scored: SplitScores) -> dict[str, Any]:
    """The bundle's calibration redone on int8 scores, same method and target FPR."""
    from linewatch.metrics.calibrate import calibrate

    old = inspector.manifest["calibration"]
    method = old.get("method", "f1") if scored.labels.any() else "fpr"
    target = float(old.get("target_fpr", 0.01))
    image = calibrate(scored.labels, scored.scores, method=method, target_fpr=target)
    peaks = calibrate(scored.labels, scored.map_peaks, method=method, target_fpr=target)
    return {**image.to_dict(), "method": method, "target_fpr": target, "val_images": len(scored.labels),
            "val_defective": int(scored.labels.sum()), "map": peaks.to_dict()}


def export_bundle_int8(
    inspector: Inspector, max_auroc_loss: float = DEFAULT_MAX_AUROC_LOSS,
    calibration_images: int = DEFAULT_CALIBRATION_IMAGES, method: str = "minmax", force: bool = False,
    threads: int | None = None, progress: bool = True,
) -> tuple[dict[str, Any], Int8Report]:
    """Quantise the recorded fp32 ONNX, check accuracy on val-clean, then install and record `network.int8.onnx`.

    Raises `AccuracyError` (bundle untouched) when the image AUROC loss exceeds `max_auroc_loss`, unless `force`.
    """
    bundle, manifest = inspector.directory, inspector.manifest
    fp32_file = exported_file(manifest, "onnx")
    if fp32_file not in manifest["files"]:
        raise DataError(f"{bundle} has no recorded {ONNX_FILE}: run export-model {bundle} --format onnx")
    splits = bundle_splits(inspector)
    if not splits.val:
        raise DataError(f"{bundle}: val-clean is empty, so int8 accuracy cannot be checked")
    started = time.perf_counter()
    reader = TrainingImages(inspector, splits.train, calibration_images)
    bars = Bars(progress)
    with tempfile.TemporaryDirectory(dir=bundle, prefix=".export-") as tmp:
        staging = Path(tmp) / INT8_FILE
        log.info("quantising %s on %d training images (%s)", fp32_file, len(reader.samples), method)
        section = quantize(bundle / fp32_file, staging, reader, method)
        engines = {"fp32": OnnxRuntimeEngine(bundle / fp32_file, inspector.io, "cpu", threads),
                   "int8": OnnxRuntimeEngine(staging, inspector.io, "cpu", threads)}
        count = len(splits.val)
        # A bundle whose memory holds val-clean's goods scores them with held-out detectors, as training did.
        scorers = calibration_scorers(inspector, splits.val, splits.train, bars)
        scored = {"fp32": score_split(inspector, engines["fp32"], splits.val, bars(count, "val-clean fp32"),
                                      scorers=scorers)}
        try:
            scored["int8"] = score_split(inspector, engines["int8"], splits.val, bars(count, "val-clean int8"),
                                         scorers=scorers)
        except NonFiniteScores as exc:
            raise AccuracyError(f"the int8 network of {bundle} is unusable on val-clean: {exc}; int8 ranges "
                                f"cannot hold what this network computes (an SSIM map's variances, say). "
                                f"{INT8_FILE} was not written; deploy the fp32 network") from None
        bars.close()
        report = Int8Report(scored["fp32"].metrics, scored["int8"].metrics, max_auroc_loss, len(splits.val),
                            int(scored["fp32"].labels.sum()))
        checked = scored["fp32"].metrics["image_auroc"] is not None
        if not checked:
            if not force:
                raise AccuracyError(f"val-clean of {bundle} has no defective images, so the int8 accuracy check "
                                    f"cannot measure image AUROC; pass --force to accept the int8 network unchecked")
        elif not report.passed and not force:
            raise AccuracyError(f"{report.table()}\nint8 loses {report.auroc_loss:.4f} image AUROC (limit "
                                f"{max_auroc_loss:g}); {INT8_FILE} was not written (--force accepts it anyway)")
        staging.replace(bundle / INT8_FILE)
    section = {**section, "file": INT8_FILE, "from": fp32_file, "accuracy": {**report.to_dict(), "checked": checked},
               "forced": not (checked and report.passed),
               "calibration": _recalibrated(inspector, scored["int8"]),
               "seconds": round(time.perf_counter() - started, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    manifest = record_export(bundle, manifest, "onnx_int8", section, INT8_FILE)
    return manifest, report
