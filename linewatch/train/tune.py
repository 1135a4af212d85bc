"""`inspect-train --tune`: choose a feature-memory detector's configuration on val-clean, never on test-clean.

The search is staged so a budget of minutes covers it:
1. features: each backbone (`BACKBONES`) x input size (`SIZES`, deduplicated once `auto` is resolved) x
   alignment (`FeatureSearch.aligns`) x the detector's layer sets (`FeatureSearch.layers`), its other
   options at their defaults;
2. detector: the detector's grid (`FeatureSearch.grid`: PatchCore coreset ratio x projection, PaDiM pool x
   radius) on the best features of stage 1.
Backbone outputs are extracted once per (backbone, input size, alignment) and reused by every candidate of it.
`--intensity auto` is decided once, from train-clean's lighting (`auto_intensity`), not searched: val-clean's good
images share the training lighting, so it cannot rank a lighting change.
Ranking: val-clean image AUROC; candidates within `AUROC_TIE` of the best are ties, broken by the mean of
val pixel AUROC and PRO (within `PIXEL_TIE`), then by speed (backbone + scoring ms per image).
Options given explicitly (command line or config file) are held fixed. A candidate whose estimated cost
(measured costs so far, scaled) would overrun the budget, counting the final training, is skipped and
listed as such. The winner is then trained by the normal pipeline: the tuned bundle is an ordinary bundle
whose manifest carries a `tuning` section (space, table, choice).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from linewatch.config import ConfigError, parse_size
from linewatch.data import DataError, make_splits, scan_category
from linewatch.features.catalog import LAYER_STRIDES
from linewatch.features.geometry import resolve_image_size
from linewatch.models.components.feature_memory import memory_transforms, resolve_input
from linewatch.models.registry import get_spec
from linewatch.progress import Bars
from linewatch.train.blur import map_choice
from linewatch.train.tune_cache import StageCache, evaluate, extract, layers_needed

log = logging.getLogger(__name__)
BACKBONES = ("efficientnet_lite0", "efficientnet_lite2")
SIZES = ("256", "auto:256", "320", "384")
AUROC_TIE = 0.002
PIXEL_TIE = 0.005
DEFAULT_BUDGET_MIN = 10.0
BACKBONE_COST = {"efficientnet_lite0": 1.0, "efficientnet_lite2": 2.2}  # prior, until both are measured
# Bundle writing, calibration plots, process start, and a margin for the estimates: with 10 s magnetic tile's
# search and final training ended at 603 s of a 600 s budget.
FINAL_OVERHEAD_S = 20.0
VAL_GOODS_FIT_FACTOR = 4.2  # see _final_seconds


Best = tuple[dict[str, Any], StageCache, dict[str, Any]]  # (row, its cache, its candidate options)


@dataclass
class TuneResult:
    options: dict[str, Any]  # the chosen configuration, ready for `train`
    rows: list[dict[str, Any]]
    seconds: float
    section: dict[str, Any] = field(default_factory=dict)  # the manifest's `tuning` section


def _key(row: dict[str, Any]) -> tuple[float, float]:
    pixel = [v for v in (row["pixel_auroc"], row["pro"]) if v is not None]
    return row["image_auroc"], sum(pixel) / len(pixel) if pixel else 0.0


def choose(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Best image AUROC; ties (within AUROC_TIE) go to pixel metrics (within PIXEL_TIE), then speed."""
    done = [r for r in rows if r["status"] in ("done", "chosen")]
    if not done:
        raise RuntimeError("no tuning candidate was evaluated (is the budget too small?)")
    top = max(_key(r)[0] for r in done)
    tied = [r for r in done if _key(r)[0] >= top - AUROC_TIE]
    best_pixel = max(_key(r)[1] for r in tied)
    tied = [r for r in tied if _key(r)[1] >= best_pixel - PIXEL_TIE]
    return min(tied, key=lambda r: r["ms_per_image"])


