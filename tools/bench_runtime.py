"""Runtime benchmark: throughput, latency and per-stage means of `inspect-run` per engine and batch size.

Runs the real pipeline (folder source -> batcher -> engine -> scorer -> post-processing -> ZeroMQ) over
the bottle test images; trains and exports a default bundle first when --bundle is not given.
Prints a table and writes JSON. Overhead = (preprocess + postprocess + publish) / (backbone + score), with
preprocess the source threads' CPU time for it (`SourceRunner._push`: their wall time counts network runs);
decode is reported on its own (it runs in the source threads, overlapped with inference). Score is what the image
score needs, so it holds the anomaly map for a detector that reads its score off the map (PaDiM:
`Detector.scores_from_maps`); otherwise the map is post-processing.
Each configuration runs --repeat times, interleaved; the median run is reported, with every run's ms/frame and
overhead beside it (their range is the measurement's noise).
`--precisions fp32,int8` adds the int8 network (export-model --int8) as its own configurations.
Run: .venv/bin/python tools/bench_runtime.py [--bundle DIR] [--engines onnxruntime,torch] [--batches 1,4,8]
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import click
import torch

from linewatch.engines.tensorrt_engine import tensorrt_problem
from linewatch.runtime.pipeline import RunOptions, Runtime

ROOT = Path(__file__).resolve().parents[1]
BOTTLE = ROOT.parent / "shared" / "data" / "mvtec_ad" / "bottle"


def ensure_bundle(bundle: Path, data: Path, model: str = "patchcore") -> None:
    """Train (the model's default settings) and export a bundle unless one is already there."""
    bin_dir = Path(sys.executable).parent
    if not (bundle / "manifest.json").is_file():
        subprocess.run([str(bin_dir / "inspect-train"), "--data", str(data), "--out", str(bundle), "--model", model,
                        "--quiet"], check=True)
    if not (bundle / "network.onnx").is_file():
        subprocess.run([str(bin_dir / "export-model"), str(bundle)], check=True)


def run_once(bundle: Path, data: Path, engine: str, batch: int, threads: int, precision: str = "fp32") -> dict:
    """One pass of the runtime over the test folder; its summary reduced to the benchmark's row."""
    options = RunOptions(bundle=bundle, sources=(str(data / "test"),), batch=batch, engine=engine,
                         device="cpu" if engine != "tensorrt" else "cuda", threads=threads,
                         publish="tcp://127.0.0.1:*", precision=precision)
    summary = Runtime(options).run()
    stage = summary["stage_ms"]
    overhead = (stage["preprocess"] + stage["postprocess"] + stage["publish"]) / (stage["network"] + stage["score"])
    return {"engine": engine, "precision": precision, "batch": batch, "frames": summary["frames"],
            "fps": summary["fps"], "ms_per_frame": round(1000 / summary["fps"], 2), "latency_ms": summary["latency_ms"],
            "stage_ms": stage, "overhead": round(overhead, 4), "engine_detail": summary["engine"]}


def median_run(runs: list[dict]) -> dict:
    """The run with the median throughput, with every run's ms/frame and overhead alongside (the overhead's
    denominator, the network's and the scorer's time, swings most from run to run on two shared cores)."""
    ordered = sorted(runs, key=lambda r: r["ms_per_frame"])
    return {**ordered[(len(ordered) - 1) // 2], "ms_per_frame_runs": [r["ms_per_frame"] for r in runs],
            "overhead_runs": [r["overhead"] for r in runs]}


@click.command()
@click.option("--bundle", type=click.Path(path_type=Path), default=Path("bench-out/bundle-patchcore-bottle"),
              show_default=True)
@click.option("--data", type=click.Path(path_type=Path), default=BOTTLE, show_default=True)
@click.option("--model", default="patchcore", show_default=True, help="Detector trained when --bundle is absent.")
@click.option("--engines", default="onnxruntime,torch", show_default=True)
@click.option("--batches", default="1,4,8", show_default=True)
@click.option("--precisions", default="fp32", show_default=True, help="fp32 and/or int8 (onnxruntime engine).")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--repeat", type=int, default=3, show_default=True,
              help="Runs per configuration, interleaved; the run with the median ms/frame is reported.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/runtime.json"), show_default=True)
def main(bundle: Path, data: Path, model: str, engines: str, batches: str, precisions: str, threads: int, repeat: int,
         out: Path) -> None:
    logging.basicConfig(level=logging.WARNING)
    if not data.is_dir():
        raise click.ClickException(f"{data} not found: the benchmark needs the MVTec bottle data (../shared/data)")
    torch.set_num_threads(threads)
    ensure_bundle(bundle, data, model)
    names = [e for e in engines.split(",") if e != "tensorrt" or tensorrt_problem() is None]
    configs = [(engine, int(b), precision) for engine in names for b in batches.split(",")
               for precision in precisions.split(",") if precision == "fp32" or engine == "onnxruntime"]
    runs: dict[tuple[str, int, str], list[dict]] = {config: [] for config in configs}
    for _ in range(repeat):  # interleaved, so a slow spell of the machine spreads over every configuration
        for engine, batch, precision in configs:
            runs[engine, batch, precision].append(run_once(bundle, data, engine, batch, threads, precision))
    rows = [median_run(runs[config]) for config in configs]
    header = (f"{'engine':<17} {'batch':>5} {'fps':>7} {'ms/frame':>9} {'p50':>7} {'p95':>7} {'decode':>7} "
              f"{'prep':>6} {'network':>8} {'score':>7} {'post':>6} {'pub':>6} {'overhead':>8}")
    print(header)
    for r in rows:
        s, lat = r["stage_ms"], r["latency_ms"]
        name = f"{r['engine']} {r['precision']}"
        print(f"{name:<17} {r['batch']:>5} {r['fps']:>7.1f} {r['ms_per_frame']:>9.2f} {lat['p50']:>7.1f} "
              f"{lat['p95']:>7.1f} {s['decode']:>7.2f} {s['preprocess']:>6.2f} {s['network']:>8.2f} "
              f"{s['score']:>7.2f} {s['postprocess']:>6.2f} {s['publish']:>6.2f} {r['overhead']:>8.3f}  "
              f"runs {r['ms_per_frame_runs']} overhead {min(r['overhead_runs']):.3f}-{max(r['overhead_runs']):.3f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"bundle": str(bundle), "data": str(data), "threads": threads, "runs": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
