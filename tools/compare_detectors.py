"""Every detector with its defaults on the real datasets: accuracy, training cost, bundle size, network and scorer cost.

Each detector is trained by `inspect-train` in its own process (so its peak memory is its own), exported
with `export-model`, and evaluated with `inspect-eval`'s pipeline on test-clean. A dataset config
`configs/<model>-<data>.yaml` is used when there is one. Network ms/frame times the exported ONNX network
in onnxruntime, scorer ms/frame the shared scoring path on its outputs, both at batch 1 (median).
Writes Markdown and JSON. Run: .venv/bin/python tools/compare_detectors.py [--data DIR ...] [--models a,b] [--reuse]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np

from linewatch.batches import iter_batches
from linewatch.bundle import read_manifest
from linewatch.data import Splits, scan_category
from linewatch.engines import open_engine
from linewatch.evaluate.pipeline import evaluate
from linewatch.inspector import Inspector
from linewatch.models.registry import DETECTOR_KINDS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_DATA = (SHARED / "mvtec_ad" / "bottle", SHARED / "magnetic_tile" / "magnetic_tile")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BIN = Path(sys.executable).parent


def stage_ms(bundle: Path, data: Path, threads: int, frames: int = 16) -> tuple[float, float]:
    """Median (network, scorer) ms for one frame: the ONNX network in onnxruntime, then the scoring path."""
    inspector = Inspector.from_bundle(bundle)
    engine = open_engine(bundle, inspector.manifest, lambda: inspector.network, "onnxruntime", "cpu", threads)
    samples = Splits.load(bundle / "splits.json", scan_category(data)).test[:frames]
    network, scorer = [], []
    for index, batch in enumerate(iter_batches(samples, inspector.preprocessor, 1)):
        start = time.perf_counter()
        outputs = engine(batch.inputs)
        scored = time.perf_counter()
        inspector.score(outputs)
        if index:  # the first frame warms caches up
            network.append(1000 * (scored - start))
            scorer.append(1000 * (time.perf_counter() - scored))
    return float(np.median(network)), float(np.median(scorer))


def compare(data: Path, model: str, work: Path, threads: int, reuse: bool = False) -> dict[str, Any]:
    bundle = work / f"{data.name}-{model}"
    config = CONFIGS / f"{model}-{data.name.replace('_', '-')}.yaml"
    args = [str(BIN / "inspect-train"), "--data", str(data), "--out", str(bundle), "--model", model, "--quiet"]
    if config.is_file():
        args += ["--config", str(config)]
    if not (reuse and (bundle / "manifest.json").is_file()):
        subprocess.run(args, check=True)
    if not (reuse and (bundle / "network.onnx").is_file()):
        subprocess.run([str(BIN / "export-model"), str(bundle)], check=True, capture_output=True)
    manifest = read_manifest(bundle)
    metrics = evaluate(bundle, data, work / f"{data.name}-{model}-report", progress=False)
    network_ms, scorer_ms = stage_ms(bundle, data, threads)
    training = manifest["training"]
    return {
        "data": data.name, "model": model, "config": config.name if config.is_file() else None,
        "network": manifest["network"]["architecture"], "input": manifest["network"]["input"]["size"],
        "image_auroc": metrics["image_auroc"], "pixel_auroc": metrics["pixel_auroc"], "pro": metrics["pro"],
        "train_s": training["seconds"], "train_peak_rss_mb": training["peak_rss_mb"],
        "best_epoch": training.get("best_epoch"), "epochs_run": training.get("epochs_run"),
        "bundle_mb": round(sum(f["bytes"] for name, f in manifest["files"].items()
                               if not name.endswith(".onnx")) / 1e6, 1),
        "network_ms_per_frame": round(network_ms, 2), "scorer_ms_per_frame": round(scorer_ms, 2),
    }


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@click.command()
@click.option("--data", "datasets", type=click.Path(path_type=Path), multiple=True, default=DEFAULT_DATA)
@click.option("--models", default=",".join(DETECTOR_KINDS), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/compare"), show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--reuse", is_flag=True, help="Keep bundles already trained under --out (an interrupted run continues).")
def main(datasets: tuple[Path, ...], models: str, out: Path, threads: int, reuse: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    lines = ["| data | detector | input | image AUROC | pixel AUROC | PRO | train s | peak MB | bundle MB | "
             "network ms/frame | scorer ms/frame |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for data in datasets:
        if not data.is_dir():
            click.echo(f"skipping {data}: not found", err=True)
            continue
        for model in models.split(","):
            row = compare(data, model, out, threads, reuse)
            rows.append(row)
            size = "x".join(map(str, row["input"]))
            lines.append(f"| {row['data']} | {model} | {size} | {_cell(row['image_auroc'])} | "
                         f"{_cell(row['pixel_auroc'])} | {_cell(row['pro'])} | {row['train_s']:.0f} | "
                         f"{row['train_peak_rss_mb']:.0f} | {row['bundle_mb']:.1f} | "
                         f"{row['network_ms_per_frame']:.1f} | {row['scorer_ms_per_frame']:.1f} |")
            click.echo(lines[-1])
            (out / "compare.json").write_text(json.dumps({"threads": threads, "results": rows}, indent=2) + "\n")
    (out / "compare.md").write_text("\n".join(lines) + "\n")
    click.echo(f"wrote {out / 'compare.md'}")


if __name__ == "__main__":
    main()
