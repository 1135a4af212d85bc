"""The bench report's figures (PNG, matplotlib Agg): overlaid ROC / PR / PRO curves per category, per-category
bars, the shift chart, the transform ablation, an examples grid, confusion matrices and the seed spread.

Curves, examples and confusion matrices show each detector's first seed; bars carry the seed spread.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from linewatch.data import read_image, read_mask
from linewatch.evaluate.bench.config import BenchConfig
from linewatch.evaluate.bench.results import SETTING_ORDER
from linewatch.evaluate.report import _figure, draw_confusion
from linewatch.metrics import pr_curve, roc_curve
from linewatch.overlay import overlay_heatmap

STYLES = {"clean": "-", "shift": "--", "adapted": ":"}
SETTING_COLOURS = {"clean": "tab:blue", "shift": "tab:red", "adapted": "tab:green"}
THUMB = 128


def _first_rows(summary: dict[str, Any], category: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(detector, setting) -> the row of the lowest seed."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in sorted(summary["rows"], key=lambda r: r["seed"]):
        if row["category"] == category:
            out.setdefault((row["detector"], row["setting"]), row)
    return out


def _detectors(summary: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(row["detector"] for row in summary["rows"]))


def _colours(detectors: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {d: cmap(i % 10) for i, d in enumerate(detectors)}


def _scores(report: Path) -> tuple[np.ndarray, np.ndarray]:
    with open(report / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    return np.array([int(r["label"]) for r in rows]), np.array([float(r["score"]) for r in rows])


def curves(summary: dict[str, Any], category: str, path: Path) -> Path | None:
    rows = _first_rows(summary, category)
    if not rows:
        return None
    colours = _colours(_detectors(summary))
    with _figure(path, 1, 3, figsize=(15.0, 4.6)) as axes:
        roc, pr, pro = axes[0]
        for (detector, setting), row in rows.items():
            report, style = Path(row["report"]), dict(color=colours[detector], ls=STYLES[setting], lw=1.6)
            label = f"{detector} {setting}"
            labels, scores = _scores(report)
            if 0 < labels.sum() < len(labels):
                fpr, tpr, _ = roc_curve(labels, scores)
                roc.plot(fpr, tpr, label=label, **style)
                precision, recall, _ = pr_curve(labels, scores)
                pr.step(np.append(0.0, recall), np.append(precision[0], precision), where="pre", label=label, **style)
            if (report / "pro_curve.csv").is_file():
                curve = np.loadtxt(report / "pro_curve.csv", delimiter=",", skiprows=1, ndmin=2)
                pro.plot(curve[:, 0], curve[:, 1], label=label, **style)
        roc.set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"{category}: ROC", xlim=(0, 1))
        pr.set(xlabel="recall", ylabel="precision", title=f"{category}: precision-recall", xlim=(0, 1))
        pro.set(xlabel="pixel false-positive rate", ylabel="per-region overlap", title=f"{category}: PRO",
                xlim=(0, 0.3))
        pro.legend(fontsize=7, loc="lower right")
    return path


def _bars(ax: Any, groups: list[str], series: list[str], values: dict[tuple[str, str], dict[str, Any]],
          colours: dict[str, Any]) -> None:
    width = 0.8 / max(1, len(series))
    for i, name in enumerate(series):
        means = [values.get((g, name), {}).get("mean") or 0.0 for g in groups]
        stds = [values.get((g, name), {}).get("std") or 0.0 for g in groups]
        ax.bar(np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width, means, width, yerr=stds, capsize=2,
               label=name, color=colours[name])
    ax.set_xticks(np.arange(len(groups)), groups, rotation=20, fontsize=8)


def category_bars(config: BenchConfig, summary: dict[str, Any], path: Path) -> Path | None:
    detectors = _detectors(summary)
    if not detectors:
        return None
    categories = [c.name for c in config.categories]
    colours = _colours(detectors)
    metrics = (("image_auroc", "image AUROC"), ("pixel_auroc", "pixel AUROC"), ("pro", "PRO"))
    with _figure(path, 1, 3, figsize=(16.0, 4.4)) as axes:
        for ax, (metric, title) in zip(axes[0], metrics, strict=True):
            values = {(c, d): summary["cells"].get((c, d, "clean"), {}).get(metric, {}) for c in categories
                      for d in detectors}
            _bars(ax, categories, detectors, values, colours)
            ax.set(title=f"{title}, clean (error bars: std over seeds)", ylim=(0, 1.05))
        axes[0][0].legend(fontsize=7, loc="lower left")
    return path


def shift_chart(config: BenchConfig, summary: dict[str, Any], path: Path) -> Path | None:
    detectors = _detectors(summary)
    if not detectors:
        return None
    categories = [c.name for c in config.categories]
    with _figure(path, 1, len(categories), figsize=(4.6 * len(categories), 4.4)) as axes:
        for ax, category in zip(axes[0], categories, strict=True):
            values = {(d, s): summary["cells"].get((category, d, s), {}).get("image_auroc", {})
                      for d in detectors for s in SETTING_ORDER}
            _bars(ax, detectors, list(SETTING_ORDER), values, SETTING_COLOURS)
            ax.set(title=f"{category}: image AUROC", ylim=(0, 1.05))
        axes[0][0].legend(fontsize=7, loc="lower left")
    return path


def ablation_chart(summary: dict[str, Any], path: Path) -> Path | None:
    """Per category and detector: image AUROC under each shift transform alone, between clean and full shift."""
    entries = summary.get("ablation") or []
    if not entries:
        return None
    with _figure(path, 1, len(entries), figsize=(4.6 * len(entries), 4.4)) as axes:
        for ax, entry in zip(axes[0], entries, strict=True):
            groups = list(entry["groups"])
            ax.bar(range(len(groups)), [entry["groups"][g] or 0.0 for g in groups], color="tab:orange")
            for value, style, label in ((entry["clean"], "-", "clean"), (entry["shift"], "--", "full shift")):
                if value is not None:
                    ax.axhline(value, color="k", ls=style, lw=1.2, label=f"{label} {value:.3f}")
            ax.set_xticks(range(len(groups)), groups, rotation=20, fontsize=8)
            shown = [v for v in (*entry["groups"].values(), entry["clean"], entry["shift"]) if v is not None]
            bottom = max(0.0, min(shown, default=0.0) - 0.1)  # differences of a few hundredths stay visible
            ax.set(title=f"{entry['category']}, {entry['detector']}: image AUROC", ylim=(bottom, 1.02))
            ax.legend(fontsize=7, loc="lower left")
    return path


def _thumb(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (THUMB, THUMB), interpolation=cv2.INTER_AREA)


def examples_grid(summary: dict[str, Any], category: str, path: Path) -> Path | None:
    """Per example: the clean image and the shifted one, ground truth, and every detector's normalised map
    (colour scale 0..1, region threshold at 0.5) from the clean and the shift setting."""
    rows = _first_rows(summary, category)
    detectors = [d for d in _detectors(summary) if (d, "clean") in rows]
    settings = [s for s in ("clean", "shift") if any((d, s) in rows for d in detectors)]
    if not detectors:
        return None
    first = rows[(detectors[0], "clean")]
    rels = json.loads((Path(first["report"]) / "examples" / "examples.json").read_text())
    lines = [(rel, i, s) for i, rel in enumerate(rels) for s in settings]
    with _figure(path, len(lines), 2 + len(detectors), figsize=(1.9 * (2 + len(detectors)), 1.9 * len(lines))) as axes:
        for ax_row, (rel, index, setting) in zip(axes, lines, strict=True):
            data = Path(rows[(detectors[0], setting)]["metrics"]["data"])
            image = read_image(data / rel)
            ax_row[0].imshow(_thumb(image))
            ax_row[0].set_title(f"{setting}: {rel.split('/', 1)[1]}", fontsize=6)
            mask_file = next(iter((data / "ground_truth" / rel.split("/")[1]).glob(Path(rel).stem + "_mask.*")), None)
            mask = read_mask(mask_file, image.shape[:2]) if mask_file else np.zeros(image.shape[:2], bool)
            ax_row[1].imshow(_thumb(mask.astype(np.uint8) * 255), cmap="gray", vmin=0, vmax=255)
            ax_row[1].set_title("ground truth", fontsize=6)
            for ax, detector in zip(ax_row[2:], detectors, strict=True):
                row = rows.get((detector, setting))
                map_file = Path(row["report"]) / "examples" / f"{index:02d}.npy" if row else None
                if map_file and map_file.is_file():
                    amap = np.load(map_file, allow_pickle=False).astype(np.float32)
                    ax.imshow(overlay_heatmap(_thumb(image), amap, 0.0, 1.0))
                ax.set_title(detector, fontsize=6)
            for ax in ax_row:
                ax.axis("off")
    return path


def confusion_matrices(summary: dict[str, Any], category: str, path: Path) -> Path | None:
    """Defect-type confusion (rows = truth) of each detector's classifiers, clean setting, first seed."""
    panels = []
    for (detector, setting), row in _first_rows(summary, category).items():
        for key, name in (("defect_types", "masks"), ("defect_types_features", "features")):
            section = row["metrics"].get(key)
            if setting == "clean" and section and section.get("confusion"):
                panels.append((f"{detector} ({name}): acc {section['accuracy']:.2f}", section))
    if not panels:
        return None
    with _figure(path, 1, len(panels), figsize=(3.6 * len(panels), 3.6)) as axes:
        for ax, (title, section) in zip(axes[0], panels, strict=True):
            draw_confusion(ax, section["labels"], section["confusion"], fontsize=6)
            ax.set_title(title, fontsize=7)
    return path


