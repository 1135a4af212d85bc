"""PatchCore vs PaDiM with their defaults on the real datasets: accuracy, training cost, bundle size, scorer cost.

Each detector is trained with `inspect-train`'s pipeline and evaluated with `inspect-eval`'s (test-clean).
PatchCore uses the dataset's `configs/patchcore-<name>.yaml` when there is one, PaDiM its defaults;
scorer ms/frame times the shared scoring path's detector step on test features at batch 1.
Writes Markdown and JSON. Run: .venv/bin/python tools/compare_detectors.py [--data DIR ...] [--out DIR]
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from linewatch.batches import iter_batches
from linewatch.data import make_splits, scan_category
from linewatch.evaluate.pipeline import evaluate
from linewatch.inspector import Inspector
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_DATA = (SHARED / "mvtec_ad" / "bottle", SHARED / "magnetic_tile" / "magnetic_tile")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MODELS = ("patchcore", "padim")


def scorer_ms(bundle: Path, data: Path, frames: int = 16) -> float:
    """Median ms of the detector's patch scoring for one frame (features precomputed, batch 1)."""
    inspector = Inspector.from_bundle(bundle)
    engine = inspector.reference_engine()
    samples = make_splits(scan_category(data)).test[:frames]
    features = [engine(b.inputs) for b in iter_batches(samples, inspector.preprocessor, 1)]
    inspector.detector.patch_scores(features[0])
    times = []
    for feats in features:
        start = time.perf_counter()
        inspector.detector.patch_scores(feats)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times))


def compare(data: Path, model: str, work: Path, image_size: int | None) -> dict[str, Any]:
    bundle = work / f"{data.name}-{model}"
    overrides: dict[str, Any] = {"data": data, "out": bundle, "model": model}
    if image_size:
        overrides["image_size"] = image_size
    config = CONFIGS / f"{model}-{data.name.replace('_', '-')}.yaml"
    result = train(resolve_training(config if config.is_file() else None, overrides), progress=False)
    metrics = evaluate(bundle, data, work / f"{data.name}-{model}-report", progress=False)
    return {
        "data": data.name, "model": model, "config": config.name if config.is_file() else None,
        "layers": result.manifest["network"]["params"]["layers"], "image_auroc": metrics["image_auroc"],
        "pixel_auroc": metrics["pixel_auroc"], "pro": metrics["pro"], "train_s": round(result.seconds, 1),
        "train_peak_rss_mb": round(result.peak_rss_mb),
        "bundle_mb": round(sum(f["bytes"] for f in result.manifest["files"].values()) / 1e6, 1),
        "scorer_ms_per_frame": round(scorer_ms(bundle, data), 2), "eval_ms_per_image": metrics["ms_per_image"],
    }


@click.command()
@click.option("--data", "datasets", type=click.Path(path_type=Path), multiple=True, default=DEFAULT_DATA)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/compare"), show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--image-size", type=int, help="Override both detectors' default input size.")
def main(datasets: tuple[Path, ...], out: Path, threads: int, image_size: int | None) -> None:
    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    lines = ["| data | detector | layers | image AUROC | pixel AUROC | PRO | train s | bundle MB | scorer ms/frame |",
             "|---|---|---|---|---|---|---|---|---|"]
    for data in datasets:
        if not data.is_dir():
            click.echo(f"skipping {data}: not found", err=True)
            continue
        for model in MODELS:
            row = compare(data, model, out, image_size)
            rows.append(row)
            pixel = "-" if row["pixel_auroc"] is None else f"{row['pixel_auroc']:.4f}"
            pro = "-" if row["pro"] is None else f"{row['pro']:.4f}"
            layers = "+".join(row["layers"])
            lines.append(f"| {row['data']} | {model} | {layers} | {row['image_auroc']:.4f} | {pixel} | {pro} | "
                         f"{row['train_s']:.1f} | {row['bundle_mb']:.1f} | {row['scorer_ms_per_frame']:.1f} |")
            click.echo(lines[-1])
    (out / "compare.json").write_text(json.dumps({"threads": threads, "results": rows}, indent=2) + "\n")
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    click.echo(f"wrote {out / 'compare.md'}")


if __name__ == "__main__":
    main()
