"""export-model: a real ONNX file checked by onnx and run by onnxruntime, its manifest record and parity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper

from linewatch.bundle import MANIFEST, read_manifest, write_manifest
from linewatch.data.synthetic import make_synthetic_category
from linewatch.engines import ONNX_FILE, PLAN_FILE
from linewatch.engines.onnxruntime_engine import OnnxRuntimeEngine
from linewatch.engines.tensorrt_engine import TensorRTEngine, tensorrt_problem
from linewatch.export import onnx_export
from linewatch.export.cli import main
from linewatch.export.parity import FP32_TOLERANCE, check_parity, parity_samples
from linewatch.features.preprocess import Preprocessor
from linewatch.inspector import Inspector
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train

SIZE = 64
PREPROCESS = Preprocessor((SIZE, SIZE))
needs_tensorrt = pytest.mark.skipif(tensorrt_problem() is not None, reason=str(tensorrt_problem()))


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small PatchCore bundle (random backbone weights: no download, same graph)."""
    root = tmp_path_factory.mktemp("export")
    data = make_synthetic_category(root / "data", size=SIZE, n_train=12, n_test_good=4, n_test_defect=2)
    options = {"data": data, "out": root / "bundle", "weights": "none", "image_size": SIZE,
               "backbone": "efficientnet_lite0"}
    return train(resolve_training(None, options), progress=False).bundle