def seed_spread(config: BenchConfig, summary: dict[str, Any], path: Path) -> Path | None:
    """Image AUROC of every seed, per category, for detectors run with several seeds."""
    multi = [(c, d, s) for (c, d, s), cell in summary["cells"].items() if cell["image_auroc"]["n"] > 1]
    if not multi:
        return None
    categories = [c.name for c in config.categories if any(m[0] == c.name for m in multi)]
    with _figure(path, 1, len(categories), figsize=(4.6 * len(categories), 4.0)) as axes:
        for ax, category in zip(axes[0], categories, strict=True):
            keys = sorted((d, s) for c, d, s in multi if c == category)
            for x, (detector, setting) in enumerate(keys):
                values = summary["cells"][(category, detector, setting)]["image_auroc"]["values"]
                ax.scatter([x] * len(values), values, color=SETTING_COLOURS[setting], s=18)
                ax.errorbar(x + 0.15, np.mean(values), yerr=np.std(values, ddof=1), fmt="_", color="black")
            ax.set_xticks(range(len(keys)), [f"{d}\n{s}" for d, s in keys], rotation=30, fontsize=6)
            ax.set(title=f"{category}: image AUROC per seed", ylim=(0, 1.05))
    return path


def all_figures(config: BenchConfig, summary: dict[str, Any], folder: Path) -> list[tuple[str, Path]]:
    """Draw every figure the results allow; (title, path) in report order."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = [("Image AUROC, pixel AUROC and PRO per category", category_bars(config, summary, folder / "bars.png")),
              ("Domain shift: clean, shift without adaptation, adapted", shift_chart(config, summary,
                                                                                    folder / "shift.png")),
              ("Which transform costs what: image AUROC under each shift transform alone",
               ablation_chart(summary, folder / "ablation.png")),
              ("Seed spread", seed_spread(config, summary, folder / "seeds.png"))]
    for entry in config.categories:
        name = entry.name
        wanted += [(f"{name}: ROC / PR / PRO curves (solid clean, dashed shift, dotted adapted)",
                    curves(summary, name, folder / f"curves-{name}.png")),
                   (f"{name}: examples", examples_grid(summary, name, folder / f"examples-{name}.png")),
                   (f"{name}: defect-type confusion matrices", confusion_matrices(summary, name,
                                                                                  folder / f"confusion-{name}.png"))]
    return [(title, path) for title, path in wanted if path is not None]