class Search:
    """The candidates, the caches and the clock of one tuning run."""

    def __init__(self, options: dict[str, Any], pinned: set[str], budget_s: float, bars: Bars) -> None:
        self.kind = options["model"]
        self.search = get_spec(self.kind).search
        if self.search is None:
            tunable = [s for s in ("patchcore", "padim") if get_spec(s).search is not None]
            raise ConfigError(f"--tune searches feature-memory detectors ({', '.join(tunable)}), not {self.kind!r}")
        self.pinned, self.budget_s, self.bars = pinned, budget_s, bars
        category = scan_category(options["data"])
        self.splits = make_splits(category, seed=options["seed"])
        if not any(s.label for s in self.splits.val):
            raise DataError(f"{category.root}: val-clean holds no defective image, so --tune has nothing to rank "
                            f"by; it needs defects under test/<type>/")
        self.options, self.decided = resolve_input(options, self.splits.train)  # `auto` input options
        self.start = time.perf_counter()
        self.rows: list[dict[str, Any]] = []
        self.ms_per_pixel: dict[str, float] = {}  # backbone -> extraction ms per image per input pixel

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def groups(self) -> list[tuple[str, tuple[int, int], str, str]]:
        """(backbone, size, size rule, alignment) in search order, duplicates (auto == square) removed."""
        backbones = (self.options["backbone"],) if "backbone" in self.pinned else BACKBONES
        rules = (self.options["image_size"],) if "image_size" in self.pinned else tuple(
            parse_size(s, "tune") for s in SIZES)
        sizes: dict[tuple[int, int], str] = {}
        for rule in rules:
            resolved, _ = resolve_image_size({**self.options, "image_size": rule}, self.splits.train)
            sizes.setdefault(tuple(resolved["image_size"]), str(rule) if not isinstance(rule, tuple)
                             else "x".join(map(str, rule)))
        aligns = (self.options["align"],) if "align" in self.pinned else self.search.aligns
        order = sorted(itertools.product(backbones, sizes, aligns),
                       key=lambda g: (BACKBONE_COST.get(g[0], 2) * g[1][0] * g[1][1], aligns.index(g[2])))
        return [(b, s, sizes[s], a) for b, s, a in order]

    def layer_sets(self) -> tuple[tuple[str, ...], ...]:
        if "layers" in self.pinned:
            return (tuple(self.options["layers"]),)
        return self.search.layers

    def grid(self, base: dict[str, Any]) -> list[dict[str, Any]]:
        keys = [k for k in self.search.grid if k not in self.pinned]
        combos = itertools.product(*(self.search.grid[k] for k in keys))
        return [dict(zip(keys, values, strict=True)) for values in combos
                if any(base[k] != v for k, v in zip(keys, values, strict=True))]

    def extract_estimate(self, backbone: str, size: tuple[int, int]) -> float:
        images = len(self.splits.train) + len(self.splits.val)
        if backbone in self.ms_per_pixel:
            rate = self.ms_per_pixel[backbone]
        elif self.ms_per_pixel:
            known, measured = next(iter(self.ms_per_pixel.items()))
            rate = measured * BACKBONE_COST.get(backbone, 2.0) / BACKBONE_COST.get(known, 1.0)
        else:
            return 0.0
        return rate * size[0] * size[1] * images / 1000

    def affordable(self, estimate: float, final: float) -> bool:
        return self.elapsed() + estimate + final <= self.budget_s

    def record(self, stage: int, candidate: dict[str, Any], cache: StageCache | None, rule: str,
               result: dict[str, Any] | None, status: str) -> dict[str, Any]:
        row = {"stage": stage, "backbone": candidate["backbone"], "image_size": list(candidate["image_size"]),
               "size_rule": rule, "align": candidate["align"], "intensity": candidate["intensity"],
               "layers": list(candidate["layers"]),
               **{k: candidate[k] for k in self.search.grid}, "status": status,
               "image_auroc": None, "pixel_auroc": None, "pro": None, "ms_per_image": None, "seconds": None}
        if result is not None and cache is not None:
            row.update({k: result[k] for k in ("image_auroc", "pixel_auroc", "pro", "seconds", "feature_dims")},
                       ms_per_image=round(cache.ms_per_image + result["score_ms"], 2))
        self.rows.append(row)
        return row


def _final_estimate(cache: StageCache, row: dict[str, Any], options: dict[str, Any]) -> float:
    return _final_seconds(cache.seconds, row["seconds"] or 0.0, _scoring_seconds(cache, row), options)


def _scoring_seconds(cache: StageCache, row: dict[str, Any]) -> float:
    """The candidate's scoring of val-clean (kNN and maps; the features were cached)."""
    per_image = (row["ms_per_image"] or cache.ms_per_image) - cache.ms_per_image
    return per_image * len(cache.val_labels) / 1000


def _map_passes(options: dict[str, Any]) -> int:
    """kNN passes over val-clean the final training's map choice adds to calibration's (`train.blur.map_choice`).
    Calibration reuses the choice's searches and one search serves every count above one neighbour
    (`RememberedSearches`), so offering one neighbour beside more adds one; a pinned map adds none."""
    choice = map_choice(get_spec(options["model"]).options, options)
    if choice is None:
        return 0
    counts = choice[0]
    return int(1 in counts and any(count is not None and count > 1 for count in counts))


def _final_seconds(extraction: float, candidate: float, scoring: float, options: dict[str, Any]) -> float:
    """The final training: extraction again, the candidate's fit and scoring, the map choice's passes
    (`scoring` each), bundle writing. With `val_goods` it fits three times on more patches: train + val goods
    (~1.25x the patches; greedy coreset selection grows about with their square, ~1.6x) and two held-out fits
    (~1.3x each)."""
    fits = VAL_GOODS_FIT_FACTOR if options.get("val_goods") else 1.0
    return extraction + fits * candidate + _map_passes(options) * scoring + FINAL_OVERHEAD_S


