"""PaDiM scorer benchmark: Mahalanobis scoring ms/frame at the default size (256 px -> 64x64 positions x 100 dims).

The Gaussian is fitted on random features (the cost does not depend on the values); timing covers
`patch_scores` alone and the full shared scoring path (maps + image score), at batch 1 and 8, for each
position-tolerance radius in --radii (0 = the plain per-position distance).
Run: .venv/bin/python tools/bench_padim.py [--threads 2] [--radii 0,1] [--out bench-out/padim.json]
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
import numpy as np
import torch

from linewatch.models.padim.model import Padim, PadimParams
from linewatch.scoring import score_outputs


def median_ms(fn, frames: int, repeats: int) -> float:
    """Median over repeats of ms per frame (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start) / frames)
    return float(np.median(times))


@click.command()
@click.option("--image-size", type=int, default=256, show_default=True)
@click.option("--dims", type=int, default=100, show_default=True)
@click.option("--stride", type=int, default=4, show_default=True, help="Finest feature stride (Lite0 layer1: 4).")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--repeats", type=int, default=20, show_default=True)
@click.option("--radii", default="0,1", show_default=True, help="Comma-separated --padim-radius values to time.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/padim.json"), show_default=True)
def main(image_size: int, dims: int, stride: int, threads: int, repeats: int, radii: str, out: Path) -> None:
    torch.set_num_threads(threads)
    side = image_size // stride
    rng = np.random.default_rng(0)
    train = rng.normal(size=(2 * dims, dims, side, side)).astype(np.float32)
    start = time.perf_counter()
    model = Padim.fit(iter(np.array_split(train, 8)), PadimParams())
    fit_s = time.perf_counter() - start
    result = {"image_size": image_size, "positions": side * side, "dims": dims, "threads": threads,
              "fit_seconds_random_features": round(fit_s, 2), "target_ms": 20.0}
    for radius in (int(r) for r in radii.split(",")):
        scorer = Padim(model.mean.numpy(), model.inv_cov.numpy(), model.feature_shape, PadimParams(radius=radius),
                       model.train_images)
        suffix = "" if radius == 0 else f"_radius{radius}"
        for batch in (1, 8):
            outputs = {"features": rng.normal(size=(batch, dims, side, side)).astype(np.float32)}
            result[f"mahalanobis_ms_per_frame_b{batch}{suffix}"] = round(median_ms(
                lambda o=outputs, s=scorer: s.patch_scores(o), batch, repeats), 2)
            result[f"score_path_ms_per_frame_b{batch}{suffix}"] = round(median_ms(
                lambda o=outputs, s=scorer: score_outputs(s, o, (image_size, image_size), 4.0), batch, repeats), 2)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:>32}: {value}")


if __name__ == "__main__":
    main()
