"""PatchCore speed/accuracy trade-off: coreset ratio, FAISS index type and feature projection.

Features are extracted once per dataset (default extractor); each variant fits its memory bank and
scores the test-clean split through the shared scoring path. Reports image AUROC, pixel AUROC, PRO,
fit seconds and score ms/frame (kNN only, the part the variants change) at batch 8 and at batch 1
(median over single frames), as Markdown and JSON.
Run: .venv/bin/python tools/bench_tradeoff.py [--data DIR ...] [--out bench-out/tradeoff]
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import click
import numpy as np
import torch

from linewatch.batches import iter_batches
from linewatch.data import make_splits, read_mask, scan_category
from linewatch.engines.torch_engine import run_network
from linewatch.features.extractor import FeatureConfig, FeatureExtractor, build_extractor
from linewatch.features.preprocess import Preprocessor
from linewatch.metrics import auroc, pixel_auroc, pro_score
from linewatch.models.anomaly_map import resize_map
from linewatch.models.patchcore.model import PatchCore, PatchCoreParams
from linewatch.scoring import score_outputs

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT_DATA = (SHARED / "mvtec_ad" / "bottle", SHARED / "magnetic_tile" / "magnetic_tile")
VARIANTS = [  # (coreset ratio, index, projection dims)
    (0.01, "flat", None), (0.02, "flat", None), (0.05, "flat", None), (0.10, "flat", None), (0.25, "flat", None),
    (0.10, "hnsw", None), (0.10, "ivf", None), (0.10, "flat", 64), (0.02, "ivf", None),
    (0.05, "flat", 128), (0.05, "flat", 192),
]
SINGLE_FRAMES = 16  # frames timed one at a time for the batch-1 column
MAX_BANK = 45_000  # default cap: larger banks take many minutes to select and score on 2 cores


@dataclass
class Extracted:
    train: list[np.ndarray]
    test: list[np.ndarray]
    labels: np.ndarray
    masks: list[np.ndarray]  # full resolution (all-false for good images)
    shapes: list[tuple[int, int]]


def extract(data: Path, config: FeatureConfig) -> Extracted:
    splits = make_splits(scan_category(data))
    extractor = build_extractor(config)[0]

    def feature_fn(batch: np.ndarray) -> np.ndarray:
        return run_network(extractor, batch, "cpu", ("features",))["features"]

    pre = Preprocessor(config.image_size)
    train = [feature_fn(b.inputs) for b in iter_batches(splits.train, pre, 8)]
    test, masks, shapes = [], [], []
    for batch in iter_batches(splits.test, pre, 8):
        test.append(feature_fn(batch.inputs))
        for sample, image in zip(batch.samples, batch.images, strict=True):
            shape = image.shape[:2]
            shapes.append(shape)
            masks.append(read_mask(sample.mask, shape) if sample.mask else np.zeros(shape, bool))
    labels = np.array([s.label for s in splits.test])
    return Extracted(train, test, labels, masks, shapes)


def project(batches: list[np.ndarray], matrix: np.ndarray | None) -> list[np.ndarray]:
    """The extractor's seeded projection head applied to cached features (same matrix as training)."""
    if matrix is None:
        return batches
    return [np.einsum("oc,nchw->nohw", matrix, b).astype(np.float32) for b in batches]


def run_variant(ex: Extracted, config: FeatureConfig, ratio: float, index: str, dims: int | None) -> dict:
    matrix = FeatureExtractor(replace(config, projection_dims=dims)).projection.numpy() if dims else None
    start = time.perf_counter()
    model = PatchCore.fit(iter(project(ex.train, matrix)), PatchCoreParams(coreset_ratio=ratio, index=index))
    fit_s = time.perf_counter() - start
    scores, maps, score_ms = [], [], 0.0
    for batch in project(ex.test, matrix):
        timings: dict[str, float] = {}
        prediction = score_outputs(model, {"features": batch}, config.image_size, 4.0, timings)
        score_ms += timings["score"]
        scores.extend(prediction.scores.tolist())
        maps.extend(prediction.maps)
    single = []
    for frame in project([b[:1] for b in ex.test[:SINGLE_FRAMES]], matrix):
        start = time.perf_counter()
        model.patch_scores({"features": frame})
        single.append(1000 * (time.perf_counter() - start))
    full = [resize_map(m, shape) for m, shape in zip(maps, ex.shapes, strict=True)]
    keep = [i for i, (label, mask) in enumerate(zip(ex.labels, ex.masks, strict=True)) if not label or mask.any()]
    return {
        "coreset_ratio": ratio, "index": index, "projection_dims": dims, "bank": int(len(model.memory_bank)),
        "image_auroc": round(auroc(ex.labels, np.array(scores)), 4),
        "pixel_auroc": round(pixel_auroc([ex.masks[i] for i in keep], [full[i] for i in keep]), 4),
        "pro": round(pro_score([ex.masks[i] for i in keep], [full[i] for i in keep]), 4),
        "fit_s": round(fit_s, 2), "score_ms_per_frame": round(score_ms / len(scores), 2),
        "score_ms_batch1": round(float(np.median(single)), 2),
    }


@click.command()
@click.option("--data", "datasets", type=click.Path(path_type=Path), multiple=True, default=DEFAULT_DATA)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/tradeoff"), show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--image-size", type=int, default=256, show_default=True)
@click.option("--layers", default="layer2,layer3", show_default=True, help="Feature layers, comma-separated.")
@click.option("--max-bank", type=int, default=MAX_BANK, show_default=True, help="Skip variants with a larger bank.")
def main(datasets: tuple[Path, ...], out: Path, threads: int, image_size: int, layers: str, max_bank: int) -> None:
    torch.set_num_threads(threads)
    config = FeatureConfig(layers=tuple(layers.split(",")), image_size=(image_size, image_size))
    results = {}
    lines = ["| data | coreset | index | proj dims | bank | image AUROC | pixel AUROC | PRO | fit s "
             "| score ms/frame b8 | b1 |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for data in datasets:
        if not data.is_dir():
            click.echo(f"skipping {data}: not found", err=True)
            continue
        ex = extract(data, config)
        rows = []
        patches = sum(len(b) * b.shape[2] * b.shape[3] for b in ex.train)
        for ratio, index, dims in VARIANTS:
            if patches * ratio > max_bank:
                click.echo(f"{data.name}: skipping coreset {ratio:.0%} ({patches * ratio:.0f} > {max_bank} patches)")
                continue
            row = run_variant(ex, config, ratio, index, dims)
            rows.append(row)
            lines.append(f"| {data.name} | {ratio:.0%} | {index} | {dims or '-'} | {row['bank']} | "
                         f"{row['image_auroc']:.4f} | {row['pixel_auroc']:.4f} | {row['pro']:.4f} | "
                         f"{row['fit_s']:.1f} | {row['score_ms_per_frame']:.1f} | {row['score_ms_batch1']:.1f} |")
            click.echo(lines[-1])
        results[data.name] = rows
    out.mkdir(parents=True, exist_ok=True)
    summary = {"threads": threads, "image_size": image_size, "layers": config.layers, "results": results}
    (out / "tradeoff.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "tradeoff.md").write_text("\n".join(lines) + "\n")
    click.echo(f"wrote {out / 'tradeoff.md'}")


if __name__ == "__main__":
    main()
