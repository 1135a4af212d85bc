"""Evaluation: score a split with a bundle, compute image and pixel metrics, write csv/json/plots/maps."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linewatch.data import Category, DataError, Sample, Splits, read_image, read_mask, scan_category
from linewatch.evaluate import defect_types, report
from linewatch.evaluate.masks import defect_type_metrics, mask_metrics
from linewatch.evaluate.report import ExampleItem
from linewatch.inspector import Inspector
from linewatch.metrics import auprc, auroc, classification_report, pixel_auroc, pro_area, pro_curve
from linewatch.models.anomaly_map import resize_map
from linewatch.models.components.feature_memory import calibration_scorers
from linewatch.progress import Bars
from linewatch.resources import peak_rss_mb, reset_peak_rss
from linewatch.scoring import predict_groups, predict_samples

EXAMPLES = 12
PRO_CURVE = "pro_curve.csv"


@dataclass
class Scored:
    sample: Sample
    score: float
    small_map: np.ndarray  # at the model's input size, for the example grid


def _splits(category: Category, bundle: Path, splits_file: Path | None) -> Splits:
    """The split listed in `splits_file` (default: the bundle's splits.json), resolved in `category` by rel path."""
    path = Path(splits_file) if splits_file else Path(bundle) / "splits.json"
    if not path.is_file():
        raise DataError(f"{path} is missing, so test-clean is unknown; use --split all")
    try:
        return Splits.load(path, category)
    except DataError as exc:
        raise DataError(f"{exc} (the bundle was trained on other data? use --split all or --splits)") from exc


def select_samples(category: Category, bundle: Path, split: str, splits_file: Path | None = None) -> list[Sample]:
    """`test`: the seeded test-clean split of this category; `all`: every image under test/."""
    if split == "all":
        return list(category.test)
    return list(_splits(category, bundle, splits_file).test)


def calibration_splits(inspector: Inspector, category: Category, splits_file: Path | None) -> Splits | None:
    """The split over the data the bundle was trained on (what calibrated it: a clean model evaluated on shifted
    images keeps its val-clean), else over the evaluated category; None when neither resolves it."""
    trained_on = Path(inspector.manifest.get("training", {}).get("data", ""))
    for source in (trained_on, category.root):
        try:
            return _splits(scan_category(source), inspector.directory, splits_file)
        except DataError:
            continue
    return None


def reference_defects(inspector: Inspector, category: Category, splits_file: Path | None) -> list[Sample]:
    """The split's labelled val defects (see `calibration_splits`)."""
    splits = calibration_splits(inspector, category, splits_file)
    return [s for s in splits.val if s.label] if splits else []


def _pick_examples(scored: list[Scored], threshold: float) -> list[Scored]:
    """Highest- and lowest-scoring defects, the highest-scoring good images, then the rest by score."""
    defects = sorted((s for s in scored if s.sample.label), key=lambda s: -s.score)
    goods = sorted((s for s in scored if not s.sample.label), key=lambda s: -s.score)
    picks = defects[:4] + defects[-2:] + goods[:3] + goods[-1:]
    seen, out = set(), []
    for item in picks + defects + goods:
        if item.sample.rel not in seen:
            seen.add(item.sample.rel)
            out.append(item)
    return out[:EXAMPLES]


def _example_items(chosen: list[Scored], size: tuple[int, int], threshold: float) -> list[ExampleItem]:
    import cv2

    items = []
    for item in chosen:
        image = cv2.resize(read_image(item.sample.path), (size[1], size[0]), interpolation=cv2.INTER_AREA)
        mask = None
        if item.sample.mask is not None:
            full = read_mask(item.sample.mask, read_image(item.sample.path).shape[:2]).astype(np.uint8)
            mask = cv2.resize(full, (size[1], size[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
        verdict = "defect" if item.score >= threshold else "ok"
        items.append(ExampleItem(f"{item.sample.rel} ({verdict})", image, mask, item.small_map, item.score))
    return items


def _validation_study(inspector: Inspector, category: Category, splits_file: Path | None, batch_size: int,
                      out: Path, threshold: float) -> None:
    """Where the threshold came from: val-clean's good vs defective scores and P/R/F1 as the threshold moves."""
    splits = calibration_splits(inspector, category, splits_file)
    if splits is None:
        return
    labels, scores = [], []
    groups = calibration_scorers(inspector, splits.val, splits.train)  # as calibration scored them
    for samples, _, prediction in predict_groups(inspector.reference_engine(), groups, inspector.preprocessor,
                                                 inspector.blur_sigma, batch_size):
        labels += [s.label for s in samples]
        scores += prediction.scores.tolist()
    report.plot_score_histogram(labels, scores, threshold, out / "val_score_histogram.png",
                                title="Validation scores (val-clean)")
    if 0 < sum(labels) < len(labels):
        report.plot_threshold_study(labels, scores, threshold, out / "threshold_study.png")


def evaluate(bundle: Path, data: Path, out: Path, split: str = "test", save_maps: bool = False,
             batch_size: int = 8, device: str = "cpu", progress: bool = True,
             splits_file: Path | None = None, plots: bool = True) -> dict[str, Any]:
    """Run the evaluation and write metrics.json, scores.csv, plots (and maps); return the metrics.

    `plots=False` skips the PNGs (benchmark grids draw their own, across detectors)."""
    reset_peak_rss()
    start = time.perf_counter()
    inspector = Inspector.from_bundle(bundle, device=device)
    category = scan_category(data)
    samples = select_samples(category, bundle, split, splits_file)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bars = Bars(progress)
    engine = inspector.reference_engine("cuda" if device == "cuda" else "cpu")
    scored: list[Scored] = []
    masks: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    timings: dict[str, float] = {}
    truth_defects: list[str] = []  # the defect type of each mask
    for batch_samples, images, prediction in predict_samples(
        engine, inspector.detector, samples, inspector.preprocessor, inspector.blur_sigma, batch_size,
        bars(len(samples), "evaluate"), timings,
    ):
        for sample, image, score, small in zip(batch_samples, images, prediction.scores, prediction.maps, strict=True):
            scored.append(Scored(sample, float(score), small))
            if sample.label and sample.mask is None and not save_maps:
                continue
            full = resize_map(small, image.shape[:2])
            if save_maps:
                target = (out / "maps" / sample.rel).with_suffix(".npy")
                target.parent.mkdir(parents=True, exist_ok=True)
                np.save(target, full.astype(np.float32), allow_pickle=False)
            if sample.label == 0 or sample.mask is not None:
                shape = image.shape[:2]
                masks.append(np.zeros(shape, bool) if sample.mask is None else read_mask(sample.mask, shape))
                maps.append(full)
                truth_defects.append(sample.defect)
    seconds = time.perf_counter() - start

    labels = np.array([s.sample.label for s in scored])
    scores = np.array([s.score for s in scored])
    threshold = float(inspector.normalizer.threshold)
    both = 0 < labels.sum() < len(labels)
    has_pixels = any(m.any() for m in masks)
    fpr, pro = pro_curve(masks, maps) if has_pixels else (None, None)
    metrics: dict[str, Any] = {
        "image_auroc": auroc(labels, scores) if both else None,
        "image_auprc": auprc(labels, scores) if both else None,
        **classification_report(labels, scores, threshold),
        "threshold": threshold,
        "pixel_auroc": pixel_auroc(masks, maps) if has_pixels else None,
        "pro": pro_area(fpr, pro) if has_pixels else None,
        "images": len(scored),
        "defective": int(labels.sum()),
        "split": split,
        "bundle": str(bundle),
        "model": inspector.model_id,
        "data": str(data),
        "seconds": round(seconds, 2),
        "ms_per_image": round(1000 * seconds / max(1, len(scored)), 2),
        "inference_ms_per_image": round(timings.get("inference", 0.0) / max(1, len(scored)), 2),
        "batch_size": batch_size,
    }
    per_defect = {}
    for defect in sorted({s.sample.defect for s in scored if s.sample.label}):
        keep = np.array([(not s.sample.label) or s.sample.defect == defect for s in scored])
        if both and (labels[keep] == 0).any():
            per_defect[defect] = auroc(labels[keep], scores[keep])
    metrics["image_auroc_per_defect"] = per_defect
    calibrated = inspector.defect_types
    metrics["pixel_threshold"] = calibrated.threshold if calibrated else None
    metrics["mask_metrics"] = mask_metrics(calibrated, truth_defects, masks, maps) if has_pixels else None
    classes = defect_type_metrics(calibrated, [s.sample.defect for s in scored], [s.small_map for s in scored],
                                  [s.score >= threshold for s in scored])
    predicted = classes.pop("predicted") if classes else None
    metrics["defect_types"] = classes
    metrics["defect_types_features"] = _feature_types(inspector, category, splits_file, scored, engine,
                                                      batch_size, bars) if split == "test" else None
    bars.close()
    metrics["peak_rss_mb"] = round(peak_rss_mb(), 1)

    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    with open(out / "scores.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "score"])
        writer.writerows([s.sample.rel, s.sample.label, f"{s.score:.9g}"] for s in scored)
    if predicted:
        with open(out / "defect_types.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "defect", "predicted"])
            writer.writerows([s.sample.rel, s.sample.defect, p] for s, p in zip(scored, predicted, strict=True))
    if has_pixels:
        grid = np.linspace(0.0, 0.3, 301)
        np.savetxt(out / PRO_CURVE, np.column_stack((grid, np.interp(grid, fpr, pro))), fmt="%.6g",
                   delimiter=",", header="fpr,pro", comments="")
    if plots:
        _plots(out, scored, labels, scores, threshold, (fpr, pro) if has_pixels else None, inspector.image_size)
        _confusion_plots(out, metrics)
        if split == "test":
            _validation_study(inspector, category, splits_file, batch_size, out, threshold)
    return metrics


def _feature_types(inspector: Inspector, category: Category, splits_file: Path | None, scored: list[Scored],
                   engine: Any, batch_size: int, bars: Bars) -> dict[str, Any] | None:
    """Defect types by the nearest val defect in pretrained feature space (see `defect_types`)."""
    references = reference_defects(inspector, category, splits_file)
    if len({s.defect for s in references}) < 2:
        return None
    ref_maps = [prediction.maps for _, _, prediction in predict_samples(
        engine, inspector.detector, references, inspector.preprocessor, inspector.blur_sigma, batch_size,
        bars(len(references), "val defects"))]
    threshold = float(inspector.normalizer.threshold)
    return defect_types.classify([s.sample for s in scored], [s.small_map for s in scored],
                                 [s.score >= threshold for s in scored], references, list(np.concatenate(ref_maps)),
                                 float(inspector.map_normalizer.threshold))


def _confusion_plots(out: Path, metrics: dict[str, Any]) -> None:
    """confusion.png for the bundle's mask-similarity classifier, confusion_features.png for the feature one."""
    for key, name, method in (("defect_types", "confusion.png", "masks"),
                              ("defect_types_features", "confusion_features.png", "features")):
        if classes := metrics.get(key):
            report.plot_confusion(classes["labels"], classes["confusion"], out / name,
                                  f"defect types by {method}: accuracy {classes['accuracy']:.3f}, "
                                  f"good vs defective {classes['binary_accuracy']:.3f}")


def _plots(out: Path, scored: list[Scored], labels: np.ndarray, scores: np.ndarray, threshold: float,
           pro: tuple[np.ndarray, np.ndarray] | None, size: tuple[int, int]) -> None:
    if 0 < labels.sum() < len(labels):
        report.plot_roc(labels, scores, out / "roc.png")
        report.plot_pr(labels, scores, out / "pr.png")
    report.plot_score_histogram(labels, scores, threshold, out / "score_histogram.png")
    if pro is not None:
        report.plot_pro(*pro, out / "pro.png")
    report.plot_examples(_example_items(_pick_examples(scored, threshold), size, threshold), out / "examples.png")
