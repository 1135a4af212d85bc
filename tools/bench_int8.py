"""int8 vs fp32 networks: network ms/frame in onnxruntime and accuracy of both, per dataset and detector.

For each dataset and detector: train a bundle (PatchCore with `configs/patchcore-<data>.yaml` when there
is one, other detectors with their defaults; reused when present under --work), export fp32 ONNX, then
`export-model --int8` (forced, so a failing check is still measured and shown as FAIL). Accuracy of both
networks on val-clean (what the export checks) and test-clean (final numbers), through the same scoring
path; network time = median over --repeat rounds (fp32 and int8 alternating) of the ONNX file alone on
preprocessed test images, at batch 1 and 8, with --threads intra-op threads. Prints a Markdown table and writes JSON.
Run: .venv/bin/python tools/bench_int8.py [--data DIR ...] [--detectors patchcore,padim]
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch

from linewatch.data import read_image
from linewatch.engines import INT8_FILE, ONNX_FILE
from linewatch.engines.onnxruntime_engine import OnnxRuntimeEngine
from linewatch.export.accuracy import score_split
from linewatch.export.int8 import bundle_splits, export_bundle_int8
from linewatch.export.onnx_export import export_bundle_onnx
from linewatch.export.parity import parity_samples
from linewatch.inspector import Inspector
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_DATA = (SHARED / "mvtec_ad" / "bottle", SHARED / "magnetic_tile" / "magnetic_tile")
CONFIGS = {"bottle": ROOT / "configs" / "patchcore-bottle.yaml",
           "magnetic_tile": ROOT / "configs" / "patchcore-magnetic-tile.yaml"}


def ensure_bundle(data: Path, detector: str, bundle: Path) -> None:
    """Train (dataset config for PatchCore) and export fp32 ONNX unless the bundle already has both."""
    if not (bundle / "manifest.json").is_file():
        config = CONFIGS.get(data.name) if detector == "patchcore" else None
        options = resolve_training(config, {"data": data, "out": bundle, "model": detector})
        train(options, progress=False)
    inspector = Inspector.from_bundle(bundle)
    if ONNX_FILE not in inspector.manifest["files"]:
        export_bundle_onnx(bundle, inspector, parity_samples(bundle, inspector.manifest, inspector.preprocessor))


def network_ms(engines: dict[str, OnnxRuntimeEngine], inputs: np.ndarray, batches: tuple[int, ...],
               repeat: int) -> dict[str, dict[int, float]]:
    """Median ms per frame of each engine alone over `inputs`, per batch size; rounds alternate the engines
    (fp32, int8, fp32, ...), so a slow spell of a shared machine hits both."""
    runs: dict[str, dict[int, list[float]]] = {name: {b: [] for b in batches} for name in engines}
    for engine in engines.values():
        engine(inputs[:1])  # warm-up
    for _ in range(repeat):
        for name, engine in engines.items():
            for batch in batches:
                start = time.perf_counter()
                for i in range(0, len(inputs) - batch + 1, batch):
                    engine(inputs[i : i + batch])
                runs[name][batch].append(1000 * (time.perf_counter() - start) / (len(inputs) // batch * batch))
    return {name: {b: round(float(np.median(v)), 2) for b, v in per.items()} for name, per in runs.items()}


def measure(data: Path, detector: str, bundle: Path, threads: int, repeat: int, frames: int,
            requantise: bool) -> dict[str, Any]:
    ensure_bundle(data, detector, bundle)
    inspector = Inspector.from_bundle(bundle)
    started = time.perf_counter()
    if requantise or "onnx_int8" not in inspector.manifest.get("export", {}):
        manifest, report = export_bundle_int8(inspector, force=True, threads=threads, progress=False)
        val = report.to_dict()
    else:  # the export's own accuracy check, as recorded
        manifest = inspector.manifest
        val = manifest["export"]["onnx_int8"]["accuracy"]
    export_s = round(time.perf_counter() - started, 1)
    splits = bundle_splits(Inspector.from_bundle(bundle))
    inputs = inspector.preprocessor.batch([read_image(s.path) for s in splits.test[:frames]])
    row: dict[str, Any] = {"data": data.name, "detector": detector, "int8_export_s": export_s,
                           "val": val, "calibration": manifest["export"]["onnx_int8"]["calibration"]}
    files = {"fp32": ONNX_FILE, "int8": INT8_FILE}
    engines = {name: OnnxRuntimeEngine(bundle / file, inspector.io, "cpu", threads) for name, file in files.items()}
    timings = network_ms(engines, inputs, (1, 8), repeat)
    for precision, engine in engines.items():
        row[precision] = {"ms_b1": timings[precision][1], "ms_b8": timings[precision][8],
                          "test": score_split(inspector, engine, splits.test).metrics,
                          "mb": round((bundle / files[precision]).stat().st_size / 1e6, 2)}
    row["speedup_b1"] = round(row["fp32"]["ms_b1"] / row["int8"]["ms_b1"], 2)
    row["speedup_b8"] = round(row["fp32"]["ms_b8"] / row["int8"]["ms_b8"], 2)
    return row


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| data | detector | network ms/frame b1 fp32 / int8 | b8 fp32 / int8 | speed-up b1 / b8 | "
             "val image AUROC fp32 / int8 | test image AUROC fp32 / int8 | test pixel AUROC fp32 / int8 | "
             "test PRO fp32 / int8 | check |", "|" + "---|" * 10]
    for r in rows:
        f, i = r["fp32"], r["int8"]
        lines.append(
            f"| {r['data']} | {r['detector']} | {f['ms_b1']} / {i['ms_b1']} | {f['ms_b8']} / {i['ms_b8']} | "
            f"{r['speedup_b1']}x / {r['speedup_b8']}x | {cell(r['val']['fp32']['image_auroc'])} / "
            f"{cell(r['val']['int8']['image_auroc'])} | {cell(f['test']['image_auroc'])} / "
            f"{cell(i['test']['image_auroc'])} | {cell(f['test']['pixel_auroc'])} / {cell(i['test']['pixel_auroc'])} | "
            f"{cell(f['test']['pro'])} / {cell(i['test']['pro'])} | {'PASS' if r['val']['passed'] else 'FAIL'} |")
    return "\n".join(lines)


@click.command()
@click.option("--data", "datasets", multiple=True, type=click.Path(path_type=Path), default=DEFAULT_DATA)
@click.option("--detectors", default="patchcore,padim", show_default=True)
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--repeat", type=int, default=3, show_default=True)
@click.option("--frames", type=int, default=48, show_default=True, help="Test images timed per network.")
@click.option("--work", type=click.Path(path_type=Path), default=Path("bench-out/int8"), show_default=True)
@click.option("--requantise/--reuse", default=True, show_default=True,
              help="Quantise again, or reuse a bundle's recorded int8 export and its accuracy check.")
def main(datasets: tuple[Path, ...], detectors: str, threads: int, repeat: int, frames: int, work: Path,
         requantise: bool) -> None:
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(threads)
    rows = []
    for data in datasets:
        if not data.is_dir():
            raise click.ClickException(f"{data} not found: the benchmark needs the shared data (../shared/data)")
        for detector in detectors.split(","):
            click.echo(f"{data.name} / {detector} ...", err=True)
            rows.append(measure(data, detector, work / f"{detector}-{data.name}", threads, repeat, frames, requantise))
            print(table(rows[-1:]).splitlines()[-1])
    markdown = table(rows)
    print(markdown)
    work.mkdir(parents=True, exist_ok=True)
    (work / "int8.md").write_text(markdown + "\n")
    (work / "int8.json").write_text(json.dumps({"threads": threads, "rows": rows}, indent=2) + "\n")
    print(f"wrote {work / 'int8.json'} and {work / 'int8.md'}")


if __name__ == "__main__":
    main()
