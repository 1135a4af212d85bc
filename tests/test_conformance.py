"""Every registered detector through the whole product: fit, bundle round trip, defect sensitivity, ONNX
export parity and the runtime publishing the raw scores `inspect-eval` writes (the parity contract).

A detector added to the registry is tested here without new test code, with its spec's `quick` options.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from linewatch.bundle import read_manifest
from linewatch.data import Splits, read_image, scan_category
from linewatch.data.synthetic import make_synthetic_category
from linewatch.evaluate.cli import main as eval_main
from linewatch.export.cli import main as export_main
from linewatch.inspector import Inspector
from linewatch.models.components.feature_memory import calibration_scorers
from linewatch.models.registry import DETECTOR_KINDS, get_spec
from linewatch.runtime.journal import read_journal
from linewatch.runtime.pipeline import RunOptions, Runtime
from linewatch.scoring import predict_groups
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train


@pytest.fixture(scope="module")
def category(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_category(tmp_path_factory.mktemp("conformance") / "cat", size=64, n_train=24,
                                   n_test_good=4, n_test_defect=2)


@pytest.fixture(scope="module", params=DETECTOR_KINDS)
def bundle(request: pytest.FixtureRequest, category: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    kind = request.param
    out = tmp_path_factory.mktemp("bundles") / kind
    train(resolve_training(None, {"data": category, "out": out, "model": kind, **get_spec(kind).quick}),
          progress=False)
    result = CliRunner().invoke(export_main, [str(out), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    return out


def test_the_loaded_bundle_scores_validation_exactly_as_the_fitted_model_did(bundle: Path, category: Path) -> None:
    """The bundle round trip, and for memories holding val-clean's goods (`val_goods`) the held-out detectors
    fitted again from the bundle: calibration's extreme scores come back exactly."""
    inspector = Inspector.from_bundle(bundle)
    splits = Splits.load(bundle / "splits.json", scan_category(category))
    scorers = calibration_scorers(inspector, splits.val, splits.train)
    assert sorted(s.path for group, _ in scorers for s in group) == sorted(s.path for s in splits.val)
    if inspector.manifest["training"].get("val_goods_in_memory"):
        assert len(scorers) == 3 and all(detector is not inspector.detector for _, detector in scorers[1:])
    scores = np.concatenate([p.scores for _, _, p in predict_groups(
        inspector.reference_engine(), scorers, inspector.preprocessor, inspector.blur_sigma, 4)])
    calibration = inspector.manifest["calibration"]
    assert float(scores.min()) == pytest.approx(calibration["low"], rel=1e-6, abs=1e-12)
    assert float(scores.max()) == pytest.approx(calibration["high"], rel=1e-6, abs=1e-12)


def _paint(image: np.ndarray) -> np.ndarray:
    """A dark hole and a bright scratch, each covering a clear part of the part."""
    painted = image.copy()
    h, w = image.shape[:2]
    cv2.circle(painted, (w // 3, h // 2), max(3, h // 7), (10, 10, 10), -1)
    cv2.line(painted, (w // 2, h // 5), (4 * w // 5, 4 * h // 5), (250, 250, 245), max(2, h // 20))
    return painted


def test_a_painted_defect_scores_above_the_clean_part(bundle: Path, category: Path) -> None:
    inspector = Inspector.from_bundle(bundle)
    engine = inspector.reference_engine()
    goods = [read_image(p) for p in sorted((category / "test" / "good").glob("*.png"))]
    clean = inspector.preprocessor.batch(goods)
    painted = inspector.preprocessor.batch([_paint(image) for image in goods])
    clean_scores, painted_scores = (inspector.score(engine(batch)).scores for batch in (clean, painted))
    assert (painted_scores > clean_scores).all(), (clean_scores, painted_scores)


def test_the_onnx_export_passed_parity_on_every_output(bundle: Path) -> None:
    manifest = read_manifest(bundle)
    parity = manifest["export"]["onnx"]["parity"]
    assert parity["passed"] and set(parity["outputs"]) == set(manifest["network"]["outputs"])
    declared = manifest["network"].get("parity_tolerance", {})  # AE-SSIM's map: float32 cancellation (README)
    assert parity["score_max_rel"] < 1e-4
    for name, output in parity["outputs"].items():
        assert output["max_rel"] < declared.get(name, 1e-3) / 10, (name, output)


def test_the_runtime_publishes_the_raw_scores_inspect_eval_writes(bundle: Path, category: Path,
                                                                  tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    summary = Runtime(RunOptions(bundle=bundle, sources=(str(category / "test"),), engine="onnxruntime",
                                 device="cpu", publish="tcp://127.0.0.1:*", journal=journal)).run()
    headers = read_journal(journal)
    assert summary["frames"] == len(headers) == len(list((category / "test").rglob("*.png")))
    assert all(h["schema"] == "linewatch.verdict/2" and "network" in h["latency_ms"] for h in headers)
    report = tmp_path / "report"
    result = CliRunner().invoke(eval_main, ["--bundle", str(bundle), "--data", str(category), "--out", str(report),
                                            "--split", "all", "--quiet"])
    assert result.exit_code == 0, result.output
    with open(report / "scores.csv") as handle:
        expected = {row["path"]: float(row["score"]) for row in csv.DictReader(handle)}
    published = {str(Path(h["path"]).relative_to(category)): h["raw_score"] for h in headers}
    assert published.keys() == expected.keys()
    for path, score in expected.items():
        assert published[path] == pytest.approx(score, rel=1e-4, abs=1e-9), path
    assert json.loads((report / "metrics.json").read_text())["model"] == headers[0]["model"]
