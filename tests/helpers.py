"""Small builders shared by tests: tiny synthetic categories and bundles, and inspect-eval's scores."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

from click.testing import CliRunner

from linewatch.data.synthetic import make_synthetic_category
from linewatch.evaluate.cli import main as eval_main
from linewatch.export.cli import main as export_main
from linewatch.runtime.listen import listen
from linewatch.runtime.pipeline import RunOptions, Runtime
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train


def tiny_category(root: Path, size: int = 64, defects: int = 4) -> Path:
    return make_synthetic_category(root / "cat", size=size, n_train=12, n_test_good=4, n_test_defect=defects)


def tiny_bundle(data: Path, out: Path, size: int = 64, export: bool = False) -> Path:
    """A PatchCore bundle with random backbone weights (no download, same graph); `export` adds network.onnx."""
    train(resolve_training(None, {"data": data, "out": out, "weights": "none", "image_size": size}), progress=False)
    if export:
        result = CliRunner().invoke(export_main, [str(out)])
        assert result.exit_code == 0, result.output
    return out


def eval_scores(bundle: Path, data: Path, report: Path) -> dict[str, float]:
    """`inspect-eval --split all`'s scores.csv as {path relative to the category: raw score}."""
    result = CliRunner().invoke(eval_main, ["--bundle", str(bundle), "--data", str(data), "--out", str(report),
                                            "--split", "all", "--quiet"])
    assert result.exit_code == 0, result.output
    with open(report / "scores.csv") as handle:
        return {row["path"]: float(row["score"]) for row in csv.DictReader(handle)}


def published_headers(bundle: Path, folder: Path) -> list[dict]:
    """The verdict headers `inspect-run` (onnxruntime, CPU) publishes for every PNG under `folder`, as a
    subscriber on a real ZeroMQ socket receives them."""
    runtime = Runtime(RunOptions(bundle=bundle, sources=(str(folder),), publish="tcp://127.0.0.1:*",
                                 wait_subscribers=1, engine="onnxruntime", device="cpu"))
    received: dict = {}
    thread = threading.Thread(target=lambda: received.update(
        result=listen(runtime.publisher.endpoint, count=len(list(folder.rglob("*.png"))), timeout_s=3.0,
                      echo=lambda *_: None)))
    thread.start()
    runtime.run()
    thread.join(timeout=30)
    assert not thread.is_alive()
    return received["result"].headers
