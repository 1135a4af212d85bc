"""export-model --int8: a real QDQ ONNX file, its accuracy check and record, and the runtime's --precision int8."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from helpers import tiny_bundle, tiny_category

from linewatch.bundle import MANIFEST, read_manifest
from linewatch.data import Splits, read_image, scan_category
from linewatch.engines import INT8_FILE, EngineUnavailable, open_engine
from linewatch.engines.onnxruntime_engine import OnnxRuntimeEngine
from linewatch.export.cli import main as export_main
from linewatch.export.int8 import AccuracyError, export_bundle_int8
from linewatch.inspector import Inspector
from linewatch.models.components.feature_memory import calibration_scorers
from linewatch.runtime.journal import read_journal
from linewatch.runtime.pipeline import RunOptions, Runtime
from linewatch.scoring import predict_groups
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train

SIZE = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_category(tmp_path_factory.mktemp("int8"), SIZE)


@pytest.fixture(scope="module")
def exported(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PatchCore bundle with its fp32 ONNX export."""
    return tiny_bundle(data, tmp_path_factory.mktemp("int8-bundle") / "bundle", SIZE, export=True)


@pytest.fixture(scope="module")
def quantised(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    bundle = tmp_path_factory.mktemp("int8-q") / "bundle"
    shutil.copytree(exported, bundle)
    result = CliRunner().invoke(export_main, [str(bundle), "--format", "onnx", "--int8", "--force"])
    assert result.exit_code == 0, result.output
    return bundle, result.output


def test_int8_export_writes_a_quantised_graph_and_records_its_accuracy(quantised: tuple[Path, str]) -> None:
    bundle, output = quantised
    model = onnx.load(str(bundle / INT8_FILE))
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ format
    manifest = read_manifest(bundle)  # hashes of every file, the new one included, still verify
    section = manifest["export"]["onnx_int8"]
    assert section["file"] == INT8_FILE and INT8_FILE in manifest["files"] and section["format"] == "QDQ"
    accuracy = section["accuracy"]
    assert set(accuracy["fp32"]) == set(accuracy["int8"]) == {"image_auroc", "pixel_auroc", "pro"}
    assert accuracy["val_images"] == manifest["calibration"]["val_images"] and accuracy["checked"]
    loss = accuracy["fp32"]["image_auroc"] - accuracy["int8"]["image_auroc"]
    assert accuracy["image_auroc_loss"] == pytest.approx(loss, abs=1e-6)
    assert section["calibration"]["threshold"] > 0 and "map" in section["calibration"]
    assert "int8 accuracy check on val-clean" in output and "image_auroc" in output
    # The memory holds val-clean's goods: re-calibration scores them as training's calibration did, with
    # held-out detectors (the bundle's own detector remembers them and would score them lower).
    inspector = Inspector.from_bundle(bundle)
    assert manifest["training"]["val_goods_in_memory"] > 0
    splits = Splits.load(bundle / "splits.json", scan_category(manifest["training"]["data"]))
    int8 = OnnxRuntimeEngine(bundle / INT8_FILE, inspector.io, "cpu")
    scorers = calibration_scorers(inspector, splits.val, splits.train)
    scores = np.concatenate([p.scores for _, _, p in predict_groups(int8, scorers, inspector.preprocessor,
                                                                    inspector.blur_sigma, 8)])
    assert (scores.min(), scores.max()) == pytest.approx(
        (section["calibration"]["low"], section["calibration"]["high"]), rel=1e-5)
    assert manifest["export"]["onnx"]["file"] == "network.onnx"  # the fp32 file stays the default


def test_int8_export_refuses_an_accuracy_loss_and_leaves_the_bundle_untouched(exported: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(exported, bundle)
    before = (bundle / MANIFEST).read_text()
    with pytest.raises(AccuracyError, match="was not written"):
        export_bundle_int8(Inspector.from_bundle(bundle), max_auroc_loss=-1.0, progress=False)
    assert not (bundle / INT8_FILE).exists() and (bundle / MANIFEST).read_text() == before
    manifest, report = export_bundle_int8(Inspector.from_bundle(bundle), max_auroc_loss=-1.0, force=True,
                                          progress=False)
    assert not report.passed and manifest["export"]["onnx_int8"]["forced"] is True


def _nan_quantize(fp32_path: Path, int8_path: Path, reader: object, method: str = "minmax") -> dict:
    """Stands in for the quantiser: the fp32 graph with every output multiplied by NaN (what an int8 SSIM
    tail produces when its variances fall out of range)."""
    model = onnx.load(str(fp32_path))
    for output in model.graph.output:
        raw, nan = output.name + "_raw", output.name + "_nan"
        for node in model.graph.node:
            for names in (node.input, node.output):
                renamed = [raw if name == output.name else name for name in names]
                del names[:]
                names.extend(renamed)
        model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(np.nan, np.float32), nan))
        model.graph.node.append(onnx.helper.make_node("Mul", [raw, nan], [output.name]))
    onnx.save(model, str(int8_path))
    return {"format": "QDQ"}


