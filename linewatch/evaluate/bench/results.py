"""Bench results as numbers: one row per (category, detector, setting, seed), then means and spreads over seeds,
macro averages over categories, the clean -> shift drop and adaptation recovery, the drop under each shift
transform alone (`shift.ablation`), and the targets.

The mask metrics and defect types (`mask_metrics`, `defect_types`, `defect_types_features`) are read when
present and shown as missing otherwise (cells evaluated before they existed, bundles without masks).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from linewatch.evaluate.bench.config import GLOBAL, BenchConfig

# (key, column title, higher is better)
METRICS: tuple[tuple[str, str, bool], ...] = (
    ("image_auroc", "image AUROC", True),
    ("pixel_auroc", "pixel AUROC", True),
    ("pro", "PRO", True),
    ("f1", "F1", True),
    ("mask_combined", "mask score", True),
    ("types_mask", "type acc. (masks)", True),
    ("types_features", "type acc. (features)", True),
    ("train_s", "train s", False),
    ("inference_ms", "ms/image", False),
    ("peak_mb", "peak MiB", False),
    ("bundle_mb", "bundle MB", False),
)
QUALITY = tuple(key for key, _, better in METRICS if better)
SETTING_ORDER = ("clean", "shift", "adapted")
TARGETS = {"shift": 0.03, "adapted": 0.01, "padim": 0.05}


def _nested(metrics: dict[str, Any], *keys: str) -> float | None:
    value: Any = metrics
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def row_values(metrics: dict[str, Any], train: dict[str, Any] | None) -> dict[str, float | None]:
    """The table's numbers for one evaluation (and the training that produced its bundle, if any)."""
    peaks = [v for v in (metrics.get("peak_rss_mb"), (train or {}).get("peak_rss_mb")) if v is not None]
    return {
        "image_auroc": _nested(metrics, "image_auroc"),
        "pixel_auroc": _nested(metrics, "pixel_auroc"),
        "pro": _nested(metrics, "pro"),
        "f1": _nested(metrics, "f1"),
        "mask_combined": _nested(metrics, "mask_metrics", "combined"),
        "types_mask": _nested(metrics, "defect_types", "accuracy"),
        "types_features": _nested(metrics, "defect_types_features", "accuracy"),
        "train_s": _nested(train or {}, "seconds"),
        "inference_ms": _nested(metrics, "inference_ms_per_image"),
        "peak_mb": max(peaks) if peaks else None,
        "bundle_mb": _nested(train or {}, "bundle_mb"),
    }


def detector_label(result: dict[str, Any]) -> str:
    return f"{result['detector']} (global)" if result["category"] == GLOBAL else result["detector"]


def rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per finished evaluation; a global model contributes a row to each member category."""
    out = []
    for result in results:
        if result.get("status") != "ok":
            continue
        for category, entry in result["evals"].items():
            out.append({"category": category, "detector": detector_label(result), "kind": result["kind"],
                        "setting": result["setting"], "seed": result["seed"], "report": entry["report"],
                        "values": row_values(entry["metrics"], result.get("train")), "metrics": entry["metrics"]})
    return out


def spread(values: list[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value) and the values, ignoring missing ones."""
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "n": 0, "values": []}
    std = statistics.stdev(present) if len(present) > 1 else None
    return {"mean": statistics.fmean(present), "std": std, "n": len(present), "values": present}


