"""The report's tables as (title, header, rows of strings): one source for the Markdown and the HTML report."""

from __future__ import annotations

from typing import Any

from linewatch.evaluate.bench.config import BenchConfig
from linewatch.evaluate.bench.results import METRICS, SETTING_ORDER

Table = tuple[str, list[str], list[list[str]]]
MISSING = "-"


def number(value: float | None, digits: int = 4) -> str:
    return MISSING if value is None else f"{value:.{digits}f}"


def _digits(metric: str) -> int:
    return {"train_s": 1, "inference_ms": 1, "peak_mb": 0, "bundle_mb": 2}.get(metric, 4)


def cell_text(spread: dict[str, Any] | None, metric: str) -> str:
    """'mean ± std' over seeds, 'mean' for one seed, '-' when absent."""
    if not spread or spread.get("mean") is None:
        return MISSING
    digits = _digits(metric)
    text = number(spread["mean"], digits)
    return f"{text} ± {number(spread['std'], digits)}" if spread.get("std") is not None else text


def _signed(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.4f}"


def _detectors(summary: dict[str, Any]) -> list[str]:
    seen: dict[str, None] = {}
    for row in summary["rows"]:
        seen.setdefault(row["detector"], None)
    return list(seen)


def category_tables(config: BenchConfig, summary: dict[str, Any]) -> list[Table]:
    """One table per category: detector x setting rows, every metric, mean ± std over seeds."""
    header = ["detector", "setting", "seeds", *(title for _, title, _ in METRICS)]
    tables = []
    for entry in config.categories:
        body = []
        for detector in _detectors(summary):
            for setting in SETTING_ORDER:
                cell = summary["cells"].get((entry.name, detector, setting))
                if cell:
                    seeds = str(max(v["n"] for v in cell.values()))
                    body.append([detector, setting, seeds, *(cell_text(cell[m], m) for m, _, _ in METRICS)])
        if body:
            tables.append((f"{entry.name}", header, body))
    return tables


def macro_table(summary: dict[str, Any]) -> Table:
    header = ["detector", "setting", "categories", *(title for _, title, _ in METRICS)]
    body = []
    for detector in _detectors(summary):
        for setting in SETTING_ORDER:
            entry = summary["macro"].get((detector, setting))
            if entry:
                body.append([detector, setting, str(len(entry["categories"])),
                             *(cell_text(entry[m], m) for m, _, _ in METRICS)])
    return "Macro averages over categories (mean ± std over seeds)", header, body


def shift_table(summary: dict[str, Any]) -> Table:
    header = ["category", "detector", "clean", "shift", "adapted", "drop (clean - shift)",
              "recovery (adapted - shift)", "pixel AUROC drop", "PRO drop"]
    body = [[e["category"], e["detector"], number(e["image_auroc"]["clean"]), number(e["image_auroc"]["shift"]),
             number(e["image_auroc"]["adapted"]), _signed(e["image_auroc"]["drop"]),
             _signed(e["image_auroc"]["recovery"]), _signed(e["pixel_auroc"]["drop"]), _signed(e["pro"]["drop"])]
            for e in summary["shift"]]
    return "Domain shift: image AUROC per setting, drop without adaptation and recovery with it", header, body


def targets_table(summary: dict[str, Any]) -> Table:
    header = ["category", "check", "value", "reference", "gap", "limit", "result", "largest per-defect drops"]
    ablated = bool(summary.get("ablation"))
    if ablated:
        header.append("costliest transforms alone")
    body = [[t["category"], t["check"], number(t["value"]), number(t["reference"]), _signed(t["gap"]),
             f"{t['limit']}", "met" if t["met"] else f"MISSED by {t['gap'] - t['limit']:.4f}",
             "; ".join(t["worst_defects"]) or MISSING]
            + (["; ".join(t.get("causes") or []) or MISSING] if ablated else []) for t in summary["targets"]]
    return "Targets (image AUROC)", header, body


def ablation_table(summary: dict[str, Any]) -> Table:
    """Image AUROC of each clean model under each group of the shift's transforms alone."""
    entries = summary.get("ablation") or []
    groups = list(dict.fromkeys(g for e in entries for g in e["groups"]))
    header = ["category", "detector", "clean", *(f"{g} alone" for g in groups), "full shift"]
    body = [[e["category"], e["detector"], number(e["clean"]), *(number(e["groups"].get(g)) for g in groups),
             number(e["shift"])] for e in entries]
    return "Which transform costs what: image AUROC under each shift transform alone (same draws)", header, body


def seeds_table(summary: dict[str, Any]) -> Table:
    """Every seed's image AUROC where a detector ran more than one seed: the stability comparison."""
    header = ["category", "detector", "setting", "image AUROC per seed", "mean ± std", "range"]
    body = []
    for (category, detector, setting), cell in sorted(summary["cells"].items()):
        values = cell["image_auroc"]["values"]
        if len(values) > 1:
            body.append([category, detector, setting, ", ".join(f"{v:.4f}" for v in values),
                         cell_text(cell["image_auroc"], "image_auroc"), f"{max(values) - min(values):.4f}"])
    return "Seed spread (image AUROC)", header, body


def all_tables(config: BenchConfig, summary: dict[str, Any]) -> list[Table]:
    ablated = [ablation_table(summary)] if summary.get("ablation") else []
    return [macro_table(summary), shift_table(summary), targets_table(summary), *ablated, seeds_table(summary),
            *category_tables(config, summary)]


def markdown(table: Table) -> str:
    title, header, body = table
    lines = [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}"]
    lines += [f"| {' | '.join(row)} |" for row in body]
    return "\n".join(lines) if body else "(nothing to show yet)"