@pytest.fixture(scope="session")
def exported(trained: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A copy of `trained` after `export-model BUNDLE --format onnx`, with the command's output."""
    bundle = tmp_path_factory.mktemp("exported") / "bundle"
    shutil.copytree(trained, bundle)
    result = CliRunner().invoke(main, [str(bundle), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    return bundle, result.output


def _copy(bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(bundle, target)
    return target


def _tamper(source: Path, target: Path) -> None:
    """Perturb the stem convolution's weights: a genuinely wrong model that still loads and runs."""
    model = onnx.load(str(source))
    stem = next(node for node in model.graph.node if node.op_type == "Conv").input[1]
    tensor = next(t for t in model.graph.initializer if t.name == stem)
    weights = numpy_helper.to_array(tensor)
    noise = np.random.default_rng(0).normal(0, float(np.abs(weights).mean()), weights.shape)
    tensor.CopyFrom(numpy_helper.from_array((weights + noise).astype(weights.dtype), stem))
    onnx.save(model, str(target))


def test_export_writes_a_checked_onnx_graph(exported: tuple[Path, str]) -> None:
    bundle, _ = exported
    model = onnx.load(str(bundle / ONNX_FILE))
    onnx.checker.check_model(model, full_check=True)
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (model.graph.input[0], model.graph.output[0])]
    out_dims = read_manifest(bundle)["network"]["params"]["out_dims"]
    assert [v.name for v in model.graph.input] == ["images"]
    assert [v.name for v in model.graph.output] == ["features"]
    assert dims == [["batch", 3, SIZE, SIZE], ["batch", out_dims, SIZE // 8, SIZE // 8]]


def test_manifest_records_the_export_and_still_validates(trained: Path, exported: tuple[Path, str]) -> None:
    bundle, _ = exported
    before, after = read_manifest(trained), read_manifest(bundle)
    assert set(after["files"]) == set(before["files"]) | {ONNX_FILE}
    for key in ("detector", "network", "calibration", "training", "preprocess", "postprocess", "created"):
        assert after[key] == before[key], key
    section = after["export"]["onnx"]
    assert section["file"] == ONNX_FILE and section["opset"] == onnx_export.DEFAULT_OPSET
    assert section["input"]["name"] == "images" and list(section["outputs"]) == ["features"]
    assert section["dynamic_batch"] is True and section["created"]
    assert not list(bundle.glob(".export-*")), "staging folder left behind"


def test_dynamic_batch_gives_the_same_features_per_image(exported: tuple[Path, str]) -> None:
    bundle, _ = exported
    inputs = parity_samples(bundle, read_manifest(bundle), PREPROCESS).inputs[:3]
    engine = OnnxRuntimeEngine(bundle / ONNX_FILE, Inspector.from_bundle(bundle).io, device="cpu")
    together = engine(inputs)["features"]
    one_by_one = np.concatenate([engine(inputs[i : i + 1])["features"] for i in range(3)])
    assert together.shape[0] == 3
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-6 * float(np.abs(together).max()))


def test_fp32_parity_is_tiny_and_printed(exported: tuple[Path, str]) -> None:
    bundle, output = exported
    parity = read_manifest(bundle)["export"]["onnx"]["parity"]
    assert parity["passed"] and parity["images"] == 8 and "training data" in parity["source"]
    assert parity["tolerance"] == FP32_TOLERANCE
    assert parity["score_max_rel"] < 1e-5 and parity["outputs"]["features"]["max_rel"] < 1e-5
    assert "image scores" in output and "features" in output and "PASS" in output


def test_parity_check_catches_tampered_weights(exported: tuple[Path, str], tmp_path: Path) -> None:
    bundle, _ = exported
    tampered = tmp_path / ONNX_FILE
    _tamper(bundle / ONNX_FILE, tampered)
    inspector = Inspector.from_bundle(bundle)
    samples = parity_samples(bundle, inspector.manifest, PREPROCESS)
    report = check_parity(inspector, OnnxRuntimeEngine(tampered, inspector.io, device="cpu"), samples)
    assert not report.passed and report.score_max_rel > FP32_TOLERANCE
    assert "FAIL" in report.table()


def test_cli_fails_and_leaves_the_bundle_alone_when_parity_fails(
    trained: Path, exported: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good_onnx, section = exported[0] / ONNX_FILE, read_manifest(exported[0])["export"]["onnx"]

    def broken_export(network: object, io: object, path: Path, opset: int) -> dict:
        _tamper(good_onnx, path)
        return {key: value for key, value in section.items() if key != "parity"}

    monkeypatch.setattr(onnx_export, "export_onnx", broken_export)
    bundle = _copy(trained, tmp_path)
    manifest_before = (bundle / MANIFEST).read_bytes()
    result = CliRunner().invoke(main, [str(bundle), "--format", "onnx"])
    assert result.exit_code != 0
    assert "parity check failed" in result.output and "FAIL" in result.output
    assert not (bundle / ONNX_FILE).exists() and not list(bundle.glob(".export-*"))
    assert (bundle / MANIFEST).read_bytes() == manifest_before


@pytest.mark.skipif(tensorrt_problem() is None, reason="tensorrt and a GPU are present")
def test_trt_without_tensorrt_names_the_package_and_the_gpu_extra(trained: Path, tmp_path: Path) -> None:
    bundle = _copy(trained, tmp_path)
    result = CliRunner().invoke(main, [str(bundle), "--format", "trt"])
    assert result.exit_code != 0
    assert "tensorrt" in result.output and "pip install -e '.[gpu]'" in result.output
    assert "Traceback" not in result.output and not (bundle / ONNX_FILE).exists()


def test_fp16_is_rejected_for_onnx(trained: Path) -> None:
    result = CliRunner().invoke(main, [str(trained), "--format", "onnx", "--fp16"])
    assert result.exit_code != 0 and "--fp16 applies to --format trt" in result.output


def test_parity_falls_back_to_seeded_noise_with_a_warning(trained: Path, tmp_path: Path) -> None:
    manifest = read_manifest(trained)
    moved = {**manifest, "training": {**manifest["training"], "data": str(tmp_path / "gone")}}
    first, second = (parity_samples(trained, moved, PREPROCESS) for _ in range(2))
    assert first.warning and "noise" in first.warning and "--images" in first.warning
    assert first.inputs.shape == (8, 3, SIZE, SIZE)
    np.testing.assert_array_equal(first.inputs, second.inputs)


def test_parity_uses_the_images_folder_when_given(trained: Path, tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((80, 100, 3), 40 * i, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    samples = parity_samples(trained, read_manifest(trained), PREPROCESS, images_dir=folder)
    assert samples.inputs.shape == (3, 3, SIZE, SIZE) and samples.warning is None
    assert str(folder) in samples.source


@needs_tensorrt
def test_trt_engine_is_built_recorded_and_matches_torch(exported: tuple[Path, str], tmp_path: Path) -> None:
    bundle = _copy(exported[0], tmp_path)
    result = CliRunner().invoke(main, [str(bundle), "--format", "trt", "--max-batch", "4"])
    assert result.exit_code == 0, result.output
    section = read_manifest(bundle)["export"]["tensorrt"]
    assert section["file"] == PLAN_FILE and section["tensorrt"] and section["gpu"]
    assert section["parity"]["passed"] and section["batch"]["max"] == 4
    engine = TensorRTEngine(bundle / PLAN_FILE, Inspector.from_bundle(bundle).io)
    inputs = parity_samples(bundle, read_manifest(bundle), PREPROCESS).inputs
    one, many = engine(inputs[:1])["features"], engine(inputs)["features"]
    np.testing.assert_allclose(one[0], many[0], rtol=1e-4, atol=1e-6)


def _as_v1(bundle: Path) -> Path:
    """Rewrite a bundle the way linewatch 0.1 wrote it: schema 1, a `features` section, extractor.safetensors."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    network = manifest.pop("network")
    (bundle / "network.safetensors").rename(bundle / "extractor.safetensors")
    del manifest["files"]["network.safetensors"]
    manifest["features"] = {**network["params"], "weights": network["pretrained"]["source"],
                            "weights_sha256": network["pretrained"]["sha256"]}
    manifest["schema"] = "linewatch.bundle/1"
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    files = [*manifest["files"], "extractor.safetensors"]
    manifest = write_manifest(bundle, manifest, files)
    manifest["schema"] = "linewatch.bundle/1"
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    return bundle


def test_a_v1_bundle_loads_scores_the_same_and_exports(trained: Path, tmp_path: Path) -> None:
    old = _as_v1(_copy(trained, tmp_path))
    assert json.loads((old / MANIFEST).read_text())["schema"] == "linewatch.bundle/1"
    now, then = Inspector.from_bundle(trained), Inspector.from_bundle(old)
    inputs = parity_samples(trained, now.manifest, PREPROCESS).inputs[:3]
    expected = now.score(now.reference_engine()(inputs)).scores
    np.testing.assert_array_equal(then.score(then.reference_engine()(inputs)).scores, expected)
    result = CliRunner().invoke(main, [str(old), "--format", "onnx"])
    assert result.exit_code == 0, result.output
    upgraded = read_manifest(old)
    assert upgraded["schema"] == "linewatch.bundle/2" and upgraded["network"]["weights"] == "extractor.safetensors"
    assert ONNX_FILE in upgraded["files"]


def test_an_output_is_held_to_the_limit_its_network_declares() -> None:
    """AE-SSIM declares a looser limit for its map (float32 cancellation); scores and other outputs keep 1e-3."""
    from linewatch.export.parity import ParityReport
    from linewatch.models.autoencoder.model import SSIM_PARITY, AutoencoderModel

    def report(output_rel: float, limit: float, score_rel: float = 1e-6) -> ParityReport:
        return ParityReport(candidate="c", reference="r", images=2, source="s", tolerance=1e-3,
                            outputs={"residual": {"max_abs": output_rel, "max_rel": output_rel, "limit": limit}},
                            score_max_abs=score_rel, score_max_rel=score_rel)

    assert report(5e-3, SSIM_PARITY).passed and "(limit 1e-02)" in report(5e-3, SSIM_PARITY).table()
    assert not report(5e-3, 1e-3).passed
    assert not report(5e-3, SSIM_PARITY, score_rel=2e-3).passed
    assert not report(2e-2, SSIM_PARITY).passed
    options = {"channels": 1, "depth": 3, "base_channels": 8, "bottleneck": None, "dropout": 0.0, "lr": 1e-3,
               "weight_decay": 0.0, "score": "max"}
    ssim = AutoencoderModel((32, 32), {**options, "loss": "ssim"}).network_section()
    mse = AutoencoderModel((32, 32), {**options, "loss": "mse"}).network_section()
    assert ssim["parity_tolerance"] == {"residual": SSIM_PARITY} and "parity_tolerance" not in mse
