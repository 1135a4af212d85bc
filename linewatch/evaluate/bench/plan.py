"""From a bench config to data on disk and a list of cells.

Data prepared once per output folder (and reused when it is already there):
- `splits/<category>.json`: the one seeded split every cell of the category uses; the shifted copy has
  the same relative paths, so the same file splits it too (the shifted set is the clean split transformed);
- `shifted/<category>/`: `inspect-shift`'s output;
- `ablation/<category>/<group>/` (with `shift.ablation`): test/ under one group of the shift's transforms
  alone, each image with its full-shift draw of that group (`linewatch.data.shift.restrict`);
- `pooled/<clean|shifted>/`: the global model's category: symlinks named `<category>__<file>` for good
  images and `<category>__<defect>` folders for defects, with its split = the union of the members' splits.
Cells (`cells/<category>/<detector>/<setting>-s<seed>/`): clean (train on train-clean, calibrate on
val-clean, test on test-clean), shift (the clean cell's bundle on test-shift: no training) and adapted
(train on train-shift, calibrate on val-shift, test on test-shift); with `shift.ablation`, `shift-<group>`
(the clean cell's bundle on the ablation copy: which transform costs what).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from linewatch.data import Category, Splits, make_splits, scan_category
from linewatch.data.shift import SINGLE_GROUPS, ensure_shifted
from linewatch.evaluate.bench.cell import fingerprint
from linewatch.evaluate.bench.config import GLOBAL, BenchConfig

SEP = "__"


def _write_splits(category: Category, seed: int, path: Path) -> Splits:
    splits = make_splits(category, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        splits.to_json(path)
    return splits


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        os.symlink(target, link)


def _pool(members: dict[str, Path], member_splits: dict[str, Splits], out: Path, splits_file: Path) -> None:
    """A category of symlinks to every member's images, and the union of the members' splits."""
    pooled_rel: dict[tuple[str, str], str] = {}
    for name, root in members.items():
        category = scan_category(root)
        for sample in (*category.train, *category.test):
            top, folder, file = sample.rel.split("/")
            rel = f"{top}/{folder}/{name}{SEP}{file}" if top == "train" else f"{top}/{name}{SEP}{folder}/{file}"
            _link(sample.path, out / rel)
            if sample.mask is not None:
                _link(sample.mask, out / "ground_truth" / f"{name}{SEP}{folder}" / sample.mask.name)
            pooled_rel[(name, sample.rel)] = rel
    if splits_file.is_file():
        return
    pooled = scan_category(out)
    by_rel = {s.rel: s for s in (*pooled.train, *pooled.test)}
    parts = {part: sorted((by_rel[pooled_rel[(name, s.rel)]] for name, splits in member_splits.items()
                           for s in getattr(splits, part)), key=lambda s: s.rel)
             for part in ("train", "val", "test")}
    Splits(next(iter(member_splits.values())).seed, **parts).to_json(splits_file)


def _examples(splits: Splits, count: int) -> list[str]:
    """The first test image (by path) of each defect type with a mask, up to `count` - 1, then one good image."""
    chosen, seen = [], set()
    for sample in splits.test:
        if sample.label and sample.mask is not None and sample.defect not in seen and len(chosen) < count - 1:
            chosen.append(sample.rel)
            seen.add(sample.defect)
    goods = [s.rel for s in splits.test if not s.label]
    return chosen + goods[:1]


def prepare(config: BenchConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Write splits, shifted and pooled categories under `out`; return where everything is."""
    data: dict[str, dict[str, Any]] = {}
    shifting = {"shift", "adapted"} & set(config.settings)
    if config.global_model:
        shifting |= {"shift", "adapted"} & set(config.global_model.settings)
    for entry in config.categories:
        category = scan_category(entry.data)
        splits_file = out / "splits" / f"{entry.name}.json"
        splits = _write_splits(category, config.split_seed, splits_file)
        shifted = out / "shifted" / entry.name
        if shifting:
            ensure_shifted(entry.data, shifted, config.shift_seed, config.vignetting, progress=progress)
        data[entry.name] = {"clean": entry.data, "shifted": shifted, "splits_file": splits_file, "splits": splits,
                            "examples": _examples(splits, config.examples), "ablation": {}}
        for group in ablation_groups(config) if config.ablation else ():
            folder = out / "ablation" / entry.name / group
            ensure_shifted(entry.data, folder, config.shift_seed, config.vignetting, group, progress)
            data[entry.name]["ablation"][group] = folder
    if config.global_model:
        members = config.global_model.categories
        for domain in ("clean", "shifted") if shifting else ("clean",):
            pooled, splits_file = out / "pooled" / domain, out / "splits" / f"{GLOBAL}-{domain}.json"
            _pool({m: data[m][domain] for m in members}, {m: data[m]["splits"] for m in members}, pooled,
                  splits_file)
            data[f"{GLOBAL}-{domain}"] = {"data": pooled, "splits_file": splits_file}
    return data


def ablation_groups(config: BenchConfig) -> tuple[str, ...]:
    """The shift's transform groups, one at a time (vignetting too where the shift has it)."""
    return (*SINGLE_GROUPS, "vignetting") if config.vignetting else SINGLE_GROUPS