def test_int8_export_refuses_a_network_with_nan_scores_even_when_forced(data: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = tmp_path / "bundle"
    train(resolve_training(None, {"data": data, "out": bundle, "model": "autoencoder", "image_size": 32,
                                  "base_channels": 8, "epochs": 1, "batch_size": 8}), progress=False)
    assert CliRunner().invoke(export_main, [str(bundle)]).exit_code == 0
    before = (bundle / MANIFEST).read_text()
    monkeypatch.setattr("linewatch.export.int8.quantize", _nan_quantize)
    with pytest.raises(AccuracyError, match="NaN or infinite scores .* was not written; deploy the fp32"):
        export_bundle_int8(Inspector.from_bundle(bundle), force=True, progress=False)
    assert not (bundle / INT8_FILE).exists() and (bundle / MANIFEST).read_text() == before


def test_runtime_precision_int8_publishes_int8_scores_with_the_int8_threshold(quantised: tuple[Path, str], data: Path,
                                                                             tmp_path: Path) -> None:
    bundle, _ = quantised
    journal = tmp_path / "journal.jsonl"
    options = RunOptions(bundle=bundle, sources=(str(data / "test"),), publish="tcp://127.0.0.1:*", journal=journal,
                         engine="auto", device="cpu", precision="int8")
    runtime = Runtime(options)
    assert INT8_FILE in runtime.engine.describe()
    summary = runtime.run()
    headers = read_journal(journal)
    images = sorted((data / "test").rglob("*.png"))
    assert summary["frames"] == len(headers) == len(images) and summary["errors"] == 0
    inspector = Inspector.from_bundle(bundle, precision="int8")
    engine = OnnxRuntimeEngine(bundle / INT8_FILE, inspector.io, "cpu")
    expected = inspector.score(engine(inspector.preprocessor.batch([read_image(p) for p in images]))).scores
    by_path = {Path(h["path"]).resolve(): h for h in headers}
    got = np.array([by_path[p.resolve()]["raw_score"] for p in images])
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    threshold = json.loads((bundle / MANIFEST).read_text())["export"]["onnx_int8"]["calibration"]["threshold"]
    assert all(h["threshold"] == pytest.approx(threshold) for h in headers)


def test_precision_int8_needs_the_int8_export_and_an_engine_that_runs_it(exported: Path,
                                                                          quantised: tuple[Path, str]) -> None:
    manifest = read_manifest(exported)
    with pytest.raises(ValueError, match="--format onnx --int8"):
        open_engine(exported, manifest, lambda: None, "onnxruntime", "cpu", precision="int8")
    with pytest.raises(ValueError, match="--format onnx --int8"):
        Inspector.from_bundle(exported, precision="int8")
    bundle, _ = quantised
    with pytest.raises(EngineUnavailable, match="onnxruntime or triton"):
        open_engine(bundle, read_manifest(bundle), lambda: None, "torch", "cpu", precision="int8")
