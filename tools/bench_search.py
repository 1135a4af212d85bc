"""Every candidate of a search space scored on val-clean AND test-clean: does val-clean pick what test-clean confirms?

Per category, backbone outputs are extracted once per (backbone, input size) for train-clean and for
val-clean + test-clean together (`linewatch.train.tune_cache`); each candidate is fitted with its
detector's own `FeatureSearch` and scored through the shared scoring path, and metrics are computed on
val-clean and on test-clean separately (pixel metrics at the input size; `inspect-eval` measures them at
the original size). This is an analysis tool: `inspect-train --tune` itself never reads test-clean.
Rows are appended to OUT/rows.jsonl as they finish (a rerun skips candidates already there);
OUT/search.md gets the table. Run with nice, one at a time:
  .venv/bin/python tools/bench_search.py --data ../shared/data/mvtec_ad/transistor --model patchcore \
      [--backbones efficientnet_lite0] [--sizes 256,320] [--layers layer2+layer3,layer3+layer4] \
      [--align none,lk-affine] [--set coreset_ratio=0.01,0.1 --set projection_dims=none,128] [--out bench-out/search]
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from linewatch.config import parse_size
from linewatch.data import make_splits, scan_category
from linewatch.features.geometry import resolve_image_size
from linewatch.models.components.feature_memory import resolve_input
from linewatch.models.registry import get_spec
from linewatch.train.options import resolve_training
from linewatch.train.tune_cache import extract, fit_and_score, layers_needed, metrics


def _value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(lowered)
        except ValueError:
            pass
    return text.strip()


def _grid(sets: tuple[str, ...], default: dict[str, tuple]) -> dict[str, tuple]:
    grid = dict(default)
    for item in sets:
        key, _, values = item.partition("=")
        grid[key.strip().replace("-", "_")] = tuple(_value(v) for v in values.split(","))
    return grid


def _done(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {json.loads(line)["key"] for line in path.read_text().splitlines() if line.strip()}


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def run_category(data: Path, model: str, backbones: list[str], sizes: list[str], aligns: list[str],
                 layer_sets: list[tuple[str, ...]], grid: dict[str, tuple], rows_file: Path) -> None:
    spec = get_spec(model)
    base = resolve_training(None, {"data": data, "out": "unused", "model": model})
    category = scan_category(data)
    splits = make_splits(category, seed=base["seed"])
    base, _ = resolve_input(base, splits.train)  # `auto` input options, as inspect-train decides them
    scored_samples = [*splits.val, *splits.test]
    in_val = np.arange(len(scored_samples)) < len(splits.val)
    done = _done(rows_file)
    for backbone, rule, align in itertools.product(backbones, sizes, aligns):
        resolved, _ = resolve_image_size({**base, "image_size": parse_size(rule, "--sizes")}, splits.train)
        size = tuple(resolved["image_size"])
        combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
        todo = []
        for layers, extra in itertools.product(layer_sets, combos):
            extra = {**extra, "align": align} if align != "none" else extra
            options = {**base, "backbone": backbone, "image_size": size, "layers": layers, **extra}
            key = json.dumps([category.name, model, backbone, rule, list(layers), extra], sort_keys=True)
            if key not in done:
                todo.append((key, layers, extra, options))
        if not todo:
            continue
        needed = layers_needed(spec.search, todo[0][3], [t[1] for t in todo])
        cache = extract(backbone, size, needed, splits.train, scored_samples, {**base, "align": align})
        click.echo(f"{category.name} {backbone} {rule} -> {size}: extracted in {cache.seconds:.0f} s "
                   f"({cache.ms_per_image:.1f} ms/image)")
        for key, layers, extra, options in todo:
            scored = fit_and_score(spec.search, options, cache)
            row: dict[str, Any] = {"key": key, "data": category.name, "model": model, "backbone": backbone,
                                   "size_rule": rule, "image_size": list(size), "layers": list(layers), **extra,
                                   "fit_s": round(scored.fit_s, 2), "score_ms": round(scored.score_ms, 2),
                                   "backbone_ms": round(cache.ms_per_image, 2), "train_images": len(splits.train)}
            for name, keep in (("val", in_val), ("test", ~in_val)):
                masks = [m for m, k in zip(cache.val_masks, keep, strict=True) if k]
                maps = [m for m, k in zip(scored.maps, keep, strict=True) if k]
                result = metrics(cache.val_labels[keep], scored.scores[keep], masks, maps)
                row.update({f"{name}_{k}": v for k, v in result.items()})
            with open(rows_file, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            click.echo(f"  {'+'.join(layers):<22} {extra}  val {_fmt(row['val_image_auroc'])} "
                       f"test {_fmt(row['test_image_auroc'])} / {_fmt(row['test_pixel_auroc'])} / "
                       f"{_fmt(row['test_pro'])}  fit {row['fit_s']:.1f} s")
        cache.release()


def write_table(rows_file: Path, out: Path) -> None:
    rows = [json.loads(line) for line in rows_file.read_text().splitlines() if line.strip()]
    extras = sorted({k for r in rows for k in r} - {
        "key", "data", "model", "backbone", "size_rule", "image_size", "layers", "fit_s", "score_ms", "backbone_ms",
        "train_images"} - {k for k in {k for r in rows for k in r} if k.startswith(("val_", "test_"))})
    head = ["data", "model", "backbone", "size", "layers", *extras, "val AUROC", "val pixel", "val PRO",
            "test AUROC", "test pixel", "test PRO", "fit s", "ms/img"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["data"], r["model"], r["backbone"].removeprefix("efficientnet_"),
                 f"{r['size_rule']} ({r['image_size'][0]}x{r['image_size'][1]})", "+".join(r["layers"]),
                 *(str(r.get(k)) for k in extras), *(_fmt(r[f"{s}_{m}"]) for s in ("val", "test")
                                                    for m in ("image_auroc", "pixel_auroc", "pro")),
                 f"{r['fit_s']:.1f}", f"{r['backbone_ms'] + r['score_ms']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    out.write_text("\n".join(lines) + "\n")


@click.command()
@click.option("--data", "datasets", type=click.Path(path_type=Path, exists=True), multiple=True, required=True)
@click.option("--model", type=click.Choice(["patchcore", "padim"]), default="patchcore", show_default=True)
@click.option("--backbones", default="efficientnet_lite0", show_default=True)
@click.option("--sizes", default="256", show_default=True, help="Comma-separated: 256, 288x320, auto:256 ...")
@click.option("--align", "aligns", default="none", show_default=True,
              help="Comma-separated --align values: none, lk, lk-affine, ecc, ecc-affine.")
@click.option("--layers", "layer_text", default=None, help="Comma-separated layer sets, '+' inside a set.")
@click.option("--set", "sets", multiple=True, help="key=v1,v2: values of a detector option (default: its grid).")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/search"), show_default=True)
def main(datasets: tuple[Path, ...], model: str, backbones: str, sizes: str, aligns: str, layer_text: str | None,
         sets: tuple[str, ...], threads: int, out: Path) -> None:
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    search = get_spec(model).search
    layer_sets = [tuple(s.split("+")) for s in layer_text.split(",")] if layer_text else list(search.layers)
    grid = _grid(sets, {k: v[:1] for k, v in search.grid.items()} if not sets else {})
    for data in datasets:
        run_category(data, model, backbones.split(","), [s for s in sizes.split(",") if s], aligns.split(","),
                     layer_sets, grid, out / "rows.jsonl")
    write_table(out / "rows.jsonl", out / "search.md")
    click.echo(f"wrote {out / 'search.md'}")


if __name__ == "__main__":
    main()
