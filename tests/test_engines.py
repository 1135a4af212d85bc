"""Engines on a real exported bundle: onnxruntime, torch, TensorRT guard rails and `open_engine`."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from linewatch.bundle import BundleError, read_manifest
from linewatch.data.synthetic import make_synthetic_category
from linewatch.engines import ONNX_FILE, PLAN_FILE, EngineUnavailable, NetworkIO, open_engine
from linewatch.engines.onnxruntime_engine import OnnxRuntimeEngine
from linewatch.engines.tensorrt_engine import TensorRTEngine, tensorrt_problem
from linewatch.engines.torch_engine import TorchEngine
from linewatch.export.onnx_export import export_bundle_onnx
from linewatch.export.parity import parity_samples
from linewatch.inspector import Inspector
from linewatch.train.options import resolve_training
from linewatch.train.pipeline import train

SIZE = 64


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(plain bundle, the same bundle with network.onnx exported)."""
    root = tmp_path_factory.mktemp("engines")
    data = make_synthetic_category(root / "data", size=SIZE, n_train=8, n_test_good=2, n_test_defect=2)
    options = {"data": data, "out": root / "plain", "weights": "none", "image_size": SIZE}
    plain = train(resolve_training(None, options), progress=False).bundle
    exported = root / "exported"
    shutil.copytree(plain, exported)
    inspector = Inspector.from_bundle(exported)
    export_bundle_onnx(exported, inspector, parity_samples(exported, inspector.manifest, inspector.preprocessor))
    return plain, exported


@pytest.fixture(scope="session")
def inputs(bundles: tuple[Path, Path]) -> np.ndarray:
    inspector = Inspector.from_bundle(bundles[0])
    return parity_samples(bundles[0], inspector.manifest, inspector.preprocessor).inputs[:4]


def _io(bundle: Path) -> NetworkIO:
    return NetworkIO.from_section(read_manifest(bundle)["network"])


class Loader:
    """Counts how often `open_engine` asks for the torch network (it should only when it needs it)."""

    def __init__(self, bundle: Path) -> None:
        self.bundle, self.calls = bundle, 0

    def __call__(self) -> torch.nn.Module:
        self.calls += 1
        return Inspector.from_bundle(self.bundle).network


def test_onnxruntime_engine_reports_the_cpu_provider(bundles: tuple[Path, Path], caplog) -> None:
    with caplog.at_level(logging.INFO, logger="linewatch.engines.onnxruntime_engine"):
        engine = OnnxRuntimeEngine(bundles[1] / ONNX_FILE, _io(bundles[1]), device="cpu", threads=2)
    assert engine.providers == ["CPUExecutionProvider"] and engine.device == "cpu"
    assert "CPUExecutionProvider" in caplog.text and "2 threads" in engine.describe()


