"""GAN detector benchmarks; each prints a table and writes JSON + Markdown under bench-out/gan/.

  steps      CPU cost of one WGAN-GP critic step (every 5th also steps the generator) per size / width /
             up-sampling / threads: what sizes fit the 30-minute budget on 2 cores
  upsampling trained bundles side by side: Fréchet distance (first saved, best, last), checkerboard
             energy of the samples relative to real images, seconds
  embedding  one bundle's bank searched with downsampled pixels vs pooled Lite0 features: match quality
             on good test images and the detector's image / pixel AUROC and PRO with each
  docs       README assets of a GAN bundle: training plot, sample GIF across epochs, generated grid
  compare    inspect-eval on bundles of any detectors: image / pixel AUROC, PRO, mask metrics, binary and
             multi-class (defect-type) accuracy with the bundle's verdict gate and the mask gate;
             BUNDLE@N evaluates a GAN bundle with N AnoGAN latent-refinement steps

Examples (the README's tables):
  python tools/bench_gan.py steps
  python tools/bench_gan.py upsampling runs/upsampling/transposed runs/upsampling/upsample
  python tools/bench_gan.py embedding runs/gan-bottle --data ../shared/data/mvtec_ad/bottle
  python tools/bench_gan.py compare bottle-gan=runs/gan-bottle:../shared/data/mvtec_ad/bottle ...
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path("bench-out/gan")


def _write(name: str, rows: list[dict[str, Any]]) -> None:
    """Print rows as a Markdown table and write them as JSON and Markdown."""
    OUT.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for row in rows for k in row))

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else "-" if value is None else str(value)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k in keys) + " |" for row in rows]
    text = "\n".join(lines)
    print(text)
    (OUT / f"{name}.json").write_text(json.dumps(rows, indent=1) + "\n")
    (OUT / f"{name}.md").write_text(text + "\n")


def steps(args: argparse.Namespace) -> None:
    import torch

    from linewatch.models.gan.embedding import EmbeddingNetwork, embedding_params
    from linewatch.models.gan.model import GanModel
    from linewatch.train.options import options_for

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for size in args.sizes:
            for base in args.widths:
                for upsampling in ("transposed", "upsample"):
                    options = {k: o.default for k, o in options_for("gan").items()}
                    options.update(base_channels=base, upsampling=upsampling)
                    shape = (size, size)
                    model = GanModel(shape, options, EmbeddingNetwork(embedding_params(shape, 3, "pixels")), OUT)
                    batch = torch.rand(args.batch, 3, *shape) * 255
                    model.train_step(batch)
                    wall, cpu = time.perf_counter(), time.process_time()
                    for _ in range(args.repeat):
                        model.train_step(batch)
                    wall = (time.perf_counter() - wall) / args.repeat
                    cpu = (time.process_time() - cpu) / args.repeat
                    rows.append({"size": size, "base_channels": base, "upsampling": upsampling, "threads": threads,
                                 "batch": args.batch, "wall_ms_per_critic_step": 1000 * wall,
                                 "cpu_ms_per_critic_step": 1000 * cpu,
                                 "generator_steps_per_30_cpu_min": round(1800 / cpu / 5)})
    _write("steps", rows)


def checkerboard(images: np.ndarray) -> float:
    """Mean |2x2 Haar diagonal coefficient| of (N, C, H, W) images in [0, 1]: period-2 (checkerboard) energy."""
    x = images.astype(np.float64)
    diagonal = x[..., ::2, ::2] + x[..., 1::2, 1::2] - x[..., 1::2, ::2] - x[..., ::2, 1::2]
    return float(np.abs(diagonal).mean() / 4)


def upsampling(args: argparse.Namespace) -> None:
    from linewatch.bundle import read_manifest
    from linewatch.data import Splits, read_image, scan_category
    from linewatch.features.preprocess import Preprocessor
    from linewatch.models.gan.generate import generate_images, load_generator

    rows = []
    for bundle in map(Path, args.bundles):
        manifest = read_manifest(bundle)
        history = json.loads((bundle / "history.json").read_text())
        saved = [(r["epoch"], r["extra"]["frechet"]) for r in history if "frechet" in r.get("extra", {})]
        size = tuple(manifest["network"]["input"]["size"])
        samples = generate_images(load_generator(bundle), args.count, seed=1).transpose(0, 3, 1, 2) / 255.0
        category = scan_category(manifest["training"]["data"])
        train = Splits.load(bundle / "splits.json", category).train[: args.count]
        real = Preprocessor(size).batch([read_image(s.path) for s in train]) / 255.0
        best = min(saved, key=lambda item: item[1])
        rows.append({"bundle": bundle.name, "upsampling": manifest["detector"]["generator"]["params"]["upsampling"],
                     "epochs": len(history), "fd_first": saved[0][1], "fd_best": best[1], "best_epoch": best[0],
                     "fd_last": saved[-1][1], "fd_drop": 1 - best[1] / saved[0][1],
                     "checkerboard_vs_real": checkerboard(samples) / checkerboard(real),
                     "fit_s": manifest["training"]["fit_seconds"]})
    _write("upsampling", rows)


def embedding(args: argparse.Namespace) -> None:
    """Rebuild the bundle's scorer with each embedding over the same bank and evaluate on test-clean."""
    import torch

    from linewatch.data import Splits, read_mask, scan_category
    from linewatch.engines.torch_engine import run_network
    from linewatch.inspector import Inspector
    from linewatch.metrics import auroc, pixel_auroc, pro_score
    from linewatch.models.anomaly_map import resize_map
    from linewatch.models.gan.embedding import EmbeddingNetwork, embedding_params
    from linewatch.models.gan.scorer import GanScorer
    from linewatch.scoring import predict_samples

    inspector = Inspector.from_bundle(Path(args.bundle))
    detector = inspector.detector
    size, channels = inspector.io.size, inspector.io.channels
    samples = Splits.load(Path(args.bundle) / "splits.json", scan_category(args.data)).test
    rows = []
    for kind in ("pixels", "features"):
        network = EmbeddingNetwork(embedding_params(size, channels, kind), "default" if kind == "features" else None)
        network.eval()
        with torch.no_grad():
            bank = torch.cat([network(torch.from_numpy(detector.images[i : i + 64]).float())[0]
                              for i in range(0, len(detector.images), 64)]).numpy()
        scorer = GanScorer(detector.images, bank, detector.residual, detector.image_score)
        started = time.perf_counter()
        labels, scores, masks, maps, good_residual = [], [], [], [], []
        for batch, images, prediction in predict_samples(
                lambda x, n=network: run_network(n, x, "cpu", ("embedding", "pixels")), scorer, samples,
                inspector.preprocessor, inspector.blur_sigma, 8):
            for sample, image, score, amap in zip(batch, images, prediction.scores, prediction.maps, strict=True):
                labels.append(sample.label)
                scores.append(float(score))
                if sample.label == 0:
                    good_residual.append(float(amap.mean()))
                if sample.label == 0 or sample.mask is not None:
                    shape = image.shape[:2]
                    masks.append(np.zeros(shape, bool) if sample.mask is None else read_mask(sample.mask, shape))
                    maps.append(resize_map(amap, shape))
        seconds = time.perf_counter() - started
        rows.append({"embedding": kind, "dims": bank.shape[1], "good_mean_residual": float(np.mean(good_residual)),
                     "image_auroc": auroc(labels, scores), "pixel_auroc": pixel_auroc(masks, maps),
                     "pro": pro_score(masks, maps), "ms_per_image": 1000 * seconds / len(labels)})
    _write(f"embedding-{Path(args.bundle).name}", rows)