def run_search(options: dict[str, Any], pinned: set[str], budget_min: float = DEFAULT_BUDGET_MIN,
               progress: bool = True) -> TuneResult:
    """Stage 1 over features, stage 2 over the detector's grid; returns the chosen options and the table."""
    bars = Bars(progress)
    search = Search(options, pinned, 60 * budget_min, bars)
    options = search.options  # `--intensity auto` and `--colour auto` resolved
    spec_search = search.search
    base = {k: options[k] for k in options}
    best: Best | None = None
    for backbone, size, rule, align in search.groups():
        layer_sets = search.layer_sets()
        candidate = {**base, "backbone": backbone, "image_size": size, "align": align}
        extraction = search.extract_estimate(backbone, size)
        final = max(_final_estimate(best[1], best[0], options) if best else 0.0, 2 * extraction)
        if best and not search.affordable(extraction, final):
            for layers in layer_sets:
                search.record(1, {**candidate, "layers": layers}, None, rule, None, "skipped: budget")
            continue
        needed = layers_needed(spec_search, candidate, layer_sets)
        images = len(search.splits.train) * len(memory_transforms(options)) + len(search.splits.val)
        step = bars(images, f"tune: {backbone} {size[0]}x{size[1]} "
                    f"align {align}")
        cache = extract(backbone, size, needed, search.splits.train, search.splits.val, options, step)
        search.ms_per_pixel.setdefault(backbone, cache.ms_per_image / (size[0] * size[1]))
        last, kept = 0.0, False
        for layers in layer_sets:
            trial = {**candidate, "layers": layers}
            final = max(_final_estimate(best[1], best[0], options) if best else 0.0, cache.seconds + last)
            if best and not search.affordable(last, final):
                search.record(1, trial, cache, rule, None, "skipped: budget")
                continue
            row = search.record(1, trial, cache, rule, evaluate(spec_search, trial, cache), "done")
            last = row["seconds"]
            log.info("tune: %s", _describe(row))
            if best is None or choose([best[0], row]) is row:
                if best and best[1] is not cache:
                    best[1].release()
                best, kept = (row, cache, trial), True
        if not kept:
            cache.release()
    if best is None:
        raise RuntimeError(f"the tuning budget of {budget_min} min allowed no candidate")
    row1, cache, chosen = best
    reference_cost = spec_search.relative_cost(chosen)
    for extra in search.grid(chosen):
        trial = {**chosen, **extra}
        scale = spec_search.relative_cost(trial) / reference_cost
        estimate = row1["seconds"] * scale
        scoring = _scoring_seconds(cache, row1) * max(1.0, scale)
        final = _final_seconds(cache.seconds, max(best[0]["seconds"], estimate), scoring, options)
        if not search.affordable(estimate, final):
            search.record(2, trial, cache, row1["size_rule"], None, "skipped: budget")
            continue
        row = search.record(2, trial, cache, row1["size_rule"], evaluate(spec_search, trial, cache), "done")
        log.info("tune: %s", _describe(row))
        if choose([best[0], row]) is row:
            best = (row, cache, trial)
    cache.release()
    bars.close()
    winner, _, chosen = best
    winner["status"] = "chosen"
    chosen = {**chosen, "image_size": parse_size(winner["size_rule"], "tune")}  # `auto` stays a rule in the bundle
    section = {
        "metric": f"val-clean image AUROC; ties within {AUROC_TIE} -> mean(pixel AUROC, PRO) within {PIXEL_TIE} "
                  f"-> ms/image",
        "budget_min": budget_min, "seconds": round(search.elapsed(), 1),
        "pinned": sorted(pinned & {"backbone", "image_size", "align", "intensity", "layers", *spec_search.grid}),
        "space": {"backbone": list(BACKBONES), "image_size": list(SIZES), "align": list(spec_search.aligns),
                  "intensity": [options["intensity"]], "colour": [options["colour"]],
                  "layers": [list(x) for x in spec_search.layers],
                  "grid": {k: list(v) for k, v in spec_search.grid.items()}},
        **search.decided,
        "val_images": len(search.splits.val), "val_defective": int(sum(s.label for s in search.splits.val)),
        "chosen": {k: winner[k] for k in ("backbone", "image_size", "align", "intensity", "layers",
                                          *spec_search.grid)},
        "table": search.rows,
    }
    return TuneResult(chosen, search.rows, search.elapsed(), section)


def _describe(row: dict[str, Any]) -> str:
    pixel = "-" if row["pixel_auroc"] is None else f"{row['pixel_auroc']:.4f}"
    pro = "-" if row["pro"] is None else f"{row['pro']:.4f}"
    auc = "-" if row["image_auroc"] is None else f"{row['image_auroc']:.4f}"
    ms = "-" if row["ms_per_image"] is None else f"{row['ms_per_image']:.1f}"
    size = "x".join(map(str, row["image_size"]))
    layers = "+".join(layer.removeprefix("layer") for layer in sorted(row["layers"], key=LAYER_STRIDES.get))
    extra = " ".join(f"{k}={row[k]}" for k in row
                     if k.startswith(("align", "intensity", "coreset_ratio", "projection", "padim")))
    return (f"{row['stage']} {row['backbone'].removeprefix('efficientnet_'):<5} {size:>7} L{layers:<6} {extra:<40} "
            f"auroc {auc} pixel {pixel} pro {pro} {ms} ms/img {row['status']}")


def table_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The search table, one line per candidate, for the training output."""
    return [_describe(row) for row in rows]
