"""Training: scan the category, split it, fit the chosen detector, calibrate on val-clean, write the bundle.

Every detector goes through the same steps; what differs (frozen features + statistics, or an epoch
loop) is the registry spec's `fit`. Calibration scores val-clean through the same `predict_samples`
path that evaluation and the runtime use; its maps also calibrate the pixel threshold and the defect-type
classifier (`linewatch.defect_types`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from linewatch.batches import iter_batches
from linewatch.bundle import write_manifest
from linewatch.data import DataError, Splits, make_splits, scan_category
from linewatch.defect_types import calibrate_defect_types, mask_at
from linewatch.engines.base import NetworkIO
from linewatch.engines.torch_engine import TorchEngine
from linewatch.features.geometry import resolve_image_size
from linewatch.features.preprocess import RESIZE_POLICY, Preprocessor
from linewatch.metrics.calibrate import calibrate
from linewatch.models.base import FitContext
from linewatch.models.components.feature_memory import calibration_groups
from linewatch.models.network import save_network
from linewatch.models.registry import get_spec
from linewatch.progress import Bars
from linewatch.resources import peak_rss_mb
from linewatch.scoring import predict_groups, score_batch
from linewatch.train.blur import choose_map, map_choice

log = logging.getLogger(__name__)
HISTORY_FILE = "history.json"
REPLAY_LIMIT_BYTES = 1 << 30  # val-clean's network outputs kept for calibration after the map choice
SEARCH_MEMORY_BYTES = 1 << 28  # and PatchCore's kNN results (`RememberedSearches`)


@dataclass(frozen=True)
class TrainResult:
    bundle: Path
    manifest: dict[str, Any]
    seconds: float
    peak_rss_mb: float


def train(options: dict[str, Any], progress: bool = True, splits: Splits | None = None,
          tuning: dict[str, Any] | None = None) -> TrainResult:
    """Fit on train-clean, calibrate on val-clean, write a validated bundle to `options['out']`.

    `splits` replaces the split drawn from `options['seed']` (benchmarks keep one split across model seeds).
    `tuning`, from `inspect-train --tune`, is stored as the manifest's `tuning` section.
    """
    start = time.perf_counter()
    bars = Bars(progress)
    spec = get_spec(options["model"])
    category = scan_category(options["data"])
    splits = splits or make_splits(category, seed=options["seed"])
    if not splits.val:
        raise DataError(f"{category.root}: val-clean is empty, so no threshold can be calibrated; train/good needs "
                        f"at least 2 images (20% are held out) or test/ needs defective images")
    options, geometry = resolve_image_size(options, splits.train)
    out = Path(options["out"])
    out.mkdir(parents=True, exist_ok=True)
    splits.to_json(out / "splits.json")
    torch.manual_seed(options["seed"])

    fit_start = time.perf_counter()
    fitted = spec.fit(FitContext(options, splits, out, bars))
    fit_seconds = time.perf_counter() - fit_start

    io = NetworkIO.from_section(fitted.network_section)
    engine = TorchEngine(fitted.network, io, "cuda" if options["device"] == "cuda" else "cpu")
    labels, scores, map_peaks, maps, masks, scored = [], [], [], [], [], []
    preprocess = Preprocessor(io.size, io.channels, fitted.aligner, intensity=fitted.intensity)
    groups = calibration_groups(splits.val, fitted.detector, fitted.calibration)
    detector, sigma, blur, network = fitted.detector, options["blur_sigma"], None, engine
    choice = map_choice(spec.options, options)
    if choice is not None:
        neighbours, sigmas = choice
        if hasattr(detector, "remembering"):  # PatchCore: calibration searches what the choice searched
            groups = [(s, d.remembering(SEARCH_MEMORY_BYTES)) for s, d in groups]
        variants = {k: groups if k is None else [(s, d.with_map_k(k)) for s, d in groups] for k in neighbours}
        choice_start = time.perf_counter()
        network = _Replay(engine)
        chosen, sigma, blur = _choose_map(network, variants, preprocess, io.size, options["batch_size"], sigmas,
                                          bars)
        blur["seconds"] = round(time.perf_counter() - choice_start, 2)
        network.rewind()  # calibration meets the same batches
        if chosen is not None:
            groups, detector = variants[chosen], detector.with_map_k(chosen)
        log.info("map blur sigma %g, neighbours %s (%s)", sigma, chosen or "-", blur["method"])
    step = bars(len(splits.val), "calibrate")
    for samples, images, prediction in predict_groups(network, groups, preprocess, sigma, options["batch_size"],
                                                      step):
        scored += samples
        labels += [s.label for s in samples]
        scores += prediction.scores.tolist()
        map_peaks += prediction.maps.reshape(len(samples), -1).max(axis=1).tolist()
        maps += list(prediction.maps)
        masks += [mask_at(s, image.shape, io.size) for s, image in zip(samples, images, strict=True)]
    bars.close()
    defect_types = calibrate_defect_types(scored, maps, masks, options["pixel_threshold_method"])
    method = options["threshold_method"] if any(labels) else "fpr"
    normalizer = calibrate(np.array(labels), np.array(scores), method=method, target_fpr=options["target_fpr"])
    # Regions and heatmaps live on the blurred map, whose peak differs from the image score: calibrate it too.
    map_normalizer = calibrate(np.array(labels), np.array(map_peaks), method=method, target_fpr=options["target_fpr"])

    detector_section, detector_files = detector.save(out)
    files = [save_network(fitted.network, out), *detector_files, "splits.json"]
    align = None
    if fitted.aligner is not None:
        align, reference_file = fitted.aligner.save(out)
        files.append(reference_file)
    masks_section, mask_files = defect_types.save(out) if defect_types else (None, [])
    files += mask_files
    if fitted.history is not None:
        (out / HISTORY_FILE).write_text(json.dumps(fitted.history, indent=1) + "\n")
        files.append(HISTORY_FILE)
    seconds = time.perf_counter() - start
    manifest = {
        "detector": detector_section,
        "network": fitted.network_section,
        "preprocess": {"input": "RGB uint8", "resize": RESIZE_POLICY,
                       "channels": "RGB" if io.channels == 3 else "grey (cv2 RGB2GRAY before the resize)",
                       "layout": "NCHW float32 0..255", "normalization": "inside the network",
                       "geometry": geometry, "intensity": fitted.intensity, **({"align": align} if align else {})},
        "postprocess": {"blur_sigma": sigma, "map_size": list(io.size), **({"blur": blur} if blur else {})},
        "masks": masks_section,
        "calibration": {**normalizer.to_dict(), "method": method, "target_fpr": options["target_fpr"],
                        "val_images": len(labels), "val_defective": int(sum(labels)), "map": map_normalizer.to_dict()},
        "training": {"data": str(Path(options["data"]).resolve()), "category": category.name,
                     "train_images": len(splits.train), "seed": options["seed"], "seconds": round(seconds, 2),
                     "fit_seconds": round(fit_seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
                     "torch": torch.__version__, "options": _jsonable(options), **fitted.training},
    }
    if tuning is not None:
        manifest["tuning"] = tuning
    manifest = write_manifest(out, manifest, files)
    return TrainResult(out, manifest, seconds, peak_rss_mb())


class _Replay:
    """A network whose outputs on the first pass over a fixed sequence of batches are replayed on later passes
    (calibration scores the val-clean batches the map choice ran; the features do not change). Outputs beyond
    `limit_bytes` are not kept but computed again, so a large val-clean cannot exhaust memory."""

    def __init__(self, network: TorchEngine, limit_bytes: int = REPLAY_LIMIT_BYTES) -> None:
        self.network, self.limit_bytes = network, limit_bytes
        self.outputs: list[tuple[tuple[Any, ...], dict[str, np.ndarray]]] = []
        self.calls = self.kept_bytes = 0

    def __call__(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        key = (inputs.shape, float(inputs[..., ::7, ::7].sum()))  # a sparse checksum: a batch out of order fails
        if self.calls <= len(self.outputs):
            recorded, outputs = self.outputs[self.calls - 1]
            if recorded != key:
                raise RuntimeError("the map choice's passes over val-clean met different batches")
            return outputs
        outputs = self.network(inputs)
        size = sum(array.nbytes for array in outputs.values())
        if self.calls == len(self.outputs) + 1 and self.kept_bytes + size <= self.limit_bytes:
            self.outputs.append((key, outputs))
            self.kept_bytes += size
        return outputs

    def rewind(self) -> None:
        self.calls = 0


def _choose_map(network: _Replay, variants: dict[int | None, Any], preprocess: Preprocessor,
                size: tuple[int, int], batch_size: int, sigmas: tuple[float, ...],
                bars: Bars) -> tuple[int | None, float, dict[str, Any]]:
    """Val-clean's unblurred maps for every neighbour count in one pass, and the map's neighbours and blur
    picked by their PRO (`train.blur`). Each batch is read, run and searched once, then scored by each count's
    detector, the largest count first: the smaller ones share its search (`RememberedSearches`)."""
    counts = sorted(variants, key=lambda count: -(count or 0))
    first = variants[counts[0]]
    unblurred: dict[int | None, list[np.ndarray]] = {count: [] for count in variants}
    masks: list[np.ndarray | None] = []
    step = bars(sum(len(samples) for samples, _ in first), "map choice")
    for index, (samples, _) in enumerate(first):
        for batch in iter_batches(samples, preprocess, batch_size):
            outputs = network(batch.inputs)
            for count in counts:
                scored = score_batch(variants[count][index][1], outputs, batch, preprocess, 0.0)
                unblurred[count] += list(scored.maps)
            masks += [mask_at(s, image.shape, size) for s, image in zip(batch.samples, batch.images, strict=True)]
            step(len(batch.samples))
    bars.close()
    return choose_map(unblurred, masks, sigmas)


def _jsonable(options: dict[str, Any]) -> dict[str, Any]:
    """The resolved options as plain JSON values (paths as strings, tuples as lists)."""
    return {key: str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
            for key, value in options.items()}
