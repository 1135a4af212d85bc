"""Training benchmark: feature extraction ms/image, coreset time for 10% of 100k patches, peak memory; for
each trained detector, seconds per epoch and peak memory of a few epochs of `inspect-train` with its defaults.

Uses MVTec bottle from ../shared/data when present (else the synthetic category) and writes JSON.
Run: .venv/bin/python tools/bench_train.py [--data DIR] [--trained autoencoder,ganomaly] [--epochs 3]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

from linewatch.batches import iter_batches
from linewatch.data import make_splits, scan_category
from linewatch.data.synthetic import make_synthetic_category
from linewatch.engines.torch_engine import run_network
from linewatch.features.extractor import FeatureConfig, build_extractor
from linewatch.features.preprocess import Preprocessor
from linewatch.models.patchcore.coreset import greedy_coreset
from linewatch.models.patchcore.model import flatten_patches
from linewatch.models.registry import all_specs
from linewatch.resources import peak_rss_mb

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mvtec_ad" / "bottle"


def trained_epochs(data: Path, model: str, epochs: int, work: Path) -> dict:
    """A few epochs of `inspect-train --model MODEL` (its defaults) in its own process: s/epoch and peak RSS."""
    bundle = work / model
    subprocess.run([str(Path(sys.executable).parent / "inspect-train"), "--data", str(data), "--out", str(bundle),
                    "--model", model, "--epochs", str(epochs), "--patience", "0", "--quiet"], check=True)
    manifest = json.loads((bundle / "manifest.json").read_text())
    seconds = [record["seconds"] for record in json.loads((bundle / "history.json").read_text())]
    return {"model": model, "input": manifest["network"]["input"]["size"],
            "channels": manifest["network"]["input"]["channels"], "epochs": len(seconds),
            "seconds_per_epoch": round(float(np.median(seconds)), 2), "epoch_seconds": seconds,
            "train_images": manifest["training"]["train_images"], "peak_rss_mb": manifest["training"]["peak_rss_mb"]}


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=DEFAULT_DATA, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/train.json"), show_default=True)
@click.option("--image-size", type=int, default=256, show_default=True)
@click.option("--patches", type=int, default=100_000, show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--trained", default=",".join(s.kind for s in all_specs() if s.trained), show_default=True,
              help="Trained detectors to time ('' for none).")
@click.option("--epochs", type=int, default=3, show_default=True, help="Epochs per trained detector.")
def main(data: Path, out: Path, image_size: int, patches: int, threads: int, trained: str, epochs: int) -> None:
    torch.set_num_threads(threads)
    if not data.is_dir():
        print(f"{data} not found: benchmarking on a generated synthetic category", file=sys.stderr)
        data = make_synthetic_category(Path(tempfile.mkdtemp()) / "synthetic", n_train=60)
    samples = make_splits(scan_category(data)).train
    config = FeatureConfig(image_size=(image_size, image_size))
    extractor = build_extractor(config)[0]

    def feature_fn(batch: np.ndarray) -> np.ndarray:
        return run_network(extractor, batch, "cpu", ("features",))["features"]

    feature_fn(np.zeros((1, 3, image_size, image_size), np.float32))
    collected, start = [], time.perf_counter()
    for batch in iter_batches(samples, Preprocessor(config.image_size), 8):
        collected.append(flatten_patches(feature_fn(batch.inputs)))
    extract_s = time.perf_counter() - start
    bank = np.concatenate(collected)
    if len(bank) < patches:
        bank = np.concatenate([bank] * (patches // len(bank) + 1))
    bank = bank[:patches]
    start = time.perf_counter()
    greedy_coreset(bank, 0.1)
    coreset_s = time.perf_counter() - start
    result = {
        "data": str(data), "images": len(samples), "image_size": image_size, "threads": threads,
        "feature_dims": int(bank.shape[1]),
        "extract_ms_per_image": round(1000 * extract_s / len(samples), 2),
        "coreset_patches": patches, "coreset_ratio": 0.1, "coreset_seconds": round(coreset_s, 2),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "trained": [trained_epochs(data, model, epochs, Path(tempfile.mkdtemp())) for model in trained.split(",")
                    if model],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        if key != "trained":
            print(f"{key:>22}: {value}")
    for row in result["trained"]:
        print(f"{row['model']:>22}: {row['seconds_per_epoch']} s/epoch at {'x'.join(map(str, row['input']))}x"
              f"{row['channels']} on {row['train_images']} images, peak RSS {row['peak_rss_mb']} MB")


if __name__ == "__main__":
    main()
