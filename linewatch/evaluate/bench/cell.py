"""One grid cell: train a detector (unless the setting reuses the clean model), evaluate it, keep example maps.

A cell is a plain JSON-able dict (so it travels to Ray workers unchanged) and owns its folder: `bundle/`,
`eval-<category>/` (inspect-eval's report) and, last, `result.json`. A cell whose `result.json` carries
its fingerprint is finished and never run again; a folder without one is an interrupted cell and is
cleared and redone. A failing cell writes `error.json` instead (`record_failure`; the runner writes it for
a cell whose process died), so the rest of the grid goes on and the next run retries it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

RESULT = "result.json"
ERROR = "error.json"
EXAMPLES = "examples"


def fingerprint(cell: dict[str, Any]) -> str:
    """Hash of everything that determines a cell's result (not where it runs or how it reports)."""
    keys = ("id", "kind", "options", "seed", "setting", "train_data", "splits", "bundle", "evals", "examples",
            "upstream")
    text = json.dumps({k: cell.get(k) for k in keys}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _stored(cell: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The cell folder's `name` JSON if it was written for this cell's fingerprint, else None."""
    try:
        doc = json.loads((Path(cell["folder"]) / name).read_text())
    except (OSError, ValueError):
        return None
    return doc if doc.get("fingerprint") == cell["fingerprint"] else None


def finished(cell: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result of a cell finished with the same fingerprint, else None."""
    return _stored(cell, RESULT)


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)


def _train(cell: dict[str, Any], progress: bool) -> dict[str, Any]:
    from linewatch.config import resolve
    from linewatch.data import Splits, scan_category
    from linewatch.resources import reset_peak_rss
    from linewatch.train.options import options_for
    from linewatch.train.pipeline import train

    options = resolve(options_for(cell["kind"]), None, {
        **cell["options"], "data": cell["train_data"], "out": cell["bundle"], "model": cell["kind"],
        "seed": cell["seed"]})
    splits = Splits.load(cell["splits"], scan_category(cell["train_data"]))
    reset_peak_rss()
    result = train(options, progress=progress, splits=splits)
    bundle = Path(cell["bundle"])
    files = result.manifest["files"]
    size = sum(f["bytes"] for f in files.values()) + (bundle / "manifest.json").stat().st_size
    training = result.manifest["training"]
    return {"seconds": training["seconds"], "fit_seconds": training["fit_seconds"],
            "peak_rss_mb": training["peak_rss_mb"], "bundle_mb": round(size / 1e6, 3),
            "train_images": training["train_images"], "best_epoch": training.get("best_epoch")}


def save_example_maps(bundle: Path, data: Path, rels: list[str], out: Path) -> None:
    """Normalised anomaly maps (0.5 = region threshold) of the report's example images, float16 .npy."""
    from linewatch.data import scan_category
    from linewatch.inspector import Inspector
    from linewatch.scoring import predict_samples

    inspector = Inspector.from_bundle(bundle)
    by_rel = {s.rel: s for s in scan_category(data).test}
    samples = [by_rel[rel] for rel in rels if rel in by_rel]
    out.mkdir(parents=True, exist_ok=True)
    index = 0
    for _, _, prediction in predict_samples(inspector.reference_engine(), inspector.detector, samples,
                                            inspector.preprocessor, inspector.blur_sigma, 8):
        for amap in prediction.maps:
            normalised = np.asarray(inspector.map_normalizer.normalize(amap), dtype=np.float16)
            np.save(out / f"{index:02d}.npy", normalised, allow_pickle=False)
            index += 1
    (out / "examples.json").write_text(json.dumps([s.rel for s in samples]) + "\n")


def _identity(cell: dict[str, Any], pid: int) -> dict[str, Any]:
    """What a result or error says about its cell, and where it ran (a Ray cluster has many hosts)."""
    base = {k: cell[k] for k in ("id", "category", "detector", "kind", "setting", "seed", "fingerprint")}
    return base | {"host": socket.gethostname(), "pid": pid}


def record_failure(cell: dict[str, Any], pid: int, error: str, wall_s: float, trace: str = "") -> dict[str, Any]:
    """Write the cell's `error.json` (the grid goes on; the next run retries the cell) and return it."""
    failure = {**_identity(cell, pid), "status": "failed", "error": error, "traceback": trace,
               "wall_s": round(wall_s, 1)}
    folder = Path(cell["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / ERROR, failure)
    return failure


def stored_failure(cell: dict[str, Any]) -> dict[str, Any] | None:
    """The `error.json` a failed run of this cell left, if any."""
    return _stored(cell, ERROR)


def run_cell(cell: dict[str, Any], progress: bool = False) -> dict[str, Any]:
    """Run (or skip, when finished earlier) one cell; always returns its result dict, never raises."""
    done = finished(cell)
    if done is not None:
        return {**done, "skipped": True}
    folder = Path(cell["folder"])
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    start = time.perf_counter()
    try:
        from linewatch.evaluate.pipeline import evaluate

        training = _train(cell, progress) if cell["train_data"] else None
        evals = {}
        for target in cell["evals"]:
            out = folder / f"eval-{target['category']}"
            metrics = evaluate(Path(cell["bundle"]), Path(target["data"]), out, batch_size=cell["batch_size"],
                               progress=progress, splits_file=Path(target["splits"]), plots=False)
            save_example_maps(Path(cell["bundle"]), Path(target["data"]), cell["examples"].get(target["category"], []),
                              out / EXAMPLES)
            evals[target["category"]] = {"metrics": metrics, "report": str(out)}
    except Exception as exc:  # noqa: BLE001 - one failing cell must not stop the grid; the error is kept
        return record_failure(cell, os.getpid(), f"{type(exc).__name__}: {exc}", time.perf_counter() - start,
                              traceback.format_exc())
    result = {**_identity(cell, os.getpid()), "status": "ok", "train": training, "evals": evals,
              "bundle": cell["bundle"], "wall_s": round(time.perf_counter() - start, 1)}
    _write_json(folder / RESULT, result)
    return result