def _ablation_cells(config: BenchConfig, out: Path, category: str, detector: str, clean: dict[str, Any],
                    folders: dict[str, Path], split: str) -> list[dict[str, Any]]:
    """The clean cell's bundle on each one-group copy of test (no training), after that cell."""
    cells = []
    for group, folder in folders.items():
        cell = _cell(config, out, category, detector, f"shift-{group}", clean["seed"], clean["options"], None,
                     Path(clean["bundle"]), [{"category": category, "data": str(folder), "splits": split}], {})
        cell.update(upstream=clean["fingerprint"], depends=clean["id"])
        cell["fingerprint"] = fingerprint(cell)
        cells.append(cell)
    return cells


def _cell(config: BenchConfig, out: Path, category: str, detector: str, setting: str, seed: int,
          options: dict[str, Any], train: tuple[Path, Path] | None, bundle: Path,
          evals: list[dict[str, str]], examples: dict[str, list[str]]) -> dict[str, Any]:
    entry = config.detector(detector)
    folder = out / "cells" / category / detector / f"{setting}-s{seed}"
    cell = {
        "id": f"{category}/{detector}/{setting}/seed{seed}", "category": category, "detector": detector,
        "kind": entry.kind, "setting": setting, "seed": seed, "options": options, "folder": str(folder),
        "train_data": str(train[0]) if train else None, "splits": str(train[1]) if train else None,
        "bundle": str(bundle), "evals": evals, "examples": examples, "batch_size": config.batch_size,
        "upstream": None, "depends": None,
    }
    return cell


def _settings_cells(config: BenchConfig, out: Path, category: str, detector: str, seed: int,
                    options: dict[str, Any], settings: tuple[str, ...], train: dict[str, tuple[Path, Path]],
                    evals: dict[str, list[dict[str, str]]], examples: dict[str, list[str]]) -> list[dict[str, Any]]:
    """clean / shift / adapted cells of one (category, detector, seed); shift reuses the clean bundle."""
    cells: dict[str, dict[str, Any]] = {}
    folder = out / "cells" / category / detector
    for setting in ("clean", "adapted"):
        if setting in settings or (setting == "clean" and "shift" in settings):
            cells[setting] = _cell(config, out, category, detector, setting, seed, options, train[setting],
                                   folder / f"{setting}-s{seed}" / "bundle", evals[setting], examples)
    if "shift" in settings:
        clean = cells["clean"]
        clean["fingerprint"] = fingerprint(clean)
        shift = _cell(config, out, category, detector, "shift", seed, options, None, Path(clean["bundle"]),
                      evals["shift"], examples)
        shift.update(upstream=clean["fingerprint"], depends=clean["id"])
        cells["shift"] = shift
    ordered = [cells[s] for s in ("clean", "shift", "adapted") if s in cells]
    for cell in ordered:
        cell["fingerprint"] = fingerprint(cell)
    return ordered


def plan(config: BenchConfig, out: Path, data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every cell of the grid, detector by detector (the first detectors' results are complete first), each
    clean cell before the shift cell that reuses its bundle."""
    cells: list[dict[str, Any]] = []
    for detector in config.detectors:
        for entry in config.categories:
            where = data[entry.name]
            split = str(where["splits_file"])
            train = {"clean": (entry.data, where["splits_file"]), "adapted": (where["shifted"], where["splits_file"])}
            evals = {"clean": [{"category": entry.name, "data": str(entry.data), "splits": split}],
                     "shift": [{"category": entry.name, "data": str(where["shifted"]), "splits": split}]}
            evals["adapted"] = evals["shift"]
            options = {**detector.options, **entry.options.get(detector.name, {})}
            for seed in detector.seeds:
                cells += _settings_cells(config, out, entry.name, detector.name, seed, options, config.settings,
                                         train, evals, {entry.name: where["examples"]})
                if detector.name in config.ablation and seed == detector.seeds[0]:
                    clean = next(c for c in cells if c["id"] == f"{entry.name}/{detector.name}/clean/seed{seed}")
                    cells += _ablation_cells(config, out, entry.name, detector.name, clean, where["ablation"], split)
    model = config.global_model
    if model:
        members = model.categories
        domains = {"clean": "clean", "shift": "shifted", "adapted": "shifted"}
        evals = {setting: [{"category": m, "data": str(data[m][domain]), "splits": str(data[m]["splits_file"])}
                           for m in members] for setting, domain in domains.items()}
        train = {setting: (data[f"{GLOBAL}-{domain}"]["data"], data[f"{GLOBAL}-{domain}"]["splits_file"])
                 for setting, domain in domains.items() if f"{GLOBAL}-{domain}" in data}
        examples = {m: data[m]["examples"] for m in members}
        for name in model.detectors:
            detector = config.detector(name)
            for seed in detector.seeds:
                cells += _settings_cells(config, out, GLOBAL, name, seed,
                                         {**detector.options, **model.options.get(name, {})}, model.settings,
                                         train, evals, examples)
    return cells
