"""Accuracy on test-clean: defaults vs `--tune` per category, and the held-out proxies with the defaults.

Suites (each row = `inspect-train`'s pipeline, then `inspect-eval`'s on the bundle's test-clean split):
- `main`: PatchCore default, tuned (`--tune`, default budget) and, where there is one, the category's
  config, on bottle, capsule, transistor and magnetic tile; the tuning's seconds are reported.
- `heldout`: proxies of the checks we cannot run (built by tools/proxy_data.py under bench-out/proxies):
  PaDiM on misaligned bottle / transistor with 43 training images, and on the aligned originals (no loss
  allowed); PatchCore (and PaDiM) on elongated grey parts (capsule 200 x 512, magnetic tile's long tiles).
  Each with today's defaults and with the defaults before this work (`before`: PatchCore square 256 px;
  PaDiM square 256 px, layers 1-3, no alignment, no position tolerance; both fitted on train-clean only, with
  no intensity standardising; PatchCore's map blur 4 and one neighbour, not chosen).
Rows are appended to OUT/rows.jsonl (a rerun skips what is there); OUT/accuracy.md gets the table.
Run with nice, one at a time: .venv/bin/python tools/bench_accuracy.py --suite main [--budget 10]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import torch

from linewatch.evaluate.pipeline import evaluate
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train
from linewatch.train.tune import DEFAULT_BUDGET_MIN, run_search

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
PROXIES = ROOT / "bench-out" / "proxies"
MVTEC = SHARED / "mvtec_ad"
TILE = SHARED / "magnetic_tile" / "magnetic_tile"
BEFORE = {"patchcore": {"image_size": 256, "val_goods": False, "intensity": "none", "blur_sigma": 4.0, "map_knn": 1},
          "padim": {"image_size": 256, "layers": ("layer1", "layer2", "layer3"), "align": "none", "padim_pool": 0,
                    "padim_radius": 0, "val_goods": False, "intensity": "none"}}
PROXY_RECIPES = {
    "bottle-misaligned": ["misalign", "--data", str(MVTEC / "bottle"), "--train", "54"],
    "transistor-misaligned": ["misalign", "--data", str(MVTEC / "transistor"), "--train", "54",
                              "--drop-defects", "misplaced"],
    "capsule-band": ["band", "--data", str(MVTEC / "capsule"), "--band-fraction", "0.56"],
    "mtile-elongated": ["elongated", "--data", str(TILE)],
}
# (data, detector, variant): variant is default | tuned | config | before
SUITES: dict[str, list[tuple[Path, str, str]]] = {
    "main": [(MVTEC / c, "patchcore", v) for c in ("bottle", "capsule", "transistor") for v in ("default", "tuned")]
    + [(TILE, "patchcore", v) for v in ("default", "config", "tuned")],
    "heldout": [(PROXIES / p, "padim", v) for p in ("bottle-misaligned", "transistor-misaligned")
                for v in ("default", "before")]
    + [(MVTEC / c, "padim", v) for c in ("bottle", "transistor") for v in ("default", "before")]
    + [(PROXIES / p, "patchcore", v) for p in ("capsule-band", "mtile-elongated") for v in ("default", "before")]
    + [(PROXIES / "capsule-band", "padim", v) for v in ("default", "before")],
}


def ensure_proxy(data: Path) -> None:
    if data.parent == PROXIES and not (data / "proxy.json").is_file():
        recipe = PROXY_RECIPES[data.name]
        subprocess.run([sys.executable, str(ROOT / "tools" / "proxy_data.py"), *recipe, "--out", str(data)],
                       check=True)


def run_one(data: Path, model: str, variant: str, work: Path, budget: float) -> dict[str, Any]:
    name = f"{data.name}-{model}-{variant}"
    variant_options = BEFORE[model] if variant == "before" else {}
    overrides: dict[str, Any] = {"data": data, "out": work / name, "model": model, **variant_options}
    config = ROOT / "configs" / f"{model}-{data.name.replace('_', '-')}.yaml"
    options = resolve_training(config if variant == "config" else None, overrides)
    tune_s, tuning = None, None
    start = time.perf_counter()
    if variant == "tuned":
        searched = run_search(options, set(), budget, progress=False)
        options, tuning, tune_s = searched.options, searched.section, searched.seconds
    result = train(options, progress=False, tuning=tuning)
    total = time.perf_counter() - start
    metrics = evaluate(work / name, data, work / f"{name}-report", progress=False)
    params = result.manifest["network"]["params"]
    detector = result.manifest["detector"]
    summary = {k: detector[k] for k in ("coreset_ratio", "map_k", "pool", "radius", "dims") if k in detector}
    return {
        "data": data.name, "model": model, "variant": variant, "backbone": params["backbone"],
        "image_size": params["image_size"], "layers": params["layers"], "projection_dims": params["projection_dims"],
        **summary, "intensity": result.manifest["preprocess"].get("intensity", "none"),
        "blur_sigma": result.manifest["postprocess"]["blur_sigma"],
        "blur_pro": result.manifest["postprocess"].get("blur", {}).get("pro"),
        "image_auroc": metrics["image_auroc"], "pixel_auroc": metrics["pixel_auroc"], "pro": metrics["pro"],
        "per_defect": metrics["image_auroc_per_defect"], "test_images": metrics["images"],
        "train_images": result.manifest["training"]["train_images"],
        "memory_images": result.manifest["training"].get("memory_images"), "train_s": round(result.seconds, 1),
        "tune_s": None if tune_s is None else round(tune_s, 1), "total_s": round(total, 1),
        "budget_min": budget if variant == "tuned" else None,
    }


def _fmt(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_table(rows: list[dict[str, Any]], out: Path) -> None:
    head = ["data", "detector", "variant", "backbone", "size", "layers", "options", "image AUROC", "pixel AUROC",
            "PRO", "train s", "tune + train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        options = ", ".join(f"{k} {r[k]}" for k in ("coreset_ratio", "projection_dims", "dims", "pool", "radius")
                            if r.get(k) is not None)
        if r.get("intensity", "none") != "none":
            options += f", intensity {r['intensity']}"
        if r.get("blur_sigma") is not None:
            options += f", blur {r['blur_sigma']:g}" + (" (val PRO)" if r.get("blur_pro") else "")
        if r.get("map_k") is not None:
            options += f", map neighbours {r['map_k']}"
        layers = "+".join(layer.removeprefix("layer") for layer in r["layers"])
        cells = [r["data"], r["model"], r["variant"], r["backbone"].removeprefix("efficientnet_"),
                 "x".join(map(str, r["image_size"])), layers, options, _fmt(r["image_auroc"]),
                 _fmt(r["pixel_auroc"]), _fmt(r["pro"]), _fmt(r["train_s"], 1),
                 _fmt(r["total_s"], 1) if r["variant"] == "tuned" else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    out.write_text("\n".join(lines) + "\n")


@click.command()
@click.option("--suite", type=click.Choice([*SUITES, "all"]), default="all", show_default=True)
@click.option("--budget", type=float, default=DEFAULT_BUDGET_MIN, show_default=True, help="--tune budget, minutes.")
@click.option("--only", default="", help="Comma-separated data names to run (default: the whole suite).")
@click.option("--variants", default="", help="Comma-separated variants to run: default, tuned, config, before "
                                            "(default: all).")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/accuracy"), show_default=True)
def main(suite: str, budget: float, only: str, variants: str, threads: int, out: Path) -> None:
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    rows_file = out / "rows.jsonl"
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()] if rows_file.is_file() else []
    done = {(r["data"], r["model"], r["variant"]) for r in rows}
    for data, model, variant in SUITES[suite] if suite != "all" else [x for s in SUITES.values() for x in s]:
        if ((data.name, model, variant) in done or (only and data.name not in only.split(","))
                or (variants and variant not in variants.split(","))):
            continue
        if not (data.is_dir() or data.parent == PROXIES):
            click.echo(f"skipping {data}: not found", err=True)
            continue
        ensure_proxy(data)
        row = run_one(data, model, variant, out / "bundles", budget)
        rows.append(row)
        with open(rows_file, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        click.echo(f"{row['data']} {model} {variant}: image AUROC {_fmt(row['image_auroc'])}, pixel "
                   f"{_fmt(row['pixel_auroc'])}, PRO {_fmt(row['pro'])} ({row['total_s']:.0f} s)")
    write_table(rows, out / "accuracy.md")
    click.echo(f"wrote {out / 'accuracy.md'}")


if __name__ == "__main__":
    main()
