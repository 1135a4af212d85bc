"""`inspect-train`: fit a detector on good images and write a model bundle."""

from __future__ import annotations

from pathlib import Path

import click

from linewatch.cli_common import friendly_errors, setup_logging
from linewatch.config import resolve
from linewatch.train.options import TRAIN_OPTIONS


@click.command(context_settings={"show_default": True})
@click.option("--data", type=click.Path(path_type=Path), help="Category folder in MVTec layout.")
@click.option("--model", type=click.Choice(["patchcore", "padim"]), help="Detector (default patchcore).")
@click.option("--out", type=click.Path(path_type=Path), help="Bundle directory to write.")
@click.option("--backbone", help="efficientnet_lite0 (default), efficientnet_lite2, resnet18, wide_resnet50_2.")
@click.option("--weights", help="'default' (packaged / torch hub cache), 'none' (random) or a weights file.")
@click.option("--layers", help="Comma-separated feature layers, e.g. layer2,layer3.")
@click.option("--image-size", type=int, help="Square input size in pixels (default 256).")
@click.option("--batch-size", type=int, help="Images per forward pass (default 8).")
@click.option("--coreset-ratio", type=float, help="PatchCore: fraction of patches kept (default 0.01).")
@click.option("--coreset-dims", type=int, help="PatchCore: random-projection dims for coreset selection.")
@click.option("--projection-dims", type=int, help="Project features to this many dims (default: none).")
@click.option("--knn", type=int, help="PatchCore: neighbours averaged per patch (default 1).")
@click.option("--index", type=click.Choice(["flat", "hnsw", "ivf"]), help="PatchCore: FAISS index (default flat).")
@click.option("--reweight/--no-reweight", default=None, help="PatchCore: the paper's image-score re-weighting.")
@click.option("--padim-dims", type=int, help="PaDiM: random channel subset size (default 100; 550 for WRN50).")
@click.option("--padim-epsilon", type=float, help="PaDiM: covariance regularisation (default 0.01).")
@click.option("--blur-sigma", type=float, help="Anomaly-map Gaussian blur sigma in pixels (default 4).")
@click.option("--threshold-method", type=click.Choice(["f1", "fpr"]), help="Calibration: max F1 or target FPR.")
@click.option("--target-fpr", type=float, help="With --threshold-method fpr: allowed false-positive rate.")
@click.option("--seed", type=int, help="Seed for splits, coreset and projections (default 0).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), help="Where kNN/Gaussians run (default cpu).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML file with any of these options.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@friendly_errors
def main(config_file: Path | None, quiet: bool, verbose: bool, **cli: object) -> None:
    """Fit a detector on the good images of a category and write a model bundle."""
    from linewatch.train.pipeline import train

    setup_logging(verbose)
    if isinstance(cli.get("layers"), str):
        cli["layers"] = tuple(part.strip() for part in str(cli["layers"]).split(",") if part.strip())
    options = resolve(TRAIN_OPTIONS, config_file, cli)
    result = train(options, progress=not quiet)
    calibration = result.manifest["calibration"]
    training = result.manifest["training"]
    size_mb = sum(f["bytes"] for f in result.manifest["files"].values()) / 1e6
    click.echo(
        f"bundle: {result.bundle}\n"
        f"  model {options['model']} on {training['train_images']} good images of {training['category']!r}, "
        f"backbone {options['backbone']}, input {options['image_size']}px\n"
        f"  threshold {calibration['threshold']:.5g} ({calibration['method']} on {calibration['val_images']} "
        f"validation images)\n"
        f"  trained in {result.seconds:.1f} s (fit {training['fit_seconds']:.1f} s), "
        f"peak memory {result.peak_rss_mb:.0f} MiB, bundle {size_mb:.1f} MB"
    )
