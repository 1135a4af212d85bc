"""`inspect-generate`: images of good parts from a GAN bundle's generator (the reference study's "generate" mode)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from linewatch.bundle import BundleError, read_manifest
from linewatch.cli_common import friendly_errors, setup_logging


def load_generator(bundle: Path) -> Any:
    """The bundle's generator (eval mode, CPU); a clear error for bundles of other detectors."""
    from safetensors.torch import load_file

    from linewatch.models.gan.network import build_generator

    manifest = read_manifest(bundle)
    detector = manifest["detector"]
    if detector.get("kind") != "gan" or "generator" not in detector:
        raise BundleError(f"{bundle} holds a {detector.get('kind')!r} detector without a generator; "
                          f"inspect-generate needs a bundle from inspect-train --model gan")
    network = build_generator(detector["generator"]["params"])
    network.load_state_dict(load_file(str(Path(bundle) / detector["generator"]["weights"])))
    return network.eval()


def generate_images(generator: Any, count: int, seed: int, batch_size: int = 64) -> np.ndarray:
    """`count` uint8 images (N, H, W, C) from seeded standard-normal latent vectors."""
    import torch

    noise = torch.Generator().manual_seed(seed)
    z = torch.randn(count, generator.latent, generator=noise)
    out = []
    with torch.no_grad():
        for start in range(0, count, batch_size):
            x = (generator(z[start : start + batch_size]) + 1.0) * 127.5
            out.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


@click.command(context_settings={"show_default": True})
@click.option("--bundle", required=True, type=click.Path(path_type=Path),
              help="GAN bundle (inspect-train --model gan).")
@click.option("--count", type=click.IntRange(min=1), default=16, help="Images to generate.")
@click.option("--out", required=True, type=click.Path(path_type=Path, file_okay=False), help="Folder to write PNGs to.")
@click.option("--seed", type=int, default=0, help="Seed of the latent vectors (same seed, same images).")
@click.option("-v", "--verbose", is_flag=True)
@friendly_errors
def main(bundle: Path, count: int, out: Path, seed: int, verbose: bool) -> None:
    """Write COUNT generated images of good parts at the bundle's trained size."""
    import cv2

    setup_logging(verbose)
    generator = load_generator(bundle)
    images = generate_images(generator, count, seed)
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        pixels = image[:, :, 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(out / f"generated-{index:05d}.png"), pixels)
    height, width = images.shape[1:3]
    click.echo(f"wrote {count} generated {height}x{width} images to {out} (seed {seed})")