def per_category(table_rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], dict[str, dict[str, Any]]]:
    """(category, detector, setting) -> metric -> spread over seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in table_rows:
        groups[(row["category"], row["detector"], row["setting"])].append(row)
    return {key: {m: spread([r["values"][m] for r in sorted(group, key=lambda r: r["seed"])]) for m, _, _ in METRICS}
            for key, group in groups.items()}


def macro(table_rows: list[dict[str, Any]], categories: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """(detector, setting) -> metric -> mean over categories, and its spread over seeds (per-seed macro averages).

    A detector missing a category (not run yet, or failed) gets no macro average for that setting.
    """
    by_key: dict[tuple[str, str], dict[int, dict[str, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for row in table_rows:
        by_key[(row["detector"], row["setting"])][row["seed"]][row["category"]] = row["values"]
    out = {}
    for key, seeds in by_key.items():
        wanted = [c for c in categories if any(c in per_seed for per_seed in seeds.values())]
        if set(wanted) != set(categories) and not key[0].endswith("(global)"):
            continue
        complete = {seed: cats for seed, cats in seeds.items() if set(wanted) <= set(cats)}
        out[key] = {"categories": wanted}
        for metric, _, _ in METRICS:
            per_seed = []
            for cats in complete.values():
                values = [cats[c][metric] for c in wanted]
                per_seed.append(statistics.fmean(values) if all(v is not None for v in values) else None)
            out[key][metric] = spread(per_seed)
    return out


def shift_summary(cells: dict[tuple[str, str, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """Per category and detector: clean, shift, adapted (means over seeds), drop and recovery, for three metrics."""
    out = []
    for category, detector in sorted({(c, d) for c, d, _ in cells}):
        entry: dict[str, Any] = {"category": category, "detector": detector}
        for metric in ("image_auroc", "pixel_auroc", "pro"):
            means = {s: cells.get((category, detector, s), {}).get(metric, {}).get("mean") for s in SETTING_ORDER}
            clean, shifted, adapted = means["clean"], means["shift"], means["adapted"]
            entry[metric] = {
                **means,
                "drop": clean - shifted if clean is not None and shifted is not None else None,
                "recovery": adapted - shifted if adapted is not None and shifted is not None else None,
            }
        out.append(entry)
    return out


def _worst_defects(table_rows: list[dict[str, Any]], category: str, detector: str, setting: str) -> list[str]:
    """Defect types whose image AUROC fell most from clean to `setting` (first seed), as 'type 0.98->0.91'."""
    def per_defect(wanted: str) -> dict[str, float]:
        for row in sorted(table_rows, key=lambda r: r["seed"]):
            if (row["category"], row["detector"], row["setting"]) == (category, detector, wanted):
                return row["metrics"].get("image_auroc_per_defect") or {}
        return {}

    clean, other = per_defect("clean"), per_defect(setting)
    drops = sorted(((clean[d] - other[d], d) for d in clean if d in other), reverse=True)
    return [f"{d} {clean[d]:.3f}->{other[d]:.3f}" for drop, d in drops[:2] if drop > 0.005]


def ablation(ablation_rows: list[dict[str, Any]], cells: dict[tuple[str, str, str], dict[str, Any]],
             categories: list[str], detectors: list[str]) -> list[dict[str, Any]]:
    """Per category and detector with `shift.ablation`: image AUROC clean, under each transform group alone and
    under the full shift (first seed: the clean bundle the ablation cells scored)."""
    groups: dict[tuple[str, str], dict[str, float | None]] = defaultdict(dict)
    for row in sorted(ablation_rows, key=lambda r: r["seed"], reverse=True):  # the first seed wins
        groups[(row["category"], row["detector"])][row["setting"].removeprefix("shift-")] = row["values"]["image_auroc"]
    out = []
    def position(key: tuple[str, str]) -> tuple[int, int]:  # the config's order of categories, then detectors
        category, detector = key
        return (categories.index(category) if category in categories else len(categories),
                detectors.index(detector) if detector in detectors else len(detectors))

    for (category, detector), values in sorted(groups.items(), key=lambda kv: position(kv[0])):
        clean = cells.get((category, detector, "clean"), {}).get("image_auroc", {}).get("values") or [None]
        shifted = cells.get((category, detector, "shift"), {}).get("image_auroc", {}).get("values") or [None]
        out.append({"category": category, "detector": detector, "clean": clean[0], "shift": shifted[0],
                    "groups": values})
    return out


def _causes(entries: list[dict[str, Any]], category: str, detector: str) -> list[str]:
    """The transform groups that alone cost the most image AUROC, as 'rotation alone 0.944->0.740'."""
    entry = next((e for e in entries if (e["category"], e["detector"]) == (category, detector)), None)
    if entry is None or entry["clean"] is None:
        return []
    drops = sorted(((entry["clean"] - v, g) for g, v in entry["groups"].items() if v is not None), reverse=True)
    return [f"{g} alone {entry['clean']:.3f}->{entry['groups'][g]:.3f}" for drop, g in drops[:2] if drop > 0.005]


def targets(config: BenchConfig, table_rows: list[dict[str, Any]], cells: dict[tuple[str, str, str], dict[str, Any]],
            ablated: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The issue's checks per category: PatchCore shift/adapted vs clean, PaDiM under shift vs PatchCore; where
    the grid has `shift.ablation`, each check also names the transforms that alone cost the most."""
    ablated = ablated or []
    kinds = {d.name: d.kind for d in config.detectors}
    patchcore = next((name for name, kind in kinds.items() if kind == "patchcore"), None)
    padim = next((name for name, kind in kinds.items() if kind == "padim"), None)

    def mean(category: str, detector: str | None, setting: str) -> float | None:
        return cells.get((category, detector or "", setting), {}).get("image_auroc", {}).get("mean")

    checks = []
    for entry in config.categories:
        category = entry.name
        clean = mean(category, patchcore, "clean")
        for setting, limit in (("shift", TARGETS["shift"]), ("adapted", TARGETS["adapted"])):
            value = mean(category, patchcore, setting)
            if clean is None or value is None:
                continue
            gap = clean - value
            checks.append({"category": category, "check": f"PatchCore {setting} within {limit} of clean",
                           "value": value, "reference": clean, "gap": gap, "limit": limit, "met": gap <= limit,
                           "worst_defects": _worst_defects(table_rows, category, patchcore or "", setting),
                           "causes": _causes(ablated, category, patchcore or "")})
        pc_shift, pd_shift = mean(category, patchcore, "shift"), mean(category, padim, "shift")
        if pc_shift is not None and pd_shift is not None:
            gap = pc_shift - pd_shift
            checks.append({"category": category, "check": f"PaDiM shift at most {TARGETS['padim']} below PatchCore",
                           "value": pd_shift, "reference": pc_shift, "gap": gap, "limit": TARGETS["padim"],
                           "met": gap <= TARGETS["padim"],
                           "worst_defects": _worst_defects(table_rows, category, padim or "", "shift"),
                           "causes": _causes(ablated, category, padim or "")})
    return checks


def summarise(config: BenchConfig, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything the report shows, as plain data (also written as results.json)."""
    every_row = rows(results)
    table_rows = [r for r in every_row if r["setting"] in SETTING_ORDER]
    cells = per_category(table_rows)
    categories = [c.name for c in config.categories]
    ablated = ablation([r for r in every_row if r["setting"] not in SETTING_ORDER], cells, categories,
                       [d.name for d in config.detectors])
    return {"rows": table_rows, "cells": cells, "macro": macro(table_rows, categories),
            "shift": shift_summary(cells), "ablation": ablated, "targets": targets(config, table_rows, cells, ablated),
            "failed": [{"id": r["id"], "error": r.get("error")} for r in results if r.get("status") != "ok"]}