def test_onnxruntime_cuda_demanded_without_gpu_is_a_clear_error(bundles: tuple[Path, Path]) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has a CUDA provider")
    with pytest.raises(EngineUnavailable, match="onnxruntime-gpu"):
        OnnxRuntimeEngine(bundles[1] / ONNX_FILE, _io(bundles[1]), device="cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_torch_cuda_demanded_without_gpu_is_a_clear_error(bundles: tuple[Path, Path]) -> None:
    with pytest.raises(EngineUnavailable, match="torch sees no CUDA GPU"):
        TorchEngine(Loader(bundles[0])(), _io(bundles[0]), device="cuda")


def test_torch_and_onnxruntime_agree_on_every_named_output(bundles: tuple[Path, Path], inputs: np.ndarray) -> None:
    inspector = Inspector.from_bundle(bundles[1])
    expected = inspector.reference_engine("cpu")(inputs)
    got = OnnxRuntimeEngine(bundles[1] / ONNX_FILE, inspector.io, device="cpu")(inputs)
    assert set(got) == set(expected) == {"features"}
    scale = float(np.abs(expected["features"]).max())
    np.testing.assert_allclose(got["features"], expected["features"], rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(inspector.score(got).scores, inspector.score(expected).scores, rtol=1e-4)


def test_engines_reject_inputs_of_the_wrong_size(bundles: tuple[Path, Path]) -> None:
    engine = OnnxRuntimeEngine(bundles[1] / ONNX_FILE, _io(bundles[1]), device="cpu")
    with pytest.raises(ValueError, match=f"expected a \\(N, 3, {SIZE}, {SIZE}\\) batch"):
        engine(np.zeros((1, 3, 32, 32), np.float32))


def test_auto_picks_onnxruntime_when_exported_without_building_the_torch_network(bundles: tuple[Path, Path]) -> None:
    loader = Loader(bundles[1])
    engine = open_engine(bundles[1], read_manifest(bundles[1]), loader)
    assert engine.name == "onnxruntime" and loader.calls == 0


def test_auto_falls_back_to_torch_without_export(bundles: tuple[Path, Path], inputs: np.ndarray) -> None:
    loader = Loader(bundles[0])
    manifest = read_manifest(bundles[0])
    engine = open_engine(bundles[0], manifest, loader, device="cpu")
    assert engine.name == "torch" and engine.device == "cpu" and loader.calls == 1
    dims = manifest["network"]["params"]["out_dims"]
    assert engine(inputs)["features"].shape == (len(inputs), dims, 8, 8)


def test_onnxruntime_on_an_unexported_bundle_says_to_run_export_model(bundles: tuple[Path, Path]) -> None:
    with pytest.raises(BundleError, match=r"export-model .* --format onnx"):
        open_engine(bundles[0], read_manifest(bundles[0]), Loader(bundles[0]), engine="onnxruntime")


def test_tensorrt_without_a_plan_says_to_build_one(bundles: tuple[Path, Path]) -> None:
    with pytest.raises(BundleError, match=r"no network.plan.*--format trt"):
        open_engine(bundles[1], read_manifest(bundles[1]), Loader(bundles[1]), engine="tensorrt")


def test_onnx_input_size_must_match_the_manifest(bundles: tuple[Path, Path]) -> None:
    manifest = read_manifest(bundles[1])
    network = manifest["network"]
    resized = {**manifest, "network": {**network, "input": {**network["input"], "size": [96, 96]}}}
    with pytest.raises(BundleError, match=r"does not take the bundle's \(N, 3, 96, 96\) images; re-export"):
        open_engine(bundles[1], resized, Loader(bundles[1]), engine="onnxruntime")


def test_onnx_output_names_must_match_the_manifest(bundles: tuple[Path, Path]) -> None:
    manifest = read_manifest(bundles[1])
    renamed = {**manifest, "network": {**manifest["network"], "outputs": ["residual"]}}
    with pytest.raises(BundleError, match=r"outputs \['features'\].*returns \['residual'\]; re-export"):
        open_engine(bundles[1], renamed, Loader(bundles[1]), engine="onnxruntime")


def test_an_onnx_file_not_in_the_manifest_is_refused(bundles: tuple[Path, Path], tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles[0], bundle)
    shutil.copy(bundles[1] / ONNX_FILE, bundle / ONNX_FILE)
    with pytest.raises(BundleError, match="not recorded in the manifest"):
        open_engine(bundle, read_manifest(bundle), Loader(bundle))


@pytest.mark.skipif(tensorrt_problem() is None, reason="tensorrt and a GPU are present")
def test_tensorrt_engine_without_tensorrt_names_what_is_missing(bundles: tuple[Path, Path]) -> None:
    with pytest.raises(EngineUnavailable, match=r"tensorrt.*pip install -e '\.\[gpu\]'"):
        TensorRTEngine(bundles[1] / PLAN_FILE, _io(bundles[1]))


@pytest.mark.skipif(tensorrt_problem() is not None, reason=str(tensorrt_problem()))
def test_tensorrt_engine_matches_torch(
    bundles: tuple[Path, Path], inputs: np.ndarray, tmp_path: Path
) -> None:
    from linewatch.export.tensorrt_build import build_plan

    io = _io(bundles[1])
    plan = tmp_path / PLAN_FILE
    build_plan(bundles[1] / ONNX_FILE, plan, io, max_batch=2)
    engine = TensorRTEngine(plan, io)
    expected = TorchEngine(Loader(bundles[1])(), io, device="cpu")(inputs)["features"]
    got = engine(inputs)["features"]  # 4 images through a max-batch-2 engine: two chunks
    assert engine.device == "cuda" and engine.max_batch == 2
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * float(np.abs(expected).max()))