def refined_copy(bundle: Path, steps: int, out: Path) -> Path:
    """A copy of a GAN bundle whose scorer refines every match with `steps` AnoGAN steps."""
    import shutil

    from linewatch.bundle import read_manifest, write_manifest

    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(bundle, out, ignore=shutil.ignore_patterns("training", "checkpoints"))
    manifest = read_manifest(out)
    manifest["detector"]["refine_steps"] = steps
    write_manifest(out, manifest, list(manifest["files"]))
    return out


def compare(args: argparse.Namespace) -> None:
    from linewatch.evaluate.pipeline import evaluate

    rows = []
    for item in args.pairs:
        name, rest = item.split("=", 1)
        bundle, data = rest.split(":", 1)
        if "@" in bundle:  # BUNDLE@N: the GAN bundle with N AnoGAN refinement steps
            bundle, steps = bundle.split("@")
            bundle = str(refined_copy(Path(bundle), int(steps), OUT / "refined" / name))
        metrics = evaluate(Path(bundle), Path(data), OUT / "eval" / name, progress=False)
        masks, classes = metrics["mask_metrics"] or {}, metrics["defect_types"] or {}
        rows.append({"run": name, "model": metrics["model"].split("-")[0], "image_auroc": metrics["image_auroc"],
                     "pixel_auroc": metrics["pixel_auroc"], "pro": metrics["pro"],
                     "mask_combined": masks.get("combined"), "mask_iou": masks.get("iou"),
                     "binary_accuracy": classes.get("binary_accuracy"), "accuracy": classes.get("accuracy"),
                     "mask_gate_binary": (classes.get("mask_gate") or {}).get("binary_accuracy"),
                     "mask_gate_accuracy": (classes.get("mask_gate") or {}).get("accuracy"),
                     "images": metrics["images"], "ms_per_image": metrics["ms_per_image"]})
    _write("compare", rows)


