"""Registration against the true motion: each `--align` estimator on the misaligned proxies.

The proxies' images were moved by known seeded warps (`proxy_data.misalign_matrices`), so the true warp from
the reference view to any frame is known at the model size: S M_frame M_reference^-1 S^-1 (S the stretch to
it). The reference is chosen as training chooses it (`align.reference_from_samples` over the proxy's
train/good images); every train and test image is then registered to it, as the runtime registers frames.
Error: RMS displacement (model pixels) between the estimated and the true warp over a 9 x 9 grid of the
image's inner 3/4 (the part: the corners are background). The truth also holds each original image's own
placement, which no estimator can see: a floor of a few pixels shared by all. Cost: one thread's CPU time per
frame for the thumbnail and the estimate. A frame the estimator gives up on (None) is counted apart.
Prints a table and writes JSON.
Run: .venv/bin/python tools/bench_align.py [--proxies bottle-misaligned,transistor-misaligned] [--size 256]
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np
from bench_accuracy import PROXIES, ensure_proxy  # sibling script: tools/ is on sys.path when run
from proxy_data import misalign_matrices

from linewatch.data import read_image, scan_category
from linewatch.features.align import Aligner, reference_from_samples, thumbnail
from linewatch.features.preprocess import resize


def true_warps(proxy: Path, size: tuple[int, int], reference: str, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Reference -> frame warps at the model size, by relative path."""
    matrices = misalign_matrices(proxy)
    stretch = np.diag([size[1] / shape[1], size[0] / shape[0], 1.0])
    back = np.linalg.inv(matrices[reference]) @ np.linalg.inv(stretch)
    return {rel: (stretch @ matrix @ back)[:2] for rel, matrix in matrices.items()}


def rms_error(warp: np.ndarray, truth: np.ndarray, size: tuple[int, int]) -> float:
    height, width = size
    ys, xs = np.mgrid[height / 8 : height * 7 / 8 : 9j, width / 8 : width * 7 / 8 : 9j]
    points = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    return float(np.sqrt(((warp.astype(np.float64) @ points - truth @ points) ** 2).sum(axis=0).mean()))


def measure(proxy: Path, method: str, size: tuple[int, int], frames: dict[str, np.ndarray]) -> dict[str, Any]:
    """`frames`: every train and test image of the proxy at the model size, by relative path."""
    aligner: Aligner = reference_from_samples(scan_category(proxy).train, size, method)
    rels = list(frames)
    reference = next(rel for rel in rels if rel.startswith("train/")
                     and np.array_equal(thumbnail(frames[rel], aligner.downscale), aligner.reference))
    shape = read_image(proxy / reference).shape[:2]
    truth = true_warps(proxy, size, reference, shape)
    errors, failed, cpu = [], 0, 0.0
    for rel in rels:
        start = time.thread_time()
        warp = aligner.warp_matrix(frames[rel])
        cpu += time.thread_time() - start
        if warp is None:
            failed += 1
        else:
            errors.append(rms_error(warp, truth[rel], size))
    unaligned = [rms_error(np.eye(2, 3), truth[rel], size) for rel in rels]
    e = np.array(errors)
    return {"proxy": proxy.name, "method": method, "frames": len(rels), "failed": failed,
            "median_px": round(float(np.median(e)), 2), "p90_px": round(float(np.percentile(e, 90)), 2),
            "max_px": round(float(e.max()), 2), "over_8px": int((e > 8).sum()),
            "unaligned_median_px": round(float(np.median(unaligned)), 2),
            "ms_per_frame": round(1000 * cpu / len(rels), 3), "reference": reference}


@click.command()
@click.option("--proxies", default="bottle-misaligned,transistor-misaligned", show_default=True,
              help="Misalign proxies under bench-out/proxies (built when missing).")
@click.option("--methods", default="lk-affine,ecc-affine,lk,ecc", show_default=True)
@click.option("--size", type=int, default=256, show_default=True, help="Square model input, as PaDiM's default.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/align.json"), show_default=True)
def main(proxies: str, methods: str, size: int, out: Path) -> None:
    cv2.setNumThreads(1)  # as the runtime's source threads
    rows = []
    click.echo(f"{'proxy':24s} {'method':11s} {'frames':>6s} {'failed':>6s} {'median':>7s} {'p90':>6s} {'max':>6s} "
               f"{'>8px':>5s} {'unaligned':>9s} {'ms/frame':>8s}")
    for name in proxies.split(","):
        proxy = PROXIES / name
        ensure_proxy(proxy)
        category = scan_category(proxy)
        frames = {s.rel: resize(read_image(s.path), (size, size)) for s in [*category.train, *category.test]}
        for method in methods.split(","):
            row = measure(proxy, method, (size, size), frames)
            rows.append(row)
            click.echo(f"{name:24s} {method:11s} {row['frames']:6d} {row['failed']:6d} {row['median_px']:7.2f} "
                       f"{row['p90_px']:6.2f} {row['max_px']:6.2f} {row['over_8px']:5d} "
                       f"{row['unaligned_median_px']:9.2f} {row['ms_per_frame']:8.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"size": size, "error": "RMS displacement, model px, inner 3/4", "rows": rows},
                              indent=2))
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
