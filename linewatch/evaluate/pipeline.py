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
from linewatch.evaluate import report
from linewatch.evaluate.masks import defect_type_metrics, mask_metrics
from linewatch.evaluate.report import ExampleItem
from linewatch.inspector import Inspector
from linewatch.metrics import auprc, auroc, classification_report, pixel_auroc, pro_area, pro_curve
from linewatch.models.anomaly_map import resize_map
from linewatch.progress import Bars
from linewatch.scoring import predict_samples

EXAMPLES = 12


@dataclass
class Scored:
    sample: Sample
    score: float
    small_map: np.ndarray  # at the model's input size, for the example grid


def select_samples(category: Category, bundle: Path, split: str) -> list[Sample]:
    """`test`: the bundle's seeded test-clean split of this category; `all`: every image under test/."""
    if split == "all":
        return list(category.test)
    splits_file = Path(bundle) / "splits.json"
    if not splits_file.is_file():
        raise DataError(f"{splits_file} is missing, so test-clean is unknown; use --split all")
    try:
        return list(Splits.load(splits_file, category).test)
    except DataError as exc:
        raise DataError(f"{exc} (the bundle was trained on other data? use --split all)") from exc


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


def evaluate(bundle: Path, data: Path, out: Path, split: str = "test", save_maps: bool = False,
             batch_size: int = 8, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Run the evaluation and write metrics.json, scores.csv, plots (and maps); return the metrics."""
    start = time.perf_counter()
    inspector = Inspector.from_bundle(bundle, device=device)
    category = scan_category(data)
    samples = select_samples(category, bundle, split)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bars = Bars(progress)
    engine = inspector.reference_engine("cuda" if device == "cuda" else "cpu")
    scored: list[Scored] = []
    masks: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    truth_defects: list[str] = []  # the defect type of each mask
    for batch_samples, images, prediction in predict_samples(
        engine, inspector.detector, samples, inspector.preprocessor, inspector.blur_sigma, batch_size,
        bars(len(samples), "evaluate"),
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
    bars.close()
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
    }
    per_defect = {}
    for defect in sorted({s.sample.defect for s in scored if s.sample.label}):
        keep = np.array([(not s.sample.label) or s.sample.defect == defect for s in scored])
        if both and (labels[keep] == 0).any():
            per_defect[defect] = auroc(labels[keep], scores[keep])
    metrics["image_auroc_per_defect"] = per_defect
    defect_types = inspector.defect_types
    metrics["pixel_threshold"] = defect_types.threshold if defect_types else None
    metrics["mask_metrics"] = mask_metrics(defect_types, truth_defects, masks, maps) if has_pixels else None
    classes = defect_type_metrics(defect_types, [s.sample.defect for s in scored], [s.small_map for s in scored],
                                  [s.score >= threshold for s in scored])
    predicted = classes.pop("predicted") if classes else None
    metrics["defect_types"] = classes

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
    if both:
        report.plot_roc(labels, scores, out / "roc.png")
        report.plot_pr(labels, scores, out / "pr.png")
    report.plot_score_histogram(labels, scores, threshold, out / "score_histogram.png")
    if has_pixels:
        report.plot_pro(fpr, pro, out / "pro.png")
    if classes:
        report.plot_confusion(classes["labels"], classes["confusion"], out / "confusion.png",
                              f"defect types: accuracy {classes['accuracy']:.3f}, "
                              f"good vs defective {classes['binary_accuracy']:.3f}")
    chosen = _pick_examples(scored, threshold)
    report.plot_examples(_example_items(chosen, inspector.image_size, threshold), out / "examples.png")
    return metrics