def docs(args: argparse.Namespace) -> None:
    """Small README assets of a trained GAN bundle: its training plot, a 16-sample GIF across the saved epochs
    and a grid of 16 generated images at the trained size."""
    import cv2
    from PIL import Image

    from linewatch.models.gan.generate import generate_images, load_generator
    from linewatch.models.gan.quality import SAMPLES_DIR, TILE

    bundle, out = Path(args.bundle), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot = cv2.imread(str(bundle / "training" / "history.png"))
    cv2.imwrite(str(out / f"{args.name}-history.png"), cv2.resize(plot, None, fx=0.8, fy=0.8,
                                                                   interpolation=cv2.INTER_AREA))
    frames = []
    for path in sorted((bundle / "training" / SAMPLES_DIR).glob("epoch-*.png"))[:: args.every]:
        grid = Image.open(path).convert("RGB")
        two_rows = grid.crop((0, 0, grid.width, 2 * TILE))
        frames.append(two_rows.resize((two_rows.width * 2 // 3, two_rows.height * 2 // 3), Image.LANCZOS))
    frames[0].save(out / f"{args.name}-samples.gif", save_all=True, append_images=frames[1:], duration=400, loop=0)
    images = generate_images(load_generator(bundle), 16, seed=0)
    rows = [np.concatenate(list(images[i : i + 8]), axis=1) for i in (0, 8)]
    cv2.imwrite(str(out / f"{args.name}-samples.png"), cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    print(f"wrote {out}/{args.name}-history.png, -samples.gif ({len(frames)} frames), -samples.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("steps")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--widths", type=int, nargs="+", default=[32, 64])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeat", type=int, default=5)
    p.set_defaults(run=steps)
    p = sub.add_parser("upsampling")
    p.add_argument("bundles", nargs="+")
    p.add_argument("--count", type=int, default=128, help="samples and real images for the checkerboard energy")
    p.set_defaults(run=upsampling)
    p = sub.add_parser("embedding")
    p.add_argument("bundle")
    p.add_argument("--data", required=True)
    p.set_defaults(run=embedding)
    p = sub.add_parser("compare")
    p.add_argument("pairs", nargs="+", help="NAME=BUNDLE:DATA, or NAME=BUNDLE@N:DATA for N AnoGAN refinement steps")
    p.set_defaults(run=compare)
    p = sub.add_parser("docs")
    p.add_argument("bundle")
    p.add_argument("--name", required=True)
    p.add_argument("--out", default="docs")
    p.add_argument("--every", type=int, default=1, help="keep every N-th saved epoch in the GIF")
    p.set_defaults(run=docs)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
