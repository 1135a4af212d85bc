"""`inspect-eval`: metrics, per-image scores, plots and (optionally) anomaly maps for a bundle on a category."""

from __future__ import annotations

from pathlib import Path

import click

from linewatch.cli_common import friendly_errors, setup_logging


def _fmt(value: object) -> str:
    return "n/a" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


@click.command(context_settings={"show_default": True})
@click.option("--bundle", required=True, type=click.Path(path_type=Path), help="Model bundle directory.")
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Category folder in MVTec layout.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Report directory to write.")
@click.option("--split", type=click.Choice(["test", "all"]), default="test",
              help="test: the bundle's seeded test-clean split; all: every image under test/.")
@click.option("--splits", "splits_file", type=click.Path(path_type=Path),
              help="A splits.json whose test (and val) lists to use instead of the bundle's, resolved in --data by "
                   "relative path (a model trained on pooled categories, evaluated per category).")
@click.option("--save-maps", is_flag=True, help="Write one float32 .npy anomaly map per image (original size).")
@click.option("--batch-size", type=int, default=8)
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def main(bundle: Path, data: Path, out: Path, split: str, splits_file: Path | None, save_maps: bool,
         batch_size: int, device: str, quiet: bool, verbose: bool) -> None:
    """Evaluate a bundle on a category: metrics.json, scores.csv, plots, maps/."""
    from linewatch.evaluate.pipeline import evaluate

    setup_logging(verbose)
    metrics = evaluate(bundle, data, out, split=split, save_maps=save_maps, batch_size=batch_size,
                       device=device, progress=not quiet, splits_file=splits_file)
    keys = ("image_auroc", "image_auprc", "pixel_auroc", "pro", "f1", "precision", "recall", "accuracy")
    click.echo(f"{metrics['images']} images ({metrics['defective']} defective), {metrics['ms_per_image']} ms/image "
               f"({metrics['inference_ms_per_image']} in network + scoring), peak memory {metrics['peak_rss_mb']} MiB")
    click.echo("  " + "  ".join(f"{k}={_fmt(metrics[k])}" for k in keys))
    click.echo(f"report: {out}")
